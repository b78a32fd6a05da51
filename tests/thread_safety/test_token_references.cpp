// SPDX-License-Identifier: BSL-1.0
// The fast path hands out access_token references from a budget each thread's replica takes
// ahead. Whatever thread drops a token, and whether it outlives its client, a token's count
// must end equal to the handles alive: a budget never returned would leak every token (LSan
// in CI), one returned twice would free a token in use (ASan, TSan).
#include "helpers.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <vector>

namespace asio = boost::asio;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;

namespace {

// Handles per token block: what each block's count must equal once no client holds a budget.
std::map<const na::detail::token_block*, std::uint64_t> handles_per_block(
    const std::vector<na::access_token>& kept) {
  std::map<const na::detail::token_block*, std::uint64_t> n;
  for (const auto& t : kept) ++n[t.block()];
  return n;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(token_references)

// Readers on four threads keep some tokens, hand others to a pool whose threads drop them, and
// the client is destroyed (with two refreshes behind it) while the kept ones live on.
BOOST_AUTO_TEST_CASE(tokens_dropped_on_other_threads_and_outliving_the_client_count_right) {
  constexpr int threads = 4, readers = 16, reads = 2000;
  mock_server server;
  asio::thread_pool droppers(2);
  std::mutex mu;
  std::vector<na::access_token> kept;
  std::atomic<std::uint64_t> empty{0};
  {
    asio::io_context ctx(threads);
    std::optional<na::client> client(std::in_place, ctx.get_executor(), config_for(server));
    for (int phase = 0; phase < 3; ++phase) {
      for (int r = 0; r < readers; ++r) {
        asio::co_spawn(
            ctx,
            [&]() -> asio::awaitable<void> {
              for (int i = 0; i < reads; ++i) {
                auto tok = co_await client->token();
                if (tok.value().empty()) ++empty;
                if (i % 97 == 0) {
                  std::lock_guard lk(mu);
                  kept.push_back(tok);
                } else if (i % 7 == 0) {
                  asio::post(droppers, [t = std::move(tok)] { (void)t.value(); });
                }
              }
            },
            asio::detached);
      }
      ctx.restart();
      BOOST_REQUIRE(run_bounded(ctx, threads));
      client->invalidate();  // the next phase's replicas renew, returning their budgets
    }
    client.reset();
  }
  droppers.join();
  BOOST_TEST(empty.load() == 0u);
  BOOST_TEST(server.stats().refreshes == 3u);
  const auto expected = handles_per_block(kept);
  std::set<std::uint64_t> serials;
  for (const auto& [block, handles] : expected) serials.insert(block->data.serial);
  // Each thread serves its own copy of a token (and each chunk of woken waiters its own).
  BOOST_TEST(serials == (std::set<std::uint64_t>{1, 2, 3}));
  for (const auto& [block, handles] : expected)
    BOOST_TEST(block->refs.load() == handles, "a token of serial " << block->data.serial);
  kept.clear();  // frees every token: LSan reports any block left
}

// A thread's replica gives back its unspent references when it moves to the next token, not
// only when the client dies: an old token held by the application counts only its handles.
BOOST_AUTO_TEST_CASE(a_replica_returns_its_budget_when_it_renews) {
  mock_server server;
  asio::io_context ctx(1);
  na::client client(ctx.get_executor(), config_for(server));
  (void)get_token(ctx, client);  // the refresh's own copy, through the slow path
  auto first = get_token(ctx, client);
  auto copy = get_token(ctx, client);
  BOOST_TEST(copy.block() == first.block());  // both from this thread's replica
  client.invalidate();
  const auto second = get_token(ctx, client);
  BOOST_TEST(second.serial() == first.serial() + 1);
  BOOST_TEST(first.block()->refs.load() == 2u);  // first and copy; the replica's budget is back
  copy = na::access_token();
  BOOST_TEST(first.block()->refs.load() == 1u);
}

BOOST_AUTO_TEST_SUITE_END()
