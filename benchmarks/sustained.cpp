// SPDX-License-Identifier: BSL-1.0
// nxsys-sustained-bench: sustained load across many token expiries. M coroutines on one client
// (an io_context run by T threads) call token() in a loop for S seconds against the mock server
// issuing 1 s tokens with rotating refresh tokens and reuse detection, so the client refreshes
// about every 0.75 s while the callers keep coming. Checks, and exits non-zero unless: exactly
// one refresh per token generation, at most one request in flight, no error, no expired token
// handed out, no rotated refresh token presented twice.
#include "bench_util.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <future>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace json = boost::json;
namespace na = nxsys::auth;
namespace bench = nxsys::auth::bench;
using steady = std::chrono::steady_clock;

namespace {

constexpr std::chrono::seconds token_ttl{1};

struct options {
  int seconds = 30;
  int coroutines = 1000;
  int threads = 2;
  int latency_ms = 5;
  std::string json_path;
  std::string store_file;  // empty: the default memory_store
};

// What one caller saw. Only its own coroutine writes it (on whichever thread resumes it), so
// recording takes no lock and writes no line another caller writes.
struct alignas(64) caller_log {
  std::atomic<std::uint64_t> calls{0};  // read by the progress line while the run goes on
  std::uint64_t errors = 0;
  std::uint64_t stale = 0;
  std::uint64_t max_wait_ns = 0;
  steady::duration max_wait_at{};  // since the start
  // The same without the first call, which also pays for the connection and the first fill.
  std::uint64_t max_warm_wait_ns = 0;
  bool warm = false;
  std::uint64_t last_serial = 0;
  std::vector<std::uint64_t> serials;  // every generation it saw, in order
  std::string first_error;
  bench::histogram waits;
};

asio::awaitable<void> caller(na::client& client, caller_log& log, steady::time_point start,
                             steady::time_point deadline) {
  for (;;) {
    const auto t0 = steady::now();
    if (t0 >= deadline) co_return;
    try {
      const na::access_token t = co_await client.token();
      const auto t1 = steady::now();
      const auto wait = static_cast<std::uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
      log.waits.record(wait);
      if (wait > log.max_wait_ns) {
        log.max_wait_ns = wait;
        log.max_wait_at = t0 - start;
      }
      if (log.warm) log.max_warm_wait_ns = std::max(log.max_warm_wait_ns, wait);
      log.warm = true;
      if (!(t.expires_at() > t1)) ++log.stale;
      if (t.serial() != log.last_serial) {
        log.last_serial = t.serial();
        log.serials.push_back(t.serial());
      }
    } catch (const std::exception& e) {
      if (log.errors++ == 0) log.first_error = e.what();
    }
    log.calls.store(log.calls.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    // A real caller does a request between two tokens. Without a suspension here, a caller
    // would hold its thread for good: a fresh token completes without suspending.
    co_await asio::post(asio::use_awaitable);
  }
}

constexpr std::string_view usage = R"(usage: nxsys-sustained-bench [options]

M coroutines on T io_context threads share one nxsys::auth client and call token() in a loop
for S seconds, against the mock token server issuing 1 s tokens (rotating refresh tokens, reuse
detection on). Exits 1 unless every token generation cost exactly one refresh, at most one
request was in flight, and no call failed, got an expired token or had its refresh token reused.

  --seconds S       duration (default 30)
  --coroutines M    concurrent callers (default 1000)
  --threads T       io_context threads (default 2)
  --latency-ms L    mock server latency per token request (default 5)
  --store FILE      keep the tokens in a file_store at FILE (fsync'ed on every refresh)
  --json FILE       write every figure as JSON
  --help
  --version
)";

using bench::parse_int;
using bench::usage_error;

std::optional<options> parse_args(int argc, char** argv) {
  options o;
  for (bench::arg_reader args(argc, argv); args.next();) {
    const std::string_view a = args.flag();
    auto value = [&] { return args.value(); };
    if (a == "--help") return std::nullopt;
    if (a == "--seconds")
      o.seconds = parse_int(a, value(), 1);
    else if (a == "--coroutines")
      o.coroutines = parse_int(a, value(), 1);
    else if (a == "--threads")
      o.threads = parse_int(a, value(), 1);
    else if (a == "--latency-ms")
      o.latency_ms = parse_int(a, value(), 0);
    else if (a == "--json")
      o.json_path = value();
    else if (a == "--store")
      o.store_file = value();
    else
      throw usage_error{"unknown option " + std::string(a)};
  }
  return o;
}

double us(std::uint64_t ns) {
  return static_cast<double>(ns) / 1e3;
}

}  // namespace

int main(int argc, char** argv) try {
  int exit_status = 0;
  const auto parsed = bench::parse_command_line("nxsys-sustained-bench", usage, parse_args, argc,
                                                argv, exit_status);
  if (!parsed) return exit_status;
  const options& o = *parsed;

  na::testing::mock_server_options so;
  so.ttl = token_ttl;
  so.rotate = true;
  so.reuse_detection = true;
  so.latency = std::chrono::milliseconds(o.latency_ms);
  na::testing::mock_server server(so);
  asio::io_context ctx(o.threads);
  auto cfg = bench::config_for(server, so);
  if (!o.store_file.empty()) {
    std::remove(o.store_file.c_str());  // a previous run's chain is not this server's
    cfg.storage.store = std::make_shared<na::file_store>(o.store_file);
  }
  na::client client(ctx.get_executor(), cfg);

  std::printf("nxsys-auth sustained load: M coroutines on T io_context threads share one client\n");
  std::printf("and call token() in a loop (with a yield between calls) for %d s. Tokens live\n",
              o.seconds);
  std::printf("%lld s (refreshed when 3/4 used); refresh tokens rotate, reuse detection on.\n\n",
              static_cast<long long>(token_ttl.count()));
  std::fflush(stdout);

  std::vector<caller_log> logs(static_cast<std::size_t>(o.coroutines));
  std::atomic<int> remaining{o.coroutines};
  std::promise<void> all_done;
  const auto start = steady::now();
  const auto deadline = start + std::chrono::seconds(o.seconds);
  for (auto& log : logs)
    asio::co_spawn(ctx, caller(client, log, start, deadline),
                   [&log, &remaining, &all_done](std::exception_ptr e) {
                     if (e) {
                       try {
                         std::rethrow_exception(e);
                       } catch (const std::exception& x) {
                         if (log.errors++ == 0) log.first_error = x.what();
                       }
                     }
                     if (--remaining == 0) all_done.set_value();
                   });
  std::vector<std::thread> pool;
  for (int i = 0; i < o.threads; ++i) pool.emplace_back([&ctx] { ctx.run(); });

  bench::progress progress(static_cast<std::size_t>(o.seconds));
  auto done = all_done.get_future();
  for (int s = 1; done.wait_until(start + std::chrono::seconds(s)) == std::future_status::timeout;
       ++s) {
    if (s > o.seconds) continue;  // the last refresh in flight is still being waited for
    std::uint64_t calls = 0;
    for (const auto& log : logs) calls += log.calls.load(std::memory_order_relaxed);
    progress.step(std::to_string(s) + "/" + std::to_string(o.seconds) +
                  " s: " + std::to_string(calls) + " calls, " +
                  std::to_string(server.stats().refreshes) + " refreshes");
  }
  const double duration = std::chrono::duration<double>(steady::now() - start).count();
  for (auto& t : pool) t.join();
  progress.finish();

  std::uint64_t calls = 0, errors = 0, stale = 0, max_wait_ns = 0, max_warm_wait_ns = 0;
  steady::duration max_wait_at{};
  std::string first_error;
  std::vector<std::uint64_t> serials;
  bench::histogram waits;
  for (const auto& log : logs) {
    calls += log.calls.load(std::memory_order_relaxed);
    errors += log.errors;
    stale += log.stale;
    if (log.max_wait_ns > max_wait_ns) {
      max_wait_ns = log.max_wait_ns;
      max_wait_at = log.max_wait_at;
    }
    max_warm_wait_ns = std::max(max_warm_wait_ns, log.max_warm_wait_ns);
    if (first_error.empty()) first_error = log.first_error;
    serials.insert(serials.end(), log.serials.begin(), log.serials.end());
    waits.merge(log.waits);
  }
  std::sort(serials.begin(), serials.end());
  const auto generations =
      static_cast<std::uint64_t>(std::unique(serials.begin(), serials.end()) - serials.begin());

  bench::latency_summary wait_us;
  wait_us.count = waits.count();
  wait_us.p50 = us(std::min(waits.quantile(0.50), max_wait_ns));
  wait_us.p99 = us(std::min(waits.quantile(0.99), max_wait_ns));
  wait_us.p999 = us(std::min(waits.quantile(0.999), max_wait_ns));
  wait_us.max = us(max_wait_ns);
  // Only a call that waits for a refresh is slow, about one in (callers x expiries) calls:
  // beyond p999 at most rates.
  const double p9999_us = us(std::min(waits.quantile(0.9999), max_wait_ns));
  const double max_wait_at_s = std::chrono::duration<double>(max_wait_at).count();

  const auto ss = server.stats();
  const auto cs = client.stats();
  const double per_expiry =
      generations ? static_cast<double>(ss.refreshes) / static_cast<double>(generations) : 0.0;

  std::vector<std::string> failures;
  if (ss.refreshes != generations)
    failures.push_back(std::to_string(ss.refreshes) + " refreshes for " +
                       std::to_string(generations) + " token generations");
  if (errors) failures.push_back(std::to_string(errors) + " failed calls: " + first_error);
  if (stale) failures.push_back(std::to_string(stale) + " expired tokens handed out");
  if (ss.reuse_detected)
    failures.push_back(std::to_string(ss.reuse_detected) + " rotated refresh tokens reused");
  if (ss.max_in_flight > 1)
    failures.push_back(std::to_string(ss.max_in_flight) + " refresh requests in flight at once");

  auto line = [](const char* what, const std::string& value) {
    std::printf("%-34s %14s\n", what, value.c_str());
  };
  auto fixed = [](double v, int decimals) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    return std::string(buf);
  };
  line("duration (s)", fixed(duration, 2));
  line("coroutines M", std::to_string(o.coroutines));
  line("threads T", std::to_string(o.threads));
  line("server latency L (ms)", std::to_string(o.latency_ms));
  line("token store", o.store_file.empty() ? "memory" : "file");
  line("token() calls", std::to_string(calls));
  line("requests/s", fixed(static_cast<double>(calls) / duration, 0));
  line("server refreshes", std::to_string(ss.refreshes));
  line("token generations observed", std::to_string(generations));
  line("refreshes per expiry", fixed(per_expiry, 2));
  line("server max in flight", std::to_string(ss.max_in_flight));
  line("errors", std::to_string(errors));
  line("expired tokens handed out", std::to_string(stale));
  line("reuse detected", std::to_string(ss.reuse_detected));
  line("wait p50 (us)", fixed(wait_us.p50, 2));
  line("wait p99 (us)", fixed(wait_us.p99, 2));
  line("wait p999 (us)", fixed(wait_us.p999, 2));
  line("wait p9999 (us)", fixed(p9999_us, 2));
  line("longest wait (us)", fixed(wait_us.max, 1) + " at " + fixed(max_wait_at_s, 2) + " s");
  line("longest wait, first calls aside (us)", fixed(us(max_warm_wait_ns), 1));
  std::printf(
      "\nclient: %llu refreshes (%llu rotated), %llu waiters coalesced (at most %llu per\n"
      "refresh), %llu slow-path calls, %llu connections opened\n",
      static_cast<unsigned long long>(cs.refreshes_started),
      static_cast<unsigned long long>(cs.refresh_tokens_rotated),
      static_cast<unsigned long long>(cs.waiters_coalesced),
      static_cast<unsigned long long>(cs.max_waiters_per_refresh),
      static_cast<unsigned long long>(cs.slow_path_calls),
      static_cast<unsigned long long>(cs.connections_opened));
  const auto finished = cs.refreshes_succeeded + cs.refreshes_failed;
  std::printf("refresh round trip: mean %.2f ms, max %.2f ms; refreshes by waiting calls:",
              finished ? static_cast<double>(cs.refresh_latency_total.count()) / 1e6 /
                             static_cast<double>(finished)
                       : 0.0,
              static_cast<double>(cs.refresh_latency_max.count()) / 1e6);
  static constexpr const char* buckets[] = {"0-1",     "2-9",       "10-99", "100-999",
                                            "1k-9999", "10k-99999", "100k+"};
  for (std::size_t i = 0; i < cs.waiters_per_refresh_histogram.size(); ++i)
    if (cs.waiters_per_refresh_histogram[i] != 0)
      std::printf(" %s: %llu", buckets[i],
                  static_cast<unsigned long long>(cs.waiters_per_refresh_histogram[i]));
  std::printf("\n");
  std::printf(
      "refresh-ahead: %llu background refreshes, %llu calls served the current token "
      "inside the window; %llu retries; store: %llu saves, %llu save failures\n",
      static_cast<unsigned long long>(cs.refreshes_ahead),
      static_cast<unsigned long long>(cs.stale_tokens_served),
      static_cast<unsigned long long>(cs.retries), static_cast<unsigned long long>(cs.store_saves),
      static_cast<unsigned long long>(cs.store_save_failures));
  for (const auto& [reason, n] : cs.refreshes_failed_by_reason)
    std::printf("failed refreshes, %s: %llu\n", reason.c_str(), static_cast<unsigned long long>(n));
  std::printf("(waits from the call to its result; percentiles within 3%%, the longest exact)\n");

