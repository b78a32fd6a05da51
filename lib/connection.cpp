// SPDX-License-Identifier: BSL-1.0
// One Beast HTTP/1.1 connection over TCP or TLS, with timeouts, answer limits and host checks.
#include "connection.hpp"

#include "completion_tokens.hpp"
#include "secret_string.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <cerrno>

namespace nxsys::auth::detail {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;

namespace {
// Headers beyond this are refused whatever max_response_bytes says: no honest server needs more.
constexpr std::size_t max_header_bytes = 16 * 1024;
}  // namespace

asio::ssl::context make_ssl_context(const tls_options& opts) {
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  ctx.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                  asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                  asio::ssl::context::no_tlsv1_1);
  error_code ec;
  auto bad = [](const char* what, const error_code& e) {
    diagnostics d;
    d.client_message = std::string(what) + ": " + e.message();
    throw error_with_diagnostics(make_error_code(errc::invalid_config), std::move(d));
  };
  if (!opts.ca_file.empty()) {
    ctx.load_verify_file(opts.ca_file, ec);
    if (ec) bad("cannot load tls.ca_file", ec);
  }
  if (!opts.ca_dir.empty()) {
    ctx.add_verify_path(opts.ca_dir, ec);
    if (ec) bad("cannot use tls.ca_dir", ec);
  }
  if (opts.ca_file.empty() && opts.ca_dir.empty()) {
    ctx.set_default_verify_paths(ec);
    if (ec) bad("cannot load the system's CA certificates", ec);
  }
  ctx.set_verify_mode(opts.verify_peer ? asio::ssl::verify_peer : asio::ssl::verify_none);
  return ctx;
}

void wipe_authorization(http::fields& h) noexcept {
  for (auto& f : h) {
    if (f.name() != http::field::authorization) continue;
    const auto v = f.value();
    // The value lives in the field's own allocation, which Beast hands out read-only.
    wipe_bytes(const_cast<char*>(v.data()), v.size());
  }
}

origin::origin(protocol::endpoint ep, const http_options& http,
               std::size_t default_max_response_bytes)
    : ep_(std::move(ep)),
      limits_{http.connect_timeout, http.request_timeout, http.max_idle_connection,
              http.max_response_bytes != 0 ? http.max_response_bytes : default_max_response_bytes},
      verify_peer_(http.tls.verify_peer) {
  const bool v6 = ep_.host.find(':') != std::string::npos;
  host_header_ = v6 ? "[" + ep_.host + "]" : ep_.host;
  if (ep_.port != (ep_.tls ? "443" : "80")) host_header_ += ":" + ep_.port;
  if (ep_.tls) ssl_ctx_.emplace(make_ssl_context(http.tls));
}

http_connection::http_connection(asio::any_io_executor ex, const origin& o)
    : ex_(std::move(ex)), origin_(o), resolver_(ex_), resolve_timer_(ex_) {}

http_connection::~http_connection() {
  close();
}

void http_connection::close() noexcept {
  error_code ignored;
  if (tls_) {
    tls_->next_layer().socket().close(ignored);
    tls_.reset();
  }
  if (tcp_) {
    tcp_->socket().close(ignored);
    tcp_.reset();
  }
  buffer_.clear();
  wipe_read_buffer();
}

void http_connection::wipe_read_buffer() noexcept {
  // prepare() of at most the spare capacity never reallocates; consumed bytes lie in it too,
  // since a fully consumed flat_buffer starts again at the beginning of its storage.
  const auto spare = buffer_.capacity() - buffer_.size();
  if (spare == 0) return;
  try {
    const auto b = buffer_.prepare(spare);
    wipe_bytes(b.data(), b.size());
  } catch (...) {  // only past max_size, which spare never is
  }
}

void http_connection::cancel() noexcept {
  cancelled_ = true;
  resolver_.cancel();
  resolve_timer_.cancel();
  if (is_open()) {
    error_code ignored;
    lowest_layer().socket().cancel(ignored);
    lowest_layer().socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  }
}

