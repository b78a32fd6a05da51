// SPDX-License-Identifier: BSL-1.0
// The client's single-flight semantics under real concurrency: many coroutines on several
// threads against the mock server. Run under TSan in CI.
#include "helpers.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace asio = boost::asio;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;
using namespace asio::experimental::awaitable_operators;
using boost::system::error_code;

namespace {

// Collects what every waiter received; each waiter must report exactly once.
struct tally {
  std::mutex mu;
  std::set<std::string> values;
  std::map<std::string, int> errors;  // error message -> count
  std::atomic<int> completions{0};

  void ok(std::string_view v) {
    std::lock_guard lk(mu);
    values.emplace(v);
    ++completions;
  }
  void failed(const error_code& ec) {
    std::lock_guard lk(mu);
    ++errors[ec.message()];
    ++completions;
  }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(concurrent_refresh)

// Semantic 1.
BOOST_AUTO_TEST_CASE(ten_thousand_waiters_on_four_threads_cause_one_refresh) {
  mock_server_options opts;
  opts.latency = std::chrono::milliseconds(300);
  mock_server server(opts);
  asio::io_context ctx(4);
  na::client c(ctx.get_executor(), config_for(server, opts));
  constexpr int n = 10'000;
  tally t;
  for (int i = 0; i < n; ++i) {
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          auto tok = co_await c.token();
          t.ok(tok.value());
        },
        asio::detached);
  }
  BOOST_REQUIRE(run_bounded(ctx, 4));
  BOOST_TEST(t.completions.load() == n);
  BOOST_TEST(t.values.size() == 1u);
  BOOST_TEST(*t.values.begin() == server.last_access_token());
  BOOST_TEST(server.stats().refreshes == 1u);
  BOOST_TEST(server.stats().requests == 1u);
  BOOST_TEST(server.stats().max_in_flight == 1u);
  const auto s = c.stats();
  BOOST_TEST(s.refreshes_started == 1u);
  BOOST_TEST(s.waiters_coalesced + 1 + 0 <= static_cast<std::uint64_t>(n));
  BOOST_TEST(s.max_waiters_per_refresh > 1u);
}

BOOST_AUTO_TEST_CASE(calls_from_many_plain_threads_share_one_refresh) {
  mock_server_options opts;
  opts.latency = std::chrono::milliseconds(200);
  mock_server server(opts);
  asio::io_context ctx(2);
  na::client c(ctx.get_executor(), config_for(server, opts));
  auto guard = asio::make_work_guard(ctx);
  std::vector<std::thread> runners;
  for (int i = 0; i < 2; ++i) runners.emplace_back([&] { ctx.run(); });
  tally t;
  std::vector<std::thread> callers;
  for (int i = 0; i < 8; ++i)
    callers.emplace_back([&] {
      for (int j = 0; j < 250; ++j)
        c.async_token(
            [&](error_code ec, na::access_token tok) { ec ? t.failed(ec) : t.ok(tok.value()); });
    });
  for (auto& th : callers) th.join();
  BOOST_TEST(eventually([&] { return t.completions.load() == 2000; }));
  guard.reset();
  for (auto& th : runners) th.join();
  BOOST_TEST(t.values.size() == 1u);
  BOOST_TEST(server.stats().refreshes == 1u);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(fast_path)

// Semantic 2: a fresh token costs no I/O and never takes the client's lock.
BOOST_AUTO_TEST_CASE(fresh_reads_on_many_threads_do_no_io_and_take_no_shared_lock) {
  mock_server server;
  asio::io_context ctx(4);
  na::client c(ctx.get_executor(), config_for(server));
  asio::co_spawn(
      ctx, [&]() -> asio::awaitable<void> { co_await c.token(); }, asio::detached);
  BOOST_REQUIRE(run_bounded(ctx, 1));
  const auto before = c.stats();
  const auto requests = server.stats().requests;

  std::atomic<int> reads{0};
  for (int i = 0; i < 4; ++i) {
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          for (int j = 0; j < 10'000; ++j) {
            auto tok = co_await c.token();
            if (!tok.value().empty()) ++reads;
          }
        },
        asio::detached);
  }
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 4));
  BOOST_TEST(reads.load() == 40'000);
  BOOST_TEST(server.stats().requests == requests);
  const auto after = c.stats();
  BOOST_TEST(after.slow_path_calls == before.slow_path_calls);
  BOOST_TEST(after.refreshes_started == 1u);
}

