// SPDX-License-Identifier: BSL-1.0
// The CONNECT proxy of nxsys::auth_testing: reads one HTTP/1.1 request header per connection,
// answers anything but an acceptable CONNECT with an error and closes, and otherwise connects to
// the target and relays bytes both ways until both sides are done.
#include <nxsys/auth/testing/connect_proxy.hpp>

#include "loopback_server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdio>
#include <exception>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace nxsys::auth::testing {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using strand_type = asio::strand<asio::any_io_executor>;

constexpr std::uint32_t max_header_size = 8 * 1024;
constexpr std::size_t relay_buffer_size = 16 * 1024;
// What a refused client may still be sending is read and discarded before closing, up to this
// much for this long: closing with unread data makes the kernel send RST, which can destroy the
// answer before the client reads it.
constexpr std::size_t max_drain_size = 64 * 1024;
constexpr auto drain_timeout = std::chrono::seconds(1);

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// "Basic base64(user:password)" (RFC 7617) into user and password; nullopt if not Basic or not
// decodable.
std::optional<std::pair<std::string, std::string>> parse_basic(std::string_view header) {
  while (!header.empty() && (header.front() == ' ' || header.front() == '\t'))
    header.remove_prefix(1);
  if (header.size() < 6 || !beast::iequals(header.substr(0, 6), "Basic ")) return std::nullopt;
  auto b64 = header.substr(6);
  while (!b64.empty() && b64.front() == ' ') b64.remove_prefix(1);
  while (!b64.empty() && (b64.back() == ' ' || b64.back() == '\t')) b64.remove_suffix(1);
  if (b64.empty() || b64.size() % 4 != 0) return std::nullopt;
  std::string plain(b64.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(plain.data()),
                                reinterpret_cast<const unsigned char*>(b64.data()),
                                static_cast<int>(b64.size()));
  if (n < 0) return std::nullopt;
  std::size_t len = static_cast<std::size_t>(n);
  for (std::size_t i = b64.size(); i > 0 && b64[i - 1] == '='; --i) --len;  // padding bytes
  plain.resize(len);
  const auto colon = plain.find(':');
  if (colon == std::string::npos) return std::nullopt;
  return std::pair{plain.substr(0, colon), plain.substr(colon + 1)};
}

// The authority-form target of a CONNECT (RFC 9110 §9.3.6): host:port, an IPv6 literal in
// brackets.
struct target {
  std::string host;
  std::uint16_t port = 0;
};

std::optional<target> parse_target(std::string_view t) {
  std::string_view host;
  std::string_view port;
  if (!t.empty() && t.front() == '[') {
    const auto close = t.find(']');
    if (close == std::string_view::npos || t.substr(close + 1, 1) != ":") return std::nullopt;
    host = t.substr(1, close - 1);
    port = t.substr(close + 2);
  } else {
    const auto colon = t.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = t.substr(0, colon);
    port = t.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return std::nullopt;  // IPv6 needs brackets
  }
  if (host.empty() || port.empty() || port.size() > 5) return std::nullopt;
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535)
    return std::nullopt;
  return target{std::string(host), static_cast<std::uint16_t>(value)};
}

bool is_loopback(const asio::ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped())
    return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).is_loopback();
  return a.is_loopback();
}

// One client connection and, once connected, its target; touched only on strand_.
struct proxy_connection {
  proxy_connection(strand_type strand, tcp::socket socket)
      : strand_(std::move(strand)),
        client_(std::move(socket)),
        target_(strand_),
        resolver_(strand_) {}

  // Aborts whatever the session awaits; the session sees closed_ and ends.
  void close() {
    if (closed_) return;
    closed_ = true;
    resolver_.cancel();
    for (beast::tcp_stream* s : {&client_, &target_}) {
      error_code ignored;
      s->socket().shutdown(tcp::socket::shutdown_both, ignored);
      s->close();
    }
  }

  strand_type strand_;
  beast::tcp_stream client_;
  beast::tcp_stream target_;
  tcp::resolver resolver_;
  beast::flat_buffer buffer_;
  bool closed_ = false;
};

}  // namespace

// Shared with the completion handlers of its coroutines: on a user's executor they may outlive
// the connect_proxy object, and must find the state they run against still there.
struct connect_proxy::impl : detail::loopback_server<connect_proxy::impl, proxy_connection> {
  // `ex` empty: the proxy runs an io_context of its own on opts.threads threads.
  impl(std::optional<asio::any_io_executor> ex, connect_proxy_options opts);

  // loopback_server's hooks.
  void on_accept();
  std::pair<std::shared_ptr<proxy_connection>, asio::awaitable<void>> open_session(
      strand_type strand, tcp::socket socket);
  asio::awaitable<void> run_session(std::shared_ptr<proxy_connection> c);
  asio::awaitable<void> tunnel(proxy_connection& c, const target& t);
  asio::awaitable<void> relay(proxy_connection& c, beast::tcp_stream& from, beast::tcp_stream& to,
                              bool up);
  asio::awaitable<void> refuse(proxy_connection& c, http::status status, std::string_view why,
                               std::uint64_t connect_proxy_stats::*counter);

