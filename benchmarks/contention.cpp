// SPDX-License-Identifier: BSL-1.0
// nxsys-contention-bench: N concurrent token() calls arrive when the token has expired. The
// SDK's single flight beside the designs a user would otherwise write, each in the same run
// and against the same mock token server configuration (a fresh server per cell, so that its
// counters and connections belong to that cell alone):
//
//   single-flight  nxsys::auth::client: one refresh, every caller resumes with its result
//   herd           no coordination: every caller refreshes (one client, one connection each)
//   serialized     a cache whose mutex is held across the refresh (golang.org/x/oauth2's
//                  ReuseTokenSource), callers as tasks on a pool of blocking threads
//   timer floor    the same N coroutines suspended on one steady_timer and woken by cancel():
//                  the least a wake-up of N coroutines costs in Asio
//   x/oauth2 ReuseTokenSource (Go)
//                  the real golang.org/x/oauth2: benchmarks/peer_go, a Go program run per cell
//                  against this cell's mock server (RFC 6749 answer names, which x/oauth2
//                  reads), N goroutines on GOMAXPROCS = T; skipped when it was not built
//
// Every caller's latency counts from the burst's arrival (all N calls are queued at t0) to
// its result, so queueing for a thread counts the same way in every design.
#if NXSYS_AUTH_BENCH_TRACK_ALLOC  // off under sanitizers, which replace malloc themselves
#include "alloc_tracker.hpp"
#endif
#include "bench_util.hpp"

#include <boost/asio/append.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include <sys/resource.h>
#include <sys/wait.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <functional>
#include <iostream>
#include <malloc.h>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <spawn.h>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <unistd.h>
#include <vector>

namespace asio = boost::asio;
namespace json = boost::json;
namespace na = nxsys::auth;
namespace bench = nxsys::auth::bench;
using bench::fmt;
using steady = std::chrono::steady_clock;

#ifndef NXSYS_AUTH_GO_PEER
#define NXSYS_AUTH_GO_PEER ""
#endif

namespace {

constexpr std::string_view go_design = "x/oauth2 ReuseTokenSource (Go)";

// The clock of every client and of the serialized cache. jump_clock() makes every token
// issued so far expired, which is how each measured burst starts.
const auto bench_clock = std::make_shared<na::testing::manual_clock>();
steady::time_point bench_now() {
  return bench_clock->now();
}
void jump_clock() {
  bench_clock->advance(std::chrono::hours(4));
}

struct options {
  std::vector<int> ns{1, 100, 1000, 10000, 100000};
  std::vector<unsigned> threads{1, 2};
  std::vector<int> latencies_ms{0, 5, 50};
  int herd_cap = 10000;      // herd above this would only measure a drowned server
  int serial_threads = 256;  // blocking worker threads of the serialized design
  int memory_n = 100000;
  std::string json_path;
  std::string plot_path;
  int plot_latency_ms = 5;
  std::vector<std::string> designs{"single-flight", "timer-floor", "herd",
                                   "serialized",    "go-oauth2",   "rotation"};
  std::string go_peer = NXSYS_AUTH_GO_PEER;  // the Go peer's binary ("": none)
  bool runs(std::string_view d) const {
    return std::find(designs.begin(), designs.end(), d) != designs.end();
  }
};

struct cell {
  std::string design;
  int n = 0;
  unsigned threads = 0;  // io_context threads; for "serialized", its blocking threads
  int latency_ms = 0;
  std::uint64_t requests = 0;  // token requests the server answered (tokens and errors)
  std::uint64_t max_in_flight = 0;
  std::uint64_t reuse_detected = 0;
  double wall_ms = 0;  // t0 to the last caller's result
  bench::latency_summary wait_ms;
  double wake_ns = 0;   // (wall - L) / N
  double start_ns = 0;  // per caller, until the last one had started (coroutine designs)
  double rss_mib = 0;   // peak RSS growth during the cell
  int failures = 0;
  double fresh_read_ns = 0;  // Go peer: Token() on a valid token, one goroutine
  std::string note;          // Go peer: why the cell has no figures

