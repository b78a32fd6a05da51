// SPDX-License-Identifier: BSL-1.0
/// @file
/// The Nxsys refresh protocol without I/O: build the request, parse the answer. Pure functions,
/// so they are tested and fuzzed without sockets.
#ifndef NXSYS_AUTH_PROTOCOL_HPP
#define NXSYS_AUTH_PROTOCOL_HPP

#include <nxsys/auth/error.hpp>

#include <nxsys/auth/detail/wipe.hpp>

#include <chrono>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace boost::json {
class object;
}

namespace nxsys::auth {

/// How the request's parameters are named.
enum class dialect {
  nxsys,    ///< the Nxsys seed: grantType, refreshToken, clientId, clientSecret (camelCase)
  rfc6749,  ///< RFC 6749 §6: grant_type, refresh_token, client_id, client_secret, scope
};

/// How the client obtains access tokens.
enum class grant_type {
  /// RFC 6749 §6: a refresh token (rotated by the server, kept in the store) buys each token.
  refresh_token,
  /// RFC 6749 §4.4: the client's own credentials buy each token; there is no refresh token.
  /// For service-to-service use; the client must be confidential (it has a secret).
  client_credentials,
};

/// How the client authenticates to the token endpoint (RFC 6749 §2.3.1).
enum class client_authentication {
  request_body,  ///< client_secret_post: id and secret in the form body
  http_basic,    ///< client_secret_basic: Authorization: Basic, id and secret form-encoded first
};

}  // namespace nxsys::auth

/// The Nxsys refresh protocol without I/O: build the request, parse the answer. Pure functions
/// (the client's own), so they are tested and fuzzed without sockets.
namespace nxsys::auth::protocol {

/// application/x-www-form-urlencoded encoding of one name or value: unreserved characters stay,
/// space becomes '+', every other byte %XX (as URLSearchParams does).
/// @param s the bytes to encode
/// @return the encoded text
std::string form_urlencode(std::string_view s);

/// The seed's refresh request body:
/// grantType=refresh_token&refreshToken=...&clientId=...&clientSecret=...
/// @param refresh_token the refresh token to present
/// @param client_id the client's id
/// @param client_secret the client's secret
/// @return the body; it holds the credentials (nothing wipes this plain string)
std::string build_refresh_body(std::string_view refresh_token, std::string_view client_id,
                               std::string_view client_secret);

/// A token request (either grant): its form body and, for client_secret_basic, its Authorization
/// header. Both hold credentials, so they are overwritten whenever the request lets go of them
/// (destruction, assignment, move), as in stored_tokens.
struct refresh_request {
  std::string body;           ///< the form body, application/x-www-form-urlencoded
  std::string authorization;  ///< "Basic ..." or empty (credentials in the body)

  refresh_request() = default;
  /// A second copy of the credentials, wiped in its own turn.
  refresh_request(const refresh_request&) = default;
  /// Takes `o`'s parts, then wipes what `o` kept.
  /// @param o the request moved from; left empty
  refresh_request(refresh_request&& o) noexcept
      : body(std::move(o.body)), authorization(std::move(o.authorization)) {
    o.wipe();
  }
  /// Wipes this request's parts and takes `o`'s (one operator for copy and move, as in
  /// stored_tokens).
  /// @param o the request assigned
  /// @return *this
  refresh_request& operator=(refresh_request o) noexcept {
    wipe();
    body = std::move(o.body);
    authorization = std::move(o.authorization);
    return *this;
  }
  ~refresh_request() { wipe(); }

