// SPDX-License-Identifier: BSL-1.0
// What the test servers of nxsys::auth_testing (the mock token server, the CONNECT proxy) share:
// a socket listening on 127.0.0.1, an io_context on threads of their own or a user's executor,
// a strand per connection, the open connections (so stop() can close them) and a stop() that
// joins. Private to the library.
#ifndef NXSYS_AUTH_TESTING_LOOPBACK_SERVER_HPP
#define NXSYS_AUTH_TESTING_LOOPBACK_SERVER_HPP

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace nxsys::auth::testing::detail {

/// Owned by a shared_ptr<Derived> (the handlers hold one: on a user's executor they may outlive
/// the public object). Derived provides
///   std::pair<std::shared_ptr<Connection>, asio::awaitable<void>>
///       open_session(strand_type, tcp::socket)
/// (the connection and the coroutine that serves it, not started yet) and void on_accept()
/// (counts). Connection has a `strand_type strand_` and a close() that is called on it.
template <class Derived, class Connection>
class loopback_server : public std::enable_shared_from_this<Derived> {
 public:
  using strand_type = boost::asio::strand<boost::asio::any_io_executor>;
  using tcp = boost::asio::ip::tcp;

  loopback_server(const loopback_server&) = delete;
  loopback_server& operator=(const loopback_server&) = delete;

  /// Apart from the constructor: the handlers hold a shared_ptr to the derived object.
  void start() {
    namespace asio = boost::asio;
    asio::co_spawn(accept_strand_, accept_loop(),
                   [self = this->shared_from_this()](std::exception_ptr e) { self->report(e); });
    if (!ioc_) return;
    // No work guard: the accept loop is work until stop() closes the acceptor, and then run()
    // returns once every session has ended, which is exactly when joining is safe.
    try {
      for (unsigned i = 0; i < threads_wanted_; ++i) {
        threads_.emplace_back([this] {
          for (;;) {
            try {
              ioc_->run();
              return;
            } catch (...) {
              report(std::current_exception());
            }
          }
        });
      }
    } catch (...) {
      // Before the constructor gives up: join the threads that did start, then run what is left
      // here, so that no handler keeps the server alive through the io_context it owns.
      stop();
      ioc_->restart();
      ioc_->run();
      throw;
    }
  }

  /// Closes the acceptor and every open connection; on threads of its own, joins them.
  void stop() {
    std::call_once(stopped_, [this] {
      std::vector<std::shared_ptr<Connection>> open;
      {
        std::lock_guard lock(connections_mutex_);
        stopping_ = true;
        for (auto& [id, c] : connections_) open.push_back(c);
      }
      boost::asio::post(accept_strand_, [self = this->shared_from_this()] {
        boost::system::error_code ignored;
        self->acceptor_.close(ignored);
      });
      for (auto& c : open) boost::asio::post(c->strand_, [c] { c->close(); });
      open.clear();
      for (auto& t : threads_) t.join();
    });
  }

  std::uint16_t port() const noexcept { return port_; }

  std::size_t open_connections() const {
    std::lock_guard lock(connections_mutex_);
    return connections_.size();
  }

  std::vector<std::shared_ptr<Connection>> connection_snapshot() const {
    std::lock_guard lock(connections_mutex_);
    std::vector<std::shared_ptr<Connection>> out;
    out.reserve(connections_.size());
    for (auto& [id, c] : connections_) out.push_back(c);
    return out;
  }

  /// True when waiting here for the server's own handlers could never end: the server runs on
  /// a user's executor, or this is one of its threads.
  bool must_not_block() { return !ioc_ || ioc_->get_executor().running_in_this_thread(); }

  /// A bug in a server must not take the test process down with an unrelated terminate(), nor
  /// come out of the run() of a user's io_context.
  void report(std::exception_ptr e) const {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      std::fprintf(stderr, "%s: %s\n", name_, x.what());
    } catch (...) {
      std::fprintf(stderr, "%s: unknown exception\n", name_);
    }
  }

 protected:
  /// Bound and listening before it returns, so clients may connect once start() ran.
  /// @param ex empty: an io_context of its own, run by `threads` threads (at least 1)
  /// @param name prefixes the lines report() writes
  /// @param max_connections more open connections than this are closed unanswered
  loopback_server(std::optional<boost::asio::any_io_executor> ex, unsigned threads,
                  std::uint16_t port, const char* name,
                  std::size_t max_connections = std::numeric_limits<std::size_t>::max())
      : name_(name),
        threads_wanted_(std::max(1u, threads)),
        max_connections_(max_connections),
        ioc_(ex ? std::nullopt
                : std::make_optional<boost::asio::io_context>(static_cast<int>(threads_wanted_))),
        ex_(ex ? std::move(*ex) : boost::asio::any_io_executor(ioc_->get_executor())),
        accept_strand_(boost::asio::make_strand(ex_)),
        acceptor_(accept_strand_) {
    tcp::endpoint endpoint(boost::asio::ip::make_address_v4("127.0.0.1"), port);
    acceptor_.open(endpoint.protocol());
    acceptor_.set_option(boost::asio::socket_base::reuse_address(true));
    acceptor_.bind(endpoint);
    acceptor_.listen(boost::asio::socket_base::max_listen_connections);
    port_ = acceptor_.local_endpoint().port();
  }
  // Only reached after stop(): on its own threads the server joined them there, and on a
  // user's executor the last handler holding the server has run (or was destroyed with its
  // context).
  ~loopback_server() = default;

 private:
  boost::asio::awaitable<void> accept_loop() {
    namespace asio = boost::asio;
    constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
    for (;;) {
      // Each connection gets its own strand: connections run in parallel, each one serialised.
      auto strand = asio::make_strand(ex_);
      tcp::socket socket(strand);
      auto [ec] = co_await acceptor_.async_accept(socket, use_tuple);
      if (!acceptor_.is_open()) co_return;
      if (ec) {
        // E.g. out of file descriptors: back off instead of spinning.
        asio::steady_timer pause(accept_strand_, std::chrono::milliseconds(10));
        co_await pause.async_wait(use_tuple);
        continue;
      }
      static_cast<Derived*>(this)->on_accept();
      boost::system::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);  // small answers: do not wait for Nagle
      start_session(std::move(strand), std::move(socket));
    }
  }

  void start_session(strand_type strand, tcp::socket socket) {
    auto [connection, session] =
        static_cast<Derived*>(this)->open_session(strand, std::move(socket));
    std::uint64_t id = 0;
    {
      std::lock_guard lock(connections_mutex_);
      // Stopping: stop() already closed the others. Full: closed unanswered, which bounds what
      // the server holds. Either way the connection goes with this scope, its session unstarted.
      if (stopping_ || connections_.size() >= max_connections_) return;
      id = next_connection_id_++;
      connections_.emplace(id, std::move(connection));
    }
    boost::asio::co_spawn(std::move(strand), std::move(session),
                          [self = this->shared_from_this(), id](std::exception_ptr e) {
                            self->unregister(id);
                            self->report(e);
                          });
  }

  void unregister(std::uint64_t id) {
    std::shared_ptr<Connection> gone;  // destroyed outside the lock
    std::lock_guard lock(connections_mutex_);
    auto it = connections_.find(id);
    if (it != connections_.end()) {
      gone = std::move(it->second);
      connections_.erase(it);
    }
  }

  const char* const name_;
  const unsigned threads_wanted_;
  const std::size_t max_connections_;

  // Declared before everything that holds sockets or timers so it is destroyed last (and the
  // base is destroyed after the derived server's members). Engaged when the server runs on
  // threads of its own.
  std::optional<boost::asio::io_context> ioc_;
  boost::asio::any_io_executor ex_;  // of *ioc_ or the user's
  strand_type accept_strand_;
  tcp::acceptor acceptor_;
  std::uint16_t port_ = 0;
  std::vector<std::thread> threads_;
  std::once_flag stopped_;

  mutable std::mutex connections_mutex_;
  bool stopping_ = false;
  std::uint64_t next_connection_id_ = 0;
  std::unordered_map<std::uint64_t, std::shared_ptr<Connection>> connections_;
};

}  // namespace nxsys::auth::testing::detail

#endif
