// SPDX-License-Identifier: BSL-1.0
// A redis-server of the test's own on 127.0.0.1 (a free port, no persistence), started and
// stopped with bounded waits, and a blocking connection (plain or TLS, hiredis's reader) to
// inspect and poke it. Shared by tests/redis and benchmarks/cluster.cpp.
#ifndef NXSYS_AUTH_TESTING_REDIS_FIXTURE_HPP
#define NXSYS_AUTH_TESTING_REDIS_FIXTURE_HPP

#include <boost/asio/buffer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>

#include <sys/wait.h>

#include <chrono>
#include <cstdint>
#include <fcntl.h>
#include <filesystem>
#include <hiredis/hiredis.h>
#include <memory>
#include <optional>
#include <signal.h>
#include <stdexcept>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace nxsys::auth::testing {

/// Starts `args[0]` (redis-server or redis-sentinel, from PATH) with `args` (its output to
/// /dev/null: noise in the test output) and
/// waits until `ready()` holds, at most 10 s. Throws, with `what` in the message, when it exits
/// first or is not ready in time (then it is killed by `stop`, given the pid).
template <class Ready, class Stop>
pid_t spawn_redis(std::vector<std::string> args, Ready ready, Stop stop, const std::string& what) {
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int devnull = ::open("/dev/null", O_WRONLY);
    if (devnull >= 0) {
      ::dup2(devnull, 1);
      ::dup2(devnull, 2);
    }
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < end) {
    if (ready()) return pid;
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid)
      throw std::runtime_error(what + " exited at start");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  stop(pid);
  throw std::runtime_error(what + " was not ready within 10 s");
}

/// How the fixtures reach a server of theirs on 127.0.0.1: its port, AUTH, and TLS.
struct server_link {
  std::uint16_t port = 0;
  std::string password{};  ///< AUTH first when not empty
  /// Empty: plain TCP. Else TLS, without verification (the fixture inspects its own server,
  /// whichever certificate it serves), with client.pem of this directory as the client
  /// certificate for a server that asks for one.
  std::string tls_data_dir{};
};

/// Blocking commands on one connection to a server of the fixtures, plain TCP or TLS (hiredis
/// here has no TLS: Asio carries the bytes, hiredis's reader parses the replies). Every step is
/// bounded by 5 s.
class fixture_connection {
 public:
  explicit fixture_connection(const server_link& link)
      : tls_ctx_(boost::asio::ssl::context::tls_client), socket_(ctx_) {
    namespace asio = boost::asio;
    if (step([&](auto done) {
          socket_.async_connect({asio::ip::make_address("127.0.0.1"), link.port}, done);
        })) {
      broken_ = "connect failed";
      return;
    }
    if (!link.tls_data_dir.empty()) {
      boost::system::error_code ignored;
      tls_ctx_.set_verify_mode(asio::ssl::verify_none);
      tls_ctx_.use_certificate_chain_file(link.tls_data_dir + "/client.pem", ignored);
      tls_ctx_.use_private_key_file(link.tls_data_dir + "/client.key", asio::ssl::context::pem,
                                    ignored);
      tls_.emplace(socket_, tls_ctx_);
      if (step([&](auto done) { tls_->async_handshake(asio::ssl::stream_base::client, done); })) {
        broken_ = "TLS handshake failed";
        return;
      }
    }
    if (!link.password.empty()) command({"AUTH", link.password});
  }
  ~fixture_connection() { redisReaderFree(reader_); }
  fixture_connection(const fixture_connection&) = delete;
  fixture_connection& operator=(const fixture_connection&) = delete;

  /// The reply as text: "(nil)", the integer's digits, a string, an error's text, or an array's
  /// elements (strings and integers) joined by '\n'; "connect failed", "TLS handshake failed"
  /// or "no reply" when it got none.
  std::string command(const std::vector<std::string>& args) {
    if (!broken_.empty()) return broken_;
    std::string out = "*" + std::to_string(args.size()) + "\r\n";
    for (const auto& a : args) out += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
    const auto bytes = boost::asio::buffer(out);
    if (step([&](auto done) {
          if (tls_)
            boost::asio::async_write(*tls_, bytes, done);
          else
            boost::asio::async_write(socket_, bytes, done);
        }))
      return broken_ = "no reply";
    for (;;) {
      void* r = nullptr;
      if (redisReaderGetReply(reader_, &r) != REDIS_OK) return broken_ = "no reply";
      if (r != nullptr) {
        auto* reply = static_cast<redisReply*>(r);
        std::string text;
        if (reply->type == REDIS_REPLY_ARRAY) {
          for (std::size_t i = 0; i < reply->elements; ++i)
            text += (i ? "\n" : "") + text_of(reply->element[i]);
        } else {
          text = text_of(reply);
        }
        freeReplyObject(reply);
        return text;
      }
      char buf[4096];
      std::size_t n = 0;
      const auto chunk = boost::asio::buffer(buf);
      if (step([&](auto done) {
            auto read = [&n, done](boost::system::error_code ec, std::size_t k) mutable {
              n = k;
              done(ec);
            };
            if (tls_)
              tls_->async_read_some(chunk, read);
            else
              socket_.async_read_some(chunk, read);
          }))
        return broken_ = "no reply";
      redisReaderFeed(reader_, buf, n);
    }
  }

 private:
  static std::string text_of(const redisReply* e) {
    switch (e->type) {
      case REDIS_REPLY_NIL:
        return "(nil)";
      case REDIS_REPLY_INTEGER:
        return std::to_string(e->integer);
      case REDIS_REPLY_ARRAY:
        return "(array)";
      default:
        return std::string(e->str, e->len);
    }
  }

