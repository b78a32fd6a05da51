// SPDX-License-Identifier: BSL-1.0
/// @file
/// The configuration of a nxsys::auth::client: client_config and its groups (refresh_policy,
/// storage_options, observer_options), the log and refresh observers, and clock_source. Every
/// field with its default: @ref configuration-client_config-the-client.
#ifndef NXSYS_AUTH_CONFIG_HPP
#define NXSYS_AUTH_CONFIG_HPP

#include <nxsys/auth/error.hpp>
#include <nxsys/auth/http_options.hpp>
#include <nxsys/auth/protocol.hpp>
#include <nxsys/auth/secret.hpp>

#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace nxsys::auth {

class token_store;

/// Severity of a log message (see log_function).
enum class log_level { debug, info, warning, error };

/// Receives the client's log messages. Messages never hold a secret: no credential, no token,
/// and the server's words only after every credential the client sent was cut out. May be
/// called concurrently from the threads running the client's executor, never under the
/// client's lock; it must not call back into the client synchronously.
using log_function = std::function<void(log_level, std::string_view)>;

/// What one finished refresh did, for observer_options::on_refresh.
struct refresh_event {
  boost::system::error_code ec;         ///< empty on success
  std::chrono::nanoseconds latency{0};  ///< start to result, retries and store included
  std::uint64_t waiters = 0;            ///< calls completed with its result
  /// The answer carried a new refresh token.
  bool refresh_token_rotated = false;
  std::chrono::seconds lifetime{0};  ///< of the new access token (0 on failure)
  unsigned attempts = 0;             ///< requests sent (0: the store had a valid token)
  bool from_store = false;           ///< another process or client refreshed: taken from the store
  bool ahead = false;                ///< a refresh-ahead: started while the token was still valid
  /// The save of the new tokens failed (they are kept in memory and the save is retried).
  boost::system::error_code store_ec;
};

/// Called once per finished refresh, after its waiters were handed their result, from the
/// client's executor (never under its lock). For metrics; exceptions it throws are ignored.
/// (observer_options::on_refresh)
using refresh_observer = std::function<void(const refresh_event&)>;

/// The clock that decides when tokens expire. Replace it (client_config::clock) to move time
/// in tests and simulations; by default the client reads std::chrono::steady_clock directly.
/// The object is shared by the client, so one test can move the time of several clients, and
/// nothing global is involved.
class clock_source {
 public:
  virtual ~clock_source() = default;
  /// Called on every token() that finds a token, from any thread, concurrently.
  /// @return now, on std::chrono::steady_clock's scale (it may run ahead of it)
  virtual std::chrono::steady_clock::time_point now() const noexcept = 0;
};

/// When to refresh, how to retry, and what callers get after a failure (client_config::refresh).
struct refresh_policy {
  /// A token with less than this left is refreshed. Capped at leeway_max_fraction of the
  /// token's lifetime so that a short-lived token (say 2 s) is not refreshed on every call.
  std::chrono::seconds leeway{30};
  double leeway_max_fraction = 0.25;  ///< the cap of leeway; in [0, 1)
  /// Lifetime assumed when the answer carries no expiry (or a store holds a token without one).
  std::chrono::seconds default_lifetime{3600};

  /// Inside this last fraction of a token's life (before its refresh point) the first caller
  /// starts a background refresh and every caller keeps getting the current token without
  /// waiting. 0 disables refresh-ahead; else below 1.
  double ahead_fraction = 0.2;

