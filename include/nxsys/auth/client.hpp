// nxsys::auth::client: keeps one access token valid for any number of concurrent users, with
// at most one refresh request in flight.
#ifndef NXSYS_AUTH_CLIENT_HPP
#define NXSYS_AUTH_CLIENT_HPP

#include <nxsys/auth/access_token.hpp>
#include <nxsys/auth/config.hpp>
#include <nxsys/auth/error.hpp>

#include <nxsys/auth/detail/single_flight.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/append.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/post.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

namespace nxsys::auth {

/// What the client did. Counters only grow; read them at any time from any thread.
struct client_stats {
  std::uint64_t refreshes_started = 0;
  std::uint64_t refreshes_succeeded = 0;
  std::uint64_t refreshes_failed = 0;
  std::uint64_t refresh_tokens_rotated = 0;  ///< answers that carried a new refresh token
  std::uint64_t waiters_coalesced = 0;       ///< calls that joined a refresh already in flight
  std::uint64_t waiters_cancelled = 0;       ///< waits ended by their cancellation slot
  std::uint64_t max_waiters_per_refresh = 0;
  std::uint64_t invalidations = 0;
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
  /// (client_config::serve_valid_token_on_failure).
  std::uint64_t valid_tokens_served_after_failure = 0;
  /// Refreshes that found a valid token in the store, saved by another client or process.
  std::uint64_t tokens_from_store = 0;
  /// Refresh tokens taken from the store because another client or process rotated the chain.
  std::uint64_t refresh_tokens_adopted = 0;
  /// invalid_grant answers followed by a retry with a newer refresh token from the store.
  std::uint64_t invalid_grant_retries = 0;
  std::uint64_t store_loads = 0;
  std::uint64_t store_load_failures = 0;  ///< unreadable or corrupt store, lease not granted
  std::uint64_t store_saves = 0;          ///< successful saves of new tokens
  /// Saves that failed (the tokens stayed in memory and the save was retried), conflicts
  /// included.
  std::uint64_t store_save_failures = 0;
  /// Saves refused because the store held another refresh token than expected.
  std::uint64_t store_conflicts = 0;

  /// Failed refreshes by reason: the error's message ("invalid_grant", "timed out", "token store
  /// failure", ...).
  std::map<std::string, std::uint64_t> refreshes_failed_by_reason;
  /// Refreshes by how many calls were waiting when the answer came: [0] 0-1, [1] 2-9,
  /// [2] 10-99, [3] 100-999, [4] 1k-9999, [5] 10k-99999, [6] 100k and more.
  std::array<std::uint64_t, 7> waiters_per_refresh_histogram{};
  /// Round trips of finished refreshes (request sent to answer parsed), measured on
  /// steady_clock: the last, the longest and the sum (divide by the refreshes finished).
  std::chrono::nanoseconds refresh_latency_last{0};
  std::chrono::nanoseconds refresh_latency_max{0};
  std::chrono::nanoseconds refresh_latency_total{0};
};

namespace detail {
class client_impl;

/// What a refresh hands its waiters: the token, or on failure what the server said.
struct flight_result {
  access_token token;
  std::shared_ptr<const diagnostics> diag;
};
using token_flight = single_flight<flight_result>;

// The non-template part of async_token, compiled once in the library.
token_flight& flight_of(client_impl& impl) noexcept;
const boost::asio::any_io_executor& executor_of(const client_impl& impl) noexcept;
/// True, with the token, when the calling thread's cache holds a fresh one (no lock, no I/O).
bool try_fresh(client_impl& impl, access_token& out);
/// The slow path: joins (or starts) the refresh; completes `w` at once if it can.
void wait_for_token(client_impl& impl, std::unique_ptr<token_flight::waiter> w);

/// Completes an async_token handler: (ec, token), after filling the caller's diagnostics.
struct diagnostics_call {
  diagnostics* diag;
  template <class Handler>
  void operator()(Handler&& h, boost::system::error_code ec, const flight_result& r) const {
    if (diag != nullptr) {
      if (r.diag) {
        *diag = *r.diag;
      } else {
        diag->clear();
      }
    }
    std::forward<Handler>(h)(ec, r.token);
  }
};

/// client::async_token on the client's shared state (also used by session).
template <class CompletionToken>
auto async_token(const std::shared_ptr<client_impl>& impl, diagnostics* diag,
                 CompletionToken&& tok) {
  return boost::asio::async_initiate<CompletionToken,
                                     void(boost::system::error_code, access_token)>(
      [](auto handler, const std::shared_ptr<client_impl>& impl, diagnostics* d) {
        access_token t;
        if (try_fresh(*impl, t)) {
          if (d != nullptr) d->clear();
          // post: never inline; Asio runs the handler on its own executor.
          boost::asio::post(
              executor_of(*impl),
              boost::asio::append(std::move(handler), boost::system::error_code{}, std::move(t)));
          return;
        }
        wait_for_token(*impl,
                       flight_of(*impl).make_waiter(std::move(handler), diagnostics_call{d}));
      },
      tok, impl, diag);
}
}  // namespace detail

/// Thread safety: all member functions may be called concurrently from any thread, on a shared
/// client; moving or destroying it must not race with other calls on it.
class client {
 public:
  using executor_type = boost::asio::any_io_executor;

