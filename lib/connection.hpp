// SPDX-License-Identifier: BSL-1.0
// One HTTP/1.1 connection over TCP or TLS, and the origin it connects to. Shared by the token
// transport (one connection) and the session's pool (many). Internal.
#ifndef NXSYS_AUTH_LIB_CONNECTION_HPP
#define NXSYS_AUTH_LIB_CONNECTION_HPP

#include <nxsys/auth/error.hpp>
#include <nxsys/auth/http_options.hpp>
#include <nxsys/auth/protocol.hpp>

#include "proxy.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/append.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>

namespace nxsys::auth::detail {

using steady_time = std::chrono::steady_clock::time_point;

/// The limits of http_options that every connection to an origin reads, with the owner's
/// default answer size filled in.
struct connection_limits {
  std::chrono::milliseconds connect_timeout;  ///< resolve + connect + CONNECT + TLS handshake
  std::chrono::milliseconds request_timeout;  ///< write the request + read the answer
  std::chrono::milliseconds max_idle;         ///< an idle connection older than this is reopened
  std::size_t max_response_bytes;             ///< headers + body of an answer
};

/// Answer sizes when http_options::max_response_bytes is 0.
inline constexpr std::size_t default_token_response_bytes = 64 * 1024;
inline constexpr std::size_t default_api_response_bytes = 8 * 1024 * 1024;
/// Headers beyond this are refused whatever max_response_bytes says: no honest server needs more.
inline constexpr std::size_t max_header_bytes = 16 * 1024;

/// Where connections go, with the limits, TLS context and proxy every connection to it shares.
/// Not copied or moved: connections keep a reference. Thread safety: const after construction
/// (the SSL context is only used to create SSL objects, which OpenSSL allows concurrently).
class origin {
 public:
  /// `default_max_response_bytes` stands for a max_response_bytes of 0. The proxy is chosen
  /// here (the environment read, if http.proxy.from_environment). Throws
  /// error_with_diagnostics(invalid_config) when the TLS or proxy options cannot be used.
  origin(protocol::endpoint ep, const http_options& http, std::size_t default_max_response_bytes);
  origin(const origin&) = delete;
  origin& operator=(const origin&) = delete;

  const protocol::endpoint& endpoint() const noexcept { return ep_; }
  const std::string& host_header() const noexcept { return host_header_; }
  const connection_limits& limits() const noexcept { return limits_; }
  std::uint64_t connections_opened() const noexcept {
    return connections_opened_.load(std::memory_order_relaxed);
  }
  /// The proxy connections go through; nullptr: they go directly.
  const proxy_route* proxy() const noexcept { return proxy_ ? &*proxy_ : nullptr; }

 private:
  friend class http_connection;
  protocol::endpoint ep_;
  std::string host_header_;
  connection_limits limits_;
  bool verify_peer_;
  std::optional<proxy_route> proxy_;
  std::string connect_target_;  // "host:port" of a CONNECT, the port always given
  // Mutable: connections create SSL objects from it and count themselves, through a const&.
  mutable std::optional<boost::asio::ssl::context> ssl_ctx_;
  mutable std::atomic<std::uint64_t> connections_opened_{0};
};

/// What an exchange ended with: a raw Beast/Asio error (classify() turns it into an errc),
/// and whether any byte of the answer had arrived (if not, the server may never have seen the
/// request on a connection it had closed while idle).
struct exchange_result {
  boost::system::error_code ec;
  bool answer_started = false;
};

/// One connection. Not thread-safe: used from one strand (or coroutine) at a time; cancel()
/// must be called from there too.
class http_connection {
 public:
  http_connection(boost::asio::any_io_executor ex, const origin& o);
  ~http_connection();
  http_connection(const http_connection&) = delete;
  http_connection& operator=(const http_connection&) = delete;

  bool is_open() const noexcept { return tcp_.has_value() || tls_.has_value(); }
  /// When the last answer was read.
  steady_time last_used() const noexcept { return last_used_; }
  /// Open, idle for less than max_idle, and neither closed nor written to by the server since
  /// the last answer: a request sent on it cannot have been lost before the server read it.
  bool reusable();
  /// Resolves, connects, opens the proxy's tunnel (if any) and (for https) handshakes, by
  /// `deadline` at the latest. Classified.
  boost::asio::awaitable<boost::system::error_code> connect(steady_time deadline,
                                                            diagnostics& diag);
  /// Writes `req` and reads the answer into `res` (within the origin's limits), by `deadline`
  /// at the latest. On error the connection is closed.
  boost::asio::awaitable<exchange_result> exchange(
      const boost::beast::http::request<boost::beast::http::string_body>& req,
      boost::beast::http::response<boost::beast::http::string_body>& res, steady_time deadline);
  /// exchange() as one composed operation, for the session's per-request path: it makes no
  /// coroutine frame of its own, and writes and reads through a serializer and a parser kept
  /// in the connection, where Beast's message overloads would allocate theirs per call.
  /// Requires is_open(). Completes with `void(error_code raw, bool answer_started)` on the
  /// handler's associated executor, never inline. `req` and `res` must outlive it.
  template <class CompletionToken>
  auto async_exchange(const boost::beast::http::request<boost::beast::http::string_body>& req,
                      boost::beast::http::response<boost::beast::http::string_body>& res,
                      steady_time deadline, CompletionToken&& tok);
  /// Turns a raw error of connect()/exchange() into an errc with a message for `diag`.
  boost::system::error_code classify(boost::system::error_code ec, const char* phase,
                                     diagnostics& diag) const;
  /// Makes an operation in progress end with operation_aborted (the owner closes afterwards),
  /// also when it is between two steps of connect().
  void cancel() noexcept;
  /// Closes the sockets; the read buffer is wiped (see wipe_read_buffer()).
  void close() noexcept;
  /// Overwrites what the read buffer holds beyond its unread bytes: the answers read so far,
  /// which for a token endpoint carry tokens. The buffer keeps its storage between exchanges,
  /// so without this the last answer would stay in memory until the next one overwrote it.
  void wipe_read_buffer() noexcept;

