// SPDX-License-Identifier: BSL-1.0
// nxsys-gateway --timeline: the requests answered per time slice with their latency (request
// read to answer written), and the client's refreshes at the time they finished, streamed to a
// tab-separated file while the gateway runs. Load generators such as wrk only report a whole
// run; this shows what a refresh does to throughput and tail latency at the moment it happens.
//
// The serving threads pay two steady_clock reads per request (read, written) and one relaxed
// atomic increment on a cache line their thread alone writes: each thread has a shard, a ring
// of slices of fixed log-bucket histograms. A thread of the timeline's own takes each slice out
// of the shards (atomic exchange, so no count is ever lost) one slice after it ended and writes
// it; a request whose thread stalled for longer than that is counted in a later slice.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace nxsys_gateway {

class timeline {
 public:
  using clock = std::chrono::steady_clock;

  // Throws std::runtime_error when `path` cannot be written.
  timeline(const std::string& path, std::chrono::milliseconds slice)
      : slice_(slice), start_(clock::now()), file_(std::fopen(path.c_str(), "w")) {
    if (file_ == nullptr) throw std::runtime_error("--timeline: cannot write " + path);
    const std::time_t now = std::time(nullptr);
    char utc[32];
    std::strftime(utc, sizeof utc, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
    std::fprintf(file_,
                 "# nxsys-gateway timeline: slices of %lld ms from the gateway's start (%s);"
                 " latencies from request read to answer written, percentiles to +-6.25%%\n"
                 "# slice\tt_s\trequests\trequests_per_s\tp50_ms\tp90_ms\tp99_ms\tmax_ms"
                 "\tstatus_ge_400\n"
                 "# refresh\tt_s\tlatency_ms\tahead\twaiters\tresult\n",
                 static_cast<long long>(slice.count()), utc);
    std::fflush(file_);
    writer_ = std::jthread([this](std::stop_token stop) { write_loop(stop); });
  }

  timeline(const timeline&) = delete;
  timeline& operator=(const timeline&) = delete;

  ~timeline() {
    finish();
    std::fclose(file_);
  }

  // One answer written, `status` its HTTP status. Called from the serving threads.
  void record(clock::time_point read_at, clock::time_point written_at, unsigned status) {
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(written_at - read_at);
    slot& s = local().slots[static_cast<std::size_t>(slice_of(written_at) % ring)];
    s.buckets[bucket_of(static_cast<std::uint64_t>(std::max<std::int64_t>(us.count(), 0)))]
        .fetch_add(1, std::memory_order_relaxed);
    if (status >= 400) s.status_ge_400.fetch_add(1, std::memory_order_relaxed);
  }

  // One finished refresh (the client's on_refresh observer): rare, so a lock is fine.
  void refresh(std::chrono::nanoseconds latency, bool ahead, std::uint64_t waiters,
               std::string_view result) {
    const auto at = clock::now();
    std::lock_guard lock(mutex_);
    refreshes_.push_back({at, latency, ahead, waiters, std::string(result)});
  }

  // Writes what is left once every serving thread is done, and a closing comment with the
  // totals. Returns false when the file could not be written completely.
  bool finish() {
    if (writer_.joinable()) {
      writer_.request_stop();
      writer_.join();
      std::lock_guard lock(mutex_);
      write_until(slice_of(clock::now()) + 1, true);
      std::fprintf(file_, "# total: %llu requests, %llu refreshes, %lld slices\n",
                   static_cast<unsigned long long>(total_requests_),
                   static_cast<unsigned long long>(total_refreshes_),
                   static_cast<long long>(next_slice_));
      std::fflush(file_);
    }
    return std::ferror(file_) == 0;
  }

 private:
  // 8 buckets per power of two of microseconds, exact below 8 us, up to 2^32 us (71 minutes).
  static constexpr std::size_t bucket_count = 8 * 30;
  // A stall of the writer longer than this many slices mixes slices (counts are still kept).
  static constexpr std::int64_t ring = 64;

  static std::size_t bucket_of(std::uint64_t us) {
    us = std::min<std::uint64_t>(us, 0xffff'ffffu);
    if (us < 8) return static_cast<std::size_t>(us);
    const int octave = static_cast<int>(std::bit_width(us)) - 1;  // 3..31
    return static_cast<std::size_t>(8 * (octave - 2)) + ((us >> (octave - 3)) & 7);
  }

  // The middle of a bucket, in milliseconds.
  static double bucket_ms(std::size_t b) {
    if (b < 8) return static_cast<double>(b) / 1000.0;
    const int shift = static_cast<int>(b / 8) - 1;
    const double low = static_cast<double>((8 + b % 8) << shift);
    return (low + static_cast<double>(1ull << shift) / 2) / 1000.0;
  }

  struct slot {
    std::array<std::atomic<std::uint32_t>, bucket_count> buckets{};
    std::atomic<std::uint32_t> status_ge_400{0};
  };
  // Aligned so that two threads' shards never share a cache line.
  struct alignas(64) shard {
    std::array<slot, ring> slots{};
  };

  struct refresh_mark {
    clock::time_point at;
    std::chrono::nanoseconds latency;
    bool ahead;
    std::uint64_t waiters;
    std::string result;
  };

  std::int64_t slice_of(clock::time_point t) const { return (t - start_) / slice_; }

  // This thread's shard, made on its first request. Timelines are told apart by a number, not
  // their address, which a later one may reuse.
  shard& local() {
    thread_local std::uint64_t owner = 0;
    thread_local shard* mine = nullptr;
    if (owner != id_) {
      std::lock_guard lock(mutex_);
      shards_.push_back(std::make_unique<shard>());
      mine = shards_.back().get();
      owner = id_;
    }
    return *mine;
  }

  static std::uint64_t next_id() {
    static std::atomic<std::uint64_t> last{0};
    return ++last;
  }

  void write_loop(std::stop_token stop) {
    std::unique_lock lock(mutex_);
    while (!stop.stop_requested()) {
      // A slice is written one slice after its end: requests that read the clock just before
      // the boundary have incremented their shard by then.
      const auto due = start_ + (next_slice_ + 2) * slice_;
      cv_.wait_until(lock, stop, due, [] { return false; });
      if (stop.stop_requested()) break;
      write_until(slice_of(clock::now()) - 1, false);
    }
  }

  // Writes slices [next_slice_, end) and the refreshes that finished before `end` (all of them
  // when `last`). Under mutex_.
  void write_until(std::int64_t end, bool last) {
    std::array<std::uint64_t, bucket_count> merged;
    for (; next_slice_ < end; ++next_slice_) {
      merged.fill(0);
      std::uint64_t errors = 0;
      for (auto& sh : shards_) {
        slot& s = sh->slots[static_cast<std::size_t>(next_slice_ % ring)];
        for (std::size_t b = 0; b < bucket_count; ++b)
          merged[b] += s.buckets[b].exchange(0, std::memory_order_relaxed);
        errors += s.status_ge_400.exchange(0, std::memory_order_relaxed);
      }
      std::uint64_t n = 0;
      for (auto c : merged) n += c;
      total_requests_ += n;
      const double slice_s = std::chrono::duration<double>(slice_).count();
      std::fprintf(file_, "slice\t%.3f\t%llu\t%.0f", static_cast<double>(next_slice_) * slice_s,
                   static_cast<unsigned long long>(n), static_cast<double>(n) / slice_s);
      // The smallest bucket holding the q-th answer, for q = 50%, 90%, 99% and the last one.
      for (double q : {0.50, 0.90, 0.99, 1.0}) {
        if (n == 0) {
          std::fputs("\tNaN", file_);
          continue;
        }
        const auto rank = std::max<std::uint64_t>(
            1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(n))));
        std::uint64_t seen = 0;
        std::size_t b = 0;
        while ((seen += merged[b]) < rank) ++b;
        std::fprintf(file_, "\t%.3f", bucket_ms(b));
      }
      std::fprintf(file_, "\t%llu\n", static_cast<unsigned long long>(errors));
      write_refreshes(start_ + (next_slice_ + 1) * slice_);
    }
    if (last) write_refreshes(clock::time_point::max());
    std::fflush(file_);
  }