  cell(std::string d, int n_, unsigned t, int l)
      : design(std::move(d)), n(n_), threads(t), latency_ms(l) {}
};

na::testing::mock_server_options server_options(int latency_ms, bool rotate) {
  na::testing::mock_server_options o;
  o.latency = std::chrono::milliseconds(latency_ms);
  o.rotate = rotate;
  o.reuse_detection = rotate;
  o.threads = 1;
  return o;
}

na::client_config bench_config(const na::testing::mock_server& server) {
  auto cfg = bench::config_for(server);
  cfg.clock = bench_clock;
  cfg.http.request_timeout = std::chrono::seconds(60);
  return cfg;
}

// Runs `ctx` on `threads` threads (this one included) until it has no more work.
void run_on(asio::io_context& ctx, unsigned threads) {
  ctx.restart();
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back([&] { ctx.run(); });
  ctx.run();
  for (auto& t : pool) t.join();
}

// What every design does around its burst: the clock, RSS and the latency summary.
struct burst {
  explicit burst(int n) : waits(static_cast<std::size_t>(n)) {
    bench::reset_peak_rss();
    rss0 = bench::current_rss_kib();
  }
  void start() { t0 = steady::now(); }
  // Posted after the N calls: runs once they have all started (in order on one thread).
  void probe_starts(asio::io_context& ctx) {
    asio::post(ctx, [this] { starts_done_ms = bench::ms_since(t0); });
  }
  void done(int i) { waits[static_cast<std::size_t>(i)] = bench::ms_since(t0); }
  void fill(cell& c, int latency_ms) {
    c.rss_mib = static_cast<double>(bench::peak_rss_kib() - rss0) / 1024.0;
    c.wait_ms = bench::summarize(waits);
    c.wall_ms = c.wait_ms.max;  // the last caller's result ends the burst
    c.wake_ns = (c.wall_ms - latency_ms) * 1e6 / static_cast<double>(waits.size());
    c.failures = failures.load();
    c.start_ns = starts_done_ms * 1e6 / static_cast<double>(waits.size());
  }
  std::vector<double> waits;
  std::atomic<int> failures{0};
  steady::time_point t0;
  double starts_done_ms = 0;
  long rss0 = 0;
};

void fill_server(cell& c, const na::testing::mock_server& server,
                 const na::testing::mock_server_stats& before) {
  const auto s = server.stats();
  c.requests = (s.refreshes + s.errors) - (before.refreshes + before.errors);
  c.max_in_flight = s.max_in_flight;
  c.reuse_detected = s.reuse_detected;
}

// Fetches a first token, so that the burst finds an expired token and a warm connection.
void warm_up(asio::io_context& ctx, na::client& client) {
  asio::co_spawn(ctx, client.token(), asio::detached);
  run_on(ctx, 1);
}

// Caller i awaits client_of(i).token(); all are queued before t0, then run on `threads`.
template <class ClientOf>
void run_token_burst(asio::io_context& ctx, unsigned threads, burst& b, ClientOf client_of) {
  for (int i = 0; i < static_cast<int>(b.waits.size()); ++i)
    asio::co_spawn(
        ctx,
        [&b, &client = client_of(i), i]() -> asio::awaitable<void> {
          try {
            co_await client.token();
          } catch (const std::exception&) {
            ++b.failures;
          }
          b.done(i);
        },
        asio::detached);
  b.probe_starts(ctx);
  b.start();
  run_on(ctx, threads);
}

cell run_single_flight(int n, unsigned threads, int latency_ms, bool rotate = false) {
  na::testing::mock_server server(server_options(latency_ms, rotate));
  asio::io_context ctx(static_cast<int>(threads));
  na::client client(ctx.get_executor(), bench_config(server));
  warm_up(ctx, client);
  jump_clock();
  const auto before = server.stats();
  burst b(n);
  run_token_burst(ctx, threads, b, [&](int) -> na::client& { return client; });
  cell c(rotate ? "single-flight (rotating)" : "single-flight", n, threads, latency_ms);
  b.fill(c, latency_ms);
  fill_server(c, server, before);
  return c;
}

cell run_herd(int n, unsigned threads, int latency_ms, bool rotate = false) {
  na::testing::mock_server server(server_options(latency_ms, rotate));
  asio::io_context ctx(static_cast<int>(threads));
  std::vector<std::unique_ptr<na::client>> clients;
  clients.reserve(static_cast<std::size_t>(n));
  // Cold: a herd has no shared state, so each caller's refresh also opens its connection.
  // A drowned server leaves some callers hanging: they fail after 5 s, and count as failures.
  auto cfg = bench_config(server);
  cfg.http.connect_timeout = cfg.http.request_timeout = std::chrono::seconds(5);
  for (int i = 0; i < n; ++i)
    clients.push_back(std::make_unique<na::client>(ctx.get_executor(), cfg));
  const auto before = server.stats();
  burst b(n);
  run_token_burst(ctx, threads, b,
                  [&](int i) -> na::client& { return *clients[static_cast<std::size_t>(i)]; });
  cell c(rotate ? "herd (rotating)" : "herd", n, threads, latency_ms);
  b.fill(c, latency_ms);
  fill_server(c, server, before);
  clients.clear();
  return c;
}

// The design of golang.org/x/oauth2's ReuseTokenSource: the cache's mutex is held across the
// blocking refresh, so every caller that finds the token expired queues on it, and each then
// takes the lock once more to read the new token. Tokens are refreshed 10 s before expiry
// (oauth2's expiryDelta).
class serialized_source {
 public:
  explicit serialized_source(na::client& refresher) : refresher_(refresher) {}
  na::access_token get() {
    std::lock_guard lk(mu_);
    if (cached_ && bench_now() < cached_.expires_at() - std::chrono::seconds(10)) return cached_;
    // The HTTP round trip happens under the lock; the refresher only supplies the transport.
    refresher_.invalidate();
    cached_ = refresher_.async_token(asio::use_future).get();
    return cached_;
  }

