// SPDX-License-Identifier: BSL-1.0
// Clients sharing one store, and refresh-ahead, under real concurrency. Run under TSan in CI.
#include "helpers.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <filesystem>
#include <mutex>
#include <set>

namespace asio = boost::asio;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;

namespace {

// 4 clients × 500 coroutines on 4 threads, all asking at once with no token: one request, and
// every call gets the same token (the other clients take it from the store).
void one_refresh_for_all_clients(
    const std::function<std::shared_ptr<na::token_store>(asio::io_context&)>& make_store) {
  mock_server_options opts;
  opts.rotate = true;
  opts.reuse_detection = true;
  opts.latency = std::chrono::milliseconds(50);
  mock_server server(opts);
  asio::io_context ctx(4);
  auto store = make_store(ctx);
  std::vector<std::unique_ptr<na::client>> clients;
  for (int i = 0; i < 4; ++i) {
    auto cfg = config_for(server, opts);
    cfg.storage.store = store;
    clients.push_back(std::make_unique<na::client>(ctx.get_executor(), cfg));
  }
  const auto burst = burst_of_tokens(ctx, clients, 500, 4);
  BOOST_REQUIRE(burst.finished);
  BOOST_TEST(burst.errors == 0);
  BOOST_TEST(burst.values.size() == 1u);
  BOOST_TEST(server.stats().refreshes == 1u);
  BOOST_TEST(server.stats().reuse_detected == 0u);
  std::uint64_t from_store = 0;
  for (auto& c : clients) from_store += c->stats().tokens_from_store;
  BOOST_TEST(from_store == 3u);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(shared_store)

BOOST_AUTO_TEST_CASE(clients_sharing_a_memory_store_refresh_once) {
  one_refresh_for_all_clients([](asio::io_context& ctx) -> std::shared_ptr<na::token_store> {
    return std::make_shared<na::memory_store>(ctx.get_executor());
  });
}

BOOST_AUTO_TEST_CASE(clients_sharing_a_file_store_refresh_once) {
  char tmpl[] = "/tmp/nxsys-shared-XXXXXX";
  const std::filesystem::path dir = ::mkdtemp(tmpl);
  one_refresh_for_all_clients([&](asio::io_context&) -> std::shared_ptr<na::token_store> {
    return std::make_shared<na::file_store>((dir / "tokens.json").string());
  });
  std::filesystem::remove_all(dir);
}

// Many threads cross into the refresh-ahead window at once: one background refresh, nobody
// waits, and afterwards everyone reads the new token.
BOOST_AUTO_TEST_CASE(refresh_ahead_starts_once_under_contention) {
  mock_server_options opts;
  opts.ttl = std::chrono::seconds(100);
  opts.latency = std::chrono::milliseconds(30);
  mock_server server(opts);
  asio::io_context ctx(4);
  auto cfg = config_for(server, opts);
  auto clk = std::make_shared<manual_clock>();
  cfg.clock = clk;
  cfg.refresh.ahead_fraction = 0.2;
  na::client c(ctx.get_executor(), cfg);
  const auto first = get_token(ctx, c);
  clk->advance(std::chrono::seconds(60));
  std::atomic<int> old_served{0}, new_served{0};
  for (int i = 0; i < 4000; ++i)
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          for (int k = 0; k < 5; ++k) {
            auto t = co_await c.token();
            ++(t.serial() == first.serial() ? old_served : new_served);
            co_await asio::post(ctx, asio::use_awaitable);
          }
        },
        asio::detached);
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 4));
  BOOST_TEST(old_served.load() + new_served.load() == 20000);
  BOOST_TEST(server.stats().refreshes == 2u);
  const auto s = c.stats();
  BOOST_TEST(s.refreshes_ahead == 1u);
  BOOST_TEST(s.waiters_coalesced == 0u);  // nobody joined a refresh: nobody waited
  BOOST_TEST(s.stale_tokens_served == static_cast<std::uint64_t>(old_served.load()));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(compare_and_invalidate)

// 1,000 callers on 4 threads all get a 401 for the same token: one refresh. A 401 for a token
// already replaced changes nothing.
BOOST_AUTO_TEST_CASE(many_401s_for_one_token_cause_one_refresh) {
  mock_server_options opts;
  opts.latency = std::chrono::milliseconds(20);
  mock_server server(opts);
  asio::io_context ctx(4);
  na::client c(ctx.get_executor(), config_for(server, opts));
  const auto first = get_token(ctx, c);
  std::atomic<int> invalidated{0}, renewed{0};
  for (int i = 0; i < 1000; ++i)
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          if (c.invalidate(first)) ++invalidated;  // the API said 401 to a request with `first`
          if ((co_await c.token()).serial() != first.serial()) ++renewed;
        },
        asio::detached);
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 4));
  BOOST_TEST(invalidated.load() == 1);
  BOOST_TEST(renewed.load() == 1000);
  BOOST_TEST(server.stats().refreshes == 2u);
  BOOST_TEST(!c.invalidate(first));  // long replaced
  BOOST_TEST(get_token(ctx, c).serial() == first.serial() + 1);
  BOOST_TEST(server.stats().refreshes == 2u);
  BOOST_TEST(c.stats().invalidations == 1u);
}

BOOST_AUTO_TEST_SUITE_END()
