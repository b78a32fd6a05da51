// SPDX-License-Identifier: BSL-1.0
// Shared by the benchmark programs: client configs for the mock server, latency summaries,
// peak-RSS probes, a progress line and JSON output.
#ifndef NXSYS_AUTH_BENCHMARKS_BENCH_UTIL_HPP
#define NXSYS_AUTH_BENCHMARKS_BENCH_UTIL_HPP

#include <nxsys/auth.hpp>
#include <nxsys/auth/testing/manual_clock.hpp>
#include <nxsys/auth/testing/mock_server.hpp>

#include <boost/json.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <unistd.h>
#include <vector>

namespace nxsys::auth::bench {

/// Nanoseconds in log-linear buckets, 32 per power of two: recording is one increment and a
/// percentile read back is within 1/32 of the exact value, however many calls a run makes.
class histogram {
 public:
  void record(std::uint64_t v) { ++counts_[index(v)]; }

  void merge(const histogram& other) {
    for (std::size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
  }

  std::uint64_t count() const {
    std::uint64_t n = 0;
    for (auto c : counts_) n += c;
    return n;
  }

  /// The upper bound of the bucket holding the p-quantile (ranked as bench::summarize does).
  std::uint64_t quantile(double p) const {
    const std::uint64_t n = count();
    if (n == 0) return 0;
    const auto rank = static_cast<std::uint64_t>(p * static_cast<double>(n - 1) + 0.5);
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen > rank) return upper_bound(i);
    }
    return upper_bound(counts_.size() - 1);
  }

 private:
  static constexpr int sub_bits = 5;
  static constexpr std::uint64_t subs = std::uint64_t{1} << sub_bits;

  static std::size_t index(std::uint64_t v) {
    if (v < subs) return static_cast<std::size_t>(v);
    const int shift = static_cast<int>(std::bit_width(v)) - 1 - sub_bits;
    return static_cast<std::size_t>((static_cast<std::uint64_t>(shift) + 1) * subs +
                                    ((v >> shift) & (subs - 1)));
  }

  static std::uint64_t upper_bound(std::size_t i) {
    if (i < subs) return i;
    const auto shift = static_cast<int>(i / subs) - 1;
    return ((subs + i % subs) << shift) + ((std::uint64_t{1} << shift) - 1);
  }

  std::array<std::uint64_t, (64 - sub_bits + 1) * subs> counts_{};
};

/// A client_config for `server`, with the mock server's default credentials.
inline client_config config_for(const testing::mock_server& server,
                                const testing::mock_server_options& opts = {}) {
  client_config cfg;
  cfg.token_url = server.token_url();
  cfg.client_id = opts.client_id;
  cfg.client_secret = opts.client_secret;
  cfg.refresh_token = opts.initial_refresh_token;
  return cfg;
}

inline double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

/// Percentiles of a set of latencies (any unit; the input is reordered).
struct latency_summary {
  double p50 = 0, p99 = 0, p999 = 0, max = 0;
  std::size_t count = 0;
};

inline latency_summary summarize(std::vector<double>& v) {
  latency_summary s;
  s.count = v.size();
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  auto at = [&](double p) {
    return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5)];
  };
  s.p50 = at(0.50);
  s.p99 = at(0.99);
  s.p999 = at(0.999);
  s.max = v.back();
  return s;
}

inline boost::json::object to_json(const latency_summary& s) {
  return {{"p50", s.p50}, {"p99", s.p99}, {"p999", s.p999}, {"max", s.max}, {"count", s.count}};
}

/// The process's peak resident set since the last reset_peak_rss(), in KiB (VmHWM).
inline long peak_rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

/// Resets VmHWM to the current RSS (Linux: "5" > /proc/self/clear_refs). False if refused.
inline bool reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

inline long current_rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return 0;
}

