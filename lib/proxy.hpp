// SPDX-License-Identifier: BSL-1.0
// The HTTP proxy of http_options::proxy: its URL, the environment's proxy variables, NO_PROXY
// patterns and the Basic credentials of a CONNECT. No I/O. Internal.
#ifndef NXSYS_AUTH_LIB_PROXY_HPP
#define NXSYS_AUTH_LIB_PROXY_HPP

#include <nxsys/auth/error.hpp>
#include <nxsys/auth/http_options.hpp>
#include <nxsys/auth/protocol.hpp>

#include "secret_string.hpp"

#include <optional>
#include <string>
#include <string_view>

namespace nxsys::auth::detail {

/// Headers of a proxy's answer to CONNECT beyond this are refused.
inline constexpr std::size_t max_proxy_header_bytes = 8 * 1024;

/// The proxy an origin's connections go through.
struct proxy_route {
  std::string host;  ///< without brackets for IPv6
  std::string port;
  bool host_is_ip = false;
  std::string display;   ///< "host:port" ("[v6]:port"), for messages
  std::string source;    ///< where it came from, for messages: "http.proxy.url", "HTTPS_PROXY"
  std::string username;  ///< whose credentials go with each CONNECT; "" if none
  secret_string authorization;  ///< the Proxy-Authorization value ("Basic ..."), or empty
  secret_string password;       ///< kept only to redact it from what the proxy answers
};

/// Parses a proxy URL: http:// (or no scheme at all when `scheme_optional`), a host, an
/// optional port (80 when absent), no path but "/", no query or fragment. User info is refused
/// unless `user`/`password` are given, which then receive it percent-decoded. The URL is never
/// quoted in diag (it may carry credentials). Returns empty or invalid_config.
boost::system::error_code parse_proxy_url(std::string_view url, std::string_view name,
                                          bool scheme_optional, proxy_route& out, diagnostics& diag,
                                          std::string* user = nullptr,
                                          secret_string* password = nullptr);

/// Whether `target` matches one of the comma-separated NO_PROXY `patterns` (see
/// proxy_options::no_proxy for the syntax). Patterns that parse as nothing match nothing.
bool no_proxy_matches(std::string_view patterns, const protocol::endpoint& target);

/// What is wrong with the first pattern of the comma-separated `patterns` that does not parse
/// (copied to `bad_pattern`), or nullptr when all do. validate() refuses a configured list
/// with one: a mistyped exclusion would silently send its traffic through the proxy.
const char* no_proxy_error(std::string_view patterns, std::string& bad_pattern);

/// The proxy for `target` under `opts` (reading the environment if opts.from_environment), or
/// none. Throws error_with_diagnostics(invalid_config) when the URL it would use is invalid.
std::optional<proxy_route> choose_proxy(const protocol::endpoint& target,
                                        const proxy_options& opts);

/// "Basic " + base64(user ":" password), RFC 7617 (no encoding of either part).
secret_string proxy_basic_authorization(std::string_view user, std::string_view password);

}  // namespace nxsys::auth::detail

#endif
