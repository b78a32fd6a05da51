// When a token must be refreshed: decisions as plain functions, tested without clocks or I/O.
#ifndef NXSYS_AUTH_DETAIL_TOKEN_POLICY_HPP
#define NXSYS_AUTH_DETAIL_TOKEN_POLICY_HPP

#include <algorithm>
#include <chrono>

namespace nxsys::auth::detail {

/// The leeway actually applied to a token of `lifetime`: the configured leeway, but at most
/// `max_fraction` of the lifetime, so a short-lived token is still used for most of its life.
constexpr std::chrono::steady_clock::duration effective_leeway(
    std::chrono::steady_clock::duration lifetime, std::chrono::steady_clock::duration leeway,
    double max_fraction) noexcept {
  const double f = std::clamp(max_fraction, 0.0, 1.0);
  const auto cap = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double, std::chrono::steady_clock::period>(
          static_cast<double>(lifetime.count()) * f));
  return std::clamp(leeway, std::chrono::steady_clock::duration::zero(), cap);
}

/// From when on a token obtained by a request sent at `sent` is refreshed. Its lifetime counts
/// from the moment the request was sent, so network latency only makes us refresh earlier.
constexpr std::chrono::steady_clock::time_point refresh_deadline(
    std::chrono::steady_clock::time_point sent, std::chrono::steady_clock::duration lifetime,
    std::chrono::steady_clock::duration leeway, double max_fraction) noexcept {
  return sent + lifetime - effective_leeway(lifetime, leeway, max_fraction);
}

/// From when on a background refresh starts while the token is still served: the last
/// `fraction` of the lifetime before `refresh_at` (never before `sent`). fraction 0: never.
constexpr std::chrono::steady_clock::time_point refresh_ahead_point(
    std::chrono::steady_clock::time_point sent, std::chrono::steady_clock::duration lifetime,
    std::chrono::steady_clock::time_point refresh_at, double fraction) noexcept {
  if (!(fraction > 0.0)) return std::chrono::steady_clock::time_point::max();
  const auto window = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double, std::chrono::steady_clock::period>(
          static_cast<double>(lifetime.count()) * std::min(fraction, 1.0)));
  return std::max(sent, refresh_at - window);
}

/// The longest back-off before attempt `attempt` + 1 (attempt counts from 1):
/// min(max, initial · 2^(attempt − 1)). Full jitter then waits a random time in [0, this].
constexpr std::chrono::milliseconds backoff_cap(unsigned attempt, std::chrono::milliseconds initial,
                                                std::chrono::milliseconds max) noexcept {
  auto cap = initial;
  for (unsigned i = 1; i < attempt && cap < max; ++i) cap *= 2;
  return std::min(cap, max);
}

}  // namespace nxsys::auth::detail

#endif
