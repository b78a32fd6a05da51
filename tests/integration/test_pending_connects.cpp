// SPDX-License-Identifier: BSL-1.0
// Sessions and clients destroyed while their connections are still being set up: resolves that
// end after their timeout fired, connects that never complete. Meant for ASan: a handler that
// outlives the connection it captured shows up as a heap-use-after-free; the assertions check
// that every request and token call completes exactly once, with an error, and nothing hangs.
#include "helpers.hpp"
#include "session_requests.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;
using namespace std::chrono_literals;
using asio::ip::tcp;
using boost::system::error_code;

namespace {

// A socket listening on 127.0.0.1 that never accepts: the kernel completes connections into its
// backlog (or, once that is full, leaves them pending), and nothing sent on them is answered.
class silent_listener {
 public:
  silent_listener() : acceptor_(ctx_, {asio::ip::make_address("127.0.0.1"), 0}) {}
  // By name, so that every connection to it starts with a resolve.
  std::string base_url() const {
    return "http://localhost:" + std::to_string(acceptor_.local_endpoint().port());
  }

 private:
  asio::io_context ctx_;  // never run
  tcp::acceptor acceptor_;
};

// The token URL of `server` by name ("localhost"), so that the client's refresh resolves.
std::string token_url_by_name(const mock_server& server) {
  return "http://localhost:" + std::to_string(server.port()) + "/nxsys/oauth/token";
}

// Runs what is ready on `ctx` (one thread: the caller's) until nothing is.
void run_ready(asio::io_context& ctx) {
  ctx.restart();
  while (ctx.poll() != 0) {
  }
}

// What the handlers of a round saw, from whichever thread ran them.
struct outcomes {
  std::mutex mu;
  std::vector<int> calls;  // per operation
  std::vector<error_code> codes;