  const connect_proxy_options opts_;

  mutable std::mutex mutex_;  // the counters
  connect_proxy_stats stats_;
};

connect_proxy::impl::impl(std::optional<asio::any_io_executor> ex, connect_proxy_options opts)
    : loopback_server(std::move(ex), opts.threads, opts.port, "nxsys connect proxy",
                      opts.max_connections),
      opts_(std::move(opts)) {}

void connect_proxy::impl::on_accept() {
  std::lock_guard lock(mutex_);
  ++stats_.connections;
}

std::pair<std::shared_ptr<proxy_connection>, asio::awaitable<void>>
connect_proxy::impl::open_session(strand_type strand, tcp::socket socket) {
  auto c = std::make_shared<proxy_connection>(std::move(strand), std::move(socket));
  auto session = run_session(c);
  return {std::move(c), std::move(session)};
}

asio::awaitable<void> connect_proxy::impl::run_session(std::shared_ptr<proxy_connection> c) {
  http::request_parser<http::empty_body> parser;
  parser.header_limit(max_header_size);
  c->client_.expires_after(opts_.timeout);
  auto [ec, n] = co_await http::async_read_header(c->client_, c->buffer_, parser, use_tuple);
  c->client_.expires_never();
  if (c->closed_) co_return;
  if (ec == http::error::end_of_stream || ec == http::error::partial_message ||
      ec == asio::error::eof || ec == asio::error::connection_reset ||
      ec == beast::error::timeout) {
    c->close();  // gone (or silent) before a complete request: nobody to answer
    co_return;
  }
  if (ec) {  // garbage, or a header over the limit
    co_await refuse(
        *c, http::status::bad_request,
        ec == http::error::header_limit ? "request header too large" : "malformed request",
        &connect_proxy_stats::bad_requests);
    co_return;
  }

  const auto& req = parser.get();
  if (req.method() != http::verb::connect) {
    co_await refuse(*c, http::status::method_not_allowed, "only CONNECT is supported",
                    &connect_proxy_stats::refused_method);
    co_return;
  }
  const std::string_view request_target(req.target().data(), req.target().size());
  const auto authorization = req[http::field::proxy_authorization];
  const auto credentials =
      parse_basic(std::string_view(authorization.data(), authorization.size()));
  {
    std::lock_guard lock(mutex_);
    stats_.last_target = request_target;
    if (credentials) stats_.last_user = credentials->first;
  }
  if ((!opts_.username.empty() || !opts_.password.empty()) &&
      (!credentials || credentials->first != opts_.username ||
       credentials->second != opts_.password)) {
    co_await refuse(*c, http::status::proxy_authentication_required,
                    "proxy authentication required", &connect_proxy_stats::refused_auth);
    co_return;
  }
  const auto t = parse_target(request_target);
  if (!t || !parser.is_done()) {  // not host:port, or a CONNECT with a body
    co_await refuse(*c, http::status::bad_request,
                    t ? "CONNECT has no body" : "the target must be host:port",
                    &connect_proxy_stats::bad_requests);
    co_return;
  }
  co_await tunnel(*c, *t);
}

asio::awaitable<void> connect_proxy::impl::tunnel(proxy_connection& c, const target& t) {
  // Where the target is, and whether it may be reached.
  std::vector<tcp::endpoint> endpoints;
  error_code aec;
  const auto address = asio::ip::make_address(t.host, aec);
  if (!aec) {
    if (!opts_.loopback_only || is_loopback(address)) endpoints.emplace_back(address, t.port);
  } else if (beast::iequals(t.host, "localhost")) {
    endpoints.emplace_back(asio::ip::address_v4::loopback(), t.port);
    endpoints.emplace_back(asio::ip::address_v6::loopback(), t.port);
  } else if (!opts_.loopback_only) {
    auto [rec, results] =
        co_await c.resolver_.async_resolve(t.host, std::to_string(t.port), use_tuple);
    if (c.closed_) co_return;
    if (!rec)
      for (const auto& r : results) endpoints.push_back(r.endpoint());
    if (endpoints.empty()) {
      co_await refuse(c, http::status::bad_gateway, "cannot resolve the target",
                      &connect_proxy_stats::failed_connects);
      co_return;
    }
  }
  if (endpoints.empty()) {
    co_await refuse(c, http::status::forbidden, "only loopback targets are allowed",
                    &connect_proxy_stats::refused_target);
    co_return;
  }
  if (opts_.refuse_all) {
    co_await refuse(c, http::status::bad_gateway, "refused (refuse_all)",
                    &connect_proxy_stats::failed_connects);
    co_return;
  }

  c.target_.expires_after(opts_.timeout);
  auto [cec, ep] = co_await c.target_.async_connect(endpoints, use_tuple);
  c.target_.expires_never();
  if (c.closed_) co_return;
  if (cec) {
    co_await refuse(c, http::status::bad_gateway, "cannot connect to the target",
                    &connect_proxy_stats::failed_connects);
    co_return;
  }
  error_code ignored;
  c.target_.socket().set_option(tcp::no_delay(true), ignored);

  const std::size_t early = c.buffer_.size();  // sent after the CONNECT without waiting
  {
    std::lock_guard lock(mutex_);
    ++stats_.tunnels;
    stats_.bytes_up += early;
  }
  static constexpr std::string_view established = "HTTP/1.1 200 Connection established\r\n\r\n";
  auto [wec, wn] = co_await asio::async_write(c.client_, asio::buffer(established), use_tuple);
  error_code early_ec;
  if (!wec && !c.closed_ && early > 0) {
    auto [eec, en] = co_await asio::async_write(c.target_, c.buffer_.data(), use_tuple);
    early_ec = eec;
    c.buffer_.consume(c.buffer_.size());
  }
  if (wec || early_ec || c.closed_) {
    c.close();
    co_return;
  }

  using namespace asio::experimental::awaitable_operators;
  co_await (relay(c, c.client_, c.target_, true) && relay(c, c.target_, c.client_, false));
  c.close();
}

