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

}  // namespace nxsys::auth::detail

#endif