 private:
  using tls_stream = boost::asio::ssl::stream<boost::beast::tcp_stream>;
  boost::beast::tcp_stream& lowest_layer() noexcept { return tls_ ? tls_->next_layer() : *tcp_; }
  boost::system::error_code classify_at(boost::system::error_code ec, std::string where,
                                        diagnostics& diag) const;
  /// CONNECT through the proxy on the open tcp_; on success the tunnel is open.
  boost::asio::awaitable<boost::system::error_code> tunnel(diagnostics& diag);

  struct exchange_op;
  struct resolve_attempt;

  boost::asio::any_io_executor ex_;
  const origin& origin_;
  std::shared_ptr<resolve_attempt> resolving_;  // connect()'s resolve in progress, for cancel()
  bool cancelled_ = false;                      // by cancel(), until the next connect()
  std::optional<boost::beast::tcp_stream> tcp_;
  std::optional<tls_stream> tls_;
  boost::beast::flat_buffer buffer_;
  steady_time last_used_{};
  // async_exchange()'s, between its steps only.
  std::optional<boost::beast::http::request_serializer<boost::beast::http::string_body>>
      serializer_;
  std::optional<boost::beast::http::response_parser<boost::beast::http::string_body>> parser_;
};

// The steps of async_exchange(): write, then read, on whichever stream is open.
struct http_connection::exchange_op {
  http_connection* c;
  const boost::beast::http::request<boost::beast::http::string_body>* req;
  boost::beast::http::response<boost::beast::http::string_body>* res;
  steady_time deadline;
  enum class step { start, written, read, refused } at = step::start;

  template <class Self>
  void operator()(Self& self, boost::system::error_code ec = {}, std::size_t = 0) {
    namespace http = boost::beast::http;
    switch (at) {
      case step::start:
        if (c->cancelled_ || !c->is_open()) {
          c->close();
          at = step::refused;
          boost::asio::post(
              c->ex_,
              boost::asio::append(std::move(self),
                                  boost::system::error_code(boost::asio::error::operation_aborted),
                                  std::size_t{0}));
          return;
        }
        c->lowest_layer().expires_at(std::min(
            std::chrono::steady_clock::now() + c->origin_.limits_.request_timeout, deadline));
        at = step::written;
        c->serializer_.emplace(*req);
        if (c->tls_) {
          http::async_write(*c->tls_, *c->serializer_, std::move(self));
        } else {
          http::async_write(*c->tcp_, *c->serializer_, std::move(self));
        }
        return;
      case step::written: {
        c->serializer_.reset();
        if (ec) {
          c->close();
          self.complete(ec, false);
          return;
        }
        at = step::read;
        const auto max = c->origin_.limits_.max_response_bytes;
        auto& p = c->parser_.emplace();
        p.header_limit(static_cast<std::uint32_t>(std::min(max, max_header_bytes)));
        p.body_limit(max);
        if (c->tls_) {
          http::async_read(*c->tls_, c->buffer_, p, std::move(self));
        } else {
          http::async_read(*c->tcp_, c->buffer_, p, std::move(self));
        }
        return;
      }
      case step::read: {
        if (ec) {
          const bool started = c->parser_->got_some();
          c->parser_.reset();
          c->close();
          self.complete(ec, started);
          return;
        }
        *res = c->parser_->release();
        c->parser_.reset();
        c->lowest_layer().expires_never();
        c->last_used_ = std::chrono::steady_clock::now();
        if (!res->keep_alive()) c->close();
        self.complete(boost::system::error_code{}, true);
        return;
      }
      case step::refused:
        self.complete(ec, false);
        return;
    }
  }
};

template <class CompletionToken>
auto http_connection::async_exchange(
    const boost::beast::http::request<boost::beast::http::string_body>& req,
    boost::beast::http::response<boost::beast::http::string_body>& res, steady_time deadline,
    CompletionToken&& tok) {
  return boost::asio::async_compose<CompletionToken, void(boost::system::error_code, bool)>(
      exchange_op{this, &req, &res, deadline}, tok);
}

/// Overwrites the value of every Authorization header of `h` in place (the header keeps its
/// length). For a message about to be destroyed: Beast frees its header storage unwiped.
void wipe_authorization(boost::beast::http::fields& h) noexcept;
/// The same for every header `name` of `h` (Proxy-Authorization).
void wipe_field(boost::beast::http::fields& h, boost::beast::http::field name) noexcept;

/// The client certificate's fields of `tls` (they pair up: one certificate, one key, each from
/// a file or memory), named as `prefix` + `field` + ".certificate_file" and so on: empty, or
/// invalid_config with the problem in diag. Shared by http_options::validate and redis_store.
boost::system::error_code validate_client_certificate(const tls_options& tls,
                                                      std::string_view field,
                                                      std::string_view prefix, diagnostics* diag);

/// An SSL context for the TLS options, configure_context called last; throws
/// error_with_diagnostics(invalid_config) when a CA file or directory, the client certificate
/// or its key cannot be loaded, or when configure_context throws. The messages name the
/// options as `field` ("tls", or redis_store's "sentinel_tls").
boost::asio::ssl::context make_ssl_context(const tls_options& opts, std::string_view field = "tls");

}  // namespace nxsys::auth::detail

#endif