BOOST_AUTO_TEST_CASE(readers_of_a_fresh_client_never_wait_for_another_refresh) {
  mock_server_options slow;
  slow.latency = std::chrono::milliseconds(1500);
  mock_server slow_server(slow);
  mock_server fast_server;
  asio::io_context ctx(2);
  na::client fresh(ctx.get_executor(), config_for(fast_server));
  na::client stale(ctx.get_executor(), config_for(slow_server, slow));
  asio::co_spawn(
      ctx, [&]() -> asio::awaitable<void> { co_await fresh.token(); }, asio::detached);
  BOOST_REQUIRE(run_bounded(ctx, 1));

  ctx.restart();
  std::atomic<int> stale_done{0}, fresh_reads{0};
  std::atomic<bool> fresh_finished_first{false};
  for (int i = 0; i < 100; ++i)
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          co_await stale.token();
          ++stale_done;
        },
        asio::detached);
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        for (int j = 0; j < 1000; ++j) {
          co_await fresh.token();
          ++fresh_reads;
        }
        fresh_finished_first = stale_done.load() == 0;
      },
      asio::detached);
  BOOST_REQUIRE(run_bounded(ctx, 2));
  BOOST_TEST(fresh_reads.load() == 1000);
  BOOST_TEST(fresh_finished_first.load());  // did not wait for the 1.5 s refresh in flight
  BOOST_TEST(stale_done.load() == 100);
  BOOST_TEST(slow_server.stats().refreshes == 1u);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(cancellation)

// Semantic 3.
BOOST_AUTO_TEST_CASE(cancelling_one_waiter_completes_only_it_and_the_refresh_goes_on) {
  mock_server_options opts;
  opts.latency = std::chrono::milliseconds(500);
  mock_server server(opts);
  asio::io_context ctx(4);
  na::client c(ctx.get_executor(), config_for(server, opts));
  tally others;
  constexpr int n = 1000;
  for (int i = 0; i < n; ++i)
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          auto [ec, tok] = co_await c.async_token(asio::as_tuple(asio::use_awaitable));
          ec ? others.failed(ec) : others.ok(tok.value());
        },
        asio::detached);

  // A waiter with a timeout through awaitable operators (its cancellation slot).
  auto strand = asio::make_strand(ctx);
  std::atomic<int> timeout_won{0}, timeout_completions{0};
  asio::co_spawn(
      strand,
      [&]() -> asio::awaitable<void> {
        asio::steady_timer timer(co_await asio::this_coro::executor, std::chrono::milliseconds(50));
        auto r =
            co_await (c.async_token(asio::use_awaitable) || timer.async_wait(asio::use_awaitable));
        ++timeout_completions;
        if (r.index() == 1) ++timeout_won;
      },
      asio::detached);

  // A waiter cancelled through an explicit cancellation signal, emitted on its strand.
  auto strand2 = asio::make_strand(ctx);
  asio::cancellation_signal sig;
  std::atomic<int> signalled_calls{0};
  error_code signalled_ec;
  asio::post(strand2, [&] {
    c.async_token(asio::bind_cancellation_slot(
        sig.slot(), asio::bind_executor(strand2, [&](error_code ec, na::access_token) {
          signalled_ec = ec;
          ++signalled_calls;
        })));
  });
  asio::steady_timer later(strand2, std::chrono::milliseconds(100));
  later.async_wait([&](error_code) { sig.emit(asio::cancellation_type::terminal); });

  BOOST_REQUIRE(run_bounded(ctx, 4));
  BOOST_TEST(timeout_completions.load() == 1);
  BOOST_TEST(timeout_won.load() == 1);
  BOOST_TEST(signalled_calls.load() == 1);
  BOOST_TEST(signalled_ec == asio::error::operation_aborted);
  BOOST_TEST(others.completions.load() == n);
  BOOST_TEST(others.errors.empty());
  BOOST_TEST(others.values.size() == 1u);
  BOOST_TEST(server.stats().refreshes == 1u);
  BOOST_TEST(c.stats().waiters_cancelled == 2u);
}

