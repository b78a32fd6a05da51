// SPDX-License-Identifier: BSL-1.0
// The client settings every program of this repository takes the same way (nxsys-token,
// nxsys-gateway): the NXSYS_* environment first, flags over it, secrets only from the
// environment or files. Internal to the tools and examples.
#ifndef NXSYS_AUTH_TOOLS_CLI_CLIENT_FLAGS_HPP
#define NXSYS_AUTH_TOOLS_CLI_CLIENT_FLAGS_HPP

#include <nxsys/auth.hpp>

#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace nxsys::auth::cli {

/// A bad flag or a missing setting: the program prints it with its usage and exits 2.
struct usage_error {
  std::string message;
};

/// The lines of --help describing the shared flags and variables.
extern const std::string_view client_flags_help;

struct client_flags {
  std::string base_url, token_url, client_id, client_secret, refresh_token;
  std::string scope, store, ca_file;
  auth::grant_type grant = auth::grant_type::refresh_token;
  auth::dialect dialect = auth::dialect::nxsys;
  auth::client_authentication authentication = auth::client_authentication::request_body;
  bool insecure_http = false;
  // Network: a proxy (its password a secret like the others), a client certificate.
  std::string proxy, proxy_user, proxy_password, no_proxy;
  bool proxy_from_environment = false;
  std::string certificate_file, private_key_file, private_key_password;

  /// NXSYS_BASE_API_URL, NXSYS_CLIENT_ID, NXSYS_CLIENT_SECRET, NXSYS_REFRESH_TOKEN,
  /// NXSYS_PROXY_PASSWORD, NXSYS_KEY_PASSWORD.
  void read_environment();

  /// Takes `flag` if it is one of the shared flags: `value()` yields its value (and throws
  /// usage_error when there is none), `no_value()` throws when one was given inline. False:
  /// not a shared flag. Secrets given as values (--client-secret, --refresh-token) are refused.
  bool take(std::string_view flag, const std::function<std::string()>& value,
            const std::function<void()>& no_value);

  /// Checks that the endpoint and credentials are there (a refresh token only for the
  /// refresh_token grant, and only until the store file exists), and fills token_url from
  /// base_url. Throws usage_error.
  void finish();

  /// A client_config with these settings; a file_store when --store was given (throws what
  /// file_store throws, e.g. store_corrupt).
  client_config make_config() const;
};

}  // namespace nxsys::auth::cli

#endif
