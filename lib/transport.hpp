// SPDX-License-Identifier: BSL-1.0
// The token endpoint's transport: one keep-alive connection, form POSTs, credentials wiped
// after use. Internal: used only from the client's strand, one request at a time.
#ifndef NXSYS_AUTH_LIB_TRANSPORT_HPP
#define NXSYS_AUTH_LIB_TRANSPORT_HPP

#include <nxsys/auth/token_store.hpp>

#include "connection.hpp"
#include "secret_string.hpp"

#include <string>

namespace nxsys::auth::detail {

struct http_answer {
  unsigned status = 0;
  secret_string body;       ///< it carries the tokens
  std::string retry_after;  ///< the Retry-After header, as sent ("" when absent)
  /// The request may have reached the server (its writing had begun): a failure after this
  /// may have lost an answer the server sent.
  bool written = false;
};

class http_transport {
 public:
  http_transport(boost::asio::any_io_executor ex, protocol::endpoint ep, const http_options& http);
  ~http_transport();

  /// POSTs `form`'s application/x-www-form-urlencoded body to the endpoint's target, with its
  /// Authorization header when it has one; the message's copies of them are wiped once sent
  /// (they hold credentials). `form` must outlive the operation. Errors are errc values
  /// (connection, timeout, tls, response_too_large, malformed_response) or operation_aborted
  /// after abort_unless_written(). Nothing of the exchange outlives `deadline` (errc::timeout),
  /// whatever the timeouts say. With `lease`, the request is written only if the lease has
  /// not run out once the connection is ready (checked right before the write): else
  /// errc::lease_lost, and nothing was sent.
  boost::asio::awaitable<boost::system::error_code> post_form(
      const protocol::refresh_request& form, http_answer& out, diagnostics& diag,
      steady_time deadline = steady_time::max(), const refresh_lease* lease = nullptr);

  /// For a client being destroyed: a post_form that has not started writing its request ends
  /// with operation_aborted and later ones are refused; one already writing or reading goes
  /// on to its answer (within its timeouts), which is not thrown away. The connection is not
  /// reused afterwards.
  void abort_unless_written();

  std::uint64_t connections_opened() const noexcept { return origin_.connections_opened(); }

 private:
  origin origin_;
  http_connection conn_;
  bool closed_ = false;
  bool in_exchange_ = false;
};

}  // namespace nxsys::auth::detail

#endif
