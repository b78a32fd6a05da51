// SPDX-License-Identifier: BSL-1.0
// session_restart: authorized API requests through nxsys::auth::session, with the tokens kept in
// a file so that the next run of the program continues where this one stopped.
//
// Why a store: many token servers rotate refresh tokens. Every refresh consumes the refresh
// token it presents and answers with a new one, and a server with reuse detection revokes the
// whole chain when a consumed one comes back, after which a person has to authorize again. A
// program that starts over from its configured refresh token presents exactly that: the first
// run consumed it. With a file_store the latest refresh token is on disk before any caller sees
// the access token it came with, so a restart (a deploy, a crash, a cron job) picks it up.
//
//   export NXSYS_BASE_API_URL=https://api.nxsys.example NXSYS_CLIENT_ID=my-client
//   export NXSYS_CLIENT_SECRET=...
//   export NXSYS_REFRESH_TOKEN=...    # needed only until the store file exists
//   export NXSYS_CA_FILE=...          # optional: a CA of your own for https
//   nxsys-example-session-restart /var/lib/my-app/nxsys-tokens.json [REQUESTS [INTERVAL_MS]]
//   requests 15, answered 200: 15
//   refreshes 3 (from the store 0), rotated 3, 401s retried 0
//
// It sends REQUESTS (default 15) GET requests to /api/orders/N, INTERVAL_MS (default 100) apart.
// Exit status: 0 when every request was answered 200, 1 otherwise, 2 for a missing or unusable
// configuration (also: no refresh token given and none stored yet).
#include <nxsys/auth.hpp>

#include "../common/program_flags.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/verb.hpp>

#include <chrono>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>

namespace asio = boost::asio;
namespace auth = nxsys::auth;
namespace http = boost::beast::http;

namespace {

struct settings {
  std::string base_url, client_id, client_secret, refresh_token, ca_file, store_path;
  int requests = 15;
  std::chrono::milliseconds interval{100};
};

// Secrets come from the environment (or files), never from the command line, which `ps` shows
// to every user of the machine.
std::string env(const char* name, bool required) {
  const char* value = std::getenv(name);
  if (required && (value == nullptr || *value == '\0'))
    throw std::runtime_error(std::string(name) + " is not set");
  return value != nullptr ? value : "";
}

int positive(const char* text) {
  const int n = std::atoi(text);
  if (n <= 0) throw std::runtime_error("REQUESTS and INTERVAL_MS are numbers above 0");
  return n;
}

// The client and the session live in this coroutine's frame, so they are destroyed when it
// ends, while the io_context still runs. A client keeps working for as long as it lives: a
// refresh-ahead in flight, a failed save retried (storage.retry_interval, doubling). Destroyed
// while the io_context runs, it finishes what must not be lost (a refresh already sent is
// carried to its answer and its new refresh token saved; a failed save gets one last attempt)
// and then lets run() return, which a client still alive and retrying would not.
asio::awaitable<int> call_api(settings s) {
  const auto executor = co_await asio::this_coro::executor;

  auth::client_config cfg;
  cfg.token_url = auth::make_token_url(s.base_url);
  cfg.client_id = s.client_id;
  cfg.client_secret = s.client_secret;
  // Empty after the first run: the store holds the chain then, and this token was consumed.
  cfg.refresh_token = s.refresh_token;
  cfg.http.tls.ca_file = s.ca_file;  // empty: the system's CAs
  // The file (mode 0600: it holds the refresh token) is replaced atomically, so a crash
  // mid-write leaves the previous state, and locked with flock, so that processes sharing it
  // refresh one at a time. A file that cannot be parsed throws store_corrupt here: starting over
  // from the configured refresh token, consumed long ago, would only revoke the chain.
  cfg.storage.store = std::make_shared<auth::file_store>(s.store_path);
  // A new refresh token that did not reach the disk is lost at the next start, and this program
  // restarts often. So a failed save fails the requests instead of serving the new token (the
  // default serves it and retries the save: better uptime for a long-running service).
  cfg.storage.strict_durability = true;
  auth::client client(executor, std::move(cfg));  // throws invalid_config
  // The session adds Host and "Authorization: Bearer ...", keeps connections alive, and
  // answers a 401 with one refresh and one retry. Its http options are its own (the API may be
  // another host than the token endpoint, with other timeouts); here it trusts the same CA.
  auth::session api(client, {.base_url = s.base_url, .http = {.tls = {.ca_file = s.ca_file}}});

  asio::steady_timer pause(executor);
  int ok = 0;
  for (int i = 1; i <= s.requests; ++i) {
    const std::string target = "/api/orders/" + std::to_string(i);
    auth::session::response_type res = co_await api.request({http::verb::get, target, 11});
    // Any HTTP status is an answer; errors (no token, no connection) are thrown.
    if (res.result() == http::status::ok) {
      ++ok;
    } else {
      std::cerr << "session_restart: GET " << target << ": HTTP " << res.result_int() << '\n';
    }
    pause.expires_after(s.interval);
    co_await pause.async_wait(asio::use_awaitable);
  }

  const auth::client_stats c = client.stats();
  const auth::session_stats a = api.stats();
  // A refresh either asks the server (which rotates the refresh token) or finds a token that
  // is still valid in the store, left there by an earlier run or another process.
  std::cout << "requests " << s.requests << ", answered 200: " << ok << '\n'
            << "refreshes " << c.refreshes_succeeded << " (from the store " << c.tokens_from_store
            << "), rotated " << c.refresh_tokens_rotated << ", 401s retried "
            << a.unauthorized_retries << '\n';
  co_return ok == s.requests ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (nxsys_examples::answered_version_or_help(
          argc, argv, "nxsys-example-session-restart",
          "usage: nxsys-example-session-restart STORE_FILE [REQUESTS [INTERVAL_MS]]\n"))
    return 0;
  settings s;
  try {
    if (argc < 2 || argc > 4)
      throw std::runtime_error(
          "usage: nxsys-example-session-restart STORE_FILE [REQUESTS [INTERVAL_MS]]");
    s.store_path = argv[1];
    if (argc > 2) s.requests = positive(argv[2]);
    if (argc > 3) s.interval = std::chrono::milliseconds(positive(argv[3]));
    s.base_url = env("NXSYS_BASE_API_URL", true);
    s.client_id = env("NXSYS_CLIENT_ID", true);
    s.client_secret = env("NXSYS_CLIENT_SECRET", true);
    s.refresh_token = env("NXSYS_REFRESH_TOKEN", false);
    s.ca_file = env("NXSYS_CA_FILE", false);
  } catch (const std::runtime_error& e) {
    std::cerr << "session_restart: " << e.what() << '\n';
    return 2;
  }

  asio::io_context ctx;
  int status = 1;
  asio::co_spawn(ctx, call_api(std::move(s)), [&](std::exception_ptr e, int result) {
    if (!e) {
      status = result;
      return;
    }
    try {
      std::rethrow_exception(e);
    } catch (const auth::error_with_diagnostics& x) {
      // Never a secret in what(). invalid_config: a bad setting, or no refresh token given
      // while the store holds none yet.
      std::cerr << "session_restart: " << x.what() << '\n';
      status = x.code() == auth::errc::invalid_config ? 2 : 1;
    } catch (const std::exception& x) {
      std::cerr << "session_restart: " << x.what() << '\n';
    }
  });
  ctx.run();  // returns when call_api is done and the client and session have finished
  return status;
}