// Copies from `from` to `to` until `from` ends its sending, which is passed on (half-close), or
// either fails, which closes the whole tunnel.
asio::awaitable<void> connect_proxy::impl::relay(proxy_connection& c, beast::tcp_stream& from,
                                                 beast::tcp_stream& to, bool up) {
  std::array<char, relay_buffer_size> buffer;
  for (;;) {
    auto [ec, n] = co_await from.async_read_some(asio::buffer(buffer), use_tuple);
    if (c.closed_) co_return;
    if (n > 0) {
      {
        std::lock_guard lock(mutex_);
        (up ? stats_.bytes_up : stats_.bytes_down) += n;
      }
      auto [wec, wn] = co_await asio::async_write(to, asio::buffer(buffer.data(), n), use_tuple);
      if (c.closed_) co_return;
      if (wec) {
        c.close();
        co_return;
      }
    }
    if (ec == asio::error::eof) {
      error_code ignored;
      to.socket().shutdown(tcp::socket::shutdown_send, ignored);
      co_return;
    }
    if (ec) {
      c.close();
      co_return;
    }
  }
}

// Answers `status` with `why` as a short text body, then closes the connection gracefully.
asio::awaitable<void> connect_proxy::impl::refuse(proxy_connection& c, http::status status,
                                                  std::string_view why,
                                                  std::uint64_t connect_proxy_stats::*counter) {
  {
    std::lock_guard lock(mutex_);
    ++(stats_.*counter);
  }
  http::response<http::string_body> res{status, 11};
  res.set(http::field::server, "nxsys-test-proxy");
  res.set(http::field::content_type, "text/plain");
  if (status == http::status::proxy_authentication_required)
    res.set(http::field::proxy_authenticate, "Basic realm=\"" + opts_.realm + "\"");
  if (status == http::status::method_not_allowed) res.set(http::field::allow, "CONNECT");
  res.body() = std::string(why) + "\n";
  res.keep_alive(false);
  res.prepare_payload();
  c.client_.expires_after(drain_timeout);
  auto [ec, n] = co_await http::async_write(c.client_, res, use_tuple);
  if (!ec && !c.closed_) {
    // Half-close, then read what the client still sends until it closes too (lingering close).
    error_code ignored;
    c.client_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    c.client_.expires_after(drain_timeout);
    std::array<char, 4096> scratch;
    std::size_t drained = 0;
    while (!c.closed_ && drained < max_drain_size) {
      auto [rec, rn] = co_await c.client_.async_read_some(asio::buffer(scratch), use_tuple);
      if (rec) break;
      drained += rn;
    }
  }
  c.close();
}

// ---- Public interface ---------------------------------------------------------------------------

connect_proxy::connect_proxy(connect_proxy_options opts)
    : impl_(std::make_shared<impl>(std::nullopt, std::move(opts))) {
  impl_->start();
}

connect_proxy::connect_proxy(asio::any_io_executor ex, connect_proxy_options opts)
    : impl_(std::make_shared<impl>(std::move(ex), std::move(opts))) {
  impl_->start();
}

connect_proxy::~connect_proxy() {
  impl_->stop();
}

void connect_proxy::stop() {
  impl_->stop();
}

std::uint16_t connect_proxy::port() const {
  return impl_->port();
}

std::string connect_proxy::url() const {
  return "http://127.0.0.1:" + std::to_string(impl_->port());
}

connect_proxy_stats connect_proxy::stats() const {
  std::lock_guard lock(impl_->mutex_);
  return impl_->stats_;
}

std::size_t connect_proxy::open_connections() const {
  return impl_->open_connections();
}

}  // namespace nxsys::auth::testing
