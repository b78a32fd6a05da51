// SPDX-License-Identifier: BSL-1.0
// client_credentials: a service that authenticates as itself (RFC 6749 §4.4) to an RFC 6749
// provider, with no refresh token, and many coroutines on two threads asking at once.
//
//   export TOKEN_URL=https://auth.example.com/oauth2/token CLIENT_ID=billing-service
//   export CLIENT_SECRET_FILE=/run/secrets/billing-client-secret
//   export SCOPE="invoices:read"                    # optional
//   export CA_FILE=/etc/ssl/private-ca.pem          # optional: a CA of your own for https
//   nxsys-example-client-credentials
//   200 callers got 1 distinct token (Bearer, scope "invoices:read") from 1 request
//
// Exit status: 0 with a token, 1 without one (the error on stderr), 2 when the configuration
// is missing or unusable.
#include <nxsys/auth.hpp>

#include "../common/program_flags.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

#include <atomic>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iostream>
#include <iterator>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>

namespace asio = boost::asio;
namespace auth = nxsys::auth;

namespace {

std::string required_env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0')
    throw std::runtime_error(std::string(name) + " is not set");
  return value;
}

// The secret from a file (a mounted Kubernetes or Docker secret): never from argv, which `ps`
// shows. The string is moved into a nxsys::auth::secret, which wipes its bytes when done.
std::string read_secret_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read the client secret file");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  if (nxsys_examples::answered_version_or_help(
          argc, argv, "nxsys-example-client-credentials",
          "usage: nxsys-example-client-credentials\n"
          "  reads TOKEN_URL, CLIENT_ID, CLIENT_SECRET_FILE and, optionally, SCOPE and CA_FILE\n"))
    return 0;
  auth::client_config cfg;
  try {
    cfg.token_url = required_env("TOKEN_URL");
    cfg.client_id = required_env("CLIENT_ID");
    cfg.client_secret = read_secret_file(required_env("CLIENT_SECRET_FILE"));
  } catch (const std::runtime_error& e) {
    std::cerr << "client_credentials: " << e.what() << '\n';
    return 2;
  }
  // The grant and the provider's conventions: RFC 6749 parameter names, the client's id and
  // secret in an Authorization: Basic header (client_secret_basic, which every provider must
  // accept), and the scope the service needs.
  cfg.grant = auth::grant_type::client_credentials;
  cfg.dialect = auth::dialect::rfc6749;
  cfg.authentication = auth::client_authentication::http_basic;
  if (const char* scope = std::getenv("SCOPE")) cfg.scope = scope;
  if (const char* ca = std::getenv("CA_FILE")) cfg.http.tls.ca_file = ca;
  // A configuration read from somewhere else can be checked before anything is built.
  if (auth::diagnostics d; cfg.validate(&d)) {
    std::cerr << "client_credentials: " << d.client_message << '\n';
    return 2;
  }

  asio::io_context ctx;
  try {
    auth::client client(ctx.get_executor(), std::move(cfg));
    std::mutex mu;
    std::set<std::string> distinct;  // compared here only; never printed
    std::string type, scope;
    std::exception_ptr failure;
    std::atomic<int> done{0};
    constexpr int callers = 200;
    for (int i = 0; i < callers; ++i) {
      // Each caller on its own strand, as the requests of a server would be: they all find no
      // token and wait for the same single request.
      asio::co_spawn(
          asio::make_strand(ctx),
          [&]() -> asio::awaitable<void> {
            auth::access_token t = co_await client.token();
            std::lock_guard lk(mu);
            distinct.emplace(t.value());
            type = t.type();
            scope = t.scope();
          },
          [&](std::exception_ptr e) {
            std::lock_guard lk(mu);
            if (e && !failure) failure = e;
            ++done;
          });
    }
    std::thread second([&] { ctx.run(); });
    ctx.run();
    second.join();
    if (failure) std::rethrow_exception(failure);
    const auto stats = client.stats();
    // Requests the server answered: refreshes that did not come from a store.
    std::cout << done.load() << " callers got " << distinct.size() << " distinct token (" << type
              << ", scope \"" << scope << "\") from "
              << stats.refreshes_succeeded - stats.tokens_from_store << " request\n";
    return 0;
  } catch (const auth::error_with_diagnostics& e) {
    // invalid_client: the id or secret is wrong (or the provider does not allow this grant for
    // this client: unauthorized_client). what() never holds the secret.
    std::cerr << "client_credentials: " << e.what() << '\n';
    return e.code() == auth::errc::invalid_config ? 2 : 1;
  }
}
