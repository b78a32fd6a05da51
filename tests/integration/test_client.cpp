// SPDX-License-Identifier: BSL-1.0
// The client against the mock token server over real loopback TCP: caching, the seed's
// request, completion tokens, keep-alive, rotation.
#include "helpers.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/test/unit_test.hpp>

#include <functional>
#include <set>
#include <thread>

namespace asio = boost::asio;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;
using boost::system::error_code;

BOOST_AUTO_TEST_SUITE(client_basic)

BOOST_AUTO_TEST_CASE(a_fresh_token_is_served_from_the_cache_without_io) {
  mock_server server;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server));
  auto t1 = get_token(ctx, c);
  BOOST_TEST(!t1.value().empty());
  BOOST_TEST(t1.value() == server.last_access_token());
  BOOST_TEST(t1.type() == "Bearer");
  BOOST_TEST(t1.serial() == 1u);
  const auto left = t1.expires_at() - std::chrono::steady_clock::now();
  BOOST_TEST((left > std::chrono::seconds(3500)));
  BOOST_TEST((left <= std::chrono::seconds(3600)));

  const auto requests = server.stats().requests;
  for (int i = 0; i < 100; ++i) BOOST_TEST(get_token(ctx, c).value() == t1.value());
  BOOST_TEST(server.stats().requests == requests);
  BOOST_TEST(c.stats().refreshes_started == 1u);
  BOOST_TEST(c.stats().refreshes_succeeded == 1u);
}

BOOST_AUTO_TEST_CASE(invalidate_makes_the_next_call_refresh) {
  mock_server server;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server));
  auto t1 = get_token(ctx, c);
  c.invalidate();
  auto t2 = get_token(ctx, c);
  BOOST_TEST(t1.value() != t2.value());
  BOOST_TEST(t2.serial() == 2u);
  BOOST_TEST(server.stats().refreshes == 2u);
  BOOST_TEST(c.stats().invalidations == 1u);
  // The old copy stays valid for whoever holds it: tokens are immutable snapshots.
  BOOST_TEST(!t1.value().empty());
}

BOOST_AUTO_TEST_CASE(snake_case_answers_and_string_expiry_are_understood) {
  mock_server_options opts;
  opts.names = field_names::snake;
  opts.expires_in_as_string = true;
  opts.ttl = std::chrono::seconds(120);
  mock_server server(opts);
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server, opts));
  auto t = get_token(ctx, c);
  BOOST_TEST(t.value() == server.last_access_token());
  const auto left = t.expires_at() - std::chrono::steady_clock::now();
  BOOST_TEST((left > std::chrono::seconds(100)));
  BOOST_TEST((left <= std::chrono::seconds(120)));
}

BOOST_AUTO_TEST_CASE(an_answer_without_expiry_gets_the_default_lifetime) {
  mock_server_options opts;
  opts.send_expires_in = false;
  mock_server server(opts);
  asio::io_context ctx;
  auto cfg = config_for(server, opts);
  cfg.refresh.default_lifetime = std::chrono::seconds(600);
  na::client c(ctx.get_executor(), cfg);
  auto t = get_token(ctx, c);
  const auto left = t.expires_at() - std::chrono::steady_clock::now();
  BOOST_TEST((left > std::chrono::seconds(590)));
  BOOST_TEST((left <= std::chrono::seconds(600)));
}

BOOST_AUTO_TEST_CASE(credentials_with_reserved_and_non_ascii_bytes_are_form_encoded) {
  mock_server_options opts;
  opts.client_id = "id with spaces/and?&=+%";
  opts.client_secret = "s3cr&t=+%2F/? \xC3\xA9\xE6\x97\xA5";
  opts.initial_refresh_token = "rt+/=&?% \xF0\x9F\x94\x91";
  mock_server server(opts);
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server, opts));
  auto t = get_token(ctx, c);  // the server decodes and compares all three byte for byte
  BOOST_TEST(!t.value().empty());
  BOOST_TEST(server.presented_refresh_tokens().at(0) == opts.initial_refresh_token);
}

