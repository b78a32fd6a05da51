// SPDX-License-Identifier: BSL-1.0
// nxsys::auth::client: keeps one access token valid for any number of concurrent users, with
// at most one refresh request in flight.
#ifndef NXSYS_AUTH_CLIENT_HPP
#define NXSYS_AUTH_CLIENT_HPP

#include <nxsys/auth/access_token.hpp>
#include <nxsys/auth/config.hpp>
#include <nxsys/auth/error.hpp>
#include <nxsys/auth/stats.hpp>

#include <nxsys/auth/detail/single_flight.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/append.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/post.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace nxsys::auth {

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
  /// Completes every suspended waiter with operation_aborted at once. What must not be lost
  /// is finished in the background on the client's executor: a refresh request already written
  /// goes on to its answer (within request_timeout) and its tokens are saved, and tokens whose
  /// save failed get one last bounded save attempt. Keep the io_context running for that.
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

  /// Re-authorization without recreating the client: `refresh_token` (from a new
  /// authorization) replaces the refresh-token chain, a dead one included, and is saved to the
  /// store at once (written over what it holds). Calls that failed fast after invalid_grant
  /// refresh again with it. Throws error_with_diagnostics(errc::invalid_argument) when empty.
  /// Thread safety: may be called from any thread, concurrently with token().
  void set_refresh_token(std::string refresh_token);

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
