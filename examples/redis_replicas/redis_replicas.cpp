// SPDX-License-Identifier: BSL-1.0
// redis_replicas: one replica of a service scaled out over many processes and hosts, all acting
// with one credential, sharing its tokens through Redis (nxsys::auth::redis_store). Start as
// many as you like, on as many hosts as you like.
//
// Why: each replica's client refreshes once for all its callers, but replicas that refresh on
// their own still refresh once per replica, and with a server that rotates refresh tokens
// they fight over the chain: the second replica to refresh presents the refresh token the first
// one consumed, and reuse detection revokes the chain for all of them. With a shared
// redis_store the replicas take turns through a lease in Redis: one refreshes, saves the new
// tokens, and the others take them from the store instead of asking the server. One refresh
// per expiry for the whole fleet, and the chain survives any replica's restart.
//
//   export NXSYS_BASE_API_URL=https://api.nxsys.example NXSYS_CLIENT_ID=my-client
//   export NXSYS_CLIENT_SECRET=... NXSYS_REFRESH_TOKEN=...  # used only while Redis has no state
//   export NXSYS_REDIS_PASSWORD=...                        # optional: Redis AUTH
//   export NXSYS_REDIS_TLS=1                               # optional: Redis over TLS
//   export NXSYS_REDIS_CA_FILE=...                         # optional: the CA of Redis's cert
//   export NXSYS_REDIS_TLS_SERVER_NAME=...                 # optional: the name in Redis's cert
//   export NXSYS_CA_FILE=...                               # optional: a CA of your own
//   nxsys-example-redis-replicas REDIS_HOST:PORT [SECONDS [CALLERS]]
//   requests 240, answered 200: 240
//   refreshes 3 (from the store 2), rotated 1, adopted 2, 401s retried 0
//
// Redis off loopback must be reached over TLS (a `tls-port`): NXSYS_REDIS_TLS=1 (0 or unset:
// plain TCP), verifying Redis's certificate against NXSYS_REDIS_CA_FILE (unset: the system's
// CAs) and for NXSYS_REDIS_TLS_SERVER_NAME (unset: REDIS_HOST), as the API's is against
// NXSYS_CA_FILE: the store carries the refresh token, which must not cross a network in clear.
//
// For SECONDS (default 3) the replica's CALLERS (default 4) coroutines call GET /api/orders
// through one session, about 20 times a second each, as request handlers would. Exit status:
// 0 when every request was answered 200, 1 otherwise, 2 for a missing or unusable
// configuration.
#include <nxsys/auth.hpp>
#include <nxsys/auth/redis_store.hpp>

#include "../common/program_flags.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/verb.hpp>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace asio = boost::asio;
namespace auth = nxsys::auth;
namespace http = boost::beast::http;
using namespace std::chrono_literals;

