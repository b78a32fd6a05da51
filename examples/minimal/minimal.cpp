// SPDX-License-Identifier: BSL-1.0
// minimal: the smallest complete program on nxsys-auth. One client, one access token, and what
// to do when there is none.
//
//   export NXSYS_BASE_API_URL=https://api.nxsys.example NXSYS_CLIENT_ID=my-client
//   export NXSYS_CLIENT_SECRET=... NXSYS_REFRESH_TOKEN=...
//   export NXSYS_CA_FILE=/etc/ssl/private-ca.pem   # optional: a CA of your own for https
//   nxsys-example-minimal
//   got a Bearer token, valid for 3599 s
//
// Exit status: 0 with a token, 1 without one (the error on stderr), 2 when the configuration
// is missing or unusable.
//
// The tokens live in this process's memory only. Against a server that rotates refresh tokens,
// the refresh token this run was given is consumed by its refresh, and the next run would
// present it again: keep the chain in a token store (examples/session_restart).
#include <nxsys/auth.hpp>

#include "../common/program_flags.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <stdexcept>
#include <string>

namespace asio = boost::asio;
namespace auth = nxsys::auth;

namespace {

// Secrets come from the environment (or files), never from the command line, which `ps` shows
// to every user of the machine.
std::string required_env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0')
    throw std::runtime_error(std::string(name) + " is not set");
  return value;
}

asio::awaitable<void> print_expiry(auth::client& client) {
  // Suspends only when there is no fresh token. Any number of coroutines may ask at once: they
  // share one refresh request.
  auth::access_token token = co_await client.token();
  // The value is a bearer credential: whoever reads it (in a log, a terminal, a CI output) can
  // call the API as you until it expires. Print what it is, never what it says.
  const auto left = std::chrono::duration_cast<std::chrono::seconds>(
      token.expires_at() - std::chrono::steady_clock::now());
  std::cout << "got a " << token.type() << " token, valid for " << left.count() << " s\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (nxsys_examples::answered_version_or_help(
          argc, argv, "nxsys-example-minimal",
          "usage: nxsys-example-minimal\n"
          "  reads NXSYS_BASE_API_URL, NXSYS_CLIENT_ID, NXSYS_CLIENT_SECRET, NXSYS_REFRESH_TOKEN\n"
          "  and, optionally, NXSYS_CA_FILE\n"))
    return 0;
  auth::client_config cfg;
  try {
    cfg.token_url = auth::make_token_url(required_env("NXSYS_BASE_API_URL"));
    cfg.client_id = required_env("NXSYS_CLIENT_ID");
    cfg.client_secret = required_env("NXSYS_CLIENT_SECRET");
    cfg.refresh_token = required_env("NXSYS_REFRESH_TOKEN");
  } catch (const std::runtime_error& e) {
    std::cerr << "minimal: " << e.what() << '\n';
    return 2;
  }
  if (const char* ca = std::getenv("NXSYS_CA_FILE")) cfg.http.tls.ca_file = ca;

  asio::io_context ctx;
  try {
    // The constructor checks the configuration before anything is sent (a bad URL, plain http
    // to a host that is not loopback, an unreadable CA file) and throws invalid_config.
    auth::client client(ctx.get_executor(), std::move(cfg));
    std::exception_ptr failure;
    // What the coroutine throws arrives here; rethrown after run(), it meets the same catch
    // as the constructor's errors instead of escaping from run().
    asio::co_spawn(ctx, print_expiry(client), [&](std::exception_ptr e) { failure = e; });
    ctx.run();  // returns when the coroutine is done: an idle client keeps no work pending
    if (failure) std::rethrow_exception(failure);
    return 0;
  } catch (const auth::error_with_diagnostics& e) {
    // what() holds the error, the HTTP status and the server's own words, with every
    // credential the client sent cut out: safe for logs, as it is.
    std::cerr << "minimal: " << e.what() << '\n';
    // code() is what a program decides on. invalid_grant means the refresh token is dead
    // (expired, revoked, or consumed by a rotation nobody kept): retrying cannot help, only a
    // new authorization can. Transient failures (timeout, connection, server_error) were
    // already retried inside the refresh before they got here.
    if (e.code() == auth::errc::invalid_grant)
      std::cerr << "minimal: authorize again and set NXSYS_REFRESH_TOKEN to the new token\n";
    return e.code() == auth::errc::invalid_config ? 2 : 1;
  }
}
