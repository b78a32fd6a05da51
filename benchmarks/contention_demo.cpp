// The refresh-contention demo (the project's main job until the full benchmarks land): N
// concurrent token() calls arrive when the token is unusable, against the embedded mock
// server; prints how many refreshes the server saw and how long the waiters waited.
#include <nxsys/auth.hpp>

#include "mock_server.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace na = nxsys::auth;
using clock_type = std::chrono::steady_clock;

namespace {

struct row {
  int n;
  unsigned threads;
  int latency_ms;
  std::uint64_t server_refreshes;
  std::uint64_t server_max_in_flight;
  double wall_ms;
  double p50_ms, p99_ms, max_ms;
  int failures;
  std::uint64_t coalesced;
};

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const auto k = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

row run_case(int n, unsigned threads, int latency_ms) {
  na::testing::mock_server_options opts;
  opts.latency = std::chrono::milliseconds(latency_ms);
  opts.rotate = true;
  opts.reuse_detection = true;
  opts.threads = 1;
  na::testing::mock_server server(opts);

  asio::io_context ctx(static_cast<int>(threads));
  na::client_config cfg;
  cfg.token_url = server.token_url();
  cfg.client_id = opts.client_id;
  cfg.client_secret = opts.client_secret;
  cfg.refresh_token = opts.initial_refresh_token;
  na::client client(ctx.get_executor(), cfg);

  std::vector<double> waits(static_cast<std::size_t>(n));
  std::atomic<int> failures{0};
  const auto start = clock_type::now();
  for (int i = 0; i < n; ++i) {
    asio::co_spawn(
        ctx,
        [&, i]() -> asio::awaitable<void> {
          const auto t0 = clock_type::now();
          try {
            co_await client.token();
          } catch (const std::exception&) {
            ++failures;
          }
          waits[static_cast<std::size_t>(i)] =
              std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
        },
        asio::detached);
  }
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back([&] { ctx.run(); });
  ctx.run();
  for (auto& t : pool) t.join();
  const double wall = std::chrono::duration<double, std::milli>(clock_type::now() - start).count();

  const auto ss = server.stats();
  row r{n,
        threads,
        latency_ms,
        ss.refreshes,
        ss.max_in_flight,
        wall,
        0,
        0,
        0,
        failures.load(),
        client.stats().waiters_coalesced};
  r.p50_ms = percentile(waits, 0.50);
  r.p99_ms = percentile(waits, 0.99);
  r.max_ms = *std::max_element(waits.begin(), waits.end());
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> ns{1, 100, 1000, 10000};
  std::vector<unsigned> thread_counts{1, 2};
  std::vector<int> latencies{0, 5, 50};
  if (argc > 1 && std::string(argv[1]) == "--quick") {
    ns = {1, 1000};
    latencies = {5};
  }
  std::printf("nxsys-auth refresh contention demo: N concurrent token() calls on an empty cache\n");
  std::printf("against the embedded mock token server (127.0.0.1, rotating refresh tokens).\n\n");
  std::printf("%7s %3s %6s | %9s %7s | %9s %9s %9s %9s | %9s %5s\n", "N", "T", "L(ms)", "refreshes",
              "maxfly", "wall(ms)", "p50(ms)", "p99(ms)", "max(ms)", "coalesced", "fail");
  bool ok = true;
  const std::size_t total = ns.size() * thread_counts.size() * latencies.size();
  std::size_t done = 0;
  for (int latency : latencies)
    for (unsigned threads : thread_counts)
      for (int n : ns) {
        std::fprintf(stderr, "[%zu/%zu] N=%d T=%u L=%dms...\r", ++done, total, n, threads, latency);
        auto r = run_case(n, threads, latency);
        std::printf("%7d %3u %6d | %9llu %7llu | %9.2f %9.3f %9.3f %9.3f | %9llu %5d\n", r.n,
                    r.threads, r.latency_ms, static_cast<unsigned long long>(r.server_refreshes),
                    static_cast<unsigned long long>(r.server_max_in_flight), r.wall_ms, r.p50_ms,
                    r.p99_ms, r.max_ms, static_cast<unsigned long long>(r.coalesced), r.failures);
        std::fflush(stdout);
        ok = ok && r.server_refreshes == 1 && r.failures == 0;
      }
  std::fprintf(stderr, "%40s\r", "");
  std::printf("\n%s: the server saw %s refresh per burst.\n", ok ? "OK" : "FAILED",
              ok ? "exactly one" : "NOT exactly one");
  return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
