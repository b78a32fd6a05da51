// SPDX-License-Identifier: BSL-1.0
// Many clients read in turn by several threads (a gateway holding one client per credential):
// each thread keeps its own copy of every client's token, none of which may outlive a refresh.
// Run under TSan in CI.
#include "helpers.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;

namespace {

// `n` clients of `server` on `ctx`, all on the clock `clk`.
std::vector<na::client> make_clients(std::size_t n, asio::io_context& ctx,
                                     const mock_server& server,
                                     const std::shared_ptr<manual_clock>& clk) {
  std::vector<na::client> cs;
  cs.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    auto cfg = config_for(server);
    cfg.clock = clk;
    cs.emplace_back(ctx.get_executor(), std::move(cfg));
  }
  return cs;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(many_clients)

// Every thread reads every client in each phase; between phases every token is replaced:
// invalidated (as after a 401: its refresh point still hours away, so only the publication
// tells a thread's copy is old), or past its refresh point on the shared clock. A thread that
// kept a copy of an old token would hand out a token of the previous phase.
BOOST_AUTO_TEST_CASE(clients_read_in_turn_on_four_threads_refresh_once_per_change_each) {
  constexpr std::size_t clients = 200;
  constexpr int threads = 4, phases = 4, rounds = 5;
  mock_server server;
  auto clk = std::make_shared<manual_clock>();
  asio::io_context ctx(threads);
  auto cs = make_clients(clients, ctx, server, clk);
  for (int phase = 1; phase <= phases; ++phase) {
    std::atomic<std::uint64_t> reads{0}, wrong_serial{0}, empty{0};
    for (int t = 0; t < threads; ++t) {
      asio::co_spawn(
          ctx,
          [&, t]() -> asio::awaitable<void> {
            std::size_t i = static_cast<std::size_t>(t) * clients / threads;
            for (std::size_t n = 0; n < rounds * clients; ++n) {
              if (++i == clients) i = 0;
              const auto tok = co_await cs[i].token();
              ++reads;
              if (tok.value().empty()) ++empty;
              // serial: which refresh of this client produced the token.
              if (tok.serial() != static_cast<std::uint64_t>(phase)) ++wrong_serial;
            }
          },
          asio::detached);
    }
    ctx.restart();
    BOOST_REQUIRE(run_bounded(ctx, threads));
    BOOST_TEST(reads.load() == static_cast<std::uint64_t>(threads) * rounds * clients);
    BOOST_TEST(empty.load() == 0u);
    BOOST_TEST(wrong_serial.load() == 0u, "phase " << phase);
    BOOST_TEST(server.stats().refreshes == phase * clients);
    if (phase % 2 == 1) {
      for (auto& c : cs) c.invalidate();
    } else {
      clk->advance(std::chrono::hours(1));  // the mock's tokens live 3600 s
    }
  }
  for (const auto& c : cs) {
    BOOST_TEST(c.stats().refreshes_started == static_cast<std::uint64_t>(phases));
  }
}

// Threads come and go (a pool resized, short-lived threads): each new thread reads through
// slots that exited threads left behind, and must find them current or renew them.
BOOST_AUTO_TEST_CASE(threads_that_come_and_go_never_see_a_stale_copy) {
  constexpr std::size_t clients = 20;
  constexpr int waves = 4, threads_per_wave = 12;
  mock_server server;
  auto clk = std::make_shared<manual_clock>();
  asio::io_context client_ctx(1);
  auto cs = make_clients(clients, client_ctx, server, clk);
  auto work = asio::make_work_guard(client_ctx);
  std::thread runner([&] { client_ctx.run(); });
  std::atomic<std::uint64_t> wrong{0}, reads{0};
  for (int wave = 1; wave <= waves; ++wave) {
    std::vector<std::thread> ts;
    ts.reserve(threads_per_wave);
    for (int t = 0; t < threads_per_wave; ++t) {
      ts.emplace_back([&, wave] {
        // Plain threads outside Asio: async_token with use_future.
        for (std::size_t i = 0; i < clients; ++i) {
          try {
            const auto tok = cs[i].async_token(asio::use_future).get();
            ++reads;
            if (tok.serial() != static_cast<std::uint64_t>(wave)) ++wrong;
          } catch (...) {
            ++wrong;
          }
        }
      });
    }
    for (auto& t : ts) t.join();
    for (auto& c : cs) c.invalidate();
  }
  work.reset();
  runner.join();
  BOOST_TEST(reads.load() == static_cast<std::uint64_t>(waves) * threads_per_wave * clients);
  BOOST_TEST(wrong.load() == 0u);
  BOOST_TEST(server.stats().refreshes == waves * clients);
}

BOOST_AUTO_TEST_SUITE_END()
