// SPDX-License-Identifier: BSL-1.0
/// @file
/// nxsys::auth::session: sends requests to the Nxsys API with the client's access token, over
/// a pool of keep-alive connections, and answers a 401 with one forced refresh and one retry.
#ifndef NXSYS_AUTH_SESSION_HPP
#define NXSYS_AUTH_SESSION_HPP

#include <nxsys/auth/client.hpp>
#include <nxsys/auth/config.hpp>
#include <nxsys/auth/error.hpp>
#include <nxsys/auth/http_options.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>

namespace nxsys::auth {

/// Configuration of a session. The constructor checks it with validate().
struct session_config {
  /// The API's base URL, http:// or https://, e.g. "https://api.nxsys.example". A path in it
  /// ("https://host/v2") prefixes every request's target. Required; no query.
  std::string base_url{};
  /// Connections open at most; further requests wait (in arrival order) for one to be free.
  /// At least 1.
  std::size_t max_connections = 64;
  /// The API connections: timeouts, limits (max_response_bytes 0: 8 MiB), TLS, plain http.
  http_options http{};

  /// Checks every field but the files named by http.tls (read when the session is built,
  /// which fails with the same error if they cannot be used). The constructor calls it.
  /// @param diag receives what is wrong, in client_message, naming the field; may be nullptr
  /// @return empty, or errc::invalid_config
  boost::system::error_code validate(diagnostics* diag = nullptr) const;
};

/// What the session did. Counters only grow; read them at any time from any thread.
struct session_stats {
  std::uint64_t requests = 0;   ///< async_request calls
  std::uint64_t responses = 0;  ///< calls completed with an answer (any status)
  std::uint64_t failures = 0;   ///< calls completed with an error (cancellation included)

  /// 401 answers followed by compare-and-invalidate and one retry with the client's token.
  std::uint64_t unauthorized_retries = 0;
  /// Of those, how many invalidated the token (the others found it replaced already).
  std::uint64_t tokens_invalidated = 0;
  std::uint64_t connections_opened = 0;  ///< connections to the API opened (TCP, with TLS)
  std::uint64_t connections_reused = 0;  ///< exchanges on a kept-alive connection
  /// Idempotent requests sent again on a new connection because a reused one closed before
  /// any byte of the answer arrived.
  std::uint64_t stale_connection_retries = 0;
  std::uint64_t waited_for_connection = 0;  ///< requests that found all max_connections busy
};

namespace detail {
class session_impl;
using api_handler = boost::asio::any_completion_handler<void(
    boost::system::error_code, boost::beast::http::response<boost::beast::http::string_body>)>;
/// The session's executor: the handlers' when they have none.
const boost::asio::any_io_executor& executor_of(const session_impl& impl) noexcept;
/// `handler_ex` is the handler's associated executor, resolved where its type is known; empty
/// when it is no any_io_executor, and then asked of `handler` (whose type-erased answer costs
/// allocations at each query).
void start_request(const std::shared_ptr<session_impl>& impl,
                   boost::beast::http::request<boost::beast::http::string_body> req,
                   diagnostics* diag, boost::asio::any_io_executor handler_ex, api_handler handler);
}  // namespace detail

/// Sends requests to the Nxsys API with the client's access token, over a pool of keep-alive
/// connections, and answers a 401 with one forced refresh and one retry.
///
/// @par Thread safety
/// All member functions may be called concurrently from any thread, on a shared
/// session; destroying it must not race with other calls on it. A moved-from session may only
/// be destroyed or assigned to.
class session {
 public:
  /// The requests async_request() sends.
  using request_type = boost::beast::http::request<boost::beast::http::string_body>;
  /// The answers it completes with.
  using response_type = boost::beast::http::response<boost::beast::http::string_body>;

  /// Requests run on `ex` (on strands of it the session makes once; two requests may share
  /// one, taking turns between their steps) with tokens from `c`. The session
  /// shares the client's state: destroying the client first makes requests that need a token
  /// fail with operation_aborted.
  /// @param ex runs the requests, and the handlers that have no associated executor
  /// @param c the client whose tokens the requests carry
  /// @param cfg the configuration, checked here (see session_config)
  /// @throws error_with_diagnostics errc::invalid_config for an unusable configuration: what
  ///   session_config::validate() finds (bad base_url, a query in it, plain http:// off
  ///   loopback, a value out of range), then what only building the connections finds, since it
  ///   reads files and the environment: a proxy URL from the environment
  ///   (http.proxy.from_environment) that does not parse; and for an https:// base_url, a CA
  ///   file or directory that cannot be loaded, a client certificate or key that does not load
  ///   or does not match (a wrong or missing tls.private_key_password included), or a
  ///   std::exception thrown by tls.configure_context. An error_with_diagnostics thrown by
  ///   configure_context passes through unchanged, and so does anything it throws that is not a
  ///   std::exception.
  session(boost::asio::any_io_executor ex, client& c, session_config cfg);
  /// The same on the client's executor.
  /// @param c the client whose tokens the requests carry; its executor runs the requests
  /// @param cfg the configuration, checked here (see session_config)
  /// @throws error_with_diagnostics errc::invalid_config as the other constructor
  session(client& c, session_config cfg);
  /// Completes every request in progress with operation_aborted and closes the connections.
  ~session();
  /// Takes over the other session's state; the other is left empty.
  session(session&&) noexcept;
  /// Ends this session's requests as ~session() does, then takes over the other's state, which
  /// is left empty.
  /// @return *this
  session& operator=(session&&) noexcept;

