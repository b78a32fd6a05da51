// SPDX-License-Identifier: BSL-1.0
// nxsys-session-bench: what nxsys::auth::session costs per API request. In the same run,
// against the same in-process mock server (its protected GET /api/... answering 200 for a
// valid token, 401 otherwise) and with the same client, M coroutines on an io_context run by
// T threads loop for S seconds, each design in a phase of its own:
//
//   session    co_await session.async_request(GET /api/bench) on one shared session with
//              max_connections = C: per request a shared op, a strand, a co_spawn'd
//              coroutine, the mutex-protected pool and the header building
//   baseline   what a user would write instead: each coroutine owns one keep-alive
//              beast::tcp_stream and sends the same GET with "Authorization: Bearer <token>",
//              the token from co_await client.token() per request, 401 → invalidate(t) and
//              one retry, a request timeout armed per exchange as the session does
//
// The overhead of the session per request is 1/throughput(session) - 1/throughput(baseline).
// Every request's latency (from before the token is asked for to the answer) goes into a
// histogram, and every allocation the io_context threads make during a phase is counted
// (allocations per request: the mock server's threads are not counted). Exits 1 unless every
// request was answered 200, the token endpoint saw the expected refreshes (one with long-lived
// tokens; with --ttl, no reused refresh token and at most one per half token lifetime) and the
// session opened at most C connections.
#include "bench_util.hpp"

#if NXSYS_AUTH_BENCH_TRACK_ALLOC  // off under sanitizers, which replace malloc themselves
#include "alloc_tracker.hpp"
#endif

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/version.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
namespace na = nxsys::auth;
namespace bench = nxsys::auth::bench;
using steady = std::chrono::steady_clock;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
constexpr std::string_view api_target = "/api/bench";
// What the session sends when the request has no User-Agent: the baseline sends the same.
constexpr std::string_view user_agent =
    "nxsys-auth/" NXSYS_AUTH_VERSION_STRING " " BOOST_BEAST_VERSION_STRING;
// The session's defaults, which the baseline arms the same way.
constexpr std::chrono::seconds connect_timeout{10};
constexpr std::chrono::seconds request_timeout{30};

enum class token_call { token, async_token };

struct options {
  int seconds = 5;
  int coroutines = 64;
  int threads = 1;
  int connections = 0;  // 0: = coroutines
  int server_threads = 1;
  int ttl_s = 3600;
  int rounds = 1;
  token_call baseline_token = token_call::token;
  bool run_session = true;
  bool run_baseline = true;
  std::string json_path;
};

// What one coroutine saw. Only that coroutine writes it (on whichever thread resumes it).
struct alignas(64) caller_log {
  std::atomic<std::uint64_t> requests{0};  // read by the progress line while the run goes on
  std::uint64_t errors = 0;                // no answer (error code or exception)
  std::uint64_t not_ok = 0;                // answered, but not 200
  std::uint64_t retried_401 = 0;           // 401 → invalidate + retry (baseline only)
  std::uint64_t invalidated = 0;           // of those, invalidations that dropped the token
  std::uint64_t connections = 0;           // opened (baseline only)
  std::uint64_t total_ns = 0;
  std::uint64_t max_ns = 0;
  std::string first_error;
  bench::histogram latency;