 private:
  std::mutex mu_;
  na::access_token cached_;
  na::client& refresher_;
};

cell run_serialized(int n, int pool_threads, int latency_ms) {
  na::testing::mock_server server(server_options(latency_ms, false));
  asio::io_context io;  // the refresher's I/O, on its own thread as a blocking library's would be
  auto guard = asio::make_work_guard(io);
  std::thread io_thread([&] { io.run(); });
  {
    na::client refresher(io.get_executor(), bench_config(server));
    serialized_source source(refresher);
    source.get();  // warm: a token and a connection
    jump_clock();
    const auto before = server.stats();
    const int workers = std::min(n, pool_threads);
    burst b(n);
    // Callers are tasks on a pool of blocking threads, dispatched by the same Asio scheduler
    // that runs the coroutine designs' callers. Each thread first blocks on the gate, so the
    // N caller tasks queue up behind the gates and all arrive at t0.
    asio::thread_pool pool(static_cast<std::size_t>(workers));
    std::atomic<bool> go{false};
    for (int w = 0; w < workers; ++w) asio::post(pool, [&] { go.wait(false); });
    for (int i = 0; i < n; ++i)
      asio::post(pool, [&, i] {
        try {
          source.get();
        } catch (const std::exception&) {
          ++b.failures;
        }
        b.done(i);
      });
    b.start();
    go = true;
    go.notify_all();
    pool.join();
    cell c("serialized", n, static_cast<unsigned>(workers), latency_ms);
    b.fill(c, latency_ms);
    fill_server(c, server, before);
    guard.reset();
    io_thread.join();
    return c;
  }
}

// Runs `argv` and returns its standard output; `status` is its exit status (-1: killed or not
// run). Standard error goes to ours. posix_spawn, not fork: glibc's shares the address space
// until the exec (CLONE_VM | CLONE_VFORK), where fork would mark every page of this large heap
// copy-on-write and make the next cell pay a page fault on each page it writes (measured: the
// single-flight cell after a Go cell took 2.5 times as long per waiter).
std::string run_capture(const std::vector<std::string>& argv, int& status) {
  status = -1;
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);  // dup2 clears CLOEXEC
  pid_t pid = -1;
  const int err = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  if (err != 0) {
    close(fds[0]);
    return {};
  }
  std::string out;
  char buf[4096];
  for (ssize_t got; (got = read(fds[0], buf, sizeof buf)) != 0;) {
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) break;
    out.append(buf, static_cast<std::size_t>(got));
  }
  close(fds[0]);
  int ws = 0;
  while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(ws)) status = WEXITSTATUS(ws);
  return out;
}

// The Go peer is usable when its binary exists and is executable.
bool go_peer_available(const std::string& path) {
  return !path.empty() && access(path.c_str(), X_OK) == 0;
}

// golang.org/x/oauth2 in its own process: a fresh mock server as every cell's (1 thread, latency
// L; answer names RFC 6749's, as x/oauth2 parses them), and the peer's one warm-up burst and one
// measured burst of N goroutines on GOMAXPROCS = T. Its figures are its own clock's, counted as
// the other designs' (from t0 with all N callers ready, wake = (wall - L) / N); the requests are
// the server's counters around the measured burst.
cell run_go_peer(const std::string& peer, int n, unsigned threads, int latency_ms) {
  auto opts = server_options(latency_ms, false);
  opts.names = na::testing::field_names::snake;
  na::testing::mock_server server(opts);
  cell c(std::string(go_design), n, threads, latency_ms);
  int status = -1;
  const std::string out = run_capture(
      {peer, "--url", "http://127.0.0.1:" + std::to_string(server.port()) + "/nxsys/oauth/token",
       "--n", std::to_string(n), "--bursts", "1", "--warmup", "1", "--gomaxprocs",
       std::to_string(threads), "--latency-ms", std::to_string(latency_ms)},
      status);
  boost::system::error_code ec;
  const auto v = json::parse(out, ec);
  const auto* bursts = !ec && v.is_object() ? v.as_object().if_contains("bursts") : nullptr;
  if (bursts == nullptr || !bursts->is_array() || bursts->as_array().empty()) {
    c.failures = n;
    c.note = "the Go peer gave no result (exit status " + std::to_string(status) + ")";
    return c;
  }
  const auto& b = bursts->as_array().front().as_object();
  auto num = [](const json::value& x) { return json::value_to<double>(x); };
  const auto& w = b.at("wait_ms").as_object();
  c.wait_ms.p50 = num(w.at("p50"));
  c.wait_ms.p99 = num(w.at("p99"));
  c.wait_ms.p999 = num(w.at("p999"));
  c.wait_ms.max = num(w.at("max"));
  c.wait_ms.count = static_cast<std::size_t>(num(w.at("count")));
  c.wall_ms = num(b.at("wall_ms"));
  c.wake_ns = num(b.at("wake_ns_per_waiter"));
  c.rss_mib = num(b.at("peak_rss_growth_mib"));
  c.requests = static_cast<std::uint64_t>(num(b.at("server_requests")));
  c.failures = static_cast<int>(num(b.at("errors"))) + n - static_cast<int>(num(b.at("results")));
  c.max_in_flight = server.stats().max_in_flight;
  c.fresh_read_ns = num(v.as_object().at("fresh_read_ns"));
  return c;
}

