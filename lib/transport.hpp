// HTTP/1.1 over TCP or TLS to the token endpoint: one keep-alive connection, timeouts, a body
// limit, no redirects. Internal: used only from the client's strand, one request at a time.
#ifndef NXSYS_AUTH_LIB_TRANSPORT_HPP
#define NXSYS_AUTH_LIB_TRANSPORT_HPP

#include <nxsys/auth/config.hpp>
#include <nxsys/auth/error.hpp>
#include <nxsys/auth/protocol.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include <atomic>
#include <optional>
#include <string>

namespace nxsys::auth::detail {

struct http_answer {
  unsigned status = 0;
  std::string body;
  std::string retry_after;  ///< the Retry-After header, as sent ("" when absent)
};

class http_transport {
 public:
  http_transport(boost::asio::any_io_executor ex, protocol::endpoint ep, const client_config& cfg);
  ~http_transport();

  /// POSTs an application/x-www-form-urlencoded body to the endpoint's target. The body is
  /// wiped from memory once written (it holds credentials). Errors are errc values (connection,
  /// timeout, tls, response_too_large, malformed_response) or operation_aborted after close().
  /// Nothing of the exchange outlives `deadline` (errc::timeout), whatever the timeouts say.
  /// `authorization`, when not empty, is sent as the Authorization header.
  boost::asio::awaitable<boost::system::error_code> post_form(
      std::string body, http_answer& out, diagnostics& diag,
      std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max(),
      std::string authorization = {});

  /// Closes the connection and makes a post_form in progress finish with operation_aborted.
  void close();

  std::uint64_t connections_opened() const noexcept {
    return connections_opened_.load(std::memory_order_relaxed);
  }

 private:
  using tls_stream = boost::asio::ssl::stream<boost::beast::tcp_stream>;

  bool connected() const noexcept { return tcp_.has_value() || tls_.has_value(); }
  boost::beast::tcp_stream& lowest_layer() noexcept { return tls_ ? tls_->next_layer() : *tcp_; }
  bool connection_still_usable();
  void drop_connection() noexcept;
  boost::asio::awaitable<boost::system::error_code> connect(diagnostics& diag);
  template <class Stream>
  boost::asio::awaitable<boost::system::error_code> exchange(Stream& s, std::string& body,
                                                             http_answer& out, bool& keep_alive);
  boost::system::error_code classify(boost::system::error_code ec, const char* phase,
                                     diagnostics& diag) const;

  boost::asio::any_io_executor ex_;
  protocol::endpoint ep_;
  std::string host_header_;
  std::chrono::milliseconds connect_timeout_;
  std::chrono::milliseconds request_timeout_;
  std::chrono::milliseconds max_idle_;
  std::size_t max_response_bytes_;
  bool verify_peer_;
  std::optional<boost::asio::ssl::context> ssl_ctx_;
  boost::asio::ip::tcp::resolver resolver_;
  boost::asio::steady_timer resolve_timer_;
  bool resolve_timed_out_ = false;
  std::optional<boost::beast::tcp_stream> tcp_;
  std::optional<tls_stream> tls_;
  boost::beast::flat_buffer buffer_;
  std::chrono::steady_clock::time_point last_used_{};
  bool closed_ = false;
  std::chrono::steady_clock::time_point deadline_ = std::chrono::steady_clock::time_point::max();
  std::string authorization_;  // of the request in progress
  std::atomic<std::uint64_t> connections_opened_{0};
};

/// An SSL context for the client's TLS options; throws error_with_diagnostics(invalid_config)
/// when a CA file or directory cannot be loaded.
boost::asio::ssl::context make_ssl_context(const tls_options& opts);

}  // namespace nxsys::auth::detail

#endif