  /// Overwrites both parts and empties them.
  void wipe() noexcept {
    detail::wipe_all(body);
    detail::wipe_all(authorization);
  }
};

/// The refresh request in `d`'s parameter names, the client authenticated as `auth` says.
/// `scope` is sent when not empty.
/// @param d the parameter names (camelCase for the Nxsys endpoint, or RFC 6749's)
/// @param auth where the client's id and secret go: the body, or an HTTP Basic header
/// @param refresh_token the refresh token to present
/// @param client_id the client's id
/// @param client_secret the client's secret
/// @param scope the scope to ask for; empty: none sent
/// @return the body and, for http_basic, the Authorization header value
refresh_request build_refresh_request(dialect d, client_authentication auth,
                                      std::string_view refresh_token, std::string_view client_id,
                                      std::string_view client_secret, std::string_view scope = {});

/// A client_credentials request (RFC 6749 §4.4): grant_type=client_credentials (grantType in
/// the Nxsys dialect), the client authenticated as `auth` says, `scope` sent when not empty.
/// @param d the parameter names (camelCase for the Nxsys endpoint, or RFC 6749's)
/// @param auth where the client's id and secret go: the body, or an HTTP Basic header
/// @param client_id the client's id
/// @param client_secret the client's secret
/// @param scope the scope to ask for; empty: none sent
/// @return the body and, for http_basic, the Authorization header value
refresh_request build_client_credentials_request(dialect d, client_authentication auth,
                                                 std::string_view client_id,
                                                 std::string_view client_secret,
                                                 std::string_view scope = {});

/// RFC 6749 §2.3.1 client_secret_basic: "Basic " + base64(urlencode(id) ":" urlencode(secret)).
/// @param client_id the client's id
/// @param client_secret the client's secret
/// @return the Authorization header value; it holds the credentials
std::string basic_authorization(std::string_view client_id, std::string_view client_secret);

/// Where the token endpoint is, from client_config::token_url.
struct endpoint {
  bool tls = false;         ///< https://
  std::string host;         ///< without brackets for IPv6
  std::string port;         ///< "443" / "80" when the URL names none
  std::string target;       ///< path and query, "/" at least
  bool host_is_ip = false;  ///< the host is an IPv4 or IPv6 address, not a name
  bool loopback = false;    ///< 127.0.0.0/8, ::1 or "localhost"
};

/// Parses and checks an http:// or https:// URL named `name` in messages: a host, no user
/// info, no fragment. Plain http to a non-loopback host is invalid_config (it would carry
/// `secret_kind` unencrypted) unless allow_insecure_http.
/// @param url the URL; never quoted in diag (it may carry credentials)
/// @param name what the URL is, for messages ("token_url", "base_url")
/// @param secret_kind what plain http would expose, for messages ("client secret")
/// @param allow_insecure_http accept plain http:// to any host
/// @param out the parts of the URL, filled on success
/// @param diag says what is wrong with the URL, on failure
/// @return empty, or errc::invalid_config
boost::system::error_code parse_url(std::string_view url, std::string_view name,
                                    std::string_view secret_kind, bool allow_insecure_http,
                                    endpoint& out, diagnostics& diag);

/// Parses and checks a token URL: http or https, a host, no user info, no fragment. Plain http
/// to a non-loopback host is invalid_config unless allow_insecure_http.
/// @param url client_config::token_url
/// @param allow_insecure_http accept plain http:// to any host
/// @param out the parts of the URL, filled on success
/// @param diag says what is wrong with the URL, on failure
/// @return empty, or errc::invalid_config
boost::system::error_code parse_token_url(std::string_view url, bool allow_insecure_http,
                                          endpoint& out, diagnostics& diag);

/// A successful token answer.
struct token_response {
  std::string access_token;   ///< the access token, never empty in a parsed answer
  std::string token_type;     ///< "Bearer" when the answer names none
  std::string refresh_token;  ///< empty when the server did not rotate
  std::string scope;          ///< the answer's scope; empty when it names none
  std::optional<std::chrono::seconds> expires_in;  ///< none when the answer has no expiry
  /// The answer's other members (id_token, custom fields), as sent; null when there are none.
  std::shared_ptr<const boost::json::object> extra;

  // The tokens are overwritten whenever the answer lets go of them, as in stored_tokens.
  token_response() = default;
  /// A second copy of the tokens, wiped in its own turn.
  token_response(const token_response&) = default;
  /// Takes `o`'s fields, then wipes what `o` kept.
  /// @param o the answer moved from; left empty
  token_response(token_response&& o) noexcept
      : access_token(std::move(o.access_token)),
        token_type(std::move(o.token_type)),
        refresh_token(std::move(o.refresh_token)),
        scope(std::move(o.scope)),
        expires_in(o.expires_in),
        extra(std::move(o.extra)) {
    o.wipe();
  }
  /// Wipes this answer's tokens and takes `o`'s fields (one operator for copy and move, as in
  /// stored_tokens).
  /// @param o the answer assigned
  /// @return *this
  token_response& operator=(token_response o) noexcept {
    wipe();
    access_token = std::move(o.access_token);
    token_type = std::move(o.token_type);
    refresh_token = std::move(o.refresh_token);
    scope = std::move(o.scope);
    expires_in = o.expires_in;
    extra = std::move(o.extra);
    return *this;
  }
  ~token_response() { wipe(); }

  /// Overwrites both tokens and empties the answer.
  void wipe() noexcept {
    detail::wipe_all(access_token);
    detail::wipe_all(refresh_token);
    token_type.clear();
    scope.clear();
    expires_in.reset();
    extra.reset();
  }
};

/// Longest lifetime taken from an answer; larger values are clamped so time arithmetic cannot
/// overflow.
inline constexpr std::chrono::seconds max_expires_in{10LL * 365 * 24 * 3600};

/// Interprets an HTTP answer of the token endpoint. 2xx: a JSON object with an access token
/// (camelCase or snake_case names; expiresIn as a number or numeric string) or
/// malformed_response. 4xx/5xx: the OAuth `error` mapped to errc, `error_description` kept in
/// diag. 429 without an OAuth error: temporarily_unavailable. 3xx and other statuses:
/// unexpected_status (redirects are never followed).
/// Every occurrence of each of `secrets` in the server's text is replaced by "[redacted]"
/// before the text is shortened for diag, so a server echoing a credential cannot leak it.
/// @param status the HTTP status
/// @param body the answer's body
/// @param out the token answer, filled on success only
/// @param diag the HTTP status always; on failure the server's `error` and
///   `error_description` and what was wrong
/// @param secrets the credentials and tokens the request carried
/// @return empty for a usable token answer; else the OAuth error (errc::invalid_grant, ...),
///   errc::server_error, errc::temporarily_unavailable, errc::unexpected_status or
///   errc::malformed_response
boost::system::error_code parse_token_response(
    unsigned status, std::string_view body, token_response& out, diagnostics& diag,
    std::initializer_list<std::string_view> secrets = {});

/// How long a Retry-After header asks to wait, from `now`: delta-seconds ("120") or an
/// HTTP-date ("Wed, 21 Oct 2015 07:28:00 GMT", RFC 9110 §10.2.3). A date in the past is 0 s;
/// an empty or unparsable value, or a delay beyond a day, is nullopt (ignored).
/// @param value the header's value
/// @param now the current wall-clock time, for an HTTP-date
/// @return the delay, or nullopt
std::optional<std::chrono::seconds> parse_retry_after(std::string_view value,
                                                      std::chrono::system_clock::time_point now);

}  // namespace nxsys::auth::protocol

#endif