  /// `ex` runs the refresh (on an internal strand); waiters resume on their own executors.
  /// Throws error_with_diagnostics(errc::invalid_config) for an unusable configuration.
  client(boost::asio::any_io_executor ex, client_config cfg);
  /// Completes every suspended waiter with operation_aborted and abandons a refresh in flight.
  ~client();
  client(client&&) noexcept;
  client& operator=(client&&) noexcept;

  executor_type get_executor() const noexcept;

  /// A valid access token: from the cache when it is fresh (no I/O, no lock shared by
  /// readers), else from the one refresh in flight, started if needed.
  /// Throws error_with_diagnostics (a boost::system::system_error) on failure, and
  /// system_error(operation_aborted) when cancelled or when the client is destroyed.
  boost::asio::awaitable<access_token> token();

  /// Asynchronously obtains a valid access token.
  ///
  /// Handler signature: void(boost::system::error_code, access_token).
  /// Executor: the handler runs on its associated executor (the client's executor when it has
  /// none), never inline inside this call.
  /// Cancellation: terminal, partial and total. Cancelling ends only this wait with
  /// operation_aborted; the shared refresh goes on for the other waiters and fills the cache.
  /// Emit the signal from the handler's executor, as for any Asio operation.
  /// Errors: errc values (invalid_grant means the user must re-authorize); operation_aborted on
  /// cancellation or when the client is destroyed first. `diag`, when given, receives the
  /// server's error and description; it must live until the handler runs.
  /// Thread safety: may be called from any thread, concurrently.
  template <class CompletionToken>
  auto async_token(CompletionToken&& tok) {
    return async_token_impl(nullptr, std::forward<CompletionToken>(tok));
  }
  template <class CompletionToken>
  auto async_token(diagnostics& diag, CompletionToken&& tok) {
    return async_token_impl(&diag, std::forward<CompletionToken>(tok));
  }

  /// Drops the cached token: the next call refreshes (single-flighted like any other). A
  /// refresh already in flight is not repeated: its result is newer than the dropped token.
  void invalidate();

  /// Compare-and-invalidate, for a 401 answered to a request that carried `rejected`: drops
  /// the cached token only if it is still `rejected`. Returns whether it did. So 1,000
  /// concurrent 401s for one token cause one refresh, and a 401 for a token already replaced
  /// causes none (the caller just retries with token()).
  bool invalidate(const access_token& rejected);

  client_stats stats() const;

 private:
  template <class CompletionToken>
  auto async_token_impl(diagnostics* diag, CompletionToken&& tok) {
    return detail::async_token(impl_, diag, std::forward<CompletionToken>(tok));
  }

  friend class session;  // shares the client's state, so it may outlive this handle
  std::shared_ptr<detail::client_impl> impl_;
};

}  // namespace nxsys::auth

#endif
