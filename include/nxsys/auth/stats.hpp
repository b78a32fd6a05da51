// SPDX-License-Identifier: BSL-1.0
/// @file
/// What a client did: counters for metrics, readable at any time. No Asio here, so the refresh
/// machine (lib/refresh_machine.hpp) can keep them without depending on I/O.
#ifndef NXSYS_AUTH_STATS_HPP
#define NXSYS_AUTH_STATS_HPP

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>

namespace nxsys::auth {

/// What the client did. Counters only grow; read them at any time from any thread.
struct client_stats {
  std::uint64_t refreshes_started = 0;  ///< refreshes started (one per flight, however many joined)
  std::uint64_t refreshes_succeeded = 0;  ///< refreshes that ended with a token (server or store)
  std::uint64_t refreshes_failed = 0;     ///< refreshes that ended with an error (see below)
  std::uint64_t refresh_tokens_rotated = 0;   ///< answers that carried a new refresh token
  std::uint64_t waiters_coalesced = 0;        ///< calls that joined a refresh already in flight
  std::uint64_t waiters_cancelled = 0;        ///< waits ended by their cancellation slot
  std::uint64_t max_waiters_per_refresh = 0;  ///< most calls waiting on one refresh at once
  std::uint64_t invalidations = 0;            ///< invalidate() calls that dropped the cached token
  /// Calls that found no fresh token in their thread's cache and took the client's lock. A
  /// fresh token never gets here: this stays flat however many callers read it.
  std::uint64_t slow_path_calls = 0;
  std::uint64_t connections_opened = 0;  ///< TCP connections to the token endpoint
  /// Calls answered with the last failure inside min_retry_spacing, without a request.
  std::uint64_t calls_failed_fast = 0;

  /// Background refreshes started inside the refresh-ahead window.
  std::uint64_t refreshes_ahead = 0;
  /// Calls served the current token inside its refresh-ahead window (no wait, no lock).
  std::uint64_t stale_tokens_served = 0;
  /// Requests sent again after a transient failure (back-off and Retry-After honoured).
  std::uint64_t retries = 0;
  /// Calls answered, after a failed refresh, with the current token while it was still valid
  /// (refresh_policy::serve_valid_token_on_failure).
  std::uint64_t valid_tokens_served_after_failure = 0;
  /// Refreshes that found a valid token in the store, saved by another client or process.
  std::uint64_t tokens_from_store = 0;
  /// Refresh tokens taken from the store because another client or process rotated the chain.
  std::uint64_t refresh_tokens_adopted = 0;
  /// invalid_grant answers followed by a retry with a newer refresh token from the store.
  std::uint64_t invalid_grant_retries = 0;
  std::uint64_t store_loads = 0;          ///< store loads completed, failed ones included
  std::uint64_t store_load_failures = 0;  ///< unreadable or corrupt store, lease not granted
  std::uint64_t store_saves = 0;          ///< successful saves of new tokens
  /// Saves that failed (the tokens stayed in memory and the save was retried), conflicts
  /// included.
  std::uint64_t store_save_failures = 0;
  /// Saves refused because the store held another refresh token than expected.
  std::uint64_t store_conflicts = 0;
  /// Refreshes settled by a state another holder saved, read without the lease because the
  /// store reported it while this client waited (errc::store_updated: redis_store's hand-off).
  std::uint64_t store_handoffs = 0;
  /// Token requests not sent because the store's lease had run out first (a pause longer than
  /// the lease, a failover): the lease was taken again instead (errc::lease_lost).
  std::uint64_t leases_lost = 0;

  /// Failed refreshes by reason: the error's message ("invalid_grant", "timed out", "token store
  /// failure", ...).
  std::map<std::string, std::uint64_t> refreshes_failed_by_reason;
  /// Refreshes by how many calls were waiting when the answer came: [0] 0-1, [1] 2-9,
  /// [2] 10-99, [3] 100-999, [4] 1k-9999, [5] 10k-99999, [6] 100k and more.
  std::array<std::uint64_t, 7> waiters_per_refresh_histogram{};
  /// Durations of finished refreshes, from start to result with retries and store steps
  /// included (as refresh_event::latency), measured on steady_clock: the last, the longest and
  /// the sum (divide by the refreshes finished).
  std::chrono::nanoseconds refresh_latency_last{0};
  std::chrono::nanoseconds refresh_latency_max{0};    ///< the longest (see refresh_latency_last)
  std::chrono::nanoseconds refresh_latency_total{0};  ///< the sum (see refresh_latency_last)
};

}  // namespace nxsys::auth

#endif