  explicit outcomes(std::size_t n) : calls(n, 0), codes(n) {}
  void record(std::size_t i, error_code ec) {
    std::lock_guard lk(mu);
    ++calls[i];
    codes[i] = ec;
  }
};

std::uint32_t random_seed() {
  const auto seed = std::random_device{}();
  BOOST_TEST_MESSAGE("seed " << seed);
  return seed;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(pending_connects)

// The order that lost the connection: the resolve's timer fires (its handler queued) and the
// resolve ends just after the session's destruction cancelled the request, so the request
// frees its connection before the timer's handler runs. One thread, stepped by hand: the
// resolve ends on the resolver's thread while this one sleeps, after the destruction queued
// its cancellations, and the timer is seen expired when the io_context runs again.
BOOST_AUTO_TEST_CASE(a_session_destroyed_as_a_timed_out_resolve_ends) {
  mock_server tokens;
  silent_listener api;
  constexpr auto connect_timeout = 5ms;
  for (int round = 0; round < 20; ++round) {
    asio::io_context ctx;
    na::client c(ctx.get_executor(), config_for(tokens));
    get_token(ctx, c);  // the request takes the fast path, straight to its connection's resolve
    na::session_config cfg;
    cfg.base_url = api.base_url();
    cfg.http.connect_timeout = connect_timeout;
    auto s = std::make_unique<na::session>(c, cfg);
    int calls = 0;
    error_code got;
    s->async_request(get("/api/x"), [&](error_code ec, auto) {
      ++calls;
      got = ec;
    });
    run_ready(ctx);  // the request is waiting for its resolve
    s.reset();
    std::this_thread::sleep_for(10 * connect_timeout);  // the resolve ends, the timer expires
    ctx.restart();
    BOOST_REQUIRE(run_bounded(ctx, 1, 10s));
    BOOST_TEST(calls == 1);
    BOOST_TEST(got == asio::error::operation_aborted);
  }
}

// The same order for the token transport's connection: the client destroyed while its refresh
// waits for a resolve whose timer then fires.
BOOST_AUTO_TEST_CASE(a_client_destroyed_as_a_timed_out_resolve_ends) {
  // The answer is late, so that the refresh cannot finish inside run_ready() even when this
  // thread is descheduled long enough there for the resolve, the connect and the write to
  // complete (a loaded machine): the destruction then meets a written request instead, and
  // the caller's outcome is the same.
  mock_server tokens({.latency = 2s});
  constexpr auto connect_timeout = 5ms;
  for (int round = 0; round < 20; ++round) {
    asio::io_context ctx;
    auto cfg = config_for(tokens);
    cfg.token_url = token_url_by_name(tokens);
    cfg.http.connect_timeout = connect_timeout;
    cfg.http.request_timeout = 100ms;  // bounds a written request left to finish
    auto c = std::make_unique<na::client>(ctx.get_executor(), cfg);
    int calls = 0;
    error_code got;
    c->async_token([&](error_code ec, na::access_token) {
      ++calls;
      got = ec;
    });
    run_ready(ctx);  // the refresh is waiting for its resolve
    c.reset();
    std::this_thread::sleep_for(10 * connect_timeout);
    ctx.restart();
    BOOST_REQUIRE(run_bounded(ctx, 1, 10s));
    BOOST_TEST(calls == 1);
    // Timed out: this thread was descheduled inside run_ready() for longer than the connect
    // timeout, again and again, and the refresh gave up before the destruction.
    BOOST_TEST((got == asio::error::operation_aborted || got == na::errc::timeout), got.message());
  }
}

// Many sessions on 3 threads, each destroyed at a random moment while its requests resolve,
// connect (to a listener that never answers) or time out, with connect timeouts of a few
// milliseconds so that timers fire around the destruction.
BOOST_AUTO_TEST_CASE(sessions_destroyed_at_random_moments_on_several_threads) {
  mock_server tokens;
  silent_listener api;
  std::mt19937 rng(random_seed());
  constexpr int sessions = 8, requests = 4;
  std::vector<error_code> unexpected;
  for (int round = 0; round < 12; ++round) {
    asio::io_context ctx;
    na::client c(ctx.get_executor(), config_for(tokens));
    get_token(ctx, c);
    outcomes out(sessions * requests);
    std::vector<std::unique_ptr<na::session>> ss;
    std::vector<std::unique_ptr<asio::steady_timer>> timers;
    for (int i = 0; i < sessions; ++i) {
      na::session_config cfg;
      cfg.base_url = api.base_url();
      cfg.http.connect_timeout = std::chrono::milliseconds(1 + rng() % 4);
      ss.push_back(std::make_unique<na::session>(c, cfg));
      for (int j = 0; j < requests; ++j)
        ss.back()->async_request(get("/api/x"), [&out, k = i * requests + j](error_code ec, auto) {
          out.record(static_cast<std::size_t>(k), ec);
        });
      timers.push_back(
          std::make_unique<asio::steady_timer>(ctx, std::chrono::microseconds(rng() % 6000)));
      timers.back()->async_wait([&ss, i](error_code) { ss[static_cast<std::size_t>(i)].reset(); });
    }
    ctx.restart();
    BOOST_REQUIRE(run_bounded(ctx, 3, 20s));
    for (std::size_t k = 0; k < out.calls.size(); ++k) {
      BOOST_TEST(out.calls[k] == 1);
      const auto& ec = out.codes[k];
      if (ec != asio::error::operation_aborted && ec != na::errc::timeout) unexpected.push_back(ec);
    }
  }
  for (const auto& ec : unexpected) BOOST_ERROR("unexpected outcome: " << ec.message());
}

// Clients on 3 threads, each destroyed at a random moment while its refresh resolves or
// connects, with token() calls waiting; sessions on them destroyed at other random moments.
BOOST_AUTO_TEST_CASE(clients_and_sessions_destroyed_at_random_moments_on_several_threads) {
  mock_server tokens;
  silent_listener api;
  std::mt19937 rng(random_seed());
  constexpr int clients = 6, calls_per_client = 3;
  std::vector<error_code> unexpected;
  for (int round = 0; round < 12; ++round) {
    asio::io_context ctx;
    outcomes tokens_out(clients * calls_per_client), requests_out(clients);
    std::vector<std::unique_ptr<na::client>> cs;
    std::vector<std::unique_ptr<na::session>> ss;
    std::vector<std::unique_ptr<asio::steady_timer>> timers;
    for (int i = 0; i < clients; ++i) {
      auto cfg = config_for(tokens);
      cfg.token_url = token_url_by_name(tokens);
      cfg.http.connect_timeout = std::chrono::milliseconds(1 + rng() % 4);
      cs.push_back(std::make_unique<na::client>(ctx.get_executor(), cfg));
      na::session_config scfg;
      scfg.base_url = api.base_url();
      scfg.http.connect_timeout = std::chrono::milliseconds(1 + rng() % 4);
      ss.push_back(std::make_unique<na::session>(*cs.back(), scfg));
      for (int j = 0; j < calls_per_client; ++j)
        cs.back()->async_token(
            [&tokens_out, k = i * calls_per_client + j](error_code ec, na::access_token) {
              tokens_out.record(static_cast<std::size_t>(k), ec);
            });
      ss.back()->async_request(get("/api/x"), [&requests_out, i](error_code ec, auto) {
        requests_out.record(static_cast<std::size_t>(i), ec);
      });
      const auto at = [&] { return std::chrono::microseconds(rng() % 6000); };
      timers.push_back(std::make_unique<asio::steady_timer>(ctx, at()));
      timers.back()->async_wait([&cs, i](error_code) { cs[static_cast<std::size_t>(i)].reset(); });
      timers.push_back(std::make_unique<asio::steady_timer>(ctx, at()));
      timers.back()->async_wait([&ss, i](error_code) { ss[static_cast<std::size_t>(i)].reset(); });
    }
    ctx.restart();
    BOOST_REQUIRE(run_bounded(ctx, 3, 20s));
    for (std::size_t k = 0; k < tokens_out.calls.size(); ++k) {
      BOOST_TEST(tokens_out.calls[k] == 1);
      const auto& ec = tokens_out.codes[k];
      // A refresh that got through before the destruction hands out its token.
      if (ec && ec != asio::error::operation_aborted && ec != na::errc::timeout)
        unexpected.push_back(ec);
    }
    for (std::size_t k = 0; k < requests_out.calls.size(); ++k) {
      BOOST_TEST(requests_out.calls[k] == 1);
      const auto& ec = requests_out.codes[k];
      if (ec != asio::error::operation_aborted && ec != na::errc::timeout) unexpected.push_back(ec);
    }
  }
  for (const auto& ec : unexpected) BOOST_ERROR("unexpected outcome: " << ec.message());
}

BOOST_AUTO_TEST_SUITE_END()