  void count() {
    requests.store(requests.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  void record(steady::time_point t0, steady::time_point t1) {
    const auto ns = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
    latency.record(ns);
    total_ns += ns;
    max_ns = std::max(max_ns, ns);
  }
  void error(std::string what) {
    if (errors++ == 0) first_error = std::move(what);
  }
};

// ---- session design -----------------------------------------------------------------------------

asio::awaitable<void> session_caller(na::session& s, caller_log& log, steady::time_point deadline) {
  for (;;) {
    const auto t0 = steady::now();
    if (t0 >= deadline) co_return;
    na::session::request_type req{http::verb::get, api_target, 11};
    auto [ec, res] = co_await s.async_request(std::move(req), use_tuple);
    log.record(t0, steady::now());
    log.count();
    if (ec) {
      log.error("async_request: " + ec.message());
    } else if (res.result() != http::status::ok) {
      if (log.not_ok++ == 0 && log.first_error.empty())
        log.first_error = "status " + std::to_string(res.result_int());
    }
  }
}

// ---- hand-written baseline ----------------------------------------------------------------------

struct target_info {
  asio::ip::tcp::endpoint endpoint;
  std::string host_header;  // "127.0.0.1:PORT", as the session sends it
};

// "Bearer <token>" (the session canonicalises a server's "bearer" the same way).
std::string bearer_of(const na::access_token& t) {
  std::string h;
  h.reserve(7 + t.value().size());
  h.append("Bearer ").append(t.value());
  return h;
}

asio::awaitable<void> baseline_caller(na::client& client, const target_info& target, token_call how,
                                      caller_log& log, steady::time_point deadline) {
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  beast::flat_buffer buffer;
  for (;;) {
    const auto t0 = steady::now();
    if (t0 >= deadline) break;
    bool answered = false;
    http::response<http::string_body> res;
    for (bool retried = false;; retried = true) {
      na::access_token token;
      if (how == token_call::token) {
        try {
          token = co_await client.token();
        } catch (const std::exception& e) {
          log.error(std::string("token(): ") + e.what());
          break;
        }
      } else {
        auto [ec, t] = co_await client.async_token(use_tuple);
        if (ec) {
          log.error("async_token: " + ec.message());
          break;
        }
        token = std::move(t);
      }
      if (!stream.socket().is_open()) {
        stream.expires_after(connect_timeout);
        auto [cec] = co_await stream.async_connect(target.endpoint, use_tuple);
        if (cec) {
          stream.close();
          log.error("connect: " + cec.message());
          break;
        }
        beast::error_code ignored;
        stream.socket().set_option(asio::ip::tcp::no_delay(true), ignored);
        ++log.connections;
      }
      http::request<http::string_body> req{http::verb::get, api_target, 11};
      req.set(http::field::host, target.host_header);
      req.set(http::field::user_agent, user_agent);
      req.set(http::field::authorization, bearer_of(token));
      req.keep_alive(true);
      req.prepare_payload();
      stream.expires_after(request_timeout);
      auto [wec, wn] = co_await http::async_write(stream, req, use_tuple);
      beast::error_code rec;
      if (!wec) {
        res = {};
        std::tie(rec, std::ignore) = co_await http::async_read(stream, buffer, res, use_tuple);
      }
      if (wec || rec) {
        stream.close();
        buffer.clear();
        log.error("exchange: " + (wec ? wec : rec).message());
        break;
      }
      stream.expires_never();
      if (!res.keep_alive()) stream.close();
      if (res.result() != http::status::unauthorized || retried) {
        answered = true;
        break;
      }
      ++log.retried_401;
      if (client.invalidate(token)) ++log.invalidated;
    }
    log.record(t0, steady::now());
    log.count();
    if (answered && res.result() != http::status::ok) {
      if (log.not_ok++ == 0 && log.first_error.empty())
        log.first_error = "status " + std::to_string(res.result_int());
    }
  }
  beast::error_code ignored;
  stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  stream.close();
}

asio::awaitable<void> first_token(na::client& client) {
  co_await client.token();
}

// ---- running a phase ----------------------------------------------------------------------------

struct cpu_times {
  double user_s = 0, sys_s = 0;
  double total() const { return user_s + sys_s; }
};

cpu_times rusage_of(int who) {
  rusage ru{};
  getrusage(who, &ru);
  auto sec = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
  };
  return {sec(ru.ru_utime), sec(ru.ru_stime)};
}

// The figures of one design, summed over its phases (one per round).
struct design_result {
  std::string name;
  double seconds = 0;  // wall time of its phases
  std::uint64_t requests = 0, errors = 0, not_ok = 0, retried_401 = 0, invalidated = 0;
  std::uint64_t connections = 0;         // opened, as the design counts them
  std::uint64_t server_connections = 0;  // accepted by the mock server during its phases
  std::uint64_t server_api_requests = 0, server_api_unauthorized = 0, server_refreshes = 0;
  std::uint64_t total_ns = 0, max_ns = 0;
  cpu_times client_cpu;           // the T io_context threads
  std::uint64_t allocations = 0;  // by the T io_context threads (0 without the alloc tracker)
  cpu_times process_cpu;          // the whole process: client threads, mock server, main thread
  bench::histogram latency;
  std::string first_error;
  std::vector<double> round_rps;  // requests/s of each phase
  na::session_stats session;      // session design only (summed over its sessions)