// N coroutines suspended on one steady_timer, released after L by cancel(). Callers that
// arrive after the release complete at once (through post, as the SDK does for a fresh
// token). The lock makes "check, then wait" atomic with "release, then cancel" on 2 threads.
struct timer_gate {
  explicit timer_gate(asio::io_context& ctx) : ctx(ctx), timer(ctx, steady::time_point::max()) {}
  template <class Token>
  auto async_wait(Token&& token) {
    return asio::async_initiate<Token, void(boost::system::error_code)>(
        [this](auto handler) {
          std::lock_guard lk(mu);
          if (released)
            return asio::post(ctx, asio::append(std::move(handler), boost::system::error_code{}));
          ++waiting;
          timer.async_wait(std::move(handler));
        },
        token);
  }
  void release() {
    std::lock_guard lk(mu);
    released = true;
    timer.cancel();
  }
  asio::io_context& ctx;
  asio::steady_timer timer;
  std::mutex mu;
  bool released = false;
  int waiting = 0;
};

cell run_timer_floor(int n, unsigned threads, int latency_ms) {
  asio::io_context ctx(static_cast<int>(threads));
  timer_gate gate(ctx);
  asio::steady_timer server_answer(ctx);
  burst b(n);
  for (int i = 0; i < n; ++i)
    asio::co_spawn(
        ctx,
        [&, i]() -> asio::awaitable<void> {
          co_await gate.async_wait(asio::as_tuple(asio::deferred));
          b.done(i);
        },
        asio::detached);
  b.probe_starts(ctx);
  b.start();
  server_answer.expires_at(b.t0 + std::chrono::milliseconds(latency_ms));
  server_answer.async_wait([&](boost::system::error_code) { gate.release(); });
  run_on(ctx, threads);
  cell c("timer floor", n, threads, latency_ms);
  b.fill(c, latency_ms);
  return c;
}

// Heap held per suspended call, measured with every call suspended: for the SDK, the bytes
// allocated inside token() (its frames, the waiter node, the type-erased handler); for the
// floor and the SDK, everything including the caller's own coroutine frame.
struct memory_result {
  int n = 0;
  double sdk_bytes_per_call = 0;
  double total_bytes_per_call = 0;
  double floor_total_bytes_per_call = 0;
};

#if NXSYS_AUTH_BENCH_TRACK_ALLOC
// Posts `probe` after everything queued so far; it re-posts itself until `ready()`.
template <class Ready, class Probe>
void probe_when(asio::io_context& ctx, Ready ready, Probe probe, int tries = 1000) {
  asio::post(ctx, [&ctx, ready, probe, tries]() mutable {
    if (ready() || tries == 0) return probe();
    probe_when(ctx, ready, probe, tries - 1);
  });
}

memory_result measure_memory(int n) {
  memory_result m{n};
  namespace alloc = bench::alloc;
  alloc::enabled = true;
  {
    asio::io_context ctx(1);
    timer_gate gate(ctx);
    const auto base = alloc::heap_in_use();
    for (int i = 0; i < n; ++i)
      asio::co_spawn(
          ctx,
          [&]() -> asio::awaitable<void> {
            co_await gate.async_wait(asio::as_tuple(asio::deferred));
          },
          asio::detached);
    probe_when(
        ctx, [&] { return gate.waiting == n; },
        [&] {
          m.floor_total_bytes_per_call = static_cast<double>(alloc::heap_in_use() - base) / n;
          gate.release();
        });
    run_on(ctx, 1);
  }
  {
    // A token endpoint that accepts the connection and never answers holds every call
    // suspended; destroying the client then completes them all with operation_aborted.
    asio::io_context ctx(1);
    asio::ip::tcp::acceptor silent(ctx, {asio::ip::make_address("127.0.0.1"), 0});
    asio::ip::tcp::socket held(ctx);
    silent.async_accept(held, [](boost::system::error_code) {});
    na::client_config cfg;
    cfg.token_url =
        "http://127.0.0.1:" + std::to_string(silent.local_endpoint().port()) + "/nxsys/oauth/token";
    cfg.client_id = "test-client";
    cfg.client_secret = "test-secret";
    cfg.refresh_token = "refresh-0";
    auto client = std::make_unique<na::client>(ctx.get_executor(), cfg);
    const auto base = alloc::heap_in_use();
    const auto sdk_base = alloc::sdk_bytes.load();
    for (int i = 0; i < n; ++i)
      asio::co_spawn(
          ctx,
          [&]() -> asio::awaitable<void> {
            // Left set while suspended: until the next caller runs, this thread only does the
            // SDK's own work (the refresh's connect and write); the probe clears it.
            alloc::in_sdk = true;
            try {
              co_await client->token();
            } catch (const std::exception&) {
            }
          },
          asio::detached);
    probe_when(
        ctx, [&] { return client->stats().waiters_coalesced + 1 == static_cast<unsigned>(n); },
        [&] {
          alloc::in_sdk = false;
          m.total_bytes_per_call = static_cast<double>(alloc::heap_in_use() - base) / n;
          m.sdk_bytes_per_call = static_cast<double>(alloc::sdk_bytes.load() - sdk_base) / n;
          client.reset();
          silent.close();
          held.close();
        });
    run_on(ctx, 1);
  }
  alloc::enabled = false;
  return m;
}
#endif

