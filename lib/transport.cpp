// SPDX-License-Identifier: BSL-1.0
// The token endpoint's transport: form POSTs over one reused connection.
#include "transport.hpp"

#include <nxsys/auth/version.hpp>

#include "text.hpp"

#include <boost/beast/http/field.hpp>
#include <boost/beast/version.hpp>

namespace nxsys::auth::detail {
namespace asio = boost::asio;
namespace http = boost::beast::http;
using boost::system::error_code;

http_transport::http_transport(asio::any_io_executor ex, protocol::endpoint ep,
                               const http_options& http)
    : origin_(std::move(ep), http, default_token_response_bytes), conn_(std::move(ex), origin_) {}

http_transport::~http_transport() = default;

void http_transport::abort_unless_written() {
  closed_ = true;
  // Cancel, do not close: the coroutine of an operation in progress owns the sockets and
  // closes them once it sees operation_aborted.
  if (!in_exchange_) conn_.cancel();
}

asio::awaitable<error_code> http_transport::post_form(const protocol::refresh_request& form,
                                                      http_answer& out, diagnostics& diag,
                                                      steady_time deadline,
                                                      const refresh_lease* lease) {
  http::request<http::string_body> req{http::verb::post, origin_.endpoint().target, 11};
  req.set(http::field::host, origin_.host_header());
  req.set(http::field::user_agent,
          "nxsys-auth/" NXSYS_AUTH_VERSION_STRING " " BOOST_BEAST_VERSION_STRING);
  req.set(http::field::content_type, "application/x-www-form-urlencoded");
  req.set(http::field::accept, "application/json");
  if (!form.authorization.empty()) req.set(http::field::authorization, form.authorization);
  req.body() = form.body;
  req.keep_alive(true);
  req.prepare_payload();

  error_code ec;
  if (closed_) {
    ec = asio::error::operation_aborted;
  } else if (!conn_.reusable()) {
    ec = co_await conn_.connect(deadline, diag);
  }
  if (!ec && closed_) ec = asio::error::operation_aborted;  // aborted while connecting
  if (!ec && lease != nullptr && lease->lost()) {
    // The last moment to find out: a pause or a slow connect may have outlived the lease, and
    // another holder may be presenting this very refresh token now.
    ec = make_error_code(errc::lease_lost);
    diag.client_message =
        "the lease ran out before the request to " + origin_.host_header() + " was written";
  }
  if (!ec) {
    http::response<http::string_body> res;
    out.written = true;
    in_exchange_ = true;
    auto r = co_await conn_.exchange(req, res, deadline);
    in_exchange_ = false;
    if (r.ec) {
      ec = r.ec;
      conn_.close();
      ec = conn_.classify(ec, "request to", diag);
    } else {
      out.status = res.result_int();
      out.body = secret_string(std::move(res.body()));
      out.retry_after = std::string(res[http::field::retry_after]);
    }
  }
  wipe_all(req.body());  // the message's copies of the credentials
  wipe_authorization(req);
  conn_.wipe_read_buffer();  // the answer's raw bytes
  if (closed_) {
    conn_.close();
    if (!out.written) ec = asio::error::operation_aborted;
  }
  co_return ec;
}

}  // namespace nxsys::auth::detail