/// "[3/20 15%] text" on stderr, rewritten in place on a terminal, one line per step otherwise.
class progress {
 public:
  explicit progress(std::size_t total) : total_(total), tty_(isatty(STDERR_FILENO) != 0) {}
  void step(const std::string& what) {
    ++done_;
    std::fprintf(stderr, "%s[%zu/%zu %3zu%%] %-60s%s", tty_ ? "\r" : "", done_, total_,
                 total_ ? done_ * 100 / total_ : 100, what.c_str(), tty_ ? "" : "\n");
    std::fflush(stderr);
  }
  void finish() {
    if (tty_) std::fprintf(stderr, "\r%80s\r", "");
  }

 private:
  std::size_t total_;
  std::size_t done_ = 0;
  bool tty_;
};

// printf-style formatting of up to three numbers, for table cells and target lines.
inline std::string fmt(const char* f, double a, double b = 0, double c = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, f, a, b, c);
  return buf;
}

// A benchmark's targets, checked against one run's figures. Misses are reported, not fatal:
// they are measurements on a shared machine. Only a correctness target (one refresh per burst,
// no failure) that fails decides the exit status. Written to the JSON as
// [{"name", "measured", "goal", "result": "PASS" | "MISS" | "FAIL", "correctness"}], which
// nxsys-bench-summary gathers into the main job's one table.
class target_list {
 public:
  void add(std::string name, std::string measured, std::string goal, bool ok,
           bool correctness = false) {
    const char* result = ok ? "PASS" : (correctness ? "FAIL" : "MISS");
    if (!ok && correctness) correct_ = false;
    items_.push_back({{"name", name},
                      {"measured", measured},
                      {"goal", goal},
                      {"result", result},
                      {"correctness", correctness}});
  }
  bool correct() const noexcept { return correct_; }
  const boost::json::array& json() const noexcept { return items_; }
  void print() const {
    std::printf("\ntargets (misses are reported, not fatal; a FAIL is):\n");
    for (const auto& t : items_) {
      const auto& o = t.as_object();
      std::printf("  %s  %s: %s (target %s)\n", o.at("result").as_string().c_str(),
                  o.at("name").as_string().c_str(), o.at("measured").as_string().c_str(),
                  o.at("goal").as_string().c_str());
    }
  }

 private:
  boost::json::array items_;
  bool correct_ = true;
};

inline void write_json(const std::string& path, const boost::json::value& v) {
  std::ofstream out(path, std::ios::trunc);
  out << boost::json::serialize(v) << "\n";
  if (!out) throw std::runtime_error("cannot write " + path);
}

inline boost::json::object to_json(const client_stats& s) {
  return {
      {"refreshes_started", s.refreshes_started},
      {"refreshes_succeeded", s.refreshes_succeeded},
      {"refreshes_failed", s.refreshes_failed},
      {"refresh_tokens_rotated", s.refresh_tokens_rotated},
      {"waiters_coalesced", s.waiters_coalesced},
      {"waiters_cancelled", s.waiters_cancelled},
      {"max_waiters_per_refresh", s.max_waiters_per_refresh},
      {"invalidations", s.invalidations},
      {"slow_path_calls", s.slow_path_calls},
      {"connections_opened", s.connections_opened},
      {"calls_failed_fast", s.calls_failed_fast},
      {"refreshes_ahead", s.refreshes_ahead},
      {"stale_tokens_served", s.stale_tokens_served},
      {"retries", s.retries},
      {"tokens_from_store", s.tokens_from_store},
      {"refresh_tokens_adopted", s.refresh_tokens_adopted},
      {"invalid_grant_retries", s.invalid_grant_retries},
      {"store_loads", s.store_loads},
      {"store_load_failures", s.store_load_failures},
      {"store_saves", s.store_saves},
      {"store_save_failures", s.store_save_failures},
      {"store_conflicts", s.store_conflicts},
      {"store_handoffs", s.store_handoffs},
      {"leases_lost", s.leases_lost},
      {"refreshes_failed_by_reason", boost::json::value_from(s.refreshes_failed_by_reason)},
      {"waiters_per_refresh_histogram", boost::json::value_from(s.waiters_per_refresh_histogram)},
      {"refresh_latency_last_us", s.refresh_latency_last.count() / 1e3},
      {"refresh_latency_max_us", s.refresh_latency_max.count() / 1e3},
      {"refresh_latency_mean_us",
       s.refreshes_succeeded + s.refreshes_failed
           ? static_cast<double>(s.refresh_latency_total.count()) / 1e3 /
                 static_cast<double>(s.refreshes_succeeded + s.refreshes_failed)
           : 0.0}};
}

