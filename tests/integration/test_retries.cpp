// SPDX-License-Identifier: BSL-1.0
// Retries of transient failures (back-off, Retry-After, attempts, deadline) and refresh-ahead.
#include "helpers.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace asio = boost::asio;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;

namespace {

na::client_config retrying(const mock_server& server, unsigned attempts = 4) {
  auto cfg = config_for(server);
  cfg.refresh.retry = {attempts, std::chrono::milliseconds(5), std::chrono::milliseconds(40)};
  return cfg;
}

scripted_failure unavailable(std::string retry_after = {}) {
  scripted_failure f{503, R"({"error":"temporarily_unavailable"})", "application/json", {}};
  if (!retry_after.empty()) f.headers.emplace_back("Retry-After", retry_after);
  return f;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(retries)

BOOST_AUTO_TEST_CASE(transient_answers_are_retried_until_one_succeeds) {
  mock_server server;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), retrying(server));
  server.fail_next(unavailable(), 1);
  server.fail_next({500, "<html>oops</html>", "text/html", {}}, 1);
  server.fail_next({429, "", "text/plain", {}}, 1);
  const auto a = try_token(ctx, c);
  BOOST_TEST(!a.ec, a.what);
  BOOST_TEST(server.stats().requests == 4u);
  const auto s = c.stats();
  BOOST_TEST(s.retries == 3u);
  BOOST_TEST(s.refreshes_started == 1u);
  BOOST_TEST(s.refreshes_failed == 0u);
}

BOOST_AUTO_TEST_CASE(attempts_are_bounded_and_the_last_error_is_reported) {
  mock_server server;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), retrying(server, 3));
  server.fail_next(unavailable(), 10);
  const auto a = try_token(ctx, c);
  BOOST_TEST(a.ec == na::errc::temporarily_unavailable);
  BOOST_TEST(a.diag.http_status == 503);
  BOOST_TEST(server.stats().requests == 3u);
  BOOST_TEST(c.stats().retries == 2u);
}

BOOST_AUTO_TEST_CASE(definite_answers_are_never_retried) {
  for (const char* error : {"invalid_grant", "invalid_client", "unauthorized_client"}) {
    BOOST_TEST_CONTEXT(error) {
      mock_server server;
      asio::io_context ctx;
      na::client c(ctx.get_executor(), retrying(server));
      server.fail_next(
          {400, std::string(R"({"error":")") + error + R"("})", "application/json", {}});
      const auto a = try_token(ctx, c);
      BOOST_TEST(a.ec.message() == std::string(error));
      BOOST_TEST(server.stats().requests == 1u);
      BOOST_TEST(c.stats().retries == 0u);
    }
  }
  // A malformed 200 would come back malformed.
  mock_server server;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), retrying(server));
  server.fail_next({200, "not json", "application/json", {}});
  BOOST_TEST(try_token(ctx, c).ec == na::errc::malformed_response);
  BOOST_TEST(server.stats().requests == 1u);
}

// Retry-After asks for longer than the back-off: the next request waits for it. Only a lower
// bound is checked (the machine may be slow, never early).
BOOST_AUTO_TEST_CASE(retry_after_is_honoured) {
  mock_server server;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), retrying(server));
  server.fail_next(unavailable("1"));
  const auto start = std::chrono::steady_clock::now();
  const auto a = try_token(ctx, c);
  BOOST_TEST(!a.ec, a.what);
  BOOST_TEST((std::chrono::steady_clock::now() - start >= std::chrono::milliseconds(950)));
  BOOST_TEST(server.stats().requests == 2u);
}

// A Retry-After beyond the refresh deadline ends the refresh at once with the server's error.
BOOST_AUTO_TEST_CASE(no_retry_starts_after_the_refresh_deadline) {
  mock_server server;
  asio::io_context ctx;
  auto cfg = retrying(server);
  cfg.refresh.deadline = std::chrono::milliseconds(2000);
  na::client c(ctx.get_executor(), cfg);
  server.fail_next(unavailable("30"));
  const auto a = try_token(ctx, c);
  BOOST_TEST(a.ec == na::errc::temporarily_unavailable);
  BOOST_TEST(a.what.find("refresh deadline") != std::string::npos, a.what);
  BOOST_TEST(server.stats().requests == 1u);
}