  double rps() const { return seconds > 0 ? static_cast<double>(requests) / seconds : 0; }
  double us_per_request(double s) const {
    return requests ? s * 1e6 / static_cast<double>(requests) : 0;
  }
  double allocations_per_request() const {
    return requests ? static_cast<double>(allocations) / static_cast<double>(requests) : 0;
  }
  double mean_us() const {
    return requests ? static_cast<double>(total_ns) / 1e3 / static_cast<double>(requests) : 0;
  }
  double quantile_us(double p) const {
    return static_cast<double>(std::min(latency.quantile(p), max_ns)) / 1e3;
  }
};

void add(na::session_stats& a, const na::session_stats& b) {
  a.requests += b.requests;
  a.responses += b.responses;
  a.failures += b.failures;
  a.unauthorized_retries += b.unauthorized_retries;
  a.tokens_invalidated += b.tokens_invalidated;
  a.connections_opened += b.connections_opened;
  a.connections_reused += b.connections_reused;
  a.stale_connection_retries += b.stale_connection_retries;
  a.waited_for_connection += b.waited_for_connection;
}

json::object to_json(const na::session_stats& s) {
  return {{"requests", s.requests},
          {"responses", s.responses},
          {"failures", s.failures},
          {"unauthorized_retries", s.unauthorized_retries},
          {"tokens_invalidated", s.tokens_invalidated},
          {"connections_opened", s.connections_opened},
          {"connections_reused", s.connections_reused},
          {"stale_connection_retries", s.stale_connection_retries},
          {"waited_for_connection", s.waited_for_connection}};
}

// Spawns one caller per log with `spawn(log)`, runs the io_context on `threads` threads until
// every caller is done, and adds the phase to `r`.
template <class Spawn>
void run_phase(asio::io_context& ctx, const options& o, na::testing::mock_server& server,
               design_result& r, bench::progress& progress, std::size_t round, Spawn spawn) {
  std::vector<caller_log> logs(static_cast<std::size_t>(o.coroutines));
  const auto before = server.stats();
  const auto process_before = rusage_of(RUSAGE_SELF);
  std::atomic<int> remaining{o.coroutines};
  std::promise<void> all_done;
  ctx.restart();
  const auto start = steady::now();
  const auto deadline = start + std::chrono::seconds(o.seconds);
  for (auto& log : logs)
    asio::co_spawn(ctx, spawn(log, deadline), [&log, &remaining, &all_done](std::exception_ptr e) {
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& x) {
          log.error(std::string("caller: ") + x.what());
        }
      }
      if (--remaining == 0) all_done.set_value();
    });
  std::vector<cpu_times> thread_cpu(static_cast<std::size_t>(o.threads));
  std::vector<std::uint64_t> thread_allocations(static_cast<std::size_t>(o.threads));
  std::vector<std::thread> pool;
  for (std::size_t i = 0; i < thread_cpu.size(); ++i)
    pool.emplace_back([&ctx, &cpu = thread_cpu[i], &allocations = thread_allocations[i]] {
#if NXSYS_AUTH_BENCH_TRACK_ALLOC
      namespace alloc = bench::alloc;
      alloc::count_calls = true;
      const auto before = alloc::calls;
      ctx.run();
      allocations = alloc::calls - before;
      alloc::count_calls = false;
#else
      ctx.run();
      allocations = 0;
#endif
      cpu = rusage_of(RUSAGE_THREAD);
    });
  auto done = all_done.get_future();
  for (int s = 1; done.wait_until(start + std::chrono::seconds(s)) == std::future_status::timeout;
       ++s) {
    if (s > o.seconds) continue;
    std::uint64_t n = 0;
    for (const auto& log : logs) n += log.requests.load(std::memory_order_relaxed);
    progress.step("round " + std::to_string(round) + ", " + r.name + ": " + std::to_string(s) +
                  "/" + std::to_string(o.seconds) + " s, " + std::to_string(n) + " requests");
  }
  const double seconds = std::chrono::duration<double>(steady::now() - start).count();
  for (auto& t : pool) t.join();
  const auto process_after = rusage_of(RUSAGE_SELF);
  const auto after = server.stats();

  std::uint64_t requests = 0;
  for (const auto& log : logs) {
    requests += log.requests.load(std::memory_order_relaxed);
    r.errors += log.errors;
    r.not_ok += log.not_ok;
    r.retried_401 += log.retried_401;
    r.invalidated += log.invalidated;
    r.connections += log.connections;
    r.total_ns += log.total_ns;
    r.max_ns = std::max(r.max_ns, log.max_ns);
    r.latency.merge(log.latency);
    if (r.first_error.empty()) r.first_error = log.first_error;
  }
  for (const auto& cpu : thread_cpu) {
    r.client_cpu.user_s += cpu.user_s;
    r.client_cpu.sys_s += cpu.sys_s;
  }
  for (auto n : thread_allocations) r.allocations += n;
  r.process_cpu.user_s += process_after.user_s - process_before.user_s;
  r.process_cpu.sys_s += process_after.sys_s - process_before.sys_s;
  r.requests += requests;
  r.seconds += seconds;
  r.round_rps.push_back(static_cast<double>(requests) / seconds);
  r.server_connections += after.connections - before.connections;
  r.server_api_requests += after.api_requests - before.api_requests;
  r.server_api_unauthorized += after.api_unauthorized - before.api_unauthorized;
  r.server_refreshes += after.refreshes - before.refreshes;
}

