// SPDX-License-Identifier: BSL-1.0
// A Sentinel deployment of the test's own on 127.0.0.1: a master and its replica (redis_server
// from redis_fixture.hpp, the replica attached with REPLICAOF) and one redis-sentinel watching
// them, each on a free port, started and stopped with bounded waits, its files in a temporary
// directory removed afterwards.
#ifndef NXSYS_AUTH_TESTS_REDIS_SENTINEL_FIXTURE_HPP
#define NXSYS_AUTH_TESTS_REDIS_SENTINEL_FIXTURE_HPP

#include "redis_fixture.hpp"

#include <cctype>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace nxsys::auth::testing {

/// `redis-sentinel <conf>` until destroyed, monitoring one master (quorum 1, down after 1 s).
class sentinel_process {
 public:
  /// `tls`: TLS only (`tls-port P`, `port 0`), serving tls->cert, with `tls-replication yes`
  /// to reach a master that serves TLS (redis_server's `tls`); tls->password is its
  /// `requirepass`.
  sentinel_process(std::uint16_t master_port, std::string master_name,
                   std::optional<redis_tls_setup> tls = std::nullopt)
      : name_(std::move(master_name)), tls_(std::move(tls)) {
    char tmpl[] = "/tmp/nxsys-sentinel-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    port_ = redis_server::free_port();
    const std::string conf = dir_ + "/sentinel.conf";  // Sentinel rewrites it: writable, ours
    {
      std::ofstream f(conf);
      f << "port " << (tls_ ? 0 : port_) << "\nbind 127.0.0.1\ndaemonize no\ndir " << dir_
        << "\nsentinel resolve-hostnames no\nsentinel monitor " << name_ << " 127.0.0.1 "
        << master_port << " 1\nsentinel down-after-milliseconds " << name_
        << " 1000\nsentinel failover-timeout " << name_ << " 2000\n";
      if (tls_) {
        const std::string data = tls_->data_dir + "/";
        f << "tls-port " << port_ << "\ntls-cert-file " << data << tls_->cert
          << ".pem\ntls-key-file " << data << tls_->cert << ".key\ntls-ca-cert-file " << data
          << "ca.pem\ntls-auth-clients " << tls_->auth_clients << "\ntls-replication yes\n";
        if (!tls_->password.empty()) f << "requirepass " << tls_->password << "\n";
      }
    }
    try {
      pid_ = spawn_redis(
          {"redis-sentinel", conf}, [this] { return command({"PING"}) == "PONG"; },
          [this](pid_t pid) {
            pid_ = pid;
            stop();
          },
          tls_ ? "redis-sentinel with tls-port (built without TLS?)"
               : "redis-sentinel (is it installed?)");
    } catch (...) {
      cleanup();
      throw;
    }
  }
  ~sentinel_process() {
    stop();
    cleanup();
  }
  sentinel_process(const sentinel_process&) = delete;
  sentinel_process& operator=(const sentinel_process&) = delete;

  std::uint16_t port() const { return port_; }
  /// How the fixtures reach it (TLS when it serves TLS).
  server_link link() const {
    return tls_ ? server_link{port_, tls_->password, tls_->data_dir} : server_link{port_};
  }
  std::string command(const std::vector<std::string>& args) const {
    return command_at(link(), args);
  }
  /// The port of the master the sentinel names, 0 if none.
  std::uint16_t master_port() const {
    const auto r = command({"SENTINEL", "get-master-addr-by-name", name_});
    const auto nl = r.find('\n');
    return nl == std::string::npos ? 0 : static_cast<std::uint16_t>(std::atoi(r.c_str() + nl + 1));
  }

  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);  // SIGKILL: gone at once
    pid_ = -1;
  }

 private:
  void cleanup() {
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }

  std::string name_;
  std::optional<redis_tls_setup> tls_;
  std::string dir_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