// The deadline also cuts a request in progress, whatever the request timeout says, and a
// cancelled waiter does not end the shared refresh for the others.
BOOST_AUTO_TEST_CASE(a_shared_refresh_has_its_own_deadline) {
  mock_server server;
  server.set_latency(std::chrono::milliseconds(3000));
  asio::io_context ctx;
  auto cfg = retrying(server);
  cfg.http.request_timeout = std::chrono::seconds(20);
  cfg.refresh.deadline = std::chrono::milliseconds(300);
  na::client c(ctx.get_executor(), cfg);
  attempt kept, cancelled;
  asio::cancellation_signal signal;
  c.async_token(asio::bind_cancellation_slot(
      signal.slot(), [&](boost::system::error_code ec, na::access_token) { cancelled.ec = ec; }));
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        try {
          co_await c.token();
        } catch (const na::error_with_diagnostics& e) {
          kept.ec = e.code();
        }
      },
      asio::detached);
  asio::post(ctx, [&] { signal.emit(asio::cancellation_type::terminal); });
  BOOST_REQUIRE(run_bounded(ctx, 1, std::chrono::seconds(10)));
  BOOST_TEST(cancelled.ec == asio::error::operation_aborted);
  BOOST_TEST(kept.ec == na::errc::timeout);
  BOOST_TEST(c.stats().retries == 0u);  // no time left for one
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(refresh_ahead)

// ttl 100 s, leeway 30 s capped at 25 %: refresh point at 75 s; refresh-ahead 20 %: from 55 s.
BOOST_AUTO_TEST_CASE(inside_the_window_callers_keep_the_token_while_one_refresh_runs) {
  mock_server_options o;
  o.ttl = std::chrono::seconds(100);
  mock_server server(o);
  server.set_latency(std::chrono::milliseconds(100));
  asio::io_context ctx(2);
  auto cfg = config_for(server);
  auto clk = std::make_shared<manual_clock>();
  cfg.clock = clk;
  cfg.refresh.ahead_fraction = 0.2;
  na::client c(ctx.get_executor(), cfg);
  const auto first = get_token(ctx, c);
  clk->advance(std::chrono::seconds(50));
  BOOST_TEST(get_token(ctx, c).serial() == first.serial());  // before the window: nothing
  BOOST_TEST(server.stats().refreshes == 1u);

  clk->advance(std::chrono::seconds(10));  // 60 s: inside the window
  std::atomic<int> same{0};
  for (int i = 0; i < 1000; ++i)
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          if ((co_await c.token()).serial() == first.serial()) ++same;
        },
        asio::detached);
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 2));
  BOOST_TEST(same.load() == 1000);             // nobody waited for the refresh
  BOOST_TEST(server.stats().refreshes == 2u);  // one background refresh for all of them
  const auto s = c.stats();
  BOOST_TEST(s.refreshes_ahead == 1u);
  BOOST_TEST(s.stale_tokens_served >= 1000u);
  BOOST_TEST(s.max_waiters_per_refresh == 1u);  // only the very first call to get_token waited
  BOOST_TEST(get_token(ctx, c).serial() == first.serial() + 1);  // the new one, at once
  BOOST_TEST(server.stats().refreshes == 2u);
}

BOOST_AUTO_TEST_CASE(a_failed_background_refresh_keeps_serving_and_tries_again_later) {
  mock_server_options o;
  o.ttl = std::chrono::seconds(100);
  mock_server server(o);
  asio::io_context ctx;
  auto cfg = config_for(server);
  auto clk = std::make_shared<manual_clock>();
  cfg.clock = clk;
  cfg.refresh.ahead_fraction = 0.2;
  cfg.refresh.min_retry_spacing = std::chrono::seconds(2);
  na::client c(ctx.get_executor(), cfg);
  const auto first = get_token(ctx, c);
  clk->advance(std::chrono::seconds(60));
  server.fail_next({503, R"({"error":"temporarily_unavailable"})", "application/json", {}});
  BOOST_TEST(get_token(ctx, c).serial() == first.serial());  // starts the background refresh
  BOOST_TEST(c.stats().refreshes_failed == 1u);
  BOOST_TEST(get_token(ctx, c).serial() == first.serial());  // still served, no new attempt
  BOOST_TEST(server.stats().requests == 2u);
  clk->advance(std::chrono::seconds(2));                     // the spacing has passed
  BOOST_TEST(get_token(ctx, c).serial() == first.serial());  // served, and it tries again
  BOOST_TEST(server.stats().refreshes == 2u);
  BOOST_TEST(get_token(ctx, c).serial() == first.serial() + 1);
  BOOST_TEST(c.stats().refreshes_ahead == 2u);
}

BOOST_AUTO_TEST_CASE(zero_disables_it) {
  mock_server_options o;
  o.ttl = std::chrono::seconds(100);
  mock_server server(o);
  asio::io_context ctx;
  auto cfg = config_for(server);
  auto clk = std::make_shared<manual_clock>();
  cfg.clock = clk;
  cfg.refresh.ahead_fraction = 0;
  na::client c(ctx.get_executor(), cfg);
  const auto first = get_token(ctx, c);
  clk->advance(std::chrono::seconds(74));
  BOOST_TEST(get_token(ctx, c).serial() == first.serial());
  BOOST_TEST(server.stats().refreshes == 1u);
  BOOST_TEST(c.stats().refreshes_ahead == 0u);
  clk->advance(std::chrono::seconds(2));  // past the refresh point: the caller waits
  BOOST_TEST(get_token(ctx, c).serial() == first.serial() + 1);
}

BOOST_AUTO_TEST_SUITE_END()