constexpr std::string_view usage = R"(usage: nxsys-session-bench [options]

What nxsys::auth::session costs per API request, against the hand-written design in the same
run. M coroutines on T io_context threads loop GET /api/bench for S seconds against the
in-process mock server, first through one shared session (max_connections C), then each on a
keep-alive connection of its own with "Authorization: Bearer <client.token()>" (401: invalidate
and one retry, as the session does). Prints requests/s, latency percentiles, CPU time per
request (and the session's over the baseline's), allocations per request of the io_context
threads, connections and the session's overhead per request (1/throughput difference). Exits 1
unless every request got a 200, the token endpoint saw the expected refreshes (one with the
default ttl; with a short one, no refresh token reused and at most one refresh per half
lifetime) and the session opened at most C connections.

  --seconds S          duration of each design's phase (default 5)
  --coroutines M       concurrent requests (default 64)
  --threads T          io_context threads of the client side (default 1)
  --connections C      the session's max_connections (default M)
  --server-threads N   mock server threads (default 1)
  --ttl SECONDS        lifetime of the issued access tokens (default 3600); refresh tokens
                       rotate and reuse detection is on, so a short ttl refreshes during the run
  --rounds R           run both designs R times, alternating which goes first (default 1)
  --baseline-token K   token (default): co_await client.token(), which returns a fresh token
                       without suspending; async_token: client.async_token(use_awaitable),
                       which posts its completion, as the session's call does
  --design D          session or baseline: run that design alone (to profile it); no
                       overhead is computed then (default: both)
  --json FILE          write every figure as JSON
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
    else if (a == "--connections")
      o.connections = parse_int(a, value(), 1);
    else if (a == "--server-threads")
      o.server_threads = parse_int(a, value(), 1);
    else if (a == "--ttl")
      o.ttl_s = parse_int(a, value(), 1);
    else if (a == "--rounds")
      o.rounds = parse_int(a, value(), 1);
    else if (a == "--baseline-token") {
      const auto v = value();
      if (v == "token")
        o.baseline_token = token_call::token;
      else if (v == "async_token")
        o.baseline_token = token_call::async_token;
      else
        throw usage_error{"--baseline-token: '" + std::string(v) +
                          "' is neither token nor async_token"};
    } else if (a == "--design") {
      const auto v = value();
      if (v == "session")
        o.run_baseline = false;
      else if (v == "baseline")
        o.run_session = false;
      else if (v != "both")
        throw usage_error{"--design: '" + std::string(v) + "' is not session, baseline or both"};
    } else if (a == "--json")
      o.json_path = value();
    else
      throw usage_error{"unknown option " + std::string(a)};
  }
  if (o.connections == 0) o.connections = o.coroutines;
  return o;
}

// "0.52 0.61 0.70" (1, 5 and 15 minute load averages): how busy the machine was otherwise.
std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return in ? one + " " + five + " " + fifteen : "unknown";
}

std::string fixed(double v, int decimals) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

