// SPDX-License-Identifier: BSL-1.0
/// @file
/// A clock for client_config::clock that tests move forward by hand.
#ifndef NXSYS_AUTH_TESTING_MANUAL_CLOCK_HPP
#define NXSYS_AUTH_TESTING_MANUAL_CLOCK_HPP

#include <nxsys/auth/config.hpp>

#include <atomic>
#include <chrono>

namespace nxsys::auth::testing {

/// std::chrono::steady_clock plus an offset that only grows: a test moves a client's notion of
/// time (expiry, leeway, refresh-ahead, retry spacing) without sleeping, while real timers,
/// timeouts and back-offs keep running on the real clock. Header-only; share one through
/// client_config::clock:
///
///     auto clock = std::make_shared<nxsys::auth::testing::manual_clock>();
///     cfg.clock = clock;
///     // ...
///     clock->advance(std::chrono::minutes(59));  // the one-hour token is nearly expired
///
/// Thread safety: now() and advance() may be called concurrently from any thread.
class manual_clock final : public clock_source {
 public:
  /// @return steady_clock::now() plus every advance so far
  std::chrono::steady_clock::time_point now() const noexcept override {
    return std::chrono::steady_clock::now() +
           std::chrono::steady_clock::duration(offset_.load(std::memory_order_acquire));
  }

  /// Moves this clock forward.
  /// @param d how far; negative values are not allowed (steady clocks never go back)
  void advance(std::chrono::steady_clock::duration d) noexcept {
    if (d.count() > 0) offset_.fetch_add(d.count(), std::memory_order_acq_rel);
  }

 private:
  std::atomic<std::chrono::steady_clock::duration::rep> offset_{0};
};

}  // namespace nxsys::auth::testing

#endif