  // Starts an operation with a handler `done(ec, ...)` and runs it to its end, or for at most
  // 5 s: then the socket is closed and the operation drained. Returns true when it failed.
  template <class Start>
  bool step(Start start) {
    std::optional<boost::system::error_code> result;
    start([&result](boost::system::error_code ec, std::size_t = 0) { result = ec; });
    ctx_.restart();
    ctx_.run_for(std::chrono::seconds(5));
    if (!result) {
      boost::system::error_code ignored;
      socket_.close(ignored);
      ctx_.restart();
      ctx_.run();
      return true;
    }
    return static_cast<bool>(*result);
  }

  boost::asio::io_context ctx_;
  boost::asio::ssl::context tls_ctx_;
  boost::asio::ip::tcp::socket socket_;
  std::optional<boost::asio::ssl::stream<boost::asio::ip::tcp::socket&>> tls_;
  redisReader* reader_ = redisReaderCreate();
  std::string broken_;  // set once the connection is unusable: every command answers it
};

/// One command on a fresh connection (see fixture_connection::command).
inline std::string command_at(const server_link& link, const std::vector<std::string>& args) {
  return fixture_connection(link).command(args);
}

/// How a redis-server of the fixtures serves TLS: the certificate pair from `data_dir`
/// (testing/data), and whether it asks clients for a certificate.
struct redis_tls_setup {
  std::string data_dir;             ///< testing/data (test_data_dir())
  std::string cert = "server";      ///< serves <cert>.pem with <cert>.key ("wrong-host", ...)
  std::string auth_clients = "no";  ///< --tls-auth-clients: yes, no or optional
  std::string password{};           ///< --requirepass when not empty
};

/// Runs `redis-server` (from PATH) until destroyed; restart() stops and starts it on the same
/// port (the data is lost: no persistence).
class redis_server {
 public:
  /// `persist`: an append-only file fsync'ed on every write, in a temporary directory, so that
  /// the data survives restart() as a production Redis's does.
  /// `tls`: TLS only (`--tls-port P --port 0`, and `tls-replication yes`, so that a replica
  /// of it, and a sentinel of it, speak TLS too), trusting the test CA for client
  /// certificates; the password is then tls->password.
  explicit redis_server(std::string password = {}, bool persist = false,
                        std::optional<redis_tls_setup> tls = std::nullopt)
      : password_(tls ? tls->password : std::move(password)), tls_(std::move(tls)) {
    if (persist) {
      char tmpl[] = "/tmp/nxsys-redis-XXXXXX";
      if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
      dir_ = tmpl;
    }
    port_ = free_port();
    start();
  }
  ~redis_server() {
    stop();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  redis_server(const redis_server&) = delete;
  redis_server& operator=(const redis_server&) = delete;

  std::uint16_t port() const { return port_; }
  /// How the fixtures reach it (TLS when it serves TLS).
  server_link link() const { return {port_, password_, tls_ ? tls_->data_dir : std::string()}; }

  /// SIGKILL by default (a crash); SIGTERM shuts down as an operator would, writing what the
  /// append-only file still lacks (killed after 10 s if it has not exited by then). Returns
  /// once the process is gone.
  void stop(int signal = SIGKILL) {
    if (pid_ <= 0) return;
    ::kill(pid_, signal);
    int status = 0;
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() >= end) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    pid_ = -1;
  }

  void start() {
    std::vector<std::string> args = {
        "redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1",  "--save", "",
        "--appendonly", "no",     "--daemonize",         "no",     "--loglevel", "warning"};
    if (tls_) {
      const std::string dir = tls_->data_dir + "/";
      args[2] = "0";
      for (const std::string& a :
           {std::string("--tls-port"), std::to_string(port_), std::string("--tls-cert-file"),
            dir + tls_->cert + ".pem", std::string("--tls-key-file"), dir + tls_->cert + ".key",
            std::string("--tls-ca-cert-file"), dir + "ca.pem", std::string("--tls-auth-clients"),
            tls_->auth_clients, std::string("--tls-replication"), std::string("yes")})
        args.push_back(a);
    }
    if (!dir_.empty()) {
      for (const char* a :
           {"--dir", dir_.c_str(), "--appendonly", "yes", "--appendfsync", "always"})
        args.emplace_back(a);
    }
    if (!password_.empty()) {
      args.push_back("--requirepass");
      args.push_back(password_);
    }
    // Up when it answers PING, or the test fails (redis-server missing: scripts/setup.sh
    // installs it).
    pid_ = spawn_redis(
        std::move(args), [this] { return ping(); },
        [this](pid_t pid) {
          pid_ = pid;
          stop();
        },
        tls_ ? "redis-server --tls-port (built without TLS?)" : "redis-server (is it installed?)");
  }

  void restart() {
    stop();
    start();
  }

  /// A blocking command on a fresh connection (AUTH first when needed, over TLS when it serves
  /// TLS); the reply as text (see fixture_connection::command).
  std::string command(const std::vector<std::string>& args) const {
    return command_at(link(), args);
  }

  /// A port on 127.0.0.1 that nothing listens on (just now).
  static std::uint16_t free_port() {
    boost::asio::io_context ctx;
    boost::asio::ip::tcp::acceptor a(ctx, {boost::asio::ip::make_address("127.0.0.1"), 0});
    return a.local_endpoint().port();
  }

 private:
  bool ping() const { return command({"PING"}) == "PONG"; }

  std::string password_;
  std::optional<redis_tls_setup> tls_;
  std::string dir_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

/// A redis_server that speaks TLS only (see redis_server's `tls`).
class tls_redis_server : public redis_server {
 public:
  explicit tls_redis_server(redis_tls_setup s) : redis_server({}, false, std::move(s)) {}
};

}  // namespace nxsys::auth::testing

#endif