json::object to_json(const design_result& r, bool with_session) {
  json::array rounds;
  for (double x : r.round_rps) rounds.emplace_back(x);
  json::object o{
      {"seconds", r.seconds},
      {"requests", r.requests},
      {"requests_per_s", r.rps()},
      {"requests_per_s_by_round", std::move(rounds)},
      {"errors", r.errors},
      {"not_200", r.not_ok},
      {"latency_us", json::object{{"mean", r.mean_us()},
                                  {"p50", r.quantile_us(0.50)},
                                  {"p99", r.quantile_us(0.99)},
                                  {"p999", r.quantile_us(0.999)},
                                  {"max", static_cast<double>(r.max_ns) / 1e3},
                                  {"count", r.latency.count()}}},
      {"client_threads_cpu_us_per_request", r.us_per_request(r.client_cpu.total())},
      {"client_threads_user_s", r.client_cpu.user_s},
      {"client_threads_sys_s", r.client_cpu.sys_s},
      {"allocations_per_request", r.allocations_per_request()},
      {"process_cpu_us_per_request", r.us_per_request(r.process_cpu.total())},
      {"process_user_s", r.process_cpu.user_s},
      {"process_sys_s", r.process_cpu.sys_s},
      {"connections_opened", with_session ? r.session.connections_opened : r.connections},
      {"server_connections_accepted", r.server_connections},
      {"server_api_requests", r.server_api_requests},
      {"server_api_unauthorized", r.server_api_unauthorized},
      {"server_refreshes", r.server_refreshes},
      {"unauthorized_retries", with_session ? r.session.unauthorized_retries : r.retried_401},
      {"tokens_invalidated", with_session ? r.session.tokens_invalidated : r.invalidated},
      {"first_error", r.first_error}};
  if (with_session) o["session_stats"] = to_json(r.session);
  return o;
}

}  // namespace

