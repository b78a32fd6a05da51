// Beast HTTP/1.1 client for the token endpoint over TCP or TLS.
#include "transport.hpp"

#include "text.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/version.hpp>

#include <openssl/ssl.h>
#include <sys/socket.h>

#include <cerrno>

namespace nxsys::auth::detail {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;

namespace {
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

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

http_transport::http_transport(asio::any_io_executor ex, protocol::endpoint ep,
                               const client_config& cfg)
    : ex_(std::move(ex)),
      ep_(std::move(ep)),
      connect_timeout_(cfg.connect_timeout),
      request_timeout_(cfg.request_timeout),
      max_idle_(cfg.max_idle_connection),
      max_response_bytes_(cfg.max_response_bytes),
      verify_peer_(cfg.tls.verify_peer),
      resolver_(ex_),
      resolve_timer_(ex_) {
  const bool v6 = ep_.host.find(':') != std::string::npos;
  host_header_ = v6 ? "[" + ep_.host + "]" : ep_.host;
  if (ep_.port != (ep_.tls ? "443" : "80")) host_header_ += ":" + ep_.port;
  if (ep_.tls) ssl_ctx_.emplace(make_ssl_context(cfg.tls));
}

http_transport::~http_transport() {
  drop_connection();
  wipe(authorization_);
}

void http_transport::drop_connection() noexcept {
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
}

void http_transport::close() {
  closed_ = true;
  resolver_.cancel();
  resolve_timer_.cancel();
  // Cancel first so that an operation in progress completes with operation_aborted; the
  // coroutine that owns it drops the connection afterwards.
  if (connected()) {
    error_code ignored;
    lowest_layer().socket().cancel(ignored);
    lowest_layer().socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  }
}

// An idle keep-alive connection the server has closed (or written to unasked) is readable.
// Checking before sending avoids re-sending a refresh after the server may have consumed it.
bool http_transport::connection_still_usable() {
  if (!connected()) return false;
  if (std::chrono::steady_clock::now() - last_used_ > max_idle_) return false;
  if (buffer_.size() != 0) return false;
  char byte;
  const auto n = ::recv(lowest_layer().socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

error_code http_transport::classify(error_code ec, const char* phase, diagnostics& diag) const {
  if (closed_) return asio::error::operation_aborted;
  std::string where = std::string(phase) + " " + host_header_;
  if (ec == beast::error::timeout || (resolve_timed_out_ && ec == asio::error::operation_aborted)) {
    diag.client_message = where + ": timed out";
    return make_error_code(errc::timeout);
  }
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

asio::awaitable<error_code> http_transport::connect(diagnostics& diag) {
  const auto deadline = std::min(std::chrono::steady_clock::now() + connect_timeout_, deadline_);
  asio::ip::tcp::resolver::results_type endpoints;
  error_code ec;
  if (ep_.host_is_ip) {
    auto addr = asio::ip::make_address(ep_.host, ec);
    if (ec) co_return classify(ec, "resolve", diag);
    endpoints = asio::ip::tcp::resolver::results_type::create(
        asio::ip::tcp::endpoint(addr, static_cast<unsigned short>(std::stoi(ep_.port))), ep_.host,
        ep_.port);
  } else {
    // The resolver has no per-operation timeout: a timer cancels it.
    resolve_timed_out_ = false;
    resolve_timer_.expires_at(deadline);
    resolve_timer_.async_wait([this](error_code e) {
      if (!e) {
        resolve_timed_out_ = true;
        resolver_.cancel();
      }
    });
    std::tie(ec, endpoints) = co_await resolver_.async_resolve(ep_.host, ep_.port, use_tuple);
    resolve_timer_.cancel();
    if (ec) co_return classify(ec, "resolve", diag);
  }
  if (closed_) co_return asio::error::operation_aborted;

  beast::tcp_stream stream(ex_);
  stream.expires_at(deadline);
  std::tie(ec, std::ignore) = co_await stream.async_connect(endpoints, use_tuple);
  if (ec) co_return classify(ec, "connect to", diag);
  stream.socket().set_option(asio::ip::tcp::no_delay(true), ec);
  connections_opened_.fetch_add(1, std::memory_order_relaxed);

  if (!ep_.tls) {
    tcp_.emplace(std::move(stream));
    co_return error_code{};
  }
  tls_.emplace(std::move(stream), *ssl_ctx_);
  if (!ep_.host_is_ip && !SSL_set_tlsext_host_name(tls_->native_handle(), ep_.host.c_str())) {
    drop_connection();
    diag.client_message = "cannot set TLS SNI";
    co_return make_error_code(errc::tls);
  }
  if (verify_peer_) tls_->set_verify_callback(asio::ssl::host_name_verification(ep_.host));
  std::tie(ec) = co_await tls_->async_handshake(asio::ssl::stream_base::client, use_tuple);
  if (ec) {
    drop_connection();
    auto r = classify(ec, "TLS handshake with", diag);
    // A handshake that fails for any reason but a timeout or close() is a TLS failure.
    co_return (r == errc::connection) ? make_error_code(errc::tls) : r;
  }
  co_return error_code{};
}

template <class Stream>
asio::awaitable<error_code> http_transport::exchange(Stream& s, std::string& body, http_answer& out,
                                                     bool& keep_alive) {
  http::request<http::string_body> req{http::verb::post, ep_.target, 11};
  req.set(http::field::host, host_header_);
  req.set(http::field::user_agent, "nxsys-auth/0.1 " BOOST_BEAST_VERSION_STRING);
  req.set(http::field::content_type, "application/x-www-form-urlencoded");
  req.set(http::field::accept, "application/json");
  if (!authorization_.empty()) req.set(http::field::authorization, authorization_);
  req.body() = std::move(body);
  req.keep_alive(true);
  req.prepare_payload();

  lowest_layer().expires_at(
      std::min(std::chrono::steady_clock::now() + request_timeout_, deadline_));
  auto [wec, written] = co_await http::async_write(s, req, use_tuple);
  wipe(req.body());
  if (wec) co_return wec;

  http::response_parser<http::string_body> parser;
  parser.header_limit(
      static_cast<std::uint32_t>(std::min<std::size_t>(max_response_bytes_, 16 * 1024)));
  parser.body_limit(max_response_bytes_);
  auto [rec, read] = co_await http::async_read(s, buffer_, parser, use_tuple);
  if (rec) co_return rec;
  lowest_layer().expires_never();
  auto& res = parser.get();
  out.status = res.result_int();
  out.body = std::move(res.body());
  out.retry_after = std::string(res[http::field::retry_after]);
  keep_alive = res.keep_alive();
  co_return error_code{};
}

asio::awaitable<error_code> http_transport::post_form(
    std::string body, http_answer& out, diagnostics& diag,
    std::chrono::steady_clock::time_point deadline, std::string authorization) {
  deadline_ = deadline;
  wipe(authorization_);
  authorization_ = std::move(authorization);
  if (closed_) {
    wipe(body);
    co_return asio::error::operation_aborted;
  }
  if (!connection_still_usable()) {
    drop_connection();
    if (auto ec = co_await connect(diag)) {
      wipe(body);
      co_return ec;
    }
  }
  bool keep_alive = false;
  error_code ec = tls_ ? co_await exchange(*tls_, body, out, keep_alive)
                       : co_await exchange(*tcp_, body, out, keep_alive);
  wipe(body);
  wipe(authorization_);
  if (ec) {
    drop_connection();
    co_return classify(ec, "request to", diag);
  }
  last_used_ = std::chrono::steady_clock::now();
  if (!keep_alive || closed_) drop_connection();
  co_return error_code{};
}

}  // namespace nxsys::auth::detail