BOOST_AUTO_TEST_CASE(when_every_waiter_cancels_the_refresh_still_fills_the_cache) {
  mock_server_options opts;
  opts.latency = std::chrono::milliseconds(300);
  mock_server server(opts);
  asio::io_context ctx(2);
  na::client c(ctx.get_executor(), config_for(server, opts));
  auto strand = asio::make_strand(ctx);
  std::atomic<int> aborted{0};
  asio::co_spawn(
      strand,
      [&]() -> asio::awaitable<void> {
        asio::steady_timer timer(co_await asio::this_coro::executor, std::chrono::milliseconds(20));
        auto r =
            co_await (c.async_token(asio::use_awaitable) || timer.async_wait(asio::use_awaitable));
        if (r.index() == 1) ++aborted;
      },
      asio::detached);
  BOOST_REQUIRE(run_bounded(ctx, 2));
  BOOST_TEST(aborted.load() == 1);
  BOOST_TEST(server.stats().refreshes == 1u);
  BOOST_TEST(c.stats().refreshes_succeeded == 1u);
  const auto requests = server.stats().requests;
  ctx.restart();
  asio::co_spawn(
      ctx, [&]() -> asio::awaitable<void> { co_await c.token(); }, asio::detached);
  BOOST_REQUIRE(run_bounded(ctx, 2));
  BOOST_TEST(server.stats().requests == requests);  // served from the cache
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(failure)

// Semantic 4.
BOOST_AUTO_TEST_CASE(a_failed_refresh_completes_every_waiter_once_with_the_same_error) {
  mock_server_options opts;
  opts.latency = std::chrono::milliseconds(300);
  mock_server server(opts);
  server.fail_next({503,
                    R"({"error":"temporarily_unavailable","error_description":"down"})",
                    "application/json",
                    {}});
  asio::io_context ctx(4);
  na::client c(ctx.get_executor(), config_for(server, opts));
  constexpr int n = 2000;
  tally t;
  std::atomic<int> with_diag{0};
  for (int i = 0; i < n; ++i)
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          try {
            co_await c.token();
            t.ok("unexpected success");
          } catch (const na::error_with_diagnostics& e) {
            if (e.get_diagnostics().server_description == "down") ++with_diag;
            t.failed(e.code());
          }
        },
        asio::detached);
  BOOST_REQUIRE(run_bounded(ctx, 4));
  BOOST_TEST(t.completions.load() == n);
  BOOST_TEST(t.values.empty());
  BOOST_REQUIRE(t.errors.size() == 1u);
  BOOST_TEST(t.errors.begin()->first ==
             make_error_code(na::errc::temporarily_unavailable).message());
  BOOST_TEST(with_diag.load() == n);
  BOOST_TEST(server.stats().requests == 1u);
  BOOST_TEST(server.stats().max_in_flight == 1u);

  // The next call starts a fresh attempt, again exactly one for many callers.
  tally again;
  ctx.restart();
  for (int i = 0; i < n; ++i)
    asio::co_spawn(
        ctx, [&]() -> asio::awaitable<void> { again.ok((co_await c.token()).value()); },
        asio::detached);
  BOOST_REQUIRE(run_bounded(ctx, 4));
  BOOST_TEST(again.completions.load() == n);
  BOOST_TEST(again.values.size() == 1u);
  BOOST_TEST(server.stats().requests == 2u);
  BOOST_TEST(server.stats().max_in_flight == 1u);
  BOOST_TEST(c.stats().refreshes_failed == 1u);
  BOOST_TEST(c.stats().refreshes_succeeded == 1u);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(destruction)

