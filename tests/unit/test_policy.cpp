// SPDX-License-Identifier: BSL-1.0
// Unit tests of the time arithmetic of lib/refresh_machine.hpp: how much leeway a token of a given lifetime gets and
// from when on it is refreshed (plain functions, no clocks).
#include "refresh_machine.hpp"

#include <boost/test/unit_test.hpp>

#include <chrono>

namespace {

using namespace std::chrono_literals;
using nxsys::auth::detail::backoff_cap;
using nxsys::auth::detail::effective_leeway;
using nxsys::auth::detail::refresh_ahead_point;
using nxsys::auth::detail::refresh_deadline;
using duration = std::chrono::steady_clock::duration;
using time_point = std::chrono::steady_clock::time_point;

// Durations compared as nanosecond counts so a failing check prints both numbers.
constexpr long long ns(duration d) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
}

// An arbitrary origin: the functions must only add and subtract, never look at a clock.
const time_point sent = time_point{} + 12345s;

// The policy is constexpr so the client computes it without surprises; keep it that way.
static_assert(effective_leeway(1h, 30s, 0.25) == 30s);
static_assert(effective_leeway(2s, 30s, 0.25) == 500ms);
static_assert(refresh_deadline(time_point{} + 1h, 1h, 30s, 0.25) == time_point{} + 2h - 30s);

}  // namespace

BOOST_AUTO_TEST_SUITE(token_policy)

BOOST_AUTO_TEST_CASE(long_token_gets_the_configured_leeway) {
  // A 1 h token with 30 s leeway is refreshed 30 s before it expires.
  BOOST_TEST(ns(effective_leeway(1h, 30s, 0.25)) == ns(30s));
  BOOST_TEST(ns(refresh_deadline(sent, 1h, 30s, 0.25) - sent) == ns(1h - 30s));
  // As long as leeway <= fraction * lifetime, the fraction does not matter.
  BOOST_TEST(ns(effective_leeway(1h, 30s, 0.01)) == ns(30s));    // 36 s cap
  BOOST_TEST(ns(effective_leeway(120s, 30s, 0.25)) == ns(30s));  // cap exactly 30 s
  BOOST_TEST(ns(effective_leeway(1h, 0s, 0.25)) == 0);
}

BOOST_AUTO_TEST_CASE(short_token_leeway_is_capped_by_the_fraction) {
  // A 2 s token with 30 s leeway and fraction 0.25 is refreshed 0.5 s before it expires: it is
  // used for 1.5 s instead of being refreshed on every call.
  BOOST_TEST(ns(effective_leeway(2s, 30s, 0.25)) == ns(500ms));
  const auto deadline = refresh_deadline(sent, 2s, 30s, 0.25);
  BOOST_TEST(ns(deadline - sent) == ns(1500ms));
  BOOST_TEST((deadline > sent));
  BOOST_TEST(ns(effective_leeway(60s, 30s, 0.25)) == ns(15s));
  BOOST_TEST(ns(effective_leeway(1s, 30s, 0.5)) == ns(500ms));
  BOOST_TEST(ns(effective_leeway(100s, 30s, 0.1)) == ns(10s));
}

BOOST_AUTO_TEST_CASE(fraction_zero_means_no_leeway) {
  BOOST_TEST(ns(effective_leeway(1h, 30s, 0.0)) == 0);
  BOOST_TEST(ns(effective_leeway(2s, 30s, 0.0)) == 0);
  BOOST_TEST(ns(refresh_deadline(sent, 2s, 30s, 0.0) - sent) == ns(2s));
}