  if (!o.json_path.empty()) {
    json::object waits_json = bench::to_json(wait_us);
    waits_json["p9999"] = p9999_us;
    json::array fails;
    for (const auto& f : failures) fails.emplace_back(f);
    bench::write_json(o.json_path,
                      json::object{{"benchmark", "sustained"},
                                   {"machine", bench::machine_info()},
                                   {"seconds", o.seconds},
                                   {"coroutines", o.coroutines},
                                   {"threads", o.threads},
                                   {"latency_ms", o.latency_ms},
                                   {"store", o.store_file.empty() ? "memory" : "file"},
                                   {"token_ttl_s", token_ttl.count()},
                                   {"duration_s", duration},
                                   {"calls", calls},
                                   {"requests_per_s", static_cast<double>(calls) / duration},
                                   {"server_refreshes", ss.refreshes},
                                   {"generations", generations},
                                   {"refreshes_per_expiry", per_expiry},
                                   {"server_max_in_flight", ss.max_in_flight},
                                   {"errors", errors},
                                   {"stale", stale},
                                   {"reuse_detected", ss.reuse_detected},
                                   {"wait_us", std::move(waits_json)},
                                   {"longest_wait_at_s", max_wait_at_s},
                                   {"longest_wait_after_first_call_us", us(max_warm_wait_ns)},
                                   {"server", json::parse(na::testing::to_json(ss))},
                                   {"client_stats", bench::to_json(cs)},
                                   {"failures", std::move(fails)},
                                   {"passed", failures.empty()}});
  }
  for (const auto& f : failures)
    std::fprintf(stderr, "nxsys-sustained-bench: FAILED: %s\n", f.c_str());
  return failures.empty() ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "nxsys-sustained-bench: %s\n", e.what());
  return 1;
}
