// SPDX-License-Identifier: BSL-1.0
/// @file
/// nxsys::auth::client: keeps one access token valid for any number of concurrent users, with
/// at most one refresh request in flight.
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
void wait_for_token(client_impl& impl, token_flight::waiter_ptr w);

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

/// Keeps one access token valid for any number of concurrent callers, with at most one refresh
/// request in flight.
///
/// Share one client across the process and every thread running its executor: that is what
/// makes the refresh a single flight. How, and what cancellation does:
/// @ref design-single-flight-thread-safety-and-cancellation.
///
/// @par Thread safety
/// All member functions may be called concurrently from any thread, on a shared
/// client; moving or destroying it must not race with other calls on it. A moved-from client
/// may only be destroyed or assigned to.
class client {
 public:
  /// The type of the executor given to the constructor.
  using executor_type = boost::asio::any_io_executor;

  /// `ex` runs the refresh (on an internal strand); waiters resume on their own executors.
  /// @param ex runs the refreshes, the client's own memory_store (when `cfg.storage.store` is
  ///   null), and the handlers that have no associated executor. Its execution context must run
  ///   while the client is used, and after its destruction for the background work ~client()
  ///   describes.
  /// @param cfg the configuration, checked here (see client_config)
  /// @throws error_with_diagnostics errc::invalid_config for an unusable configuration. First
  ///   what client_config::validate() finds: a bad token_url (or plain http:// off loopback
  ///   without http.allow_insecure_http), an empty client_id, no refresh_token and no store
  ///   (refresh_token grant), a refresh_token or no client_secret (client_credentials grant), a
  ///   value out of its range. Then what only building the connection finds, since it reads
  ///   files and the environment: a proxy URL from the environment (http.proxy.from_environment)
  ///   that does not parse; and for an https:// token_url, a CA file or directory that cannot
  ///   be loaded, a client certificate or key that does not load or does not match (a wrong or
  ///   missing tls.private_key_password for an encrypted key included), or a std::exception
  ///   thrown by tls.configure_context. The diagnostics name the problem. An
  ///   error_with_diagnostics thrown by configure_context passes through unchanged, and so
  ///   does anything it throws that is not a std::exception.
  client(boost::asio::any_io_executor ex, client_config cfg);
  /// Completes every suspended waiter with operation_aborted at once. What must not be lost
  /// is finished in the background on the client's executor: a refresh request already written
  /// goes on to its answer (within request_timeout) and its tokens are saved, and tokens whose
  /// save failed get one last bounded save attempt. Keep the io_context running for that.
  ~client();
  /// Takes over the other client's state (its cache, refresh and waiters); the other is left
  /// empty.
  client(client&&) noexcept;
  /// Ends this client's state as ~client() does, then takes over the other's, which is left
  /// empty.
  /// @return *this
  client& operator=(client&&) noexcept;

  /// @return the executor given to the constructor
  executor_type get_executor() const noexcept;

  /// A valid access token: from the cache when it is fresh (no I/O, no lock shared by
  /// readers), else from the one refresh in flight, started if needed. The awaitable form of
  /// async_token().
  ///
  /// @par Executor
  /// A fresh token is returned without suspending the calling coroutine. Otherwise the
  /// coroutine resumes on its own executor, never inline inside the refresh.
  ///
  /// @par Cancellation
  /// Through the awaiting coroutine's cancellation slot (co_spawn with a bound cancellation
  /// slot, awaitable operators): a wait ends with operation_aborted as in async_token(), and
  /// the shared refresh goes on. Which cancellation types reach it is the coroutine's filter
  /// (Asio's default passes terminal only).
  ///
  /// @par Errors
  /// Those of async_token(), thrown as error_with_diagnostics: the coroutine form has no
  /// error_code to hand back, and the exception keeps the diagnostics.
  ///
  /// @par Thread safety
  /// May be called from any thread, concurrently.
  ///
  /// @return the token
  /// @throws error_with_diagnostics (a boost::system::system_error) on failure, with the
  ///   errc values and diagnostics listed for async_token(), and system_error(operation_aborted)
  ///   when cancelled or when the client is destroyed.
  boost::asio::awaitable<access_token> token();