json::object to_json(const cell& c) {
  json::object o{{"design", c.design},
                 {"n", c.n},
                 {"threads", c.threads},
                 {"latency_ms", c.latency_ms},
                 {"server_requests", c.requests},
                 {"server_max_in_flight", c.max_in_flight},
                 {"server_reuse_detected", c.reuse_detected},
                 {"wall_ms", c.wall_ms},
                 {"wait_ms", bench::to_json(c.wait_ms)},
                 {"wake_ns_per_waiter", c.wake_ns},
                 {"start_ns_per_caller", c.start_ns},
                 {"peak_rss_growth_mib", c.rss_mib},
                 {"failures", c.failures}};
  if (c.design == go_design) {
    o.erase("start_ns_per_caller");  // not measured in the Go peer
    o["fresh_read_ns"] = c.fresh_read_ns;
    o["process"] = "Go peer (golang.org/x/oauth2), its own process";
    if (!c.note.empty()) o["note"] = c.note;
  }
  return o;
}

void print_header() {
  std::printf("%5s  %-30s %4s %7s | %8s %6s | %9s %9s %9s %9s | %9s %9s %8s | %5s\n", "L(ms)",
              "design", "T", "N", "requests", "maxfly", "wall(ms)", "p50(ms)", "p99(ms)", "max(ms)",
              "start(ns)", "wake(ns)", "RSS+MiB", "fail");
}

void print_row(const cell& c) {
  const bool server = c.design != "timer floor";
  const bool no_start = c.design == "serialized" || c.design == go_design;
  const std::string start = no_start ? "-" : fmt("%.0f", c.start_ns);
  std::printf("%5d  %-30s %4u %7d | %8s %6s | %9.2f %9.3f %9.3f %9.3f | %9s %9.0f %8.1f | %5d\n",
              c.latency_ms, c.design.c_str(), c.threads, c.n,
              server ? std::to_string(c.requests).c_str() : "-",
              server ? std::to_string(c.max_in_flight).c_str() : "-", c.wall_ms, c.wait_ms.p50,
              c.wait_ms.p99, c.wait_ms.max, start.c_str(), c.wake_ns, c.rss_mib, c.failures);
  if (!c.note.empty()) std::printf("       (%s)\n", c.note.c_str());
  std::fflush(stdout);
}