// Semantic 5.
BOOST_AUTO_TEST_CASE(destroying_the_client_aborts_suspended_waiters) {
  mock_server_options opts;
  opts.latency = std::chrono::milliseconds(5000);
  mock_server server(opts);
  asio::io_context ctx(4);
  auto c = std::make_unique<na::client>(ctx.get_executor(), config_for(server, opts));
  auto guard = asio::make_work_guard(ctx);
  std::vector<std::thread> runners;
  for (int i = 0; i < 4; ++i) runners.emplace_back([&] { ctx.run(); });

  constexpr int n = 1000;
  tally t;
  for (int i = 0; i < n; ++i)
    asio::co_spawn(
        ctx,
        [&, cl = c.get()]() -> asio::awaitable<void> {
          try {
            co_await cl->token();
            t.ok("unexpected");
          } catch (const boost::system::system_error& e) {
            t.failed(e.code());
          }
        },
        asio::detached);
  BOOST_REQUIRE(eventually([&] {
    auto s = c->stats();
    return s.waiters_coalesced + s.refreshes_started == static_cast<std::uint64_t>(n);
  }));
  BOOST_REQUIRE(eventually([&] { return server.stats().requests == 1u; }));
  const auto start = std::chrono::steady_clock::now();
  c.reset();
  BOOST_TEST(eventually([&] { return t.completions.load() == n; }, std::chrono::seconds(4)));
  BOOST_TEST(
      (std::chrono::steady_clock::now() - start < std::chrono::seconds(4)));  // not the 5 s refresh
  guard.reset();
  for (auto& th : runners) th.join();
  BOOST_REQUIRE(t.errors.size() == 1u);
  BOOST_TEST(t.errors.begin()->first == error_code(asio::error::operation_aborted).message());
  BOOST_TEST(t.errors.begin()->second == n);
}

BOOST_AUTO_TEST_CASE(a_deferred_call_launched_after_destruction_is_aborted) {
  mock_server server;
  asio::io_context ctx;
  auto c = std::make_unique<na::client>(ctx.get_executor(), config_for(server));
  auto op = c->async_token(asio::deferred);
  c.reset();
  error_code got;
  std::move(op)([&](error_code ec, na::access_token) { got = ec; });
  BOOST_REQUIRE(run_bounded(ctx, 1));
  BOOST_TEST(got == asio::error::operation_aborted);
  BOOST_TEST(server.stats().requests == 0u);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(executors)

// Semantic 6.
BOOST_AUTO_TEST_CASE(each_waiter_resumes_on_its_own_executor) {
  mock_server_options opts;
  opts.latency = std::chrono::milliseconds(200);
  mock_server server(opts);
  asio::io_context client_ctx, ctx_a(2), ctx_b;
  na::client c(client_ctx.get_executor(), config_for(server, opts));
  std::vector<asio::strand<asio::io_context::executor_type>> strands;
  for (int i = 0; i < 8; ++i) strands.push_back(asio::make_strand(ctx_a));

  std::atomic<int> right_place{0}, wrong_place{0};
  for (int round = 0; round < 50; ++round) {
    for (auto& s : strands)
      asio::co_spawn(
          s,
          [&, s]() -> asio::awaitable<void> {
            co_await c.token();
            (s.running_in_this_thread() ? right_place : wrong_place)++;
          },
          asio::detached);
    asio::co_spawn(
        ctx_b,
        [&]() -> asio::awaitable<void> {
          co_await c.token();
          (ctx_b.get_executor().running_in_this_thread() ? right_place : wrong_place)++;
        },
        asio::detached);
    // A plain callback bound to nothing runs on the client's executor.
    c.async_token([&](error_code, na::access_token) {
      (client_ctx.get_executor().running_in_this_thread() ? right_place : wrong_place)++;
    });
  }
  std::thread a1([&] { run_bounded(ctx_a, 2); });
  std::thread b([&] { run_bounded(ctx_b, 1); });
  BOOST_REQUIRE(run_bounded(client_ctx, 1));
  a1.join();
  b.join();
  BOOST_TEST(right_place.load() == 50 * 10);
  BOOST_TEST(wrong_place.load() == 0);
  BOOST_TEST(server.stats().refreshes == 1u);
}

BOOST_AUTO_TEST_SUITE_END()
