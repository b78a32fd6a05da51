// SPDX-License-Identifier: BSL-1.0
/// @file
/// The CONNECT proxy of nxsys::auth_testing: an HTTP/1.1 forward proxy on 127.0.0.1 that tunnels
/// TCP connections (`CONNECT host:port`), optionally behind `Proxy-Authorization: Basic`, for
/// tests of clients that reach their token endpoint through a proxy.
#ifndef NXSYS_AUTH_TESTING_CONNECT_PROXY_HPP
#define NXSYS_AUTH_TESTING_CONNECT_PROXY_HPP

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace nxsys::auth::testing {

/// How a connect_proxy behaves. The defaults make it an open proxy that tunnels to loopback
/// targets only. (As with mock_server_options, designated initializers may name only what they
/// change: `{.username = "u", .password = "p"}`.)
struct connect_proxy_options {
  /// With password: the credentials every CONNECT must carry, as
  /// `Proxy-Authorization: Basic base64(username:password)` (RFC 7617). A request without them,
  /// or with others, is answered 407 with `Proxy-Authenticate: Basic realm="REALM"` and its
  /// connection closed. Authentication is required when username or password is not empty.
  std::string username{};
  std::string password{};                  ///< see username
  std::string realm = "nxsys-test-proxy";  ///< realm of the 407 answer's challenge
  std::uint16_t port = 0;  ///< port on 127.0.0.1; 0: a free one, see connect_proxy::port()
  /// Threads the proxy runs on when it has its own (1 or more); ignored on your executor.
  unsigned threads = 1;
  /// Tunnel to loopback targets only (127.0.0.0/8, ::1 and the name localhost) and answer 403
  /// for any other, so that tests never reach beyond the machine. false: any target; the
  /// proxy resolves names.
  bool loopback_only = true;
  /// Answer every CONNECT that passed authentication and the target check with 502 Bad
  /// Gateway, without connecting, as a proxy that cannot reach its upstream.
  bool refuse_all = false;
  /// How long the proxy waits for a complete request header, and then for its connection to
  /// the target (a timeout there is a 502). A tunnel itself has no timeout.
  std::chrono::milliseconds timeout{std::chrono::seconds(10)};
  /// Connections open at once; one accepted beyond that is closed without an answer.
  std::size_t max_connections = 1024;
};

/// Counters since the proxy started. An answer is counted before it is written and relayed
/// bytes before they are forwarded, so a client that has read something sees it counted.
struct connect_proxy_stats {
  std::uint64_t connections = 0;      ///< TCP connections accepted
  std::uint64_t tunnels = 0;          ///< CONNECTs answered 200: tunnels established
  std::uint64_t refused_auth = 0;     ///< answered 407: no or wrong Proxy-Authorization
  std::uint64_t refused_target = 0;   ///< answered 403: a target other than loopback
  std::uint64_t refused_method = 0;   ///< answered 405: a method other than CONNECT
  std::uint64_t failed_connects = 0;  ///< answered 502: target unreachable, or refuse_all
  /// Answered 400: a malformed request, a header over 8 KiB, a target that is not host:port,
  /// or a CONNECT with a body.
  std::uint64_t bad_requests = 0;
  std::uint64_t bytes_up = 0;    ///< bytes relayed from clients to targets
  std::uint64_t bytes_down = 0;  ///< bytes relayed from targets to clients
  std::string last_target{};     ///< request target of the last CONNECT, e.g. "127.0.0.1:8443"
  /// User name of the last Proxy-Authorization Basic header that could be decoded, whether or
  /// not it was accepted (or required); "" if none.
  std::string last_user{};
};

/// A CONNECT proxy on 127.0.0.1, listening from construction until stop() or destruction. For
/// `CONNECT host:port HTTP/1.1` it checks the credentials (407), the target (400, 403),
/// connects to it (502 when it cannot), answers `200 Connection established` and then relays
/// bytes both ways: when one side ends its sending (EOF) the other side's sending is shut down
/// too, and the tunnel closes once both have, or at once when either side fails or resets. Any
/// other method is answered 405 (it only tunnels). Every answer but 200 closes the connection.
///
/// Thread safety: all member functions may be called concurrently from any thread; moving is
/// not supported and destruction must not race with other calls.
class connect_proxy {
 public:
  /// Starts a proxy on threads of its own (`opts.threads` of them).
  /// @param opts how the proxy behaves (see connect_proxy_options)
  /// @throws boost::system::system_error when it cannot listen.
  explicit connect_proxy(connect_proxy_options opts = {});

  /// Starts a proxy whose I/O runs on `ex`, e.g. the io_context of the client under test. The
  /// execution context of `ex` must run for the proxy to answer, and outlive it. The proxy
  /// listens until stop(): until then, that context's run() does not run out of work.
  /// @param ex runs the proxy's I/O; `opts.threads` is ignored
  /// @param opts how the proxy behaves (see connect_proxy_options)
  /// @throws boost::system::system_error when it cannot listen.
  explicit connect_proxy(boost::asio::any_io_executor ex, connect_proxy_options opts = {});

  /// Calls stop().
  ~connect_proxy();
  connect_proxy(const connect_proxy&) = delete;
  connect_proxy& operator=(const connect_proxy&) = delete;

  /// @return the port the proxy listens on (the one chosen when `opts.port` was 0)
  std::uint16_t port() const;
  /// @return "http://127.0.0.1:PORT", the proxy URL clients are configured with
  std::string url() const;

  /// @return the counters, consistent with each other
  connect_proxy_stats stats() const;
  /// @return connections accepted and not yet ended, tunnels included. 0 once every client and
  ///   target has gone: nothing is relayed any more.
  std::size_t open_connections() const;

  /// Stops the proxy: no new connection is accepted, and open ones, tunnels included, are
  /// closed. On its own threads it returns when they have ended; on your executor the rest
  /// happens when that runs. The counters stay readable. Idempotent.
  void stop();

 private:
  struct impl;
  std::shared_ptr<impl> impl_;  // shared with the proxy's pending operations
};

}  // namespace nxsys::auth::testing

#endif