/// A bad command line; the program prints it with its usage and exits with status 2.
struct usage_error {
  std::string message;
};

/// `s` as an int >= min, or usage_error naming `flag`.
inline int parse_int(std::string_view flag, std::string_view s, int min) {
  int v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < min)
    throw usage_error{std::string(flag) + ": '" + std::string(s) +
                      "' is not a number >= " + std::to_string(min)};
  return v;
}

/// Walks a command line: flag() is the current argument, value() takes the one after it.
class arg_reader {
 public:
  arg_reader(int argc, char** argv) : argc_(argc), argv_(argv) {}
  bool next() { return ++i_ < argc_; }
  std::string_view flag() const { return argv_[i_]; }
  std::string_view value() {
    if (i_ + 1 >= argc_) throw usage_error{std::string(flag()) + " needs a value"};
    return argv_[++i_];
  }

 private:
  int argc_;
  char** argv_;
  int i_ = 0;
};

/// Prints "<program> <version>" and returns true if any argument is --version.
inline bool print_version_if_asked(std::string_view program, int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--version") {
      std::printf("%.*s %.*s\n", static_cast<int>(program.size()), program.data(),
                  static_cast<int>(version_string.size()), version_string.data());
      return true;
    }
  }
  return false;
}

/// Runs `parse(argc, argv)`, which returns std::optional<Options> (nullopt for --help). On
/// --help prints `usage` and sets `exit_status` to 0, on a usage_error prints it with `usage`
/// and sets 2; both return nullopt, after which main returns `exit_status`. --version anywhere
/// prints "<program> <version>" instead, and nullopt with `exit_status` 0.
template <class Parse>
auto parse_command_line(std::string_view program, std::string_view usage, Parse parse, int argc,
                        char** argv, int& exit_status) -> decltype(parse(argc, argv)) {
  if (print_version_if_asked(program, argc, argv)) {
    exit_status = 0;
    return std::nullopt;
  }
  try {
    auto parsed = parse(argc, argv);
    if (!parsed) {
      std::fwrite(usage.data(), 1, usage.size(), stdout);
      exit_status = 0;
    }
    return parsed;
  } catch (const usage_error& e) {
    std::fprintf(stderr, "%.*s: %s\n\n%.*s", static_cast<int>(program.size()), program.data(),
                 e.message.c_str(), static_cast<int>(usage.size()), usage.data());
    exit_status = 2;
    return std::nullopt;
  }
}

/// The machine the figures come from, for the JSON results.
inline boost::json::object machine_info() {
  boost::json::object m;
  m["cores"] = static_cast<std::int64_t>(sysconf(_SC_NPROCESSORS_ONLN));
  std::ifstream cpu("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpu, line))
    if (line.rfind("model name", 0) == 0) {
      m["cpu"] = line.substr(line.find(':') + 2);
      break;
    }
#if defined(__clang__)
  m["compiler"] = "clang " __clang_version__;
#elif defined(__GNUC__)
  m["compiler"] = "g++ " __VERSION__;
#endif
#ifdef NDEBUG
  m["build"] = "optimized, NDEBUG";
#else
  m["build"] = "assertions on";
#endif
  return m;
}

}  // namespace nxsys::auth::bench

#endif