BOOST_AUTO_TEST_CASE(every_completion_token_kind_works) {
  mock_server server;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server));

  // Plain callback: runs on the client's executor, never inline.
  bool inline_call = true, called = false;
  c.async_token([&](error_code ec, na::access_token t) {
    called = true;
    BOOST_TEST(!ec);
    BOOST_TEST(!t.value().empty());
  });
  inline_call = called;
  BOOST_REQUIRE(run_bounded(ctx, 1));
  BOOST_TEST(!inline_call);
  BOOST_TEST(called);

  // Fast path with a callback is not inline either.
  called = false;
  c.async_token([&](error_code, na::access_token) { called = true; });
  BOOST_TEST(!called);
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 1));
  BOOST_TEST(called);

  // deferred: nothing happens until the deferred operation is launched.
  auto op = c.async_token(asio::deferred);
  called = false;
  std::move(op)([&](error_code ec, na::access_token) { called = !ec; });
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 1));
  BOOST_TEST(called);

  // use_awaitable and as_tuple(use_awaitable).
  run_coro(ctx, [&]() -> asio::awaitable<void> {
    auto t = co_await c.async_token(asio::use_awaitable);
    BOOST_TEST(!t.value().empty());
    na::diagnostics diag;
    auto [ec, t2] = co_await c.async_token(diag, asio::as_tuple(asio::use_awaitable));
    BOOST_TEST(!ec);
    BOOST_TEST(t2.value() == t.value());
    BOOST_TEST(diag.empty());
  });

  // use_future needs the context running on another thread.
  ctx.restart();
  auto guard = asio::make_work_guard(ctx);
  std::thread runner([&] { ctx.run(); });
  c.invalidate();
  auto fut = c.async_token(asio::use_future);
  auto t = fut.get();
  BOOST_TEST(t.serial() == 2u);
  guard.reset();
  runner.join();
}

BOOST_AUTO_TEST_CASE(one_keep_alive_connection_serves_many_refreshes) {
  mock_server server;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server));
  for (int i = 0; i < 5; ++i) {
    get_token(ctx, c);
    c.invalidate();
  }
  BOOST_TEST(server.stats().refreshes == 5u);
  BOOST_TEST(server.stats().connections == 1u);
  BOOST_TEST(c.stats().connections_opened == 1u);
}

BOOST_AUTO_TEST_CASE(a_connection_the_server_closed_is_reopened) {
  mock_server server;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server));
  get_token(ctx, c);
  server.close_idle_connections();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // let the FIN arrive
  c.invalidate();
  auto t = get_token(ctx, c);
  BOOST_TEST(t.serial() == 2u);
  BOOST_TEST(server.stats().connections == 2u);
  BOOST_TEST(server.stats().errors == 0u);

  // A server that closes after every answer: every refresh opens a connection, all succeed.
  server.set_close_after_response(true);
  for (int i = 0; i < 3; ++i) {
    c.invalidate();
    get_token(ctx, c);
  }
  BOOST_TEST(server.stats().refreshes == 5u);
  BOOST_TEST(c.stats().connections_opened >= 4u);
}

