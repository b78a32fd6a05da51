// SPDX-License-Identifier: BSL-1.0
// A redis-server of the test's own on 127.0.0.1 (a free port, no persistence), started and
// stopped with bounded waits, and a blocking hiredis connection to inspect and poke it.
#ifndef NXSYS_AUTH_TESTS_REDIS_FIXTURE_HPP
#define NXSYS_AUTH_TESTS_REDIS_FIXTURE_HPP

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <sys/wait.h>

#include <chrono>
#include <cstdint>
#include <fcntl.h>
#include <filesystem>
#include <hiredis/hiredis.h>
#include <memory>
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

/// Runs `redis-server` (from PATH) until destroyed; restart() stops and starts it on the same
/// port (the data is lost: no persistence).
class redis_server {
 public:
  /// `persist`: an append-only file fsync'ed on every write, in a temporary directory, so that
  /// the data survives restart() as a production Redis's does.
  explicit redis_server(std::string password = {}, bool persist = false)
      : password_(std::move(password)) {
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
        "redis-server (is it installed?)");
  }

  void restart() {
    stop();
    start();
  }

  /// A blocking command on a fresh connection (AUTH first when needed); the reply as text
  /// ("(nil)" for nil, the integer's digits, the string, or "ERR ..." for errors).
  std::string command(const std::vector<std::string>& args) const {
    std::unique_ptr<redisContext, void (*)(redisContext*)> c(redisConnect("127.0.0.1", port_),
                                                             redisFree);
    if (!c || c->err) return "connect failed";
    if (!password_.empty()) {
      auto* r = static_cast<redisReply*>(redisCommand(c.get(), "AUTH %s", password_.c_str()));
      if (r) freeReplyObject(r);
    }
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(
        redisCommandArgv(c.get(), static_cast<int>(args.size()), argv.data(), lens.data()));
    if (r == nullptr) return "no reply";
    std::string out;
    switch (r->type) {
      case REDIS_REPLY_NIL:
        out = "(nil)";
        break;
      case REDIS_REPLY_INTEGER:
        out = std::to_string(r->integer);
        break;
      case REDIS_REPLY_ARRAY:
        out = "(array of " + std::to_string(r->elements) + ")";
        break;
      default:
        out.assign(r->str, r->len);
    }
    freeReplyObject(r);
    return out;
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
  std::string dir_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

/// How tls_redis_server serves: the certificate pair from `data_dir` (testing/data), and
/// whether it asks clients for a certificate.
struct redis_tls_setup {
  std::string data_dir;             ///< testing/data (test_data_dir())
  std::string cert = "server";      ///< serves <cert>.pem with <cert>.key ("wrong-host", ...)
  std::string auth_clients = "no";  ///< --tls-auth-clients: yes, no or optional
  std::string password{};           ///< --requirepass when not empty
};

/// A redis-server that speaks TLS only (`--tls-port P --port 0`) on 127.0.0.1, trusting the
/// test CA (ca.pem) for client certificates; stopped (SIGKILL) when destroyed. Its plain
/// command() is not available: the tests read it back through a store over TLS.
class tls_redis_server {
 public:
  explicit tls_redis_server(redis_tls_setup s) : setup_(std::move(s)) {
    port_ = redis_server::free_port();
    const std::string dir = setup_.data_dir + "/";
    std::vector<std::string> args = {"redis-server",
                                     "--port",
                                     "0",
                                     "--tls-port",
                                     std::to_string(port_),
                                     "--bind",
                                     "127.0.0.1",
                                     "--tls-cert-file",
                                     dir + setup_.cert + ".pem",
                                     "--tls-key-file",
                                     dir + setup_.cert + ".key",
                                     "--tls-ca-cert-file",
                                     dir + "ca.pem",
                                     "--tls-auth-clients",
                                     setup_.auth_clients,
                                     "--save",
                                     "",
                                     "--appendonly",
                                     "no",
                                     "--daemonize",
                                     "no",
                                     "--loglevel",
                                     "warning"};
    if (!setup_.password.empty()) {
      args.emplace_back("--requirepass");
      args.push_back(setup_.password);
    }
    // Up when its TLS port accepts: it listens once it is ready to serve.
    pid_ = spawn_redis(
        std::move(args), [this] { return accepts(); },
        [this](pid_t pid) {
          pid_ = pid;
          stop();
        },
        "redis-server --tls-port (built without TLS?)");
  }
  ~tls_redis_server() { stop(); }
  tls_redis_server(const tls_redis_server&) = delete;
  tls_redis_server& operator=(const tls_redis_server&) = delete;

  std::uint16_t port() const { return port_; }

  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  bool accepts() const {
    boost::asio::io_context ctx;
    boost::asio::ip::tcp::socket sock(ctx);
    boost::system::error_code ec;
    sock.connect({boost::asio::ip::make_address("127.0.0.1"), port_}, ec);
    return !ec;
  }

  redis_tls_setup setup_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace nxsys::auth::testing

#endif