/// A master, its replica and a sentinel watching them as `name`. Destroyed in reverse: the
/// sentinel goes first, so it never reconfigures a server being stopped.
class sentinel_cluster {
 public:
  /// `tls`: every one of them speaks TLS only, replication and the sentinel's own connections
  /// included (the sentinel's password is tls->password; the servers have none).
  explicit sentinel_cluster(std::string name = "mymaster",
                            std::optional<redis_tls_setup> tls = std::nullopt)
      : name_(std::move(name)),
        master_({}, false, server_tls(tls)),
        replica_({}, false, server_tls(tls)) {
    for (auto* r : {&master_, &replica_}) {
      // A replica syncs at once, not after the 5 s a diskless sync waits for more replicas,
      // and loads what it receives without writing it to dump.rdb in the working directory
      // (every redis-server started there later would load it; `dir` is a protected config).
      r->command({"CONFIG", "SET", "repl-diskless-sync-delay", "0"});
      r->command({"CONFIG", "SET", "repl-diskless-load", "swapdb"});
    }
    replica_.command({"REPLICAOF", "127.0.0.1", std::to_string(master_.port())});
    if (!wait_for([&] { return link_up(replica_, master_); }))
      throw std::runtime_error("the replica did not sync with the master within 10 s");
    sentinel_ = std::make_unique<sentinel_process>(master_.port(), name_, std::move(tls));
  }

  const std::string& name() const { return name_; }
  redis_server& first_master() { return master_; }
  redis_server& first_replica() { return replica_; }
  sentinel_process& sentinel() { return *sentinel_; }

  /// `SENTINEL FAILOVER` (sent again while the sentinel has not yet seen the replica: at most
  /// 10 s), then waits until the sentinel names the replica and it reports itself the master.
  /// The old master is left as it is (Sentinel turns it into a replica some 10 s later, its
  /// INFO period); demote_old_master() does that at once.
  bool failover() {
    const auto old_port =
        master_.port() == sentinel_->master_port() ? master_.port() : replica_.port();
    const auto new_port = old_port == master_.port() ? replica_.port() : master_.port();
    if (!wait_for([&] { return sentinel_->command({"SENTINEL", "FAILOVER", name_}) == "OK"; }))
      return false;
    // Until the failover ended (+switch-master sent): the sentinel names the promoted replica
    // a little earlier, while it reconfigures the other replicas.
    const auto& promoted = new_port == master_.port() ? master_ : replica_;
    return wait_for([&] {
      return sentinel_->master_port() == new_port &&
             promoted.command({"ROLE"}).starts_with("master") &&
             sentinel_->command({"SENTINEL", "MASTER", name_}).find("\nflags\nmaster\n") !=
                 std::string::npos;
    });
  }

  /// The old master becomes a replica of the new one, as Sentinel would, and syncs.
  bool demote(redis_server& old_master, redis_server& new_master) {
    old_master.command({"REPLICAOF", "127.0.0.1", std::to_string(new_master.port())});
    return wait_for([&] { return link_up(old_master, new_master); });
  }

  /// Polls `pred` every 20 ms for at most 10 s.
  template <class Pred>
  static bool wait_for(Pred pred) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!pred()) {
      if (std::chrono::steady_clock::now() >= end) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
  }

 private:
  // The servers' TLS: the setup's certificates, without the sentinel's password.
  static std::optional<redis_tls_setup> server_tls(std::optional<redis_tls_setup> tls) {
    if (tls) tls->password.clear();
    return tls;
  }

  // `r` synced with `master`, and a write on `master` is acknowledged by it (after a diskless
  // sync the master streams to a replica once it acknowledged, within a second).
  static bool link_up(const redis_server& r, const redis_server& master) {
    const auto info = r.command({"INFO", "replication"});
    if (info.find("master_link_status:up") == std::string::npos ||
        info.find("master_port:" + std::to_string(master.port()) + "\r") == std::string::npos)
      return false;
    fixture_connection c(master.link());
    // WAIT counts the writes of its own connection: a PUBLISH (replicated) first.
    c.command({"PUBLISH", "fixture", "sync"});
    const auto acked = c.command({"WAIT", "1", "100"});
    return !acked.empty() && acked != "0" && std::isdigit(static_cast<unsigned char>(acked[0]));
  }

  std::string name_;
  redis_server master_;
  redis_server replica_;
  std::unique_ptr<sentinel_process> sentinel_;
};

}  // namespace nxsys::auth::testing

#endif