  /// After a failed refresh, calls within this interval get that failure at once (the same
  /// error and diagnostics) instead of a new request: a down or refusing server sees at most
  /// one attempt per interval however many callers loop. 0 disables it. A server's
  /// Retry-After is honoured the same way, across refreshes, whatever this says; after
  /// invalid_grant no request presents that refresh token again (see client::set_refresh_token).
  std::chrono::milliseconds min_retry_spacing{1'000};

  /// After a failed refresh (server, network or store down, even invalid_grant), callers keep
  /// getting the current token while it is still valid — until half a second (or half the
  /// leeway) before it expires — and the next attempt runs in the background after
  /// min_retry_spacing. The failure is still reported (stats, log, on_refresh). false: callers
  /// get the failure as soon as the token is past its refresh point.
  bool serve_valid_token_on_failure = true;

  /// Retries of transient failures (connect error, timeout, reset, 5xx, 429, TLS excepted):
  /// exponential back-off with full jitter — a random wait in [0, min(max, initial·2ⁿ)] — or
  /// the server's Retry-After when it asks for longer. invalid_grant / invalid_client and
  /// other definite answers are never retried.
  struct retry_options {
    unsigned max_attempts = 4;  ///< requests per refresh, the first included (1: no retry)
    std::chrono::milliseconds initial_backoff{100};  ///< 0 or more
    std::chrono::milliseconds max_backoff{5'000};    ///< initial_backoff or more
  };
  retry_options retry{};  ///< see retry_options

  /// A refresh (lease wait, store load and save, every attempt and back-off) ends by this
  /// deadline, whatever its waiters do: cancelling a waiter never cancels the shared refresh.
  /// A store step still running then fails the waiters with errc::timeout and is left to finish
  /// (its result is kept).
  std::chrono::milliseconds deadline{60'000};
};

/// Where the tokens are kept and how hard a save is insisted on (client_config::storage).
struct storage_options {
  /// Where tokens are kept; nullptr: a memory_store of this client's own. A shared store
  /// (file_store, redis_store) makes clients in several processes refresh one at a time and
  /// lets a restarted process continue with the latest rotated refresh token.
  std::shared_ptr<token_store> store{};
  /// A refresh whose new tokens cannot be saved still hands them out (the old refresh token is
  /// consumed: dropping the new one would lock the user out), reports the failure and retries
  /// the save (in the background, and first thing at every refresh). With strict_durability
  /// its waiters get errc::store_failed instead; the tokens are kept, retried the same way, and
  /// served only once a save succeeds. Destroying the client makes one last save attempt.
  bool strict_durability = false;
  /// First wait before retrying a failed save (doubling, up to a minute).
  std::chrono::milliseconds retry_interval{1'000};
};

/// Who hears about what the client does (client_config::observers). Both are optional.
struct observer_options {
  /// Where log messages go; empty (the default): nowhere.
  log_function log{};
  /// Told of every finished refresh; empty (the default): nobody.
  refresh_observer on_refresh{};
};

/// Configuration of a client, passed by value to its constructor, which checks it with
/// validate(). Every field with its default: @ref configuration-client_config-the-client.
struct client_config {
  /// {{nxsys_base_api_url}}/nxsys/oauth/token, http:// or https:// — see make_token_url().
  std::string token_url{};
  /// Required.
  std::string client_id{};
  /// Never in a message, a log or diagnostics.
  secret client_secret{};
  /// The refresh token to start with. Rotated refresh tokens replace it in the client. May be
  /// empty when storage.store holds one (a restarted process). Empty for client_credentials.
  secret refresh_token{};
  /// How tokens are obtained: with the refresh token (the Nxsys flow, the default), or with
  /// the client's own credentials (RFC 6749 §4.4; needs client_secret, no refresh_token). Both
  /// get the same single flight, refresh-ahead, retries, stats and stores.
  grant_type grant = grant_type::refresh_token;
  /// Parameter names of the request (the seed's camelCase by default) and where the client's
  /// credentials go. With http_basic the body carries no client_id or client_secret.
  nxsys::auth::dialect dialect = nxsys::auth::dialect::nxsys;
  /// See dialect.
  client_authentication authentication = client_authentication::request_body;
  /// Sent as `scope` when not empty (RFC 6749 §6: at most the scope originally granted).
  std::string scope{};

  /// When to refresh, retries, behaviour after a failure.
  refresh_policy refresh{};
  /// The token store and save policy.
  storage_options storage{};
  /// The token endpoint's connection: timeouts, limits (max_response_bytes 0: 64 KiB), TLS,
  /// plain http.
  http_options http{};
  /// Log and refresh events.
  observer_options observers{};
  /// The clock deciding expiry; nullptr: std::chrono::steady_clock. For tests and simulations
  /// that need to move time.
  std::shared_ptr<const clock_source> clock{};

  /// Checks every field but the files named by http.tls (read when the client is built, which
  /// fails with the same error if they cannot be used). The client's constructor calls it.
  /// @param diag receives what is wrong, in client_message, naming the field
  ///   ("refresh.ahead_fraction must be in [0, 1)"); may be nullptr. Never holds a secret.
  /// @return empty, or errc::invalid_config
  boost::system::error_code validate(diagnostics* diag = nullptr) const;
};

/// Builds the token URL from the Nxsys base API URL: "https://api.example" →
/// "https://api.example/nxsys/oauth/token" (a trailing '/' on the base is ignored).
/// @param base_api_url the Nxsys base API URL ({{nxsys_base_api_url}})
/// @return the token URL, for client_config::token_url (not checked here: the client checks it)
std::string make_token_url(std::string_view base_api_url);

}  // namespace nxsys::auth

#endif
