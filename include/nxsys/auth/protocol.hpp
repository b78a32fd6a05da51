// SPDX-License-Identifier: BSL-1.0
// The Nxsys refresh protocol without I/O: build the request, parse the answer. Pure functions,
// so they are tested and fuzzed without sockets.
#ifndef NXSYS_AUTH_PROTOCOL_HPP
#define NXSYS_AUTH_PROTOCOL_HPP

#include <nxsys/auth/config.hpp>
#include <nxsys/auth/detail/wipe.hpp>
#include <nxsys/auth/error.hpp>

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

namespace nxsys::auth::protocol {

/// application/x-www-form-urlencoded encoding of one name or value: unreserved characters stay,
/// space becomes '+', every other byte %XX (as URLSearchParams does).
std::string form_urlencode(std::string_view s);

/// The seed's refresh request body:
/// grantType=refresh_token&refreshToken=...&clientId=...&clientSecret=...
std::string build_refresh_body(std::string_view refresh_token, std::string_view client_id,
                               std::string_view client_secret);

/// A refresh request: its form body and, for client_secret_basic, its Authorization header.
/// Both hold credentials, so they are overwritten whenever the request lets go of them
/// (destruction, assignment, move), as in stored_tokens.
struct refresh_request {
  std::string body;
  std::string authorization;  ///< "Basic ..." or empty (credentials in the body)

  refresh_request() = default;
  refresh_request(const refresh_request&) = default;
  refresh_request(refresh_request&& o) noexcept
      : body(std::move(o.body)), authorization(std::move(o.authorization)) {
    o.wipe();
  }
  refresh_request& operator=(const refresh_request& o) {
    if (this != &o) {
      refresh_request copy(o);
      *this = std::move(copy);
    }
    return *this;
  }
  refresh_request& operator=(refresh_request&& o) noexcept {
    if (this != &o) {
      wipe();
      body = std::move(o.body);
      authorization = std::move(o.authorization);
      o.wipe();
    }
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
refresh_request build_refresh_request(dialect d, client_authentication auth,
                                      std::string_view refresh_token, std::string_view client_id,
                                      std::string_view client_secret, std::string_view scope = {});

/// RFC 6749 §2.3.1 client_secret_basic: "Basic " + base64(urlencode(id) ":" urlencode(secret)).
std::string basic_authorization(std::string_view client_id, std::string_view client_secret);

/// Where the token endpoint is, from client_config::token_url.
struct endpoint {
  bool tls = false;
  std::string host;    ///< without brackets for IPv6
  std::string port;    ///< "443" / "80" when the URL names none
  std::string target;  ///< path and query, "/" at least
  bool host_is_ip = false;
  bool loopback = false;  ///< 127.0.0.0/8, ::1 or "localhost"
};

/// Parses and checks an http:// or https:// URL named `name` in messages: a host, no user
/// info, no fragment. Plain http to a non-loopback host is invalid_config (it would carry
/// `secret_kind` unencrypted) unless allow_insecure_http.
boost::system::error_code parse_url(std::string_view url, std::string_view name,
                                    std::string_view secret_kind, bool allow_insecure_http,
                                    endpoint& out, diagnostics& diag);

/// Parses and checks a token URL: http or https, a host, no user info, no fragment. Plain http
/// to a non-loopback host is invalid_config unless allow_insecure_http.
boost::system::error_code parse_token_url(std::string_view url, bool allow_insecure_http,
                                          endpoint& out, diagnostics& diag);

/// A successful token answer.
struct token_response {
  std::string access_token;
  std::string token_type;     ///< "Bearer" when the answer names none
  std::string refresh_token;  ///< empty when the server did not rotate
  std::string scope;
  std::optional<std::chrono::seconds> expires_in;  ///< none when the answer has no expiry
  /// The answer's other members (id_token, custom fields), as sent; null when there are none.
  std::shared_ptr<const boost::json::object> extra;

  // The tokens are overwritten whenever the answer lets go of them, as in stored_tokens.
  token_response() = default;
  token_response(const token_response&) = default;
  token_response(token_response&& o) noexcept
      : access_token(std::move(o.access_token)),
        token_type(std::move(o.token_type)),
        refresh_token(std::move(o.refresh_token)),
        scope(std::move(o.scope)),
        expires_in(o.expires_in),
        extra(std::move(o.extra)) {
    o.wipe();
  }
  token_response& operator=(const token_response& o) {
    if (this != &o) {
      token_response copy(o);
      *this = std::move(copy);
    }
    return *this;
  }
  token_response& operator=(token_response&& o) noexcept {
    if (this != &o) {
      wipe();
      access_token = std::move(o.access_token);
      token_type = std::move(o.token_type);
      refresh_token = std::move(o.refresh_token);
      scope = std::move(o.scope);
      expires_in = o.expires_in;
      extra = std::move(o.extra);
      o.wipe();
    }
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
boost::system::error_code parse_token_response(
    unsigned status, std::string_view body, token_response& out, diagnostics& diag,
    std::initializer_list<std::string_view> secrets = {});

/// How long a Retry-After header asks to wait, from `now`: delta-seconds ("120") or an
/// HTTP-date ("Wed, 21 Oct 2015 07:28:00 GMT", RFC 9110 §10.2.3). A date in the past is 0 s;
/// an empty or unparsable value, or a delay beyond a day, is nullopt (ignored).
std::optional<std::chrono::seconds> parse_retry_after(std::string_view value,
                                                      std::chrono::system_clock::time_point now);

}  // namespace nxsys::auth::protocol

#endif