int main(int argc, char** argv) try {
  int exit_status = 0;
  const auto parsed =
      bench::parse_command_line("nxsys-session-bench", usage, parse_args, argc, argv, exit_status);
  if (!parsed) return exit_status;
  const options& o = *parsed;

  na::testing::mock_server_options so;
  so.ttl = std::chrono::seconds(o.ttl_s);
  so.rotate = true;
  so.reuse_detection = true;
  so.threads = static_cast<unsigned>(o.server_threads);
  na::testing::mock_server server(so);
  const auto run_start = steady::now();

  asio::io_context ctx(o.threads);
  na::client client(ctx.get_executor(), bench::config_for(server, so));
  const target_info target{
      asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), server.port()),
      "127.0.0.1:" + std::to_string(server.port())};

  std::printf("nxsys-auth session overhead: M coroutines on T io_context threads send GET %s\n",
              std::string(api_target).c_str());
  std::printf("in a loop for %d s per design, through one session (max_connections C) and by\n",
              o.seconds);
  std::printf("hand (a keep-alive connection per coroutine, token from %s per request).\n",
              o.baseline_token == token_call::token ? "client.token()" : "client.async_token()");
  std::printf("Mock server in-process (%d thread%s), tokens live %d s. The client side, the\n",
              o.server_threads, o.server_threads == 1 ? "" : "s", o.ttl_s);
  const std::string load_before = load_average();
  std::printf(
      "server and whatever else runs share this machine's %ld cores (load average\n"
      "%s now).\n\n",
      sysconf(_SC_NPROCESSORS_ONLN), load_before.c_str());
  std::fflush(stdout);

  // The first token, outside the measured phases: neither design pays for it.
  {
    std::promise<std::string> got;
    asio::co_spawn(ctx, first_token(client), [&got](std::exception_ptr e) {
      std::string what;
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& x) {
          what = x.what();
        }
      }
      got.set_value(what);
    });
    ctx.run();
    if (auto what = got.get_future().get(); !what.empty())
      throw std::runtime_error("the first token: " + what);
  }

  design_result sess, base;
  sess.name = "session";
  base.name = "baseline";
  bench::progress progress(static_cast<std::size_t>(o.rounds) *
                           static_cast<std::size_t>(o.run_session + o.run_baseline) *
                           static_cast<std::size_t>(o.seconds));
  auto run_session = [&](std::size_t round) {
    na::session_config sc;
    sc.base_url = server.base_url();
    sc.max_connections = static_cast<std::size_t>(o.connections);
    sc.http.connect_timeout = connect_timeout;
    sc.http.request_timeout = request_timeout;
    na::session s(ctx.get_executor(), client, sc);
    run_phase(ctx, o, server, sess, progress, round,
              [&s](caller_log& log, steady::time_point d) { return session_caller(s, log, d); });
    add(sess.session, s.stats());
  };
  auto run_baseline = [&](std::size_t round) {
    run_phase(ctx, o, server, base, progress, round, [&](caller_log& log, steady::time_point d) {
      return baseline_caller(client, target, o.baseline_token, log, d);
    });
  };
  for (std::size_t round = 1; round <= static_cast<std::size_t>(o.rounds); ++round) {
    if (round % 2 == 1) {
      if (o.run_session) run_session(round);
      if (o.run_baseline) run_baseline(round);
    } else {
      if (o.run_baseline) run_baseline(round);
      if (o.run_session) run_session(round);
    }
  }
  progress.finish();
  const double run_seconds = std::chrono::duration<double>(steady::now() - run_start).count();
  const auto ss = server.stats();
  const auto cs = client.stats();
  const std::string load_after = load_average();

  // ---- checks ---------------------------------------------------------------------------------
  std::vector<std::string> failures;
  auto fail = [&](std::string what) { failures.push_back(std::move(what)); };
  for (const design_result* r : {&sess, &base}) {
    if (!(r == &sess ? o.run_session : o.run_baseline)) continue;
    if (r->errors)
      fail(r->name + ": " + std::to_string(r->errors) + " requests failed: " + r->first_error);
    if (r->not_ok)
      fail(r->name + ": " + std::to_string(r->not_ok) + " answers not 200: " + r->first_error);
    if (r->requests == 0) fail(r->name + ": no request completed");
    const auto retries = r == &sess ? sess.session.unauthorized_retries : base.retried_401;
    if (r->server_api_unauthorized != retries + r->not_ok)
      fail(r->name + ": the server answered " + std::to_string(r->server_api_unauthorized) +
           " 401s, the design saw " + std::to_string(retries + r->not_ok));
  }
  const auto& st = sess.session;
  if (st.requests != sess.requests || st.responses != sess.requests || st.failures != 0)
    fail("session stats: " + std::to_string(st.requests) + " requests, " +
         std::to_string(st.responses) + " responses, " + std::to_string(st.failures) +
         " failures for " + std::to_string(sess.requests) + " calls");
  // Sent: every call, its 401 retry, and at most its stale-connection retry.
  if (sess.server_api_requests < sess.requests + st.unauthorized_retries ||
      sess.server_api_requests >
          sess.requests + st.unauthorized_retries + st.stale_connection_retries)
    fail("session: the server saw " + std::to_string(sess.server_api_requests) +
         " API requests for " + std::to_string(sess.requests) + " calls");
  if (base.server_api_requests != base.requests + base.retried_401)
    fail("baseline: the server saw " + std::to_string(base.server_api_requests) +
         " API requests for " + std::to_string(base.requests) + " calls");
  // Each round's session is new: at most C connections each.
  if (st.connections_opened >
      static_cast<std::uint64_t>(o.connections) * static_cast<std::uint64_t>(o.rounds))
    fail("session: " + std::to_string(st.connections_opened) +
         " connections opened, C = " + std::to_string(o.connections) + " per session");
  if (base.connections >
      static_cast<std::uint64_t>(o.coroutines) * static_cast<std::uint64_t>(o.rounds))
    fail("baseline: " + std::to_string(base.connections) + " connections opened for " +
         std::to_string(o.coroutines) + " coroutines");
  // A token is refreshed once 3/4 of its life is used (earlier in the background, from 0.6):
  // a token living longer than the run costs one refresh, the first; a short-lived one at most
  // one per half lifetime after that.
  const bool long_lived = 0.5 * o.ttl_s > run_seconds;
  const auto max_refreshes =
      long_lived ? std::uint64_t{1}
                 : 1 + static_cast<std::uint64_t>(std::floor(run_seconds / (0.5 * o.ttl_s)));
  if (long_lived ? ss.refreshes != 1 : ss.refreshes > max_refreshes)
    fail(std::to_string(ss.refreshes) + " refreshes in " + fixed(run_seconds, 1) + " s with " +
         std::to_string(o.ttl_s) + " s tokens (expected " +
         (long_lived ? "1" : "at most " + std::to_string(max_refreshes)) + ")");
  if (ss.reuse_detected)
    fail(std::to_string(ss.reuse_detected) + " rotated refresh tokens presented again");
  if (ss.errors) fail(std::to_string(ss.errors) + " token requests answered with an error");

  // ---- table --------------------------------------------------------------------------------
  // Only from a run of both designs (each completed requests, or a check failed).
  const bool both = sess.requests > 0 && base.requests > 0;
  const double overhead_us = both ? 1e6 / sess.rps() - 1e6 / base.rps() : 0.0;
  const double client_cpu_overhead_us = both ? sess.us_per_request(sess.client_cpu.total()) -
                                                   base.us_per_request(base.client_cpu.total())
                                             : 0.0;
  const double process_cpu_overhead_us = both ? sess.us_per_request(sess.process_cpu.total()) -
                                                    base.us_per_request(base.process_cpu.total())
                                              : 0.0;
  // The issue's target: the session's client-thread CPU per request over the baseline's.
  const double client_cpu_ratio = both ? sess.us_per_request(sess.client_cpu.total()) /
                                             base.us_per_request(base.client_cpu.total())
                                       : 0.0;
  std::printf(
      "coroutines M %d, client threads T %d, max_connections C %d, server threads %d,\n"
      "token ttl %d s, %d s per phase, %d round%s\n\n",
      o.coroutines, o.threads, o.connections, o.server_threads, o.ttl_s, o.seconds, o.rounds,
      o.rounds == 1 ? "" : "s");
  // A design not run shows "-", and then no difference.
  auto row = [&](const char* what, const std::string& a, const std::string& b,
                 const std::string& d = "") {
    std::printf("%-36s %14s %14s %14s\n", what, o.run_session ? a.c_str() : "-",
                o.run_baseline ? b.c_str() : "-", both ? d.c_str() : "");
  };
  auto num = [](std::uint64_t v) { return std::to_string(v); };
  row("", "session", "baseline", "session - base");
  row("requests", num(sess.requests), num(base.requests));
  row("requests/s", fixed(sess.rps(), 0), fixed(base.rps(), 0), fixed(sess.rps() - base.rps(), 0));
  for (std::size_t i = 0; i < sess.round_rps.size() && o.rounds > 1; ++i)
    row(("  requests/s, round " + std::to_string(i + 1)).c_str(), fixed(sess.round_rps[i], 0),
        fixed(base.round_rps[i], 0));
  row("1/throughput (us)", fixed(1e6 / std::max(sess.rps(), 1e-9), 2),
      fixed(1e6 / std::max(base.rps(), 1e-9), 2), fixed(overhead_us, 2));
  row("latency mean (us)", fixed(sess.mean_us(), 1), fixed(base.mean_us(), 1),
      fixed(sess.mean_us() - base.mean_us(), 1));
  for (auto [label, p] : {std::pair{"latency p50 (us)", 0.50}, std::pair{"latency p99 (us)", 0.99},
                          std::pair{"latency p99.9 (us)", 0.999}})
    row(label, fixed(sess.quantile_us(p), 1), fixed(base.quantile_us(p), 1),
        fixed(sess.quantile_us(p) - base.quantile_us(p), 1));
  row("latency max (us)", fixed(static_cast<double>(sess.max_ns) / 1e3, 1),
      fixed(static_cast<double>(base.max_ns) / 1e3, 1));
  row("CPU/request, client threads (us)", fixed(sess.us_per_request(sess.client_cpu.total()), 2),
      fixed(base.us_per_request(base.client_cpu.total()), 2), fixed(client_cpu_overhead_us, 2));
  row("  of which user (us)", fixed(sess.us_per_request(sess.client_cpu.user_s), 2),
      fixed(base.us_per_request(base.client_cpu.user_s), 2));
  row("  of which sys (us)", fixed(sess.us_per_request(sess.client_cpu.sys_s), 2),
      fixed(base.us_per_request(base.client_cpu.sys_s), 2));
  row("  session / baseline", "", "", fixed(client_cpu_ratio, 3) + "x");