namespace {

struct settings {
  std::string base_url, client_id, client_secret, refresh_token, ca_file;
  auth::redis_store_options redis;
  std::chrono::seconds duration{3};
  unsigned callers = 4;
};

// Secrets come from the environment (or files), never from the command line, which `ps` shows
// to every user of the machine.
std::string env(const char* name, bool required) {
  const char* value = std::getenv(name);
  if (required && (value == nullptr || *value == '\0'))
    throw std::runtime_error(std::string(name) + " is not set");
  return value != nullptr ? value : "";
}

unsigned positive(const char* text) {
  const int n = std::atoi(text);
  if (n <= 0 || n > 10'000) throw std::runtime_error("SECONDS and CALLERS: 1 to 10000");
  return static_cast<unsigned>(n);
}

struct counts {
  std::uint64_t requests = 0;
  std::uint64_t ok = 0;
};

// A request handler's work: API calls until `until`. Every caller of this replica shares its
// session, and so its client: a token is refreshed once for all of them.
asio::awaitable<void> caller(auth::session& api, std::chrono::steady_clock::time_point until,
                             counts& n) {
  asio::steady_timer pause(co_await asio::this_coro::executor);
  while (std::chrono::steady_clock::now() < until) {
    auth::session::response_type res = co_await api.request({http::verb::get, "/api/orders", 11});
    ++n.requests;  // one thread runs every caller of this replica: no lock needed
    if (res.result() == http::status::ok) {
      ++n.ok;
    } else {
      std::cerr << "redis_replicas: GET /api/orders: HTTP " << res.result_int() << '\n';
    }
    pause.expires_after(50ms);
    co_await pause.async_wait(asio::use_awaitable);
  }
}

// The store, the client and the session live in this coroutine's frame, so they are destroyed
// when it ends, while the io_context still runs: a refresh in flight then (a refresh-ahead) is
// carried to its answer and its tokens saved to Redis for the other replicas, a failed save is
// tried one last time, and then run() returns (see examples/session_restart).
asio::awaitable<int> replica(settings s) {
  const auto executor = co_await asio::this_coro::executor;

  // Every replica of one credential uses the same key_prefix and name: that is what makes them
  // share a chain. The client id names it here; another credential gets a chain of its own.
  s.redis.name = s.client_id;
  auth::client_config cfg;
  cfg.token_url = auth::make_token_url(s.base_url);
  cfg.client_id = s.client_id;
  cfg.client_secret = s.client_secret;
  // Read by whichever replica refreshes first, and only while Redis holds no state: after
  // that the chain lives in Redis, and this token (consumed by then) is never sent again.
  cfg.refresh_token = s.refresh_token;
  cfg.http.tls.ca_file = s.ca_file;  // empty: the system's CAs
  // Connects lazily: an unreachable Redis fails the first refresh with store_failed, not this.
  cfg.storage.store = std::make_shared<auth::redis_store>(executor, s.redis);
  auth::client client(executor, std::move(cfg));  // throws invalid_config
  // The session has http options of its own (the API may be another host than the token
  // endpoint, with other timeouts); here it trusts the same CA.
  auth::session api(client, {.base_url = s.base_url, .http = {.tls = {.ca_file = s.ca_file}}});

  counts n;
  const auto until = std::chrono::steady_clock::now() + s.duration;
  // Runs the callers concurrently and waits for all of them; what one throws (no token, no
  // connection) ends up in `failures`, in launch order.
  std::vector<decltype(asio::co_spawn(executor, caller(api, until, n), asio::deferred))> callers;
  for (unsigned i = 0; i < s.callers; ++i)
    callers.push_back(asio::co_spawn(executor, caller(api, until, n), asio::deferred));
  auto [order, failures] = co_await asio::experimental::make_parallel_group(std::move(callers))
                               .async_wait(asio::experimental::wait_for_all(), asio::use_awaitable);

  bool failed = false;
  for (const std::exception_ptr& e : failures) {
    if (!e || failed) continue;
    failed = true;  // the first is enough: the others are usually the same
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      std::cerr << "redis_replicas: " << x.what() << '\n';  // never a secret
    }
  }

  // How this replica got its tokens: refreshes that asked the server (rotated) and refreshes
  // that found a fresh token another replica had saved (from the store); adopted: refresh
  // tokens another replica rotated, taken over from Redis.
  const auth::client_stats c = client.stats();
  std::cout << "requests " << n.requests << ", answered 200: " << n.ok << '\n'
            << "refreshes " << c.refreshes_succeeded << " (from the store " << c.tokens_from_store
            << "), rotated " << c.refresh_tokens_rotated << ", adopted " << c.refresh_tokens_adopted
            << ", 401s retried " << api.stats().unauthorized_retries << '\n';
  co_return !failed && n.ok == n.requests ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (nxsys_examples::answered_version_or_help(
          argc, argv, "nxsys-example-redis-replicas",
          "usage: nxsys-example-redis-replicas REDIS_HOST:PORT [SECONDS [CALLERS]]\n"))
    return 0;
  settings s;
  try {
    if (argc < 2 || argc > 4)
      throw std::runtime_error(
          "usage: nxsys-example-redis-replicas REDIS_HOST:PORT [SECONDS [CALLERS]]");
    const std::string redis = argv[1];
    const auto colon = redis.rfind(':');
    if (colon == std::string::npos) throw std::runtime_error("REDIS_HOST:PORT: no port");
    s.redis.host = redis.substr(0, colon);
    const int port = std::atoi(redis.c_str() + colon + 1);
    if (port <= 0 || port > 65535) throw std::runtime_error("REDIS_HOST:PORT: no port");
    s.redis.port = static_cast<std::uint16_t>(port);
    s.redis.password = env("NXSYS_REDIS_PASSWORD", false);
    const std::string tls = env("NXSYS_REDIS_TLS", false);
    if (tls != "" && tls != "0" && tls != "1") throw std::runtime_error("NXSYS_REDIS_TLS: 0 or 1");
    s.redis.use_tls = tls == "1";
    // Set without NXSYS_REDIS_TLS=1, these make the store's options invalid (exit 2): TLS
    // settings that nothing uses are a mistake worth hearing about.
    s.redis.tls.ca_file = env("NXSYS_REDIS_CA_FILE", false);
    s.redis.tls_server_name = env("NXSYS_REDIS_TLS_SERVER_NAME", false);
    if (argc > 2) s.duration = std::chrono::seconds(positive(argv[2]));
    if (argc > 3) s.callers = positive(argv[3]);
    s.base_url = env("NXSYS_BASE_API_URL", true);
    s.client_id = env("NXSYS_CLIENT_ID", true);
    s.client_secret = env("NXSYS_CLIENT_SECRET", true);
    s.refresh_token = env("NXSYS_REFRESH_TOKEN", false);  // not needed once Redis has the chain
    s.ca_file = env("NXSYS_CA_FILE", false);
  } catch (const std::runtime_error& e) {
    std::cerr << "redis_replicas: " << e.what() << '\n';
    return 2;
  }

  asio::io_context ctx;
  int status = 1;
  asio::co_spawn(ctx, replica(std::move(s)), [&](std::exception_ptr e, int result) {
    if (!e) {
      status = result;
      return;
    }
    try {
      std::rethrow_exception(e);
    } catch (const auth::error_with_diagnostics& x) {
      std::cerr << "redis_replicas: " << x.what() << '\n';
      status = x.code() == auth::errc::invalid_config ? 2 : 1;
    } catch (const std::exception& x) {
      std::cerr << "redis_replicas: " << x.what() << '\n';
    }
  });
  ctx.run();  // one thread: enough for this replica's callers (see examples/many_tenants)
  return status;
}