// The targets, checked against this run's figures (bench::target_list).
bench::target_list check_targets(const std::vector<cell>& cells,
                                 const std::optional<memory_result>& mem) {
  bench::target_list v;
  auto find = [&](const std::string& d, int n, int l, unsigned t) -> const cell* {
    for (const auto& c : cells)
      if (c.design == d && c.n == n && c.latency_ms == l && (t == 0 || c.threads == t)) return &c;
    return nullptr;
  };
  int single_rows = 0, single_ok = 0;
  for (const auto& c : cells)
    if (c.design.rfind("single-flight", 0) == 0) {
      ++single_rows;
      if (c.requests == 1 && c.failures == 0 && c.reuse_detected == 0) ++single_ok;
    }
  v.add("single-flight: bursts with exactly 1 refresh, no failure",
        fmt("%.0f of %.0f", single_ok, single_rows), "all", single_rows == single_ok, true);
  for (const auto& c : cells) {
    if (c.design != "single-flight" || c.n != 100000) continue;
    const cell* fl = find("timer floor", c.n, c.latency_ms, c.threads);
    v.add(fmt("wake-up per waiter, N=100k, L=%.0f ms, T=%.0f", c.latency_ms, c.threads),
          fmt("%.0f ns", c.wake_ns), "<= 250 ns", c.wake_ns <= 250);
    if (fl) {
      v.add(fmt("wake-up / timer floor, N=100k, L=%.0f ms, T=%.0f", c.latency_ms, c.threads),
            fmt("%.2f", c.wake_ns / fl->wake_ns), "<= 1.05", c.wake_ns <= 1.05 * fl->wake_ns);
      v.add(fmt("p99 / timer floor's p99, N=100k, L=%.0f ms, T=%.0f", c.latency_ms, c.threads),
            fmt("%.2f (%.1f / %.1f ms)", c.wait_ms.p99 / fl->wait_ms.p99, c.wait_ms.p99,
                fl->wait_ms.p99),
            "<= 1.1", c.wait_ms.p99 <= 1.1 * fl->wait_ms.p99);
    }
  }
  if (mem)
    v.add(fmt("SDK heap per waiting call, N=%.0f", mem->n), fmt("%.0f B", mem->sdk_bytes_per_call),
          "<= 512 B", mem->sdk_bytes_per_call <= 512);
  for (const auto& h : cells) {
    if (h.design != "herd" || h.n != 10000) continue;
    const cell* s = find("single-flight", h.n, h.latency_ms, h.threads);
    if (s && s->requests > 0) {
      const double ratio = static_cast<double>(h.requests) / static_cast<double>(s->requests);
      v.add(fmt("herd / single-flight token requests, N=10k, L=%.0f ms", h.latency_ms),
            fmt("%.0f", ratio), ">= 1000", ratio >= 1000);
    }
  }
  for (const auto& s : cells) {
    if (s.design != "single-flight" || s.n < 1000) continue;
    const cell* z = find("serialized", s.n, s.latency_ms, 0);
    const cell* fl = find("timer floor", s.n, s.latency_ms, s.threads);
    if (z)
      v.add(fmt("p99 single-flight vs serialized, N=%.0f, L=%.0f ms, T=%.0f", s.n, s.latency_ms,
                s.threads),
            fmt("%.3f ms (timer floor %.3f ms)", s.wait_ms.p99, fl ? fl->wait_ms.p99 : 0.0),
            fmt("< %.3f ms", z->wait_ms.p99), s.wait_ms.p99 < z->wait_ms.p99);
  }
  // Beside the real golang.org/x/oauth2 (its own process and runtime), at N >= 10k where the
  // wake-ups dominate; the rows hold the rest.
  for (const auto& s : cells) {
    if (s.design != "single-flight" || s.n < 10000) continue;
    const cell* g = find(std::string(go_design), s.n, s.latency_ms, s.threads);
    if (!g || g->failures != 0) continue;
    v.add(fmt("p99 single-flight vs x/oauth2 (Go), N=%.0f, L=%.0f ms, T=%.0f", s.n, s.latency_ms,
              s.threads),
          fmt("%.3f ms (wake %.0f ns, Go's %.0f ns)", s.wait_ms.p99, s.wake_ns, g->wake_ns),
          fmt("< %.3f ms", g->wait_ms.p99), s.wait_ms.p99 < g->wait_ms.p99);
  }
  return v;
}

// Gnuplot data: one block per design (separated by two blank lines, gnuplot's `index`), the
// cells at one latency and one thread count: N, p99 (ms), token requests, wake-up per waiter
// (ns). The Go peer's block is last; a design that did not run has one NaN line.
void write_plot_data(const std::string& path, const std::vector<cell>& cells, int latency_ms,
                     unsigned t) {
  std::ofstream out(path, std::ios::trunc);
  out << "# design blocks: single-flight, herd, serialized, timer floor, " << go_design
      << "; L=" << latency_ms << " ms\n";
  for (std::string_view d :
       {std::string_view("single-flight"), std::string_view("herd"), std::string_view("serialized"),
        std::string_view("timer floor"), go_design}) {
    out << "# " << d << "\n# N p99_ms requests wake_ns\n";
    bool any = false;
    for (const auto& c : cells)
      if (c.design == d && c.latency_ms == latency_ms && c.failures == 0 &&
          (c.threads == t || d == "serialized")) {
        out << c.n << ' ' << c.wait_ms.p99 << ' ' << c.requests << ' ' << c.wake_ns << '\n';
        any = true;
      }
    // A design that did not run keeps its block (gnuplot counts blocks by their data lines).
    if (!any) out << "NaN NaN NaN NaN\n";
    out << "\n\n";
  }
  if (!out) throw std::runtime_error("cannot write " + path);
}

constexpr std::string_view usage = R"(usage: nxsys-contention-bench [options]

N concurrent token() calls arrive on an expired token: nxsys::auth's single flight beside a herd
(every caller refreshes), a serialized cache (mutex held across the refresh, blocking threads)
and the floor of waking N coroutines by cancelling one steady_timer; beside them the real
golang.org/x/oauth2 ReuseTokenSource (benchmarks/peer_go, a Go program run per cell).

  --n LIST              caller counts (default 1,100,1000,10000,100000)
  --threads LIST        io_context threads (default 1,2)
  --latency-ms LIST     mock server latencies (default 0,5,50)
  --herd-cap N          largest N run for the herd (default 10000)
  --serial-threads P    blocking threads of the serialized design (default 256)
  --memory-n N          callers suspended for the heap measurement (default 100000; 0: skip)
  --designs LIST        any of single-flight,timer-floor,herd,serialized,go-oauth2,rotation
                        (default all)
  --go-peer FILE        the Go peer's binary (default: the one this build made, if any; "":
                        none); without it the go-oauth2 rows are skipped with a note
  --json FILE           write every figure as JSON
  --plot-data FILE      write gnuplot data (p99, requests, wake vs N) for one latency and the
                        last thread count (benchmarks/contention.gp plots it)
  --plot-latency-ms L   latency of the plot data (default 5)
  --help
  --version
)";