  void write_refreshes(clock::time_point before) {
    std::sort(refreshes_.begin(), refreshes_.end(),
              [](const auto& a, const auto& b) { return a.at < b.at; });
    auto it = refreshes_.begin();
    for (; it != refreshes_.end() && it->at < before; ++it) {
      std::fprintf(file_, "refresh\t%.3f\t%.3f\t%d\t%llu\t%s\n",
                   std::chrono::duration<double>(it->at - start_).count(),
                   std::chrono::duration<double, std::milli>(it->latency).count(),
                   it->ahead ? 1 : 0, static_cast<unsigned long long>(it->waiters),
                   it->result.c_str());
      ++total_refreshes_;
    }
    refreshes_.erase(refreshes_.begin(), it);
  }

  const std::uint64_t id_ = next_id();
  const std::chrono::milliseconds slice_;
  const clock::time_point start_;
  std::FILE* const file_;
  std::mutex mutex_;  // shards_ (not their counters), refreshes_, the file and the totals
  std::condition_variable_any cv_;
  std::vector<std::unique_ptr<shard>> shards_;
  std::vector<refresh_mark> refreshes_;
  std::int64_t next_slice_ = 0;
  std::uint64_t total_requests_ = 0;
  std::uint64_t total_refreshes_ = 0;
  std::jthread writer_;  // last: started once everything above exists, stopped first
};

}  // namespace nxsys_gateway
