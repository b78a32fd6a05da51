// SPDX-License-Identifier: BSL-1.0
// The mock server's reuse grace (as Auth0's reuse interval, Okta's grace period): a refresh
// token replaced by a rotation is accepted for a while and answered with the current chain.
#include "helpers.hpp"

namespace asio = boost::asio;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;
using namespace std::chrono_literals;

BOOST_AUTO_TEST_SUITE(reuse_grace)

BOOST_AUTO_TEST_CASE(the_replaced_token_works_within_the_grace_and_burns_the_chain_after) {
  mock_server_options opts;
  opts.rotate = true;
  opts.reuse_detection = true;
  opts.reuse_grace = 400ms;
  mock_server server(opts);
  asio::io_context ctx;
  na::client first(ctx.get_executor(), config_for(server, opts));
  get_token(ctx, first);  // rotates refresh-0 away
  const auto current = server.current_refresh_token();
  BOOST_TEST(current != opts.initial_refresh_token);

  // A replica that died before storing the rotation still holds refresh-0: within the grace
  // it gets a token and the current refresh token, and the chain does not move.
  na::client late(ctx.get_executor(), config_for(server, opts));
  auto a = try_token(ctx, late);
  BOOST_TEST(!a.ec);
  BOOST_TEST(server.stats().grace_refreshes == 1u);
  BOOST_TEST(server.current_refresh_token() == current);
  BOOST_TEST(server.stats().reuse_detected == 0u);
  BOOST_TEST(late.stats().refresh_tokens_rotated == 1u);  // it took `current` from the answer

  // After the grace the replaced token is reuse: the chain is revoked.
  std::this_thread::sleep_for(500ms);
  na::client too_late(ctx.get_executor(), config_for(server, opts));
  auto b = try_token(ctx, too_late);
  BOOST_TEST(b.ec == na::errc::invalid_grant);
  BOOST_TEST(b.diag.server_description.find("reuse detected") != std::string::npos);
  BOOST_TEST(server.stats().reuse_detected == 1u);
}

BOOST_AUTO_TEST_CASE(the_smallest_gap_between_refreshes_is_measured) {
  mock_server server;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server));
  get_token(ctx, c);
  BOOST_TEST(server.stats().min_refresh_gap_ms == 0u);
  std::this_thread::sleep_for(150ms);  // a lower bound on the first gap
  c.invalidate();
  get_token(ctx, c);
  const auto first_gap = server.stats().min_refresh_gap_ms;
  BOOST_TEST(first_gap >= 150u);
  c.invalidate();
  get_token(ctx, c);  // at once: the minimum can only go down
  BOOST_TEST(server.stats().refreshes == 3u);
  BOOST_TEST(server.stats().min_refresh_gap_ms <= first_gap);
}

BOOST_AUTO_TEST_SUITE_END()