using bench::parse_int;
using bench::usage_error;

template <class T>
std::vector<T> parse_list(std::string_view flag, std::string_view s, int min) {
  std::vector<T> out;
  while (!s.empty()) {
    const auto comma = s.find(',');
    out.push_back(static_cast<T>(parse_int(flag, s.substr(0, comma), min)));
    s = comma == std::string_view::npos ? std::string_view{} : s.substr(comma + 1);
  }
  if (out.empty()) throw usage_error{std::string(flag) + " needs a list"};
  return out;
}

std::vector<std::string> parse_names(std::string_view flag, std::string_view s) {
  std::vector<std::string> out;
  while (!s.empty()) {
    const auto comma = s.find(',');
    std::string name(s.substr(0, comma));
    if (name != "single-flight" && name != "timer-floor" && name != "herd" &&
        name != "serialized" && name != "go-oauth2" && name != "rotation")
      throw usage_error{std::string(flag) + ": unknown design '" + name + "'"};
    out.push_back(std::move(name));
    s = comma == std::string_view::npos ? std::string_view{} : s.substr(comma + 1);
  }
  return out;
}

std::optional<options> parse_args(int argc, char** argv) {
  options o;
  for (bench::arg_reader args(argc, argv); args.next();) {
    const std::string_view a = args.flag();
    auto value = [&] { return args.value(); };
    if (a == "--help") return std::nullopt;
    if (a == "--n")
      o.ns = parse_list<int>(a, value(), 1);
    else if (a == "--threads")
      o.threads = parse_list<unsigned>(a, value(), 1);
    else if (a == "--latency-ms")
      o.latencies_ms = parse_list<int>(a, value(), 0);
    else if (a == "--herd-cap")
      o.herd_cap = parse_int(a, value(), 0);
    else if (a == "--serial-threads")
      o.serial_threads = parse_int(a, value(), 1);
    else if (a == "--memory-n")
      o.memory_n = parse_int(a, value(), 0);
    else if (a == "--designs")
      o.designs = parse_names(a, value());
    else if (a == "--go-peer")
      o.go_peer = value();
    else if (a == "--json")
      o.json_path = value();
    else if (a == "--plot-data")
      o.plot_path = value();
    else if (a == "--plot-latency-ms")
      o.plot_latency_ms = parse_int(a, value(), 0);
    else
      throw usage_error{"unknown option " + std::string(a)};
  }
  return o;
}

// The herd and big bursts hold many sockets (both ends are in this process).
void raise_fd_limit(int needed) {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  const rlim_t want = static_cast<rlim_t>(needed);
  if (rl.rlim_cur >= want) return;
  rl.rlim_cur = want;
  if (rl.rlim_max < want) rl.rlim_max = want;  // allowed for root (CAP_SYS_RESOURCE)
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

}  // namespace