#if NXSYS_AUTH_BENCH_TRACK_ALLOC
  row("allocations/request, client threads", fixed(sess.allocations_per_request(), 2),
      fixed(base.allocations_per_request(), 2),
      fixed(sess.allocations_per_request() - base.allocations_per_request(), 2));
#endif
  row("CPU/request, whole process (us)", fixed(sess.us_per_request(sess.process_cpu.total()), 2),
      fixed(base.us_per_request(base.process_cpu.total()), 2), fixed(process_cpu_overhead_us, 2));
  row("client CPU use (cores)", fixed(sess.client_cpu.total() / sess.seconds, 2),
      fixed(base.client_cpu.total() / base.seconds, 2));
  row("process CPU use (cores)", fixed(sess.process_cpu.total() / sess.seconds, 2),
      fixed(base.process_cpu.total() / base.seconds, 2));
  row("connections opened", num(st.connections_opened), num(base.connections));
  row("server: connections accepted", num(sess.server_connections), num(base.server_connections));
  row("server: API requests", num(sess.server_api_requests), num(base.server_api_requests));
  row("server: 401 answers", num(sess.server_api_unauthorized), num(base.server_api_unauthorized));
  row("401s retried", num(st.unauthorized_retries), num(base.retried_401));
  row("  of which invalidated the token", num(st.tokens_invalidated), num(base.invalidated));
  row("refreshes during the phases", num(sess.server_refreshes), num(base.server_refreshes));
  row("errors", num(sess.errors), num(base.errors));
  row("answers not 200", num(sess.not_ok), num(base.not_ok));
  std::printf(
      "\nsession stats: %llu requests, %llu responses, %llu failures, %llu 401 retries (%llu "
      "invalidated),\n%llu connections opened, %llu reused, %llu stale-connection retries, "
      "%llu waited for a connection\n",
      static_cast<unsigned long long>(st.requests), static_cast<unsigned long long>(st.responses),
      static_cast<unsigned long long>(st.failures),
      static_cast<unsigned long long>(st.unauthorized_retries),
      static_cast<unsigned long long>(st.tokens_invalidated),
      static_cast<unsigned long long>(st.connections_opened),
      static_cast<unsigned long long>(st.connections_reused),
      static_cast<unsigned long long>(st.stale_connection_retries),
      static_cast<unsigned long long>(st.waited_for_connection));
  std::printf(
      "token endpoint: %llu refreshes in %.1f s (%s), %llu reuse detected, %llu errors; "
      "client: %llu refreshes ahead, %llu invalidations\n",
      static_cast<unsigned long long>(ss.refreshes), run_seconds,
      long_lived ? "expected 1" : ("at most " + std::to_string(max_refreshes)).c_str(),
      static_cast<unsigned long long>(ss.reuse_detected),
      static_cast<unsigned long long>(ss.errors),
      static_cast<unsigned long long>(cs.refreshes_ahead),
      static_cast<unsigned long long>(cs.invalidations));
  if (both)
    std::printf(
        "session overhead per request: %.2f us of throughput (1/rps difference), %.2f us "
        "of client-thread CPU (%.3fx the baseline's), %.2f us of process CPU\n",
        overhead_us, client_cpu_overhead_us, client_cpu_ratio, process_cpu_overhead_us);
  std::printf(
      "(latency from before the token is asked for to the answer; percentiles within "
      "3%%, the max exact.\n The mock server runs in this process on the same %ld cores: "
      "whole-process CPU includes it. Load average\n %s before, %s after.)\n",
      sysconf(_SC_NPROCESSORS_ONLN), load_before.c_str(), load_after.c_str());

  if (!o.json_path.empty()) {
    json::array fails;
    for (const auto& f : failures) fails.emplace_back(f);
    bench::write_json(
        o.json_path, json::object{{"benchmark", "session"},
                                  {"machine", bench::machine_info()},
                                  {"seconds", o.seconds},
                                  {"coroutines", o.coroutines},
                                  {"threads", o.threads},
                                  {"max_connections", o.connections},
                                  {"server_threads", o.server_threads},
                                  {"ttl_s", o.ttl_s},
                                  {"rounds", o.rounds},
                                  {"baseline_token",
                                   o.baseline_token == token_call::token ? "token" : "async_token"},
                                  {"run_seconds", run_seconds},
                                  {"load_average_before", load_before},
                                  {"load_average_after", load_after},
                                  {"session", to_json(sess, true)},
                                  {"baseline", to_json(base, false)},
                                  {"overhead_us_per_request", overhead_us},
                                  {"client_cpu_overhead_us_per_request", client_cpu_overhead_us},
                                  {"client_cpu_ratio", client_cpu_ratio},
                                  {"process_cpu_overhead_us_per_request", process_cpu_overhead_us},
                                  {"server", json::parse(na::testing::to_json(ss))},
                                  {"client_stats", bench::to_json(cs)},
                                  {"max_refreshes", max_refreshes},
                                  {"failures", std::move(fails)},
                                  {"passed", failures.empty()}});
  }
  for (const auto& f : failures)
    std::fprintf(stderr, "nxsys-session-bench: FAILED: %s\n", f.c_str());
  return failures.empty() ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "nxsys-session-bench: %s\n", e.what());
  return 1;
}
