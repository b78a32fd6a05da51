// SPDX-License-Identifier: BSL-1.0
// One connection to Redis over Asio, plain TCP or TLS: connect (with the TLS handshake, AUTH
// and SELECT), then commands one at a time, or (subscribed) a stream of messages. Internal to
// nxsys::auth_redis; used from one strand only.
#ifndef NXSYS_AUTH_LIB_REDIS_CONNECTION_HPP
#define NXSYS_AUTH_LIB_REDIS_CONNECTION_HPP

#include <nxsys/auth/error.hpp>

#include "resp.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace nxsys::auth::redis {

using steady_time = std::chrono::steady_clock::time_point;

/// TLS of a connection (redis_store_options::use_tls and the fields it enables, or
/// sentinel_use_tls and its own).
struct tls_settings {
  /// The SSL context, shared by the connections of one store; null: plain TCP.
  std::shared_ptr<boost::asio::ssl::context> context;
  /// The name sent as SNI (unless an IP address) and verified in the certificate; empty: the
  /// address's host at each connect.
  std::string server_name;
  bool verify_peer = true;  ///< check the name (the chain is the context's verify mode)
  /// The options these come from, as the hints of a failed handshake name them: the user fixes
  /// sentinel_tls.ca_file for a sentinel, not tls.ca_file.
  const char* field = "tls";
  const char* server_name_field = "tls_server_name";
};

struct server_address {
  std::string host = "127.0.0.1";
  std::string port = "6379";
  std::string username;            ///< ACL user (Redis 6+); empty: AUTH <password> alone
  detail::secret_string password;  ///< empty: no AUTH
  int database = 0;
  std::chrono::milliseconds connect_timeout{2'000};
  tls_settings tls;  ///< default: plain TCP
};

class connection {
 public:
  /// `addr` is the owner's and outlives the connection. It is read at each connect (host and
  /// port once, at its start), so that a change (a failover) takes effect at the next connect
  /// after close(), and the messages name the server actually tried.
  connection(boost::asio::any_io_executor strand, const server_address& addr);
  ~connection();

  /// Sends one command and reads its reply, connecting first if needed; concurrent callers
  /// (on the strand) queue. A Redis error reply is a reply, not an error. Errors, each with
  /// diag.client_message saying what happened and to which server (never an argument: they may
  /// be secrets), in two kinds the store treats apart:
  ///  - Redis unreachable: errc::connection (resolve, connect, a lost connection, bytes that
  ///    are not RESP) or errc::timeout (nothing, or no turn on the connection, by `deadline`);
  ///  - Redis refused the session: errc::store_failed (AUTH or SELECT answered with an error),
  ///    or errc::tls (the TLS handshake failed: a certificate not verified, a wrong name, an
  ///    alert from the server such as "certificate required"), whose message says so.
  /// operation_aborted after close(), which also ends a resolve or connect in progress.
  boost::asio::awaitable<boost::system::error_code> exec(const arguments& args, reply& out,
                                                         steady_time deadline, diagnostics& diag);
  /// The next reply pushed by the server (subscribed connections); steady_time::max() waits
  /// without a timeout.
  boost::asio::awaitable<boost::system::error_code> receive(reply& out, steady_time deadline,
                                                            diagnostics& diag);
  bool is_open() const noexcept { return stream_ != nullptr; }
  /// Drops the connection; operations in progress end with operation_aborted.
  void close() noexcept;

 private:
  struct transport;
  struct resolve_op;

  boost::asio::awaitable<boost::system::error_code> connect(steady_time deadline,
                                                            diagnostics& diag);
  boost::asio::awaitable<boost::system::error_code> roundtrip(const detail::secret_string& encoded,
                                                              reply& out, steady_time deadline,
                                                              diagnostics& diag);
  boost::asio::awaitable<boost::system::error_code> read_reply(reply& out, steady_time deadline,
                                                               diagnostics& diag);
  boost::asio::awaitable<boost::system::error_code> handshake(std::shared_ptr<transport> t,
                                                              const std::string& host,
                                                              std::uint64_t gen, diagnostics& diag);
  boost::system::error_code failed(const boost::system::error_code& ec, std::string what,
                                   diagnostics& diag);

  boost::asio::any_io_executor strand_;
  const server_address& addr_;  // the owner's (see the constructor)
  std::string where_;           // "host:port" of the last connect, for messages
  // Shared with the operation in progress, which keeps it alive until it completes: close()
  // drops this one and closes the socket; an ssl::stream must outlive its operations.
  std::shared_ptr<transport> stream_;
  std::weak_ptr<resolve_op> resolving_;  // a resolve in progress, which close() cancels
  bool tls_unconfirmed_ = false;         // TLS up, no reply yet (see failed())
  std::unique_ptr<decoder> decoder_;
  std::vector<char> buf_;
  bool busy_ = false;
  std::deque<std::shared_ptr<boost::asio::steady_timer>> queue_;
  std::uint64_t generation_ = 0;  // bumped by close(): an operation of an older one aborts
};

}  // namespace nxsys::auth::redis

#endif