int main(int argc, char** argv) try {
  int exit_status = 0;
  const auto parsed = bench::parse_command_line("nxsys-contention-bench", usage, parse_args, argc,
                                                argv, exit_status);
  if (!parsed) return exit_status;
  const options& o = *parsed;
  raise_fd_limit(2 * o.herd_cap + 4096);
  // Every cell starts from the same heap: freed memory stays mapped (no trim), and one
  // untimed burst at the largest N on each thread count has faulted it in. Otherwise the first
  // design to run pays the page faults of growing the heap and the next ones do not.
  mallopt(M_TRIM_THRESHOLD, 1 << 30);

  struct job {
    std::string label;
    std::function<cell()> run;
  };
  std::vector<job> jobs;
  const bool go = o.runs("go-oauth2") && go_peer_available(o.go_peer);
  for (int l : o.latencies_ms)
    for (int n : o.ns) {
      for (unsigned t : o.threads) {
        if (o.runs("single-flight"))
          jobs.push_back({"single-flight", [=] { return run_single_flight(n, t, l); }});
        if (o.runs("timer-floor"))
          jobs.push_back({"timer floor", [=] { return run_timer_floor(n, t, l); }});
        if (o.runs("herd") && n <= o.herd_cap)
          jobs.push_back({"herd", [=] { return run_herd(n, t, l); }});
        if (go)
          jobs.push_back({"x/oauth2 (Go)", [=, p = o.go_peer] { return run_go_peer(p, n, t, l); }});
      }
      if (o.runs("serialized"))
        jobs.push_back({"serialized", [=] { return run_serialized(n, o.serial_threads, l); }});
    }
  // With rotation (and reuse detection) a herd cannot work at all: one caller rotates the
  // refresh token, every other presents the consumed one and the server revokes the chain.
  const int rot_n = std::min(1000, o.ns.back());
  const int rot_l = o.latencies_ms.front();
  if (o.runs("rotation")) {
    jobs.push_back({"single-flight (rotating)",
                    [=] { return run_single_flight(rot_n, o.threads.back(), rot_l, true); }});
    jobs.push_back({"herd (rotating)",
                    [=] { return run_herd(std::min(100, rot_n), o.threads.back(), rot_l, true); }});
  }

  std::printf("nxsys-auth refresh contention: N concurrent token() calls on an expired token.\n");
  std::printf("Mock token server on 127.0.0.1 (1 thread, latency L, a fresh server per cell).\n");
  std::printf("T: io_context threads (serialized: its blocking threads). Waits count from the\n");
  std::printf("burst's arrival. wake = (wall - L) / N. RSS+ = peak RSS growth during the cell.\n");
  std::printf(
      "x/oauth2 (Go): golang.org/x/oauth2 in a Go process of its own, T = GOMAXPROCS; its\n");
  std::printf("RSS+ is that process's.\n");
  if (o.runs("go-oauth2") && !go)
    std::printf(
        "x/oauth2 (Go) rows skipped: %s (scripts/setup.sh installs golang-go and\n"
        "golang-golang-x-oauth2-dev; the build then makes it).\n",
        o.go_peer.empty() ? "this build has no Go peer" : ("no executable " + o.go_peer).c_str());
  std::printf("\n");
  print_header();

  bench::progress prog(jobs.size() + o.threads.size() +
                       (o.memory_n > 0 && NXSYS_AUTH_BENCH_TRACK_ALLOC ? 1 : 0));
  for (unsigned t : o.threads) {
    prog.step("heap warm-up, T=" + std::to_string(t));
    run_single_flight(*std::max_element(o.ns.begin(), o.ns.end()), t, 0);
  }
  std::vector<cell> cells;
  int last_l = -1, last_n = -1;
  for (const auto& j : jobs) {
    prog.step(j.label);
    cell c = j.run();
    if (!cells.empty() && (c.latency_ms != last_l || c.n != last_n)) std::printf("\n");
    last_l = c.latency_ms;
    last_n = c.n;
    prog.finish();
    print_row(c);
    cells.push_back(std::move(c));
  }
  for (const auto& c : cells)
    if (c.design == go_design && c.fresh_read_ns > 0) {
      std::vector<double> fresh;
      for (const auto& g : cells)
        if (g.design == go_design && g.fresh_read_ns > 0) fresh.push_back(g.fresh_read_ns);
      const auto f = bench::summarize(fresh);
      std::printf(
          "\nx/oauth2 fresh-token read (Token() on a valid token, 1 goroutine, 10^6 calls per "
          "cell): median %.1f ns over %zu cells (nxsys-fast-path-bench measures the SDK's)\n",
          f.p50, fresh.size());
      break;
    }
  std::optional<memory_result> mem;
  if (o.memory_n > 0 && !NXSYS_AUTH_BENCH_TRACK_ALLOC)
    std::printf("\nheap per waiting call: not measured in a sanitizer build\n");
#if NXSYS_AUTH_BENCH_TRACK_ALLOC
  if (o.memory_n > 0) {
    prog.step("heap per waiting call, N=" + std::to_string(o.memory_n));
    mem = measure_memory(o.memory_n);
    prog.finish();
    std::printf(
        "\nheap per suspended call at N=%d: SDK (inside token()) %.0f B; whole call with "
        "the caller's coroutine %.0f B; timer floor whole call %.0f B\n",
        mem->n, mem->sdk_bytes_per_call, mem->total_bytes_per_call,
        mem->floor_total_bytes_per_call);
  }
#endif

  const auto v = check_targets(cells, mem);
  v.print();

  if (!o.json_path.empty()) {
    json::array rows;
    for (const auto& c : cells) rows.push_back(to_json(c));
    json::object root{{"benchmark", "contention"},
                      {"machine", bench::machine_info()},
                      {"cells", std::move(rows)},
                      {"targets", v.json()}};
    if (mem)
      root["memory"] = {
          {"n", mem->n},
          {"sdk_bytes_per_waiting_call", mem->sdk_bytes_per_call},
          {"total_bytes_per_waiting_call", mem->total_bytes_per_call},
          {"timer_floor_total_bytes_per_waiting_call", mem->floor_total_bytes_per_call}};
    bench::write_json(o.json_path, root);
  }
  if (!o.plot_path.empty())
    write_plot_data(o.plot_path, cells, o.plot_latency_ms, o.threads.back());
  return v.correct() ? EXIT_SUCCESS : EXIT_FAILURE;
} catch (const std::exception& e) {
  std::cerr << "nxsys-contention-bench: " << e.what() << "\n";
  return EXIT_FAILURE;
}
