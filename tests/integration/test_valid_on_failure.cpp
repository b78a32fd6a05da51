// SPDX-License-Identifier: BSL-1.0
// A failed refresh while the current token is still valid: callers keep getting that token
// (client_config::serve_valid_token_on_failure), the failure is reported, and the next attempt
// runs in the background after min_retry_spacing.
#include "helpers.hpp"

namespace asio = boost::asio;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;
using namespace std::chrono_literals;

namespace {

scripted_failure unavailable() {
  return {503, R"({"error":"temporarily_unavailable"})", "application/json", {}};
}

na::client_config clocked(const mock_server& server, std::shared_ptr<const manual_clock> clk) {
  auto cfg = config_for(server);
  cfg.clock = std::move(clk);
  cfg.refresh.min_retry_spacing = 1s;
  return cfg;  // 100 s tokens: refresh point at 75 s (leeway 25 %), served until 99.5 s
}

}  // namespace

BOOST_AUTO_TEST_SUITE(valid_token_on_failure)

BOOST_AUTO_TEST_CASE(the_valid_token_is_served_while_refreshes_fail) {
  mock_server_options opts;
  opts.ttl = 100s;
  mock_server server(opts);
  asio::io_context ctx;
  auto clk = std::make_shared<manual_clock>();
  na::client c(ctx.get_executor(), clocked(server, clk));
  const auto first = get_token(ctx, c);

  clk->advance(80s);  // past the refresh point, 20 s of validity left
  server.fail_next(unavailable(), 3);
  auto a = try_token(ctx, c);
  BOOST_TEST(!a.ec);
  BOOST_TEST(a.token.serial() == first.serial());
  auto s = c.stats();
  BOOST_TEST(s.refreshes_failed == 1u);
  BOOST_TEST(s.valid_tokens_served_after_failure == 1u);

  // Within the spacing: the token again, no request.
  auto b = try_token(ctx, c);
  BOOST_TEST(b.token.serial() == first.serial());
  BOOST_TEST(server.stats().errors == 1u);

  // After the spacing: the token at once, and a background attempt (failing again).
  clk->advance(2s);
  auto d = try_token(ctx, c);
  BOOST_TEST(!d.ec);
  BOOST_TEST(d.token.serial() == first.serial());
  BOOST_TEST(eventually([&] { return c.stats().refreshes_failed == 2u; }));
  BOOST_TEST(server.stats().errors == 2u);

  // The last half-second of the token is not handed out: the failure is.
  clk->advance(18s);  // 100 s: expired
  auto e = try_token(ctx, c);
  BOOST_TEST(e.ec == na::errc::temporarily_unavailable);
  BOOST_TEST(server.stats().errors == 3u);

  // The server is back: a new token.
  clk->advance(2s);
  auto f = try_token(ctx, c);
  BOOST_TEST(!f.ec);
  BOOST_TEST(f.token.serial() == first.serial() + 1);
}

BOOST_AUTO_TEST_CASE(waiters_of_the_failed_refresh_get_the_valid_token) {
  mock_server_options opts;
  opts.ttl = 100s;
  opts.latency = 100ms;
  mock_server server(opts);
  asio::io_context ctx;
  auto clk = std::make_shared<manual_clock>();
  na::client c(ctx.get_executor(), clocked(server, clk));
  const auto first = get_token(ctx, c);
  clk->advance(80s);
  server.fail_next(unavailable(), 1);
  int same = 0, other = 0;
  for (int i = 0; i < 100; ++i)
    c.async_token([&](boost::system::error_code ec, na::access_token t) {
      (!ec && t.serial() == first.serial() ? same : other)++;
    });
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 1));
  BOOST_TEST(same == 100);
  BOOST_TEST(other == 0);
  BOOST_TEST(c.stats().valid_tokens_served_after_failure == 100u);
  BOOST_TEST(server.stats().errors == 1u);
}

BOOST_AUTO_TEST_CASE(switched_off_the_failure_is_the_answer) {
  mock_server_options opts;
  opts.ttl = 100s;
  mock_server server(opts);
  asio::io_context ctx;
  auto clk = std::make_shared<manual_clock>();
  auto cfg = clocked(server, clk);
  cfg.refresh.serve_valid_token_on_failure = false;
  na::client c(ctx.get_executor(), cfg);
  get_token(ctx, c);
  clk->advance(80s);
  server.fail_next(unavailable(), 1);
  BOOST_TEST(try_token(ctx, c).ec == na::errc::temporarily_unavailable);
  BOOST_TEST(c.stats().valid_tokens_served_after_failure == 0u);
}

BOOST_AUTO_TEST_SUITE_END()