// An idle keep-alive connection the server has closed (or written to unasked) is readable.
// Checking before sending avoids sending a request the server may never read — for a refresh,
// one it may have consumed the token of without our seeing the answer.
bool http_connection::reusable() {
  if (!is_open()) return false;
  if (std::chrono::steady_clock::now() - last_used_ > origin_.limits_.max_idle) return false;
  if (buffer_.size() != 0) return false;
  char byte;
  const auto n = ::recv(lowest_layer().socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

error_code http_connection::classify(error_code ec, const char* phase, diagnostics& diag) const {
  std::string where = std::string(phase) + " " + origin_.host_header_;
  if (ec == beast::error::timeout || (resolve_timed_out_ && ec == asio::error::operation_aborted)) {
    diag.client_message = where + ": timed out";
    return make_error_code(errc::timeout);
  }
  if (ec == asio::error::operation_aborted) return ec;
  if (ec == http::error::body_limit || ec == http::error::header_limit ||
      ec == http::error::buffer_overflow) {
    diag.client_message = where + ": the answer exceeds max_response_bytes";
    return make_error_code(errc::response_too_large);
  }
  if (ec.category() == make_error_code(http::error::end_of_stream).category() &&
      ec != http::error::end_of_stream && ec != http::error::partial_message) {
    diag.client_message = where + ": invalid HTTP answer (" + ec.message() + ")";
    return make_error_code(errc::malformed_response);
  }
  diag.client_message = where + ": " + ec.message();
  if (ec.category() == asio::error::get_ssl_category() || ec == asio::ssl::error::stream_truncated)
    return make_error_code(errc::tls);
  return make_error_code(errc::connection);
}

asio::awaitable<error_code> http_connection::connect(steady_time deadline, diagnostics& diag) {
  close();
  deadline = std::min(std::chrono::steady_clock::now() + origin_.limits_.connect_timeout, deadline);
  const auto& ep = origin_.ep_;
  asio::ip::tcp::resolver::results_type endpoints;
  error_code ec;
  resolve_timed_out_ = false;
  cancelled_ = false;
  if (ep.host_is_ip) {
    auto addr = asio::ip::make_address(ep.host, ec);
    if (ec) co_return classify(ec, "resolve", diag);
    endpoints = asio::ip::tcp::resolver::results_type::create(
        asio::ip::tcp::endpoint(addr, static_cast<unsigned short>(std::stoi(ep.port))), ep.host,
        ep.port);
  } else {
    // The resolver has no per-operation timeout: a timer cancels it. Its handler runs on this
    // coroutine's executor, so it never races with the coroutine.
    const auto self_ex = co_await asio::this_coro::executor;
    resolve_timer_.expires_at(deadline);
    resolve_timer_.async_wait(asio::bind_executor(self_ex, [this](error_code e) {
      if (!e) {
        resolve_timed_out_ = true;
        resolver_.cancel();
      }
    }));
    std::tie(ec, endpoints) = co_await resolver_.async_resolve(ep.host, ep.port, use_tuple);
    // A timer that fired just now has its handler queued: let it run before going on, so no
    // handler refers to this connection once connect() returns.
    if (resolve_timer_.cancel() == 0) co_await asio::post(self_ex, asio::use_awaitable);
    if (ec) co_return classify(ec, "resolve", diag);
    resolve_timed_out_ = false;
    if (cancelled_) co_return asio::error::operation_aborted;
  }

  // The stream is a member from the start, so that cancel() reaches a connect in progress.
  tcp_.emplace(ex_);
  tcp_->expires_at(deadline);
  std::tie(ec, std::ignore) = co_await tcp_->async_connect(endpoints, use_tuple);
  if (ec) {
    close();
    co_return classify(ec, "connect to", diag);
  }
  if (cancelled_) {
    close();
    co_return asio::error::operation_aborted;
  }
  tcp_->socket().set_option(asio::ip::tcp::no_delay(true), ec);
  origin_.connections_opened_.fetch_add(1, std::memory_order_relaxed);

  if (!ep.tls) co_return error_code{};
  tls_.emplace(std::move(*tcp_), *origin_.ssl_ctx_);
  tcp_.reset();
  if (!ep.host_is_ip && !SSL_set_tlsext_host_name(tls_->native_handle(), ep.host.c_str())) {
    close();
    diag.client_message = "cannot set TLS SNI";
    co_return make_error_code(errc::tls);
  }
  if (origin_.verify_peer_) tls_->set_verify_callback(asio::ssl::host_name_verification(ep.host));
  std::tie(ec) = co_await tls_->async_handshake(asio::ssl::stream_base::client, use_tuple);
  if (ec) {
    close();
    auto r = classify(ec, "TLS handshake with", diag);
    // A handshake that fails for any reason but a timeout or cancellation is a TLS failure.
    co_return (r == errc::connection) ? make_error_code(errc::tls) : r;
  }
  co_return error_code{};
}

template <class Stream>
asio::awaitable<exchange_result> http_connection::exchange_on(
    Stream& s, const http::request<http::string_body>& req,
    http::response<http::string_body>& res) {
  auto [wec, written] = co_await http::async_write(s, req, use_tuple);
  if (wec) co_return exchange_result{wec, false};

  const auto max = origin_.limits_.max_response_bytes;
  http::response_parser<http::string_body> parser;
  parser.header_limit(static_cast<std::uint32_t>(std::min(max, max_header_bytes)));
  parser.body_limit(max);
  auto [rec, read] = co_await http::async_read(s, buffer_, parser, use_tuple);
  if (rec) co_return exchange_result{rec, parser.got_some()};
  res = parser.release();
  co_return exchange_result{{}, true};
}

asio::awaitable<exchange_result> http_connection::exchange(
    const http::request<http::string_body>& req, http::response<http::string_body>& res,
    steady_time deadline) {
  if (cancelled_ || !is_open()) {
    close();
    co_return exchange_result{asio::error::operation_aborted, false};
  }
  lowest_layer().expires_at(
      std::min(std::chrono::steady_clock::now() + origin_.limits_.request_timeout, deadline));
  auto r = tls_ ? co_await exchange_on(*tls_, req, res) : co_await exchange_on(*tcp_, req, res);
  if (r.ec) {
    close();
    co_return r;
  }
  lowest_layer().expires_never();
  last_used_ = std::chrono::steady_clock::now();
  if (!res.keep_alive()) close();
  co_return r;
}

}  // namespace nxsys::auth::detail