  /// Asynchronously obtains a valid access token.
  ///
  /// @par Handler signature
  /// `void(boost::system::error_code, access_token)`
  ///
  /// @par Executor
  /// The handler runs on its associated executor (the client's executor when it has
  /// none), never inline inside this call.
  ///
  /// @par Cancellation
  /// Terminal, partial and total. Cancelling ends only this wait with
  /// operation_aborted; the shared refresh goes on for the other waiters and fills the cache.
  /// Emit the signal from the handler's executor, as for any Asio operation.
  ///
  /// @par Errors
  /// errc values (invalid_grant means the user must re-authorize): the server's OAuth errors
  /// (invalid_grant, invalid_client, invalid_request, unauthorized_client,
  /// unsupported_grant_type, invalid_scope, server_error, temporarily_unavailable,
  /// unrecognized_error); timeout, tls, connection, response_too_large, unexpected_status and
  /// malformed_response from the exchange (timeout also when the refresh did not end by
  /// refresh_policy::deadline); proxy_authentication when the proxy (http_options::proxy)
  /// answers the tunnel's CONNECT with 407, not retried; invalid_config when no refresh token
  /// is configured or stored, or when a client_credentials client's store holds a refresh-token
  /// chain; store_failed, store_corrupt and store_busy from the token store (store_failed also
  /// for tokens not saved under storage_options::strict_durability); internal when a store
  /// broke its contract. store_updated and lease_lost stay inside the refresh, which acts on
  /// them. Within refresh_policy::min_retry_spacing of a failure, calls get that failure at
  /// once. operation_aborted on cancellation or when the client is destroyed first. Every
  /// value, and when it occurs: @ref usage-errors-and-diagnostics.
  ///
  /// @par Thread safety
  /// May be called from any thread, concurrently.
  ///
  /// @param tok an Asio completion token: a callback, `use_awaitable`, `as_tuple(...)`,
  ///   `deferred`, `use_future`, ... (Boost 1.81 has no default one)
  /// @return what `tok` makes of the operation (nothing for a callback, an awaitable for
  ///   `use_awaitable`, ...)
  template <class CompletionToken>
  auto async_token(CompletionToken&& tok) {
    return async_token_impl(nullptr, std::forward<CompletionToken>(tok));
  }
  /// async_token(), and on failure the server's words: handler signature, executor,
  /// cancellation, errors and thread safety are those of async_token(CompletionToken&&).
  /// @param diag receives the server's error and description, the HTTP status and what the
  ///   client observed (never a secret) on failure, and is cleared on success; it must live
  ///   until the handler runs.
  /// @param tok an Asio completion token
  /// @return what `tok` makes of the operation
  template <class CompletionToken>
  auto async_token(diagnostics& diag, CompletionToken&& tok) {
    return async_token_impl(&diag, std::forward<CompletionToken>(tok));
  }

  /// Drops the cached token: the next call refreshes (single-flighted like any other). A
  /// refresh already in flight is not repeated: its result is newer than the dropped token.
  /// Thread safety: may be called from any thread, concurrently.
  void invalidate();

  /// Compare-and-invalidate, for a 401 answered to a request that carried `rejected`: drops
  /// the cached token only if it is still `rejected`. So 1,000
  /// concurrent 401s for one token cause one refresh, and a 401 for a token already replaced
  /// causes none (the caller just retries with token()).
  /// Thread safety: may be called from any thread, concurrently.
  /// @param rejected the token the server refused
  /// @return whether the cached token was dropped
  bool invalidate(const access_token& rejected);

  /// Re-authorization without recreating the client: `refresh_token` (from a new
  /// authorization) replaces the refresh-token chain, a dead one included, and is saved to the
  /// store at once (written over what it holds). Calls that failed fast after invalid_grant
  /// refresh again with it.
  ///
  /// The save runs in the background on the client's executor, so its failure cannot be thrown
  /// here, and on_refresh does not hear of it (no refresh ran). A failed save is logged
  /// (observers.log, error level, with the store's words) and counted in
  /// client_stats::store_save_failures; a lease or load that fails before it is counted in
  /// store_load_failures and logged as a warning. The new token is kept and the save retried:
  /// after storage_options::retry_interval, doubling up to a minute, and first in the next
  /// refresh (which, with strict_durability, fails with store_failed while the save does).
  /// Until a save succeeds the store holds the old chain, which other holders go on using.
  ///
  /// Thread safety: may be called from any thread, concurrently with token().
  /// @param refresh_token the refresh token of the new authorization (a std::string converts;
  ///   the parameter wipes its copy when it goes)
  /// @throws error_with_diagnostics errc::invalid_argument when `refresh_token` is empty, or
  ///   the client uses the client_credentials grant
  void set_refresh_token(secret refresh_token);

  /// What the client did so far, for metrics. Thread safety: may be called from any thread,
  /// concurrently; it takes the client's lock briefly (never taken by a fresh token read).
  /// @return a snapshot of the counters
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
