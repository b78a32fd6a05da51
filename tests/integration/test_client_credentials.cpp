// SPDX-License-Identifier: BSL-1.0
// The client_credentials grant (RFC 6749 §4.4) end to end against the mock server: the same
// single flight, expiry, refresh-ahead, retries, stats and stores as refresh tokens, in both
// dialects and with HTTP Basic; and what it refuses.
#include <nxsys/auth/client.hpp>
#include <nxsys/auth/token_store.hpp>

#include "helpers.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;
using namespace std::chrono_literals;

na::client_config cc_config(const mock_server& server, const mock_server_options& opts = {}) {
  auto cfg = config_for(server, opts);
  cfg.grant = na::grant_type::client_credentials;
  cfg.refresh_token.wipe();
  return cfg;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(client_credentials)

// 2 clients × 500 coroutines on 2 threads ask at once: one grant request per client, and
// every caller gets that client's token.
BOOST_AUTO_TEST_CASE(one_request_for_a_crowd_on_two_threads) {
  mock_server server;
  asio::io_context ctx;
  std::vector<std::unique_ptr<na::client>> clients;
  for (int i = 0; i < 2; ++i)
    clients.push_back(std::make_unique<na::client>(ctx.get_executor(), cc_config(server)));
  const auto burst = burst_of_tokens(ctx, clients, 500, 2);
  BOOST_TEST(burst.finished);
  BOOST_TEST(burst.errors == 0);
  BOOST_TEST(burst.values.size() == 2u);
  const auto st = server.stats();
  BOOST_TEST(st.client_credentials_grants == 2u);
  BOOST_TEST(st.errors == 0u);
  for (auto& c : clients) {
    const auto s = c->stats();
    BOOST_TEST(s.refreshes_succeeded == 1u);
    BOOST_TEST(s.refresh_tokens_rotated == 0u);
  }
  // No refresh token was presented, ever.
  BOOST_TEST(server.presented_refresh_tokens().empty());
}

BOOST_AUTO_TEST_CASE(an_expired_token_buys_a_new_one_and_ahead_refreshes_in_the_background) {
  mock_server_options opts;
  opts.ttl = 100s;
  mock_server server(opts);
  asio::io_context ctx;
  auto cfg = cc_config(server, opts);
  auto clk = std::make_shared<manual_clock>();
  cfg.clock = clk;
  cfg.refresh.ahead_fraction = 0.2;  // 100 s token: refresh point 75 s, ahead from 60 s
  na::client c(ctx.get_executor(), cfg);
  const auto first = get_token(ctx, c);
  clk->advance(65s);  // inside the refresh-ahead window: served, one background grant
  BOOST_TEST(get_token(ctx, c).serial() == first.serial());
  BOOST_TEST(eventually([&] { return server.stats().client_credentials_grants == 2u; }));
  ctx.restart();
  ctx.run_for(200ms);  // let the background run hand its token over
  BOOST_TEST(get_token(ctx, c).serial() != first.serial());
  BOOST_TEST(c.stats().refreshes_ahead == 1u);
  clk->advance(200s);  // expired: the caller waits for a new grant
  get_token(ctx, c);
  BOOST_TEST(server.stats().client_credentials_grants == 3u);
  BOOST_TEST(server.stats().refreshes == server.stats().client_credentials_grants);
}

BOOST_AUTO_TEST_CASE(rfc6749_names_basic_authentication_and_a_scope) {
  mock_server server;
  asio::io_context ctx;
  auto cfg = cc_config(server);
  cfg.dialect = na::dialect::rfc6749;
  cfg.authentication = na::client_authentication::http_basic;
  cfg.scope = "orders:read orders:write";
  na::client c(ctx.get_executor(), cfg);
  const auto t = get_token(ctx, c);
  BOOST_TEST(t.scope() == "orders:read orders:write");
  const auto st = server.stats();
  BOOST_TEST(st.client_credentials_grants == 1u);
  BOOST_TEST(st.basic_auth_requests == 1u);
  BOOST_TEST(st.rfc6749_requests == 1u);
}

BOOST_AUTO_TEST_CASE(transient_failures_are_retried) {
  mock_server server;
  asio::io_context ctx;
  auto cfg = cc_config(server);
  cfg.refresh.retry = {4, 1ms, 5ms};
  na::client c(ctx.get_executor(), cfg);
  server.fail_next({503, R"({"error":"temporarily_unavailable"})", "application/json", {}}, 2);
  const auto a = try_token(ctx, c);
  BOOST_TEST(!a.ec);
  BOOST_TEST(c.stats().retries == 2u);
  BOOST_TEST(server.stats().client_credentials_grants == 1u);
}

// Clients sharing a store share the token: the second takes it from the store, no request.
BOOST_AUTO_TEST_CASE(a_shared_store_shares_the_token) {
  mock_server server;
  asio::io_context ctx;
  auto store = std::make_shared<na::memory_store>(ctx.get_executor());
  auto cfg = cc_config(server);
  cfg.storage.store = store;
  na::client a(ctx.get_executor(), cfg);
  na::client b(ctx.get_executor(), cfg);
  const auto ta = get_token(ctx, a);
  const auto tb = get_token(ctx, b);
  BOOST_TEST(ta.value() == tb.value());
  BOOST_TEST(server.stats().client_credentials_grants == 1u);
  BOOST_TEST(b.stats().tokens_from_store == 1u);
}

// A store holding a refresh-token chain belongs to another grant: refused, and left alone.
BOOST_AUTO_TEST_CASE(a_store_holding_a_chain_is_refused) {
  mock_server server;
  asio::io_context ctx;
  auto store = std::make_shared<na::memory_store>(ctx.get_executor());
  {
    auto rcfg = config_for(server);
    rcfg.storage.store = store;
    na::client r(ctx.get_executor(), rcfg);
    get_token(ctx, r);
  }
  auto cfg = cc_config(server);
  cfg.storage.store = store;
  na::client c(ctx.get_executor(), cfg);
  const auto a = try_token(ctx, c);
  BOOST_TEST(a.ec == na::errc::invalid_config);
  BOOST_TEST(server.stats().client_credentials_grants == 0u);
}

BOOST_AUTO_TEST_CASE(a_wrong_secret_is_invalid_client_and_spaced) {
  mock_server server;
  asio::io_context ctx;
  auto cfg = cc_config(server);
  cfg.client_secret = "not-the-secret";
  cfg.refresh.min_retry_spacing = 1h;
  na::client c(ctx.get_executor(), cfg);
  const auto a = try_token(ctx, c);
  BOOST_TEST(a.ec == na::errc::invalid_client);
  BOOST_TEST(a.what.find("not-the-secret") == std::string::npos);
  // Within the spacing, callers get the failure without a request.
  BOOST_TEST(try_token(ctx, c).ec == na::errc::invalid_client);
  BOOST_TEST(server.stats().errors == 1u);
}

BOOST_AUTO_TEST_CASE(a_server_refusing_the_grant_is_unauthorized_client) {
  mock_server_options opts;
  opts.allow_client_credentials = false;
  mock_server server(opts);
  asio::io_context ctx;
  na::client c(ctx.get_executor(), cc_config(server, opts));
  BOOST_TEST(try_token(ctx, c).ec == na::errc::unauthorized_client);
}

BOOST_AUTO_TEST_CASE(set_refresh_token_and_a_refresh_token_in_the_config_are_refused) {
  mock_server server;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), cc_config(server));
  try {
    c.set_refresh_token("rt-new");
    BOOST_FAIL("set_refresh_token was accepted");
  } catch (const na::error_with_diagnostics& e) {
    BOOST_TEST(e.code() == na::errc::invalid_argument);
  }
  auto cfg = cc_config(server);
  cfg.refresh_token = "rt";
  BOOST_TEST(cfg.validate() == na::errc::invalid_config);
  cfg.refresh_token.wipe();
  cfg.client_secret.wipe();
  BOOST_TEST(cfg.validate() == na::errc::invalid_config);
}

BOOST_AUTO_TEST_SUITE_END()
