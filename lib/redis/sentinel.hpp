// SPDX-License-Identifier: BSL-1.0
// Redis Sentinel for redis_store: finds the master through the sentinels (first answer wins,
// confirmed with ROLE) and, while the store is in use, follows +switch-master. Internal to
// nxsys::auth_redis; used from the store's strand only.
#ifndef NXSYS_AUTH_LIB_REDIS_SENTINEL_HPP
#define NXSYS_AUTH_LIB_REDIS_SENTINEL_HPP

#include <nxsys/auth/config.hpp>
#include <nxsys/auth/error.hpp>

#include "connection.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nxsys::auth::redis {

/// "host:port" or "[v6]:port" split; false when it is not one (no host, a port not in
/// [1, 65535]).
bool parse_host_port(std::string_view text, std::string& host, std::string& port);
/// parse_host_port() would take it.
bool is_host_port(const std::string& text);

/// The payload of a +switch-master message ("<name> <old ip> <old port> <new ip> <new port>"):
/// the new address when it names `master_name`.
bool parse_switch_master(std::string_view payload, std::string_view master_name, std::string& host,
                         std::string& port);

/// How a discovery ended.
struct discovery {
  boost::system::error_code ec;  ///< empty: `master` names the master now
  /// Worth asking again a little later: a sentinel could not be reached, or the master it named
  /// could not, or was not a master yet (a failover in progress). False when every sentinel
  /// answered and none knows the name (a configuration error).
  bool retry = false;
  /// Nothing answered: every sentinel, or the master they named, was out of reach.
  bool unreachable = false;
};

class sentinel {
 public:
  struct options {
    std::vector<std::string> sentinels;  ///< "host:port", checked by the store's validate()
    std::string master_name;
    std::string username;            ///< for the sentinels (AUTH)
    detail::secret_string password;  ///< for the sentinels; empty: no AUTH
    std::chrono::milliseconds connect_timeout{2'000};
    /// The watch on +switch-master ends after this long without a command (touch()).
    std::chrono::milliseconds idle{20'000};
    log_function log;
    /// redis_store_options::allow_plaintext: a master that is not on loopback is used over
    /// plain TCP only with it (without TLS).
    bool allow_plaintext = false;
    /// The connections to the sentinels, discovery and watch alike (sentinel_use_tls); no
    /// context: plain TCP.
    tls_settings tls;
  };

  /// `master`: the store's address, which the connections to the master read when they
  /// connect; this object rewrites its host and port and then calls `on_switch` (which closes
  /// those connections, so that the next command reconnects).
  sentinel(boost::asio::any_io_executor strand, options opts, server_address& master,
           std::function<void()> on_switch);
  sentinel(const sentinel&) = delete;
  sentinel& operator=(const sentinel&) = delete;

  /// A master has been found (the address is no placeholder any more).
  bool known() const noexcept { return known_; }
  /// Bumped whenever the master's address changes: a command sent at an older epoch went to
  /// the old master.
  std::uint64_t epoch() const noexcept { return epoch_; }
  /// Master changes seen (found by a discovery or told by +switch-master), the first discovery
  /// not counted.
  std::uint64_t switches() const noexcept { return switches_; }

  /// Asks the sentinels, in order, for the master's address; the first answer confirmed by the
  /// master itself (ROLE) wins and becomes the address. One discovery at a time: a caller that
  /// comes while one runs waits for it and shares its result. `reason` ("READONLY", "the first
  /// command", ...) goes into the log line of a change. diag.client_message says what each
  /// sentinel answered when none named a master.
  boost::asio::awaitable<discovery> discover(steady_time deadline, std::string reason,
                                             diagnostics& diag);

  /// The store is in use: starts the watch on +switch-master if it is not running. `keep`
  /// keeps this object (its owner) alive while the watch runs.
  void touch(std::shared_ptr<void> keep);

  /// Ends the watch and any discovery (operation_aborted); nothing starts after.
  void close() noexcept;

 private:
  boost::asio::awaitable<discovery> find(steady_time deadline, const std::string& reason,
                                         diagnostics& diag);
  boost::asio::awaitable<void> watch(std::shared_ptr<void> keep);
  void arm_idle(std::shared_ptr<void> keep);
  bool in_use() const;
  bool plaintext_allowed(const std::string& host) const;
  void move_to(const std::string& host, const std::string& port, std::string_view how);
  void log(log_level level, const std::string& text) const;

  boost::asio::any_io_executor strand_;
  options opts_;
  std::vector<server_address> sentinels_;  // sized once: connections keep references
  server_address& master_;
  std::function<void()> on_switch_;
  bool known_ = false;
  bool closed_ = false;
  std::uint64_t epoch_ = 0;
  std::uint64_t switches_ = 0;

  // Discovery: one at a time, the others wait for it (timer as event).
  bool discovering_ = false;
  std::list<std::shared_ptr<boost::asio::steady_timer>> discovery_waiters_;
  discovery last_;
  std::string last_message_;
  std::list<connection*> probes_;  // connections of the discovery in progress, for close()

  // Watch.
  bool watching_ = false;
  std::chrono::steady_clock::time_point last_use_{};
  std::optional<connection> watch_conn_;
  boost::asio::steady_timer idle_timer_;
  boost::asio::steady_timer pause_timer_;
};

}  // namespace nxsys::auth::redis

#endif
