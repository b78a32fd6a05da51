// SPDX-License-Identifier: BSL-1.0
// nxsys::auth::session shared by coroutines on several threads (run under TSan): one refresh
// for a storm of 401s, and cancellations and destruction racing with every phase of requests.
#include "helpers.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <functional>
#include <random>
#include <vector>

namespace asio = boost::asio;
namespace http = boost::beast::http;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;
using namespace std::chrono_literals;
using boost::system::error_code;

namespace {

na::session_config session_config_for(const mock_server& api, std::size_t max_connections) {
  na::session_config cfg;
  cfg.base_url = api.base_url();
  cfg.max_connections = max_connections;
  return cfg;
}

na::session::request_type get(const std::string& target) {
  return {http::verb::get, target, 11};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(session_threads)

// 4 threads × 1,000 coroutines, each sending 2 requests after the API revoked the token: every
// request is answered 200, and the token endpoint sees one refresh for the revocation.
BOOST_AUTO_TEST_CASE(a_storm_of_401s_on_four_threads_causes_one_refresh) {
  mock_server_options opts;
  opts.threads = 2;
  mock_server server(opts);
  asio::io_context ctx(4);
  na::client c(ctx.get_executor(), config_for(server));
  na::session s(c, session_config_for(server, 32));
  run_coro(ctx, [&]() -> asio::awaitable<void> { co_await s.request(get("/api/warm-up")); });
  server.revoke_access_tokens();

  constexpr int coroutines = 4000, each = 2;
  std::atomic<int> ok{0}, bad{0};
  for (int i = 0; i < coroutines; ++i) {
    asio::co_spawn(
        asio::make_strand(ctx),
        [&, i]() -> asio::awaitable<void> {
          for (int k = 0; k < each; ++k) {
            auto [ec, res] = co_await s.async_request(get("/api/orders/" + std::to_string(i)),
                                                      asio::as_tuple(asio::use_awaitable));
            (!ec && res.result_int() == 200u ? ok : bad)++;
          }
        },
        asio::detached);
  }
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 4, 120s));
  BOOST_TEST(ok.load() == coroutines * each);
  BOOST_TEST(bad.load() == 0);
  const auto ms = server.stats();
  BOOST_TEST(ms.refreshes == 2u);
  const auto st = s.stats();
  BOOST_TEST(st.tokens_invalidated == 1u);
  BOOST_TEST(st.unauthorized_retries == ms.api_unauthorized);
  BOOST_TEST(st.connections_opened <= 32u);
  BOOST_TEST(st.responses == 1u + coroutines * each);
  BOOST_TEST(c.stats().refreshes_started == 2u);
}

// Requests cancelled at random moments (waiting for a token, for a connection, for the
// answer) from their own strands on 4 threads, then the session destroyed under the rest:
// every request completes exactly once, and the counters add up.
BOOST_AUTO_TEST_CASE(cancellation_and_destruction_race_with_every_phase) {
  mock_server_options opts;
  opts.threads = 2;
  opts.latency = 20ms;  // the first token takes a while: requests queue for it
  mock_server server(opts);
  asio::io_context ctx(4);
  na::client c(ctx.get_executor(), config_for(server));
  auto s = std::make_unique<na::session>(c, session_config_for(server, 8));

  constexpr int requests = 3000;
  std::atomic<int> completed{0}, aborted{0}, answered{0}, other{0};
  // Each request has its strand, its signal and its timer, which emits from that strand (as
  // Asio requires) after a random delay: before the token, in the queue for a connection, or
  // during the exchange. A third are never cancelled.
  struct canceller {
    explicit canceller(asio::io_context& ctx) : strand(asio::make_strand(ctx)), timer(strand) {}
    asio::strand<asio::io_context::executor_type> strand;
    asio::steady_timer timer;
    asio::cancellation_signal sig;
  };
  std::vector<std::unique_ptr<canceller>> cancellers;
  std::mt19937 rng(42);
  for (int i = 0; i < requests; ++i) {
    auto& k = *cancellers.emplace_back(std::make_unique<canceller>(ctx));
    if (i % 3 != 0) {
      k.timer.expires_after(std::chrono::microseconds(rng() % 60'000));
      k.timer.async_wait([&k, i](error_code e) {
        if (!e)
          k.sig.emit(i % 2 ? asio::cancellation_type::terminal : asio::cancellation_type::partial);
      });
    }
    s->async_request(
        get("/api/x"),
        asio::bind_cancellation_slot(
            k.sig.slot(), asio::bind_executor(k.strand, [&, &k = k](error_code ec, auto res) {
              k.timer.cancel();
              completed++;
              if (!ec && res.result_int() == 200u) {
                answered++;
              } else if (ec == asio::error::operation_aborted) {
                aborted++;
              } else {
                other++;
              }
            })));
  }
  // The session goes away once some requests were answered, with the others in flight or
  // queued.
  asio::steady_timer poll(ctx);
  na::session_stats before_destruction;
  std::function<void()> watch = [&] {
    poll.expires_after(1ms);
    poll.async_wait([&](error_code) {
      if (answered.load() < 50 && completed.load() < requests) return watch();
      before_destruction = s->stats();
      s.reset();
    });
  };
  watch();
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 4, 120s));
  BOOST_TEST(completed.load() == requests);
  BOOST_TEST(other.load() == 0);
  BOOST_TEST(answered.load() + aborted.load() == requests);
  BOOST_TEST(aborted.load() > 0);
  BOOST_TEST(answered.load() > 0);
  BOOST_TEST(before_destruction.requests == static_cast<std::uint64_t>(requests));
  BOOST_TEST(server.stats().refreshes == 1u);
}

BOOST_AUTO_TEST_SUITE_END()