  /// Sends `req` to the API and reads the answer.
  ///
  /// The session sets Host, `Authorization: <token type> <token>` (replacing any the request
  /// has), Content-Length, keep-alive and, when absent, User-Agent; the target (a path, '/'
  /// first) is prefixed with the base URL's path. A 401 answer makes the session invalidate
  /// the token it sent — only if it is still the client's current one, so that 1,000
  /// concurrent 401s cause one refresh — and send the request once more with the client's
  /// token; the answer to that retry is the result, whatever its status. An idempotent request
  /// whose reused connection closed before answering is sent once more on a new connection.
  ///
  /// @par Handler signature
  /// `void(boost::system::error_code, response_type)`. Any HTTP status is a
  /// success: the error code is for failures to get an answer.
  ///
  /// @par Executor
  /// The handler runs on its associated executor (the session's when it has none),
  /// never inline inside this call.
  ///
  /// @par Cancellation
  /// Terminal and partial, through the handler's slot, which is cleared on the handler's
  /// executor just before the handler runs. The request is abandoned (the connection it uses
  /// closed, a wait for a token or a connection ended) and completes with operation_aborted
  /// promptly; a refresh it waited for goes on for the client's other callers, and the
  /// connection is closed rather than returned to the pool in an unknown state. Emit the signal
  /// from the handler's executor, as for any Asio operation. Total cancellation is not
  /// supported (a request on the wire cannot promise to have had no effect): it is ignored.
  ///
  /// @par Errors
  /// The client's token errors (invalid_grant: re-authorize; see client::async_token);
  /// connection, timeout, tls, response_too_large, malformed_response for the API exchange, and
  /// proxy_authentication when the proxy (http_options::proxy) answers its CONNECT with 407;
  /// invalid_argument for a target that does not start with '/'; operation_aborted on
  /// cancellation or when the session or the client is destroyed first.
  ///
  /// @par Thread safety
  /// May be called from any thread, concurrently.
  ///
  /// @param req the request: method, target, body and any headers of your own
  /// @param tok an Asio completion token (Boost 1.81 has no default one)
  /// @return what `tok` makes of the operation (nothing for a callback, an awaitable for
  ///   `use_awaitable`, ...)
  template <class CompletionToken>
  auto async_request(request_type req, CompletionToken&& tok) {
    return async_request_impl(std::move(req), nullptr, std::forward<CompletionToken>(tok));
  }
  /// async_request(), and what was observed: handler signature, executor, cancellation,
  /// errors and thread safety are those of async_request(request_type, CompletionToken&&).
  /// @param req the request
  /// @param diag receives what was observed (never a token), cleared when the request gets an
  ///   answer; it must live until the handler runs.
  /// @param tok an Asio completion token
  /// @return what `tok` makes of the operation
  template <class CompletionToken>
  auto async_request(request_type req, diagnostics& diag, CompletionToken&& tok) {
    return async_request_impl(std::move(req), &diag, std::forward<CompletionToken>(tok));
  }

  /// async_request as an awaitable; throws error_with_diagnostics on failure.
  ///
  /// @par Executor
  /// The calling coroutine resumes on its own executor.
  ///
  /// @par Cancellation
  /// Through the awaiting coroutine's cancellation slot, as async_request(); which types reach
  /// it is the coroutine's filter (Asio's default passes terminal only).
  ///
  /// @par Errors
  /// Those of async_request(), thrown as error_with_diagnostics: the coroutine form has no
  /// error_code to hand back, and the exception keeps the diagnostics.
  ///
  /// @par Thread safety
  /// May be called from any thread, concurrently.
  ///
  /// @param req the request
  /// @return the answer, whatever its HTTP status
  /// @throws error_with_diagnostics with the errc values of async_request() and the
  ///   diagnostics; operation_aborted when cancelled or when the session or client is destroyed
  boost::asio::awaitable<response_type> request(request_type req);

  /// What the session did so far, for metrics; may be called from any thread, concurrently.
  /// @return a snapshot of the counters
  session_stats stats() const;
  /// @return the executor the requests run on (given to the constructor, or the client's)
  boost::asio::any_io_executor get_executor() const noexcept;

 private:
  template <class CompletionToken>
  auto async_request_impl(request_type req, diagnostics* diag, CompletionToken&& tok) {
    return boost::asio::async_initiate<CompletionToken,
                                       void(boost::system::error_code, response_type)>(
        [](auto handler, const std::shared_ptr<detail::session_impl>& impl, request_type r,
           diagnostics* d) {
          auto ex = boost::asio::get_associated_executor(handler, detail::executor_of(*impl));
          boost::asio::any_io_executor handler_ex;
          if constexpr (std::is_convertible_v<decltype(ex), boost::asio::any_io_executor>)
            handler_ex = std::move(ex);
          detail::start_request(impl, std::move(r), d, std::move(handler_ex),
                                detail::api_handler(std::move(handler)));
        },
        tok, impl_, std::move(req), diag);
  }

  std::shared_ptr<detail::session_impl> impl_;
};

}  // namespace nxsys::auth

#endif
