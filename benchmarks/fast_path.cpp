// Fast-path cost: ns per `co_await client.token()` with a fresh token, on 1 and 2 threads, beside
// the designs a user would otherwise write, all at the same coroutine nesting:
//   floor         co_await of an awaitable that returns a pointer (the least a coroutine API costs)
//   mutex         a std::mutex-guarded cache handing out a shared_ptr copy
//   shared_mutex  the same with a reader lock
//   shared_ptr    no lock, but every reader copies one shared_ptr (one shared reference count)
#include <nxsys/auth.hpp>

#include "mock_server.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace na = nxsys::auth;

namespace {

struct token_copy {
  std::string value = std::string(40, 't');
};

std::mutex cache_mutex;
std::shared_mutex cache_shared_mutex;
std::shared_ptr<const token_copy> cached = std::make_shared<const token_copy>();
const int floor_value = 42;

asio::awaitable<const int*> floor_op() { co_return &floor_value; }

asio::awaitable<std::shared_ptr<const token_copy>> mutex_op() {
  std::lock_guard lk(cache_mutex);
  co_return cached;
}

asio::awaitable<std::shared_ptr<const token_copy>> shared_mutex_op() {
  std::shared_lock lk(cache_shared_mutex);
  co_return cached;
}

asio::awaitable<std::shared_ptr<const token_copy>> shared_ptr_op() { co_return cached; }

// Runs `loop` on `threads` threads (one io_context each), `iterations` awaits per thread;
// returns ns per await as seen by one thread, and total awaits per second.
template <class Op>
std::pair<double, double> measure(unsigned threads, long iterations, Op op) {
  std::vector<std::unique_ptr<asio::io_context>> ctxs;
  for (unsigned i = 0; i < threads; ++i) ctxs.push_back(std::make_unique<asio::io_context>(1));
  std::atomic<long> sink{0};
  for (auto& ctx : ctxs)
    asio::co_spawn(
        *ctx,
        [&]() -> asio::awaitable<void> {
          long local = 0;
          for (long i = 0; i < iterations; ++i) local += co_await op();
          sink += local;
        },
        asio::detached);
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (auto& ctx : ctxs) pool.emplace_back([&ctx] { ctx->run(); });
  for (auto& t : pool) t.join();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return {secs * 1e9 / static_cast<double>(iterations),
          static_cast<double>(iterations) * threads / secs};
}

}  // namespace

int main(int argc, char** argv) {
  const long iterations = argc > 1 ? std::stol(argv[1]) : 2'000'000;
  na::testing::mock_server server;
  asio::io_context client_ctx;
  na::client_config cfg;
  cfg.token_url = server.token_url();
  cfg.client_id = "test-client";
  cfg.client_secret = "test-secret";
  cfg.refresh_token = "refresh-0";
  na::client client(client_ctx.get_executor(), cfg);
  asio::co_spawn(client_ctx, [&]() -> asio::awaitable<void> { co_await client.token(); },
                 asio::detached);
  client_ctx.run();

  struct candidate {
    const char* name;
    std::function<std::pair<double, double>(unsigned)> run;
  };
  const std::vector<candidate> candidates = {
      {"floor (co_await returning a pointer)",
       [&](unsigned t) {
         return measure(t, iterations, []() -> asio::awaitable<long> {
           co_return *co_await floor_op() != 0;
         });
       }},
      {"nxsys::auth client.token()",
       [&](unsigned t) {
         return measure(t, iterations, [&]() -> asio::awaitable<long> {
           co_return !(co_await client.token()).value().empty();
         });
       }},
      {"std::mutex cache",
       [&](unsigned t) {
         return measure(t, iterations, []() -> asio::awaitable<long> {
           co_return !(co_await mutex_op())->value.empty();
         });
       }},
      {"std::shared_mutex cache",
       [&](unsigned t) {
         return measure(t, iterations, []() -> asio::awaitable<long> {
           co_return !(co_await shared_mutex_op())->value.empty();
         });
       }},
      {"shared shared_ptr copy",
       [&](unsigned t) {
         return measure(t, iterations, []() -> asio::awaitable<long> {
           co_return !(co_await shared_ptr_op())->value.empty();
         });
       }},
  };
  std::printf("%-38s %12s %12s %14s %14s %8s\n", "fresh-token read (one co_await deep)",
              "ns/op 1T", "ns/op 2T", "ops/s 1T", "ops/s 2T", "2T/1T");
  for (const auto& c : candidates) {
    auto one = c.run(1);
    auto two = c.run(2);
    std::printf("%-38s %12.1f %12.1f %14.0f %14.0f %8.2f\n", c.name, one.first, two.first,
                one.second, two.second, two.second / one.second);
  }
  const auto s = client.stats();
  std::printf("\nclient: %llu refresh(es), %llu slow-path calls over all reads\n",
              static_cast<unsigned long long>(s.refreshes_started),
              static_cast<unsigned long long>(s.slow_path_calls));
  return 0;
}