BOOST_AUTO_TEST_CASE(out_of_range_inputs_are_clamped) {
  // A negative leeway would push the deadline past the expiry: clamped to none.
  BOOST_TEST(ns(effective_leeway(1h, -30s, 0.25)) == 0);
  BOOST_TEST(ns(refresh_deadline(sent, 1h, -30s, 0.25) - sent) == ns(1h));
  // A negative fraction is no leeway at all, a fraction above 1 is at most the whole lifetime.
  BOOST_TEST(ns(effective_leeway(1h, 30s, -0.5)) == 0);
  BOOST_TEST(ns(effective_leeway(10s, 30s, 2.0)) == ns(10s));
  BOOST_TEST(ns(effective_leeway(10s, 30s, 1.0)) == ns(10s));
  BOOST_TEST(ns(refresh_deadline(sent, 10s, 30s, 2.0) - sent) == 0);
  // A token without lifetime gets no leeway.
  BOOST_TEST(ns(effective_leeway(0s, 30s, 0.25)) == 0);
}

BOOST_AUTO_TEST_CASE(deadline_never_before_sent_nor_after_expiry) {
  // For any valid configuration the token is used for a while (deadline > sent) and never past
  // its expiry (deadline <= sent + lifetime).
  for (auto lifetime : {duration(1s), duration(2s), duration(59s), duration(1h), duration(24h)}) {
    for (auto leeway : {duration(0s), duration(1s), duration(30s), duration(10min)}) {
      for (double fraction : {0.0, 0.1, 0.25, 0.5, 0.99}) {
        const auto d = refresh_deadline(sent, lifetime, leeway, fraction);
        BOOST_TEST_CONTEXT("lifetime " << ns(lifetime) << " ns, leeway " << ns(leeway)
                                       << " ns, fraction " << fraction) {
          BOOST_TEST(ns(d - sent) > 0);
          BOOST_TEST(ns(d - sent) <= ns(lifetime));
          BOOST_TEST(ns(sent + lifetime - d) <= ns(leeway));
          BOOST_TEST(static_cast<double>(ns(sent + lifetime - d)) <=
                     fraction * static_cast<double>(ns(lifetime)) + 1.0);
        }
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(longest_lifetime_does_not_overflow) {
  // protocol::max_expires_in is ten years; the arithmetic in nanoseconds must still hold.
  constexpr auto ten_years = std::chrono::seconds(10LL * 365 * 24 * 3600);
  BOOST_TEST(ns(effective_leeway(ten_years, 30s, 0.25)) == ns(30s));
  BOOST_TEST(ns(refresh_deadline(sent, ten_years, 30s, 0.25) - sent) == ns(ten_years - 30s));
}

BOOST_AUTO_TEST_CASE(refresh_ahead_window_is_a_fraction_before_the_refresh_point) {
  // 1 h token, leeway 30 s: refresh point 59:30; 20 % of the lifetime earlier: 47:30.
  const auto at = refresh_deadline(sent, 1h, 30s, 0.25);
  BOOST_TEST(ns(refresh_ahead_point(sent, 1h, at, 0.2) - sent) == ns(47min + 30s));
  // Never before the token was obtained, however large the fraction.
  BOOST_TEST(ns(refresh_ahead_point(sent, 2s, refresh_deadline(sent, 2s, 30s, 0.25), 0.9) - sent) ==
             0);
  // 0 disables it: the window never opens.
  BOOST_TEST((refresh_ahead_point(sent, 1h, at, 0.0) == time_point::max()));
}

BOOST_AUTO_TEST_CASE(backoff_doubles_up_to_its_cap) {
  using std::chrono::milliseconds;
  BOOST_TEST(backoff_cap(1, milliseconds(100), milliseconds(5000)).count() == 100);
  BOOST_TEST(backoff_cap(2, milliseconds(100), milliseconds(5000)).count() == 200);
  BOOST_TEST(backoff_cap(4, milliseconds(100), milliseconds(5000)).count() == 800);
  BOOST_TEST(backoff_cap(7, milliseconds(100), milliseconds(5000)).count() == 5000);
  BOOST_TEST(backoff_cap(1000, milliseconds(100), milliseconds(5000)).count() == 5000);
  BOOST_TEST(backoff_cap(3, milliseconds(0), milliseconds(5000)).count() == 0);
}

BOOST_AUTO_TEST_SUITE_END()
