// SPDX-License-Identifier: BSL-1.0
/// @file
/// How the library speaks HTTP: timeouts, limits, TLS and proxy, shared by the token endpoint
/// (client_config::http) and the API (session_config::http).
#ifndef NXSYS_AUTH_HTTP_OPTIONS_HPP
#define NXSYS_AUTH_HTTP_OPTIONS_HPP

#include <nxsys/auth/error.hpp>
#include <nxsys/auth/secret.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

/// @cond
// Declared only: the hook of tls_options takes one, and this header stays light to include.
namespace boost::asio::ssl {
class context;
}
/// @endcond

namespace nxsys::auth {

/// TLS settings for https:// URLs. Verification is on unless switched off explicitly. The
/// files are read when a client or session is built (each builds its own SSL context), which
/// throws error_with_diagnostics(errc::invalid_config) when one cannot be used.
struct tls_options {
  bool verify_peer = true;  ///< verify the certificate chain and the host name
  std::string ca_file{};    ///< PEM bundle of trusted CAs; empty: the system's default paths
  std::string ca_dir{};     ///< directory of hashed CA certificates (c_rehash layout)

  /// Client certificate for mutual TLS: a PEM file holding the certificate, optionally
  /// followed by its intermediate CAs. Needs a private key (private_key_file or
  /// private_key_pem); exclusive with certificate_pem. Empty: no client certificate.
  std::string certificate_file{};
  /// PEM file of the client certificate's private key, encrypted or not (see
  /// private_key_password). Exclusive with private_key_pem.
  std::string private_key_file{};
  /// The client certificate (and its chain) as PEM text in memory, instead of certificate_file.
  std::string certificate_pem{};
  /// The client certificate's private key as PEM text in memory, instead of private_key_file.
  secret private_key_pem{};
  /// Passphrase of an encrypted private key (file or PEM); empty: the key is not encrypted.
  secret private_key_password{};

  /// Called with the SSL context once the settings above are applied, so that it may change
  /// anything they do not cover: cipher lists, TLS versions, a verify callback that pins
  /// keys, a certificate from a hardware token. A verify callback set here runs on every
  /// handshake; OpenSSL's own checks (the chain, and the host name when verify_peer) come
  /// first and arrive as its `preverified` argument. Called when a client or session is built
  /// for an https:// URL (once for each), on the thread that builds it; it may keep nothing of
  /// the context but what the context itself owns. An exception it throws makes that
  /// construction throw error_with_diagnostics(errc::invalid_config) with the exception's
  /// what() in the diagnostics (an error_with_diagnostics is thrown as it is). Empty: not
  /// called.
  std::function<void(boost::asio::ssl::context&)> configure_context{};
};

/// An HTTP proxy that requests go through, in a tunnel (`CONNECT host:port`), for https:// and
/// plain http:// URLs alike. TLS runs end to end through the tunnel: SNI and the certificate
/// check are the target's, never the proxy's. The proxy is reached over plain http:// only, so
/// credentials for it (Basic) cross the network in clear between this host and the proxy,
/// unlike those of the target, which stay inside the tunnel's TLS: the proxy's address is the
/// user's explicit choice, and no allow_insecure_http rule applies to it.
struct proxy_options {
  /// The proxy, as "http://host:port" (port 80 when absent; no path, no user info: the
  /// credentials go in username and password). Empty: no proxy, unless from_environment finds
  /// one. When set, it is used whatever the environment says.
  std::string url{};
  /// User name for `Proxy-Authorization: Basic` (RFC 7617); no ':' in it. Empty: no
  /// credentials are sent (or those of the environment's proxy URL, see from_environment).
  std::string username{};
  /// Password for the user name. It is sent in clear to the proxy (see above), and never
  /// appears in diagnostics or logs; the request header that carried it is wiped once written.
  secret password{};
  /// Read the environment when a client or session is built (only when set): without a url,
  /// `https_proxy` then `HTTPS_PROXY` for https:// targets, `http_proxy` then `HTTP_PROXY`
  /// for http:// ones (`HTTP_PROXY` not under CGI, when `REQUEST_METHOD` is set: "httpoxy").
  /// A value without a scheme is read as http://; an https:// proxy there is invalid_config.
  /// Its user info, percent-decoded, is the credentials when username is empty. And, url
  /// or not, `no_proxy` then `NO_PROXY` add exclusions, with no_proxy's syntax.
  bool from_environment = false;
  /// Targets reached directly, not through the proxy. Each entry is a pattern, or a
  /// comma-separated list of them as in NO_PROXY: `*` (every target), a host name that
  /// matches itself and its subdomains (`example.com`, `.example.com` and `*.example.com`
  /// alike, case-insensitive), an IP address (`10.1.2.3`, `::1` or `[::1]`) or an IP
  /// network (`10.0.0.0/8`, `fd00::/8`), each optionally with `:port` to match that port only
  /// (an IPv6 address then in brackets). Names are compared as written, never resolved: an IP
  /// pattern does not match a host name (loopback included, which is proxied unless listed).
  /// validate() refuses an entry with a pattern that is none of these (invalid_config, naming
  /// the entry and the pattern); in the environment's NO_PROXY such a pattern matches nothing.
  std::vector<std::string> no_proxy{};
};

/// Timeouts, limits, TLS and proxy of HTTP connections. The same type configures the token
/// endpoint's connection (client_config::http) and a session's pool (session_config::http); each
/// field's default suits both, except max_response_bytes, whose 0 means the owner's default.
struct http_options {
  std::chrono::milliseconds connect_timeout{10'000};  ///< resolve, connect, CONNECT, TLS handshake
  std::chrono::milliseconds request_timeout{30'000};  ///< write the request + read the answer
  /// Idle keep-alive connections older than this are closed instead of reused.
  std::chrono::milliseconds max_idle_connection{60'000};
  /// Headers (16 KiB at most) + body of an answer; larger ones fail with response_too_large.
  /// 0: the owner's default, 64 KiB for token answers and 8 MiB for API answers. Else at
  /// least 256.
  std::size_t max_response_bytes = 0;
  /// Certificate verification, trust anchors, client certificate and the context hook, for
  /// https:// URLs.
  tls_options tls{};
  /// Plain http:// is refused unless the host is a loopback address or this is set: a client
  /// secret, a refresh token or a bearer token must not cross a network unencrypted by accident.
  bool allow_insecure_http = false;
  /// An HTTP proxy to reach the server through (CONNECT tunnels); by default none. The
  /// connect_timeout covers reaching the proxy, the CONNECT exchange and the TLS handshake.
  proxy_options proxy{};

  /// Checks the values (not the files they name: those are read when a client or session is
  /// built, which fails with the same error if they cannot be used).
  /// @param diag receives what is wrong, in client_message (field names as "http.x" when
  ///   `prefix` is "http."); may be nullptr
  /// @param prefix put before field names in the message
  /// @return empty, or errc::invalid_config
  boost::system::error_code validate(diagnostics* diag = nullptr,
                                     const char* prefix = "http.") const;
};

}  // namespace nxsys::auth

#endif
