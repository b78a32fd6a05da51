// SPDX-License-Identifier: BSL-1.0
/// @file
/// nxsys::auth::redis_store: the token state in Redis, shared by replicas on many hosts, with a
/// lease so that one replica of the whole cluster refreshes at a time. Target nxsys::auth_redis.
#ifndef NXSYS_AUTH_REDIS_STORE_HPP
#define NXSYS_AUTH_REDIS_STORE_HPP

#include <nxsys/auth/config.hpp>
#include <nxsys/auth/error.hpp>
#include <nxsys/auth/http_options.hpp>
#include <nxsys/auth/secret.hpp>
#include <nxsys/auth/token_store.hpp>

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace nxsys::auth {

/// Options of redis_store. The constructor checks them with validate().
struct redis_store_options {
  std::string host = "127.0.0.1";  ///< an address or a name
  std::uint16_t port = 6379;       ///< the server's TCP port
  std::string username{};          ///< ACL user (Redis 6+); empty: AUTH with the password alone
  /// Empty: no AUTH. A credential, wiped by its type (see secret).
  secret password{};
  int database = 0;  ///< SELECTed when not 0
  /// Keys are "<key_prefix>{<name>}" (the state, a hash), "<key_prefix>{<name>}:lease" and the
  /// channel "<key_prefix>{<name>}:events"; the braces keep them in one Redis Cluster slot.
  /// Replicas sharing one refresh-token chain use the same prefix and name.
  std::string key_prefix = "nxsys-auth:";
  std::string name = "default";  ///< the chain's name in the keys (see key_prefix)
  /// Lifetime of the lease (SET NX PX): a holder that dies frees it after this long. Renewed
  /// every third of it while the holder lives.
  std::chrono::milliseconds lease_ttl{10'000};
  /// A replica waiting for the lease is woken by the holder's publication; without one (lost
  /// message, subscriber down) it tries again after this long.
  std::chrono::milliseconds poll_interval{250};
  /// Redis unreachable (no connection, a lost one, or no reply, for all of command_timeout):
  /// by default the refresh fails with store_failed and the replica keeps serving its token
  /// while valid. With local_fallback the replica refreshes on its own — a local lease, the
  /// state it last saw, and a save retried until Redis takes it. It keeps a replica alone
  /// working through a Redis outage, but risks the chain: replicas that refresh at once with
  /// one refresh token trip reuse detection. A Redis that answers, even with an error (READONLY
  /// after a failover, LOADING, OOM, ...), is not unreachable and never turns it on: other
  /// replicas may be reaching it, or its new primary, and refreshing.
  bool local_fallback = false;
  /// How long one command may take. Within it a failed connection is reopened and the command
  /// sent again every 50 ms, and so is a command answered with an error reply that names a
  /// passing state of the server (READONLY, LOADING, MASTERDOWN, BUSY, TRYAGAIN, CLUSTERDOWN,
  /// OOM, NOREPLICAS): a restart or failover shorter than this costs latency, not errors. Other
  /// error replies (a script error, WRONGTYPE, NOAUTH, ...) fail at once.
  std::chrono::milliseconds command_timeout{2'000};
  /// Bounds one connection attempt: resolve, connect, the TLS handshake, AUTH and SELECT.
  std::chrono::milliseconds connect_timeout{2'000};

  /// Connect over TLS (a Redis 6+ `tls-port`), configured by `tls` and tls_server_name. Off by
  /// default: plain TCP, which allow_plaintext restricts to loopback.
  bool use_tls = false;
  /// With use_tls: verification (on by default: the chain, and the name of tls_server_name or
  /// else of host), trust anchors (ca_file, ca_dir; by default the system's), a client
  /// certificate for a server with `tls-auth-clients yes`, and the configure_context hook. The
  /// same type and meanings as http_options::tls; the files are read by the store's
  /// constructor, which throws error_with_diagnostics(errc::invalid_config) when one cannot be
  /// used. Also used for the sentinels with sentinel_use_tls when sentinel_tls is not set.
  /// Setting any of it when nothing uses it is invalid_config.
  tls_options tls{};
  /// With use_tls: the name sent as SNI (unless an IP address) and verified in the server's
  /// certificate, for a server reached by another name or address than the one its certificate
  /// carries. Empty (the default): host.
  std::string tls_server_name{};
  /// Plain TCP (use_tls false) is refused, with invalid_config, unless host is a loopback
  /// address (127.0.0.0/8, ::1, or the name "localhost") or this is set: the AUTH password and
  /// the tokens of the stored state must not cross a network unencrypted by accident. The same
  /// holds for each of the sentinels without sentinel_use_tls (their password), and for a master
  /// a sentinel names without use_tls. The counterpart of http_options::allow_insecure_http.
  bool allow_plaintext = false;

  /// Redis Sentinel: one or more sentinels, "host:port" ("[v6]:port"), asked in this order for
  /// the master of sentinel_master (`SENTINEL get-master-addr-by-name`; a sentinel that cannot
  /// be reached, answers nil or an error is passed over). The first address the master confirms
  /// (ROLE) is used instead of host and port, which are then ignored; username, password and
  /// database apply to the master. The master is found again, before the command is sent again
  /// within command_timeout, after a READONLY or MASTERDOWN reply, after the master could not
  /// be reached, and after a write too few replicas acknowledged (min_replicas_acked); and while
  /// the store is in use (a command in the last 2 × max(lease_ttl, command_timeout)) it keeps a
  /// `SUBSCRIBE +switch-master` on a sentinel and follows a failover at once. An idle store
  /// keeps no connection to the sentinels. Empty: no Sentinel.
  std::vector<std::string> sentinels{};
  /// The master's name in the sentinels' configuration (`sentinel monitor <name> ...`);
  /// required with sentinels. A sentinel that does not know it makes every command fail with
  /// store_failed, the diagnostics saying what each sentinel answered.
  std::string sentinel_master{};
  /// ACL user for the sentinels (`sentinel sentinel-user`); empty: AUTH with sentinel_password
  /// alone.
  std::string sentinel_username{};
  /// The sentinels' password (`requirepass` in sentinel.conf); empty: no AUTH. Wiped by its
  /// type.
  secret sentinel_password{};
  /// Connect to the sentinels over TLS (their `tls-port`), configured by sentinel_tls and
  /// sentinel_tls_server_name: discovery, the +switch-master watch and the sentinel password
  /// then travel encrypted. Apart from use_tls, which is the master's: a sentinel reaches the
  /// master by its own configuration (`tls-replication yes` for a master on TLS). A sentinel
  /// whose handshake fails (a certificate not verified, a wrong name) is passed over for the
  /// next; when none answers, store_failed names each one's cause and the field that fixes it.
  /// A refusal is no outage: it never turns on local_fallback, and when every sentinel refused
  /// the command fails at once. Off by default: plain TCP, which allow_plaintext restricts to
  /// loopback. Requires sentinels.
  bool sentinel_use_tls = false;
  /// With sentinel_use_tls: verification, trust anchors and client certificate for the
  /// sentinels, the same type and meanings as `tls`, for sentinels whose certificates another
  /// CA signed or that want another client certificate. Not set (the default): `tls`, through
  /// the SSL context of the master's connections when use_tls is set. Read by the constructor.
  std::optional<tls_options> sentinel_tls{};
  /// With sentinel_use_tls: the name sent as SNI (unless an IP address) and verified in every
  /// sentinel's certificate, for sentinels reached by other names or addresses than their
  /// certificates carry. Empty (the default): each sentinel's host, as written in sentinels.
  std::string sentinel_tls_server_name{};
  /// Durability: after a write (the lease taken or renewed, a save, a release), `WAIT` until
  /// this many replicas hold everything the master holds, for at most a quarter of
  /// command_timeout (at most half of what is left of it). Redis replicates asynchronously: a save
  /// the master acknowledged but did not pass on is lost by a failover, and with it a rotated
  /// refresh token, after which the next refresh presents a replaced token (reuse detection
  /// revokes the whole chain: re-authorization by hand). Too few acknowledgements count as a
  /// failed write: the master is found again (Sentinel) and the write sent again within
  /// command_timeout (the scripts take a repeat: a save that finds its own token stored
  /// succeeds), then store_failed, which is never "unreachable" (it does not turn on
  /// local_fallback); the client keeps the tokens and retries the save. The write is followed
  /// by a PUBLISH on "<key_prefix>{<name>}:sync" (an ACL user needs it), so that the WAIT also
  /// covers a write this connection did not make itself (a repeated save). Not set: 1 with
  /// sentinels (a Sentinel deployment has a replica to fail over to, and losing the chain is
  /// worse than a refresh delayed while no replica answers), 0 without (a lone Redis has no
  /// replica to wait for). 0: no WAIT.
  std::optional<int> min_replicas_acked{};
  /// Receives the store's log lines: each master found or changed through Sentinel (info,
  /// warning), a lost watch on a sentinel (debug). Never a secret. Called from the threads
  /// running the store's executor, until that executor has run the work the store's destructor
  /// leaves it: what it uses must live as long.
  log_function log{};

  /// Checks the values, as client_config::validate() does: a host, lease_ttl of 3 ms or more,
  /// positive intervals and timeouts, a database in [0, 2^31), TLS settings only where used
  /// (`tls` and tls_server_name with use_tls; sentinel_tls and sentinel_tls_server_name with
  /// sentinel_use_tls; `tls` also when it serves the sentinels) and a client certificate with
  /// its key, plain TCP (to host, or to a sentinel) only to loopback or with allow_plaintext;
  /// with sentinels, each one "host:port" with a port in [1, 65535] and a sentinel_master;
  /// min_replicas_acked not negative. The files of `tls` and sentinel_tls are read by the
  /// constructor, not here.
  /// @param diag receives what is wrong, in client_message, naming the field; may be nullptr
  /// @return empty, or errc::invalid_config
  boost::system::error_code validate(diagnostics* diag = nullptr) const;
};

/// A token_store in Redis. The lease is `SET <lease> <random owner> NX PX lease_ttl`, renewed
/// by a script that extends it only for its owner and released by a compare-and-delete script
/// that publishes "released"; a save is a compare-and-set script keyed on the refresh token
/// the refresh used (fencing: a holder whose lease expired can never overwrite a newer chain),
/// which publishes "saved". Everything runs on Asio (hiredis only parses replies): no call
/// blocks a thread. Every failure of Redis is errc::store_failed — unreachable (a command timeout
/// included), an error reply, AUTH refused — with the server, the step and the cause in the
/// diagnostics ("redis 127.0.0.1:6379: the save script: READONLY You can't write against a read
/// only replica."), never a token.
class redis_store final : public token_store {
 public:
  /// Connects lazily; throws nothing for an unreachable server (the first operation fails).
  /// @param ex runs the store's work (on a strand of its own) and the handlers that have no
  ///   associated executor
  /// @param opts see redis_store_options
  /// @throws error_with_diagnostics errc::invalid_config for options out of range (see
  ///   redis_store_options), and with use_tls or sentinel_use_tls for a file of `tls` or
  ///   sentinel_tls that cannot be used or an exception of their configure_context
  redis_store(boost::asio::any_io_executor ex, redis_store_options opts);
  /// Ends waiting acquires with operation_aborted and closes the connections. A lease still
  /// held is released by its last copy (or expires).
  ~redis_store() override;

 protected:
  /// async_load(): reads the state from its hash; nullopt when the key does not exist. With
  /// local_fallback and Redis unreachable, the state this store last read or wrote, if any.
  ///
  /// @par Handler signature
  /// load_signature.
  /// @par Executor
  /// Posted to `ex`: the handler runs on its associated executor, or on `ex`.
  /// @par Cancellation
  /// Not supported (bounded by command_timeout).
  /// @par Errors
  /// errc::store_failed (see above); errc::store_corrupt when the stored state cannot be
  /// parsed.
  /// @par Thread safety
  /// Any thread, concurrently.
  ///
  /// @param h the caller's handler
  void do_load(boost::asio::any_completion_handler<load_signature> h) override;
  /// async_acquire(): takes the lease, or waits for the holder's "released" or "saved"
  /// publication (polling every poll_interval) until `deadline`. With local_fallback and
  /// Redis unreachable, a local lease (one holder per store) instead.
  ///
  /// @par Handler signature
  /// acquire_signature; the lease is renewed while held, and released by its last copy.
  /// @par Executor
  /// Posted to `ex`: the handler runs on its associated executor, or on `ex`.
  /// @par Cancellation
  /// Any type: a wait for the lease ends at once, a command in progress first finishes; then
  /// operation_aborted.
  /// @par Errors
  /// errc::store_busy when `deadline` passes while another replica holds the lease;
  /// errc::store_failed (see above); operation_aborted when cancelled or when the store is
  /// destroyed.
  /// @par Thread safety
  /// Any thread, concurrently.
  ///
  /// @param deadline when to give up waiting
  /// @param h the caller's handler
  void do_acquire(std::chrono::steady_clock::time_point deadline,
                  boost::asio::any_completion_handler<acquire_signature> h) override;
  /// async_save(): the compare-and-set script. A retry of a save whose reply was lost finds
  /// its own token stored: success.
  ///
  /// @par Handler signature
  /// save_signature.
  /// @par Executor
  /// Posted to `ex`: the handler runs on its associated executor, or on `ex`.
  /// @par Cancellation
  /// Not supported (bounded by command_timeout).
  /// @par Errors
  /// errc::invalid_argument when `next` holds neither a refresh token nor an access token (nothing
  /// is sent); errc::store_conflict when another refresh token is stored; errc::store_failed (see
  /// above).
  /// @par Thread safety
  /// Any thread, concurrently.
  ///
  /// @param next the state to store
  /// @param expected the refresh token that must still be stored (or nothing stored)
  /// @param h the caller's handler
  void do_save(stored_tokens next, std::string expected,
               boost::asio::any_completion_handler<save_signature> h) override;

 private:
  struct state;
  std::shared_ptr<state> s_;
};

}  // namespace nxsys::auth

#endif
