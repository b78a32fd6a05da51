// SPDX-License-Identifier: BSL-1.0
/// @file
/// Error codes of nxsys-auth: one enum, two categories (the OAuth server's RFC 6749 §5.2 errors
/// and the client's own failures), plus diagnostics that carry the server's words.
#ifndef NXSYS_AUTH_ERROR_HPP
#define NXSYS_AUTH_ERROR_HPP

#include <boost/system/error_code.hpp>
#include <boost/system/system_error.hpp>

#include <iosfwd>
#include <string>
#include <string_view>
#include <type_traits>

namespace nxsys::auth {

/// Every distinct failure of a refresh. `ec == errc::invalid_grant` works for any error code the
/// library produces: make_error_code() puts each value in its category.
enum class errc : int {
  // -- category "nxsys.auth.oauth": the server answered with an OAuth error (RFC 6749 §5.2).
  invalid_request = 1,      ///< the server rejected the request as malformed
  invalid_client,           ///< client id or secret rejected: check the credentials
  invalid_grant,            ///< refresh token invalid, expired or revoked: re-authorize
  unauthorized_client,      ///< this client may not use its grant (client_config::grant)
  unsupported_grant_type,   ///< the server does not support the grant used (client_config::grant)
  invalid_scope,            ///< the requested scope is invalid
  server_error,             ///< 5xx or `"error":"server_error"`; diagnostics keep the HTTP status
  temporarily_unavailable,  ///< `"error":"temporarily_unavailable"` (e.g. 503)
  unrecognized_error,       ///< an `error` value this library does not know; see diagnostics

  // -- category "nxsys.auth.client": failures found on this side.
  malformed_response = 100,  ///< not JSON, not an object, no access token, bad expiry, ...
  timeout,                   ///< connect or request timeout elapsed
  tls,                       ///< TLS handshake or certificate verification failed
  connection,                ///< resolve, connect, reset or close before a full answer
  response_too_large,        ///< the answer exceeded the configured max_response_bytes
  unexpected_status,  ///< a status with no OAuth error body (3xx: redirects are not followed)
  invalid_config,     ///< the configuration is unusable (bad URL, plain HTTP off loopback)
  store_failed,       ///< the token store could not be read or written (I/O error)
  store_corrupt,      ///< the token store holds a state that cannot be parsed: fix or remove it
  store_conflict,     ///< the stored refresh token changed under a save (another holder won)
  store_busy,         ///< the right to refresh was not granted before the refresh deadline
  invalid_argument,   ///< a call's argument is unusable (a request target not starting with
                      ///< '/', a store save of a state with neither a refresh token nor an access
                      ///< token, a refused set_refresh_token): nothing was sent or written
  internal,  ///< a step of the refresh threw, or a store or transport dropped its completion
             ///< handler: a bug (ours or a store's); diagnostics say which step
  /// The HTTP proxy (http_options::proxy) answered 407: it wants credentials, or other ones.
  /// Not retried; diagnostics say what the proxy answered (never the password).
  proxy_authentication,
  /// token_store::async_acquire: no lease, because another holder saved a newer state while
  /// this one waited. Load it; acquire again if it does not serve. The client handles it.
  store_updated,
  /// The store's lease ran out (a pause longer than its lifetime, a failover) before the
  /// token request was written: the request was not sent. The client takes the lease again.
  lease_lost,
};

/// Category of the OAuth server's errors ("nxsys.auth.oauth").
/// @return the category, one object for the program's lifetime
const boost::system::error_category& oauth_category() noexcept;
/// Category of client-side failures ("nxsys.auth.client").
/// @return the category, one object for the program's lifetime
const boost::system::error_category& client_category() noexcept;

/// Puts `e` in its category: the values below malformed_response in oauth_category(), the
/// others in client_category(). Found by argument-dependent lookup, so that `ec == e` and
/// `error_code ec = e;` work.
/// @param e the value
/// @return the error code. Its message() is the value's name for an OAuth error
///   ("invalid_grant"), and a short phrase for unrecognized_error and the client's failures
///   ("unrecognized OAuth error", "timed out", "token store failure"): the text of operator<<
///   and the keys of client_stats::refreshes_failed_by_reason.
boost::system::error_code make_error_code(errc e) noexcept;

/// Writes what make_error_code(e).message() says: "invalid_grant" for an OAuth error, a short
/// phrase such as "timed out" for unrecognized_error and the client's failures.
/// @param os the stream
/// @param e the value
/// @return `os`
std::ostream& operator<<(std::ostream& os, errc e);

/// The server's own words and what we saw, kept apart from the error code. Never holds a
/// secret: text from the server is stripped of the credentials and tokens the client sent.
struct diagnostics {
  int http_status = 0;             ///< 0 when no HTTP answer was received
  std::string server_error;        ///< the answer's `error` field
  std::string server_description;  ///< the answer's `error_description` field
  std::string client_message;      ///< what this library observed (no secrets)

  /// @return true when no field is set
  bool empty() const noexcept {
    return http_status == 0 && server_error.empty() && server_description.empty() &&
           client_message.empty();
  }
  /// Resets every field.
  void clear() { *this = diagnostics{}; }
};

/// "invalid_grant (HTTP 400); server says: invalid_grant: token expired" — used as what().
/// @param ec the error; its message() comes first
/// @param diag what goes after it: the HTTP status, the client's message, the server's words
/// @return the description
std::string describe(const boost::system::error_code& ec, const diagnostics& diag);

/// What token() throws: a system_error whose what() includes the diagnostics.
class error_with_diagnostics : public boost::system::system_error {
 public:
  /// @param ec the error; code() returns it
  /// @param diag what was observed; what() is describe(ec, diag)
  error_with_diagnostics(const boost::system::error_code& ec, diagnostics diag);
  /// @return the diagnostics given to the constructor
  const diagnostics& get_diagnostics() const noexcept { return diag_; }
  /// @return describe(code(), get_diagnostics()), valid as long as this exception
  const char* what() const noexcept override { return what_.c_str(); }

 private:
  diagnostics diag_;
  std::string what_;
};

}  // namespace nxsys::auth

/// @cond
// Lets an errc convert to error_code. Hidden from the reference: doxygen 1.9.4 cannot place a
// specialization declared with its qualified name.
template <>
struct boost::system::is_error_code_enum<nxsys::auth::errc> : std::true_type {};
/// @endcond

#endif
