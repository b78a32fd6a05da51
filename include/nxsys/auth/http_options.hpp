// SPDX-License-Identifier: BSL-1.0
/// @file
/// How the library speaks HTTP: timeouts, limits and TLS, shared by the token endpoint
/// (client_config::http) and the API (session_config::http).
#ifndef NXSYS_AUTH_HTTP_OPTIONS_HPP
#define NXSYS_AUTH_HTTP_OPTIONS_HPP

#include <nxsys/auth/error.hpp>

#include <chrono>
#include <cstddef>
#include <string>

namespace nxsys::auth {

/// TLS settings for https:// URLs. Verification is on unless switched off explicitly.
struct tls_options {
  bool verify_peer = true;  ///< verify the certificate chain and the host name
  std::string ca_file{};    ///< PEM bundle of trusted CAs; empty: the system's default paths
  std::string ca_dir{};     ///< directory of hashed CA certificates (c_rehash layout)
};

/// Timeouts, limits and TLS of HTTP connections. The same type configures the token endpoint's
/// connection (client_config::http) and a session's pool (session_config::http); each field's
/// default suits both, except max_response_bytes, whose 0 means the owner's default.
struct http_options {
  std::chrono::milliseconds connect_timeout{10'000};  ///< resolve + connect + TLS handshake
  std::chrono::milliseconds request_timeout{30'000};  ///< write the request + read the answer
  /// Idle keep-alive connections older than this are closed instead of reused.
  std::chrono::milliseconds max_idle_connection{60'000};
  /// Headers (16 KiB at most) + body of an answer; larger ones fail with response_too_large.
  /// 0: the owner's default, 64 KiB for token answers and 8 MiB for API answers. Else at
  /// least 256.
  std::size_t max_response_bytes = 0;
  /// Certificate verification and trust anchors for https:// URLs.
  tls_options tls{};
  /// Plain http:// is refused unless the host is a loopback address or this is set: a client
  /// secret, a refresh token or a bearer token must not cross a network unencrypted by accident.
  bool allow_insecure_http = false;

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