BOOST_AUTO_TEST_CASE(make_token_url_follows_the_seed) {
  mock_server server;
  BOOST_TEST(na::make_token_url(server.base_url()) == server.token_url());
  BOOST_TEST(na::make_token_url(server.base_url() + "/") == server.token_url());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(rotation)

// Semantic 7: each refresh sends the refresh token the previous answer returned.
BOOST_AUTO_TEST_CASE(fifty_expiries_with_a_rotating_server_chain_the_refresh_tokens) {
  mock_server_options opts;
  opts.rotate = true;
  opts.reuse_detection = true;
  opts.ttl = std::chrono::seconds(60);
  mock_server server(opts);
  asio::io_context ctx;
  auto cfg = config_for(server, opts);
  auto clk = std::make_shared<manual_clock>();
  cfg.clock = clk;
  na::client c(ctx.get_executor(), cfg);
  std::string last;
  for (int i = 0; i < 50; ++i) {
    auto t = get_token(ctx, c);
    BOOST_TEST(t.value() != last);
    last = std::string(t.value());
    // Still fresh just before the refresh point, so no refresh...
    clk->advance(std::chrono::seconds(40));
    BOOST_TEST(get_token(ctx, c).value() == last);
    // ...and expired a little later.
    clk->advance(std::chrono::seconds(25));
  }
  BOOST_TEST(server.stats().refreshes == 50u);
  BOOST_TEST(server.stats().reuse_detected == 0u);
  BOOST_TEST(c.stats().refresh_tokens_rotated == 50u);
  const auto presented = server.presented_refresh_tokens();
  BOOST_REQUIRE(presented.size() == 50u);
  BOOST_TEST(presented[0] == opts.initial_refresh_token);
  for (std::size_t i = 1; i < presented.size(); ++i) BOOST_TEST(presented[i] != presented[i - 1]);
  // The 51st refresh sends the token the 50th answer carried.
  c.invalidate();
  get_token(ctx, c);
  BOOST_TEST(server.presented_refresh_tokens().back() != presented.back());
  BOOST_TEST(server.stats().errors == 0u);
}

BOOST_AUTO_TEST_CASE(a_short_lived_token_is_not_refreshed_on_every_call) {
  mock_server_options opts;
  opts.ttl = std::chrono::seconds(2);
  mock_server server(opts);
  asio::io_context ctx;
  auto cfg = config_for(server, opts);
  auto clk = std::make_shared<manual_clock>();
  cfg.clock = clk;
  cfg.refresh.leeway = std::chrono::seconds(30);  // longer than the token lives
  na::client c(ctx.get_executor(), cfg);
  get_token(ctx, c);
  clk->advance(std::chrono::milliseconds(1200));
  get_token(ctx, c);
  BOOST_TEST(server.stats().refreshes == 1u);    // leeway capped at a fraction of 2 s
  clk->advance(std::chrono::milliseconds(500));  // 1.7 s: inside the capped leeway
  get_token(ctx, c);
  BOOST_TEST(server.stats().refreshes == 2u);
}

// Each client reads its own clock object: moving one client's time leaves another's alone
// (the clock used to be a function pointer, which forced one global clock on every test).
BOOST_AUTO_TEST_CASE(each_client_keeps_its_own_clock) {
  mock_server_options opts;
  opts.ttl = std::chrono::seconds(60);
  mock_server server(opts);
  asio::io_context ctx;
  auto fast = std::make_shared<manual_clock>();
  auto slow = std::make_shared<manual_clock>();
  auto cfg_fast = config_for(server, opts);
  cfg_fast.clock = fast;
  auto cfg_slow = config_for(server, opts);
  cfg_slow.clock = slow;
  na::client a(ctx.get_executor(), cfg_fast);
  na::client b(ctx.get_executor(), cfg_slow);
  get_token(ctx, a);
  const auto b_first = get_token(ctx, b);
  BOOST_TEST(server.stats().refreshes == 2u);
  fast->advance(std::chrono::seconds(61));  // a's token has expired, b's has not
  get_token(ctx, a);
  BOOST_TEST(get_token(ctx, b).serial() == b_first.serial());
  BOOST_TEST(server.stats().refreshes == 3u);
  BOOST_TEST(a.stats().refreshes_succeeded == 2u);
  BOOST_TEST(b.stats().refreshes_succeeded == 1u);
}

// The steady clock itself (no test clock): the fast path reads the coarse monotonic clock,
// which lags by a tick or more, and must still never hand out a token past its refresh point.
// 4 s tokens: the coarse clock decides for the first 2 s, the precise one near the deadline.
BOOST_AUTO_TEST_CASE(on_the_real_clock_no_token_is_served_past_its_refresh_point) {
  mock_server_options opts;
  opts.ttl = std::chrono::seconds(4);  // refreshed when 3 s are used
  mock_server server(opts);
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server, opts));
  int served = 0, late = 0;
  std::set<std::uint64_t> serials;
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(3400);
  while (std::chrono::steady_clock::now() < end) {
    const auto asked = std::chrono::steady_clock::now();
    const auto t = get_token(ctx, c);
    ++served;
    serials.insert(t.serial());
    if (!(asked < t.expires_at() - std::chrono::seconds(1))) ++late;
    std::this_thread::sleep_for(std::chrono::microseconds(300));
  }
  BOOST_TEST(late == 0);
  BOOST_TEST(served > 100);
  BOOST_TEST(serials.size() >= 2u);  // expiry by the clock alone caused a refresh
  BOOST_TEST(server.stats().refreshes == serials.size());
}

BOOST_AUTO_TEST_SUITE_END()
