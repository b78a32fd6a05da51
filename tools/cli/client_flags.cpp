// SPDX-License-Identifier: BSL-1.0
// The shared client flags of the tools and examples.
#include "client_flags.hpp"

#include <sys/stat.h>

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <iterator>

namespace nxsys::auth::cli {

const std::string_view client_flags_help = R"(Client (flags override the environment):
  NXSYS_BASE_API_URL   --base-url URL       base API URL; the token URL is URL/nxsys/oauth/token
                       --token-url URL      the full token URL (overrides the base URL)
  NXSYS_CLIENT_ID      --client-id ID
  NXSYS_CLIENT_SECRET  --client-secret-file FILE
  NXSYS_REFRESH_TOKEN  --refresh-token-file FILE
Secrets (client secret, refresh token) are taken only from the environment or from files
(trailing newlines stripped), never as command-line values: argv is visible in ps.
  --dialect NAME        request parameter names: nxsys (grantType, refreshToken, ...; the
                        default) or rfc6749 (grant_type, refresh_token, ...)
  --basic-auth          client id and secret in an Authorization: Basic header (RFC 6749
                        client_secret_basic) instead of the request body
  --scope SCOPE         sent as `scope` with every refresh
  --store FILE          keep the tokens in FILE (JSON, mode 0600; shared safely by concurrent
                        processes): a restart continues with the latest rotated refresh token,
                        and the refresh token is needed only until FILE exists
  --grant NAME          refresh_token (the default) or client_credentials (RFC 6749 4.4: the
                        client authenticates as itself; no refresh token needed)
  --ca-file FILE        PEM bundle of trusted CAs for https (default: the system's)
  --insecure-http       allow plain http:// to a host that is not loopback
Network:
  --proxy URL           reach the server through this HTTP proxy (http://host:port, CONNECT
                        tunnels; TLS stays end to end)
  --proxy-user USER     proxy Basic credentials; the password from NXSYS_PROXY_PASSWORD or
  --proxy-password-file FILE
  --proxy-from-env      take the proxy from https_proxy/http_proxy and exclusions from no_proxy
  --no-proxy LIST       hosts reached directly (NO_PROXY syntax: example.com,10.0.0.0/8,...)
  --cert FILE           client certificate (PEM) for mutual TLS, with --key
  --key FILE            its private key (PEM); for an encrypted key the passphrase comes from
  --key-password-file FILE  or NXSYS_KEY_PASSWORD
)";

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

// A secret from a file: its content without trailing line breaks. Never quoted in errors.
std::string read_secret(std::string_view flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw usage_error{std::string(flag) + ": cannot read '" + path + "'"};
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  if (s.empty()) throw usage_error{std::string(flag) + ": '" + path + "' is empty"};
  return s;
}

}  // namespace

void client_flags::read_environment() {
  base_url = env("NXSYS_BASE_API_URL");
  client_id = env("NXSYS_CLIENT_ID");
  client_secret = env("NXSYS_CLIENT_SECRET");
  refresh_token = env("NXSYS_REFRESH_TOKEN");
  proxy_password = env("NXSYS_PROXY_PASSWORD");
  private_key_password = env("NXSYS_KEY_PASSWORD");
}

bool client_flags::take(std::string_view flag, const std::function<std::string()>& value,
                        const std::function<void()>& no_value) {
  if (flag == "--base-url") {
    base_url = value();
  } else if (flag == "--token-url") {
    token_url = value();
  } else if (flag == "--client-id") {
    client_id = value();
  } else if (flag == "--client-secret-file") {
    client_secret = read_secret(flag, value());
  } else if (flag == "--refresh-token-file") {
    refresh_token = read_secret(flag, value());
  } else if (flag == "--proxy-password-file") {
    proxy_password = read_secret(flag, value());
  } else if (flag == "--key-password-file") {
    private_key_password = read_secret(flag, value());
  } else if (flag == "--client-secret" || flag == "--refresh-token" || flag == "--proxy-password" ||
             flag == "--key-password") {
    const std::string_view name = flag.substr(2);
    std::string variable = "NXSYS_";
    for (char c : name)
      variable += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    throw usage_error{std::string(flag) +
                      " is not accepted: secrets on the command line are visible in ps; use " +
                      variable + " or " + std::string(flag) + "-file"};
  } else if (flag == "--grant") {
    const auto v = value();
    if (v == "refresh_token")
      grant = auth::grant_type::refresh_token;
    else if (v == "client_credentials")
      grant = auth::grant_type::client_credentials;
    else
      throw usage_error{"--grant is refresh_token or client_credentials"};
  } else if (flag == "--proxy") {
    proxy = value();
  } else if (flag == "--proxy-user") {
    proxy_user = value();
  } else if (flag == "--proxy-from-env") {
    no_value();
    proxy_from_environment = true;
  } else if (flag == "--no-proxy") {
    no_proxy = value();
  } else if (flag == "--cert") {
    certificate_file = value();
  } else if (flag == "--key") {
    private_key_file = value();
  } else if (flag == "--dialect") {
    const auto v = value();
    if (v == "nxsys")
      dialect = auth::dialect::nxsys;
    else if (v == "rfc6749")
      dialect = auth::dialect::rfc6749;
    else
      throw usage_error{"--dialect is nxsys or rfc6749"};
  } else if (flag == "--basic-auth") {
    no_value();
    authentication = auth::client_authentication::http_basic;
  } else if (flag == "--scope") {
    scope = value();
  } else if (flag == "--store") {
    store = value();
  } else if (flag == "--ca-file") {
    ca_file = value();
  } else if (flag == "--insecure-http") {
    no_value();
    insecure_http = true;
  } else {
    return false;
  }
  return true;
}

void client_flags::finish() {
  if (token_url.empty()) {
    if (base_url.empty())
      throw usage_error{"no token endpoint: set NXSYS_BASE_API_URL or use --base-url/--token-url"};
    token_url = auth::make_token_url(base_url);
  }
  if (client_id.empty()) throw usage_error{"no client id: set NXSYS_CLIENT_ID or --client-id"};
  if (client_secret.empty())
    throw usage_error{"no client secret: set NXSYS_CLIENT_SECRET or use --client-secret-file"};
  if (grant == auth::grant_type::client_credentials) {
    if (!refresh_token.empty())
      throw usage_error{
          "--grant client_credentials takes no refresh token: unset "
          "NXSYS_REFRESH_TOKEN or drop --refresh-token-file"};
    return;
  }
  struct stat st {};
  const bool store_exists = !store.empty() && ::stat(store.c_str(), &st) == 0;
  if (refresh_token.empty() && !store_exists)
    throw usage_error{store.empty()
                          ? "no refresh token: set NXSYS_REFRESH_TOKEN or use --refresh-token-file"
                          : "no refresh token: set NXSYS_REFRESH_TOKEN or use --refresh-token-file "
                            "(needed until the --store file exists)"};
}

client_config client_flags::make_config() const {
  client_config cfg;
  cfg.token_url = token_url;
  cfg.client_id = client_id;
  cfg.client_secret = client_secret;
  cfg.refresh_token = refresh_token;
  cfg.dialect = dialect;
  cfg.authentication = authentication;
  cfg.scope = scope;
  cfg.http.tls.ca_file = ca_file;
  cfg.http.allow_insecure_http = insecure_http;
  cfg.grant = grant;
  cfg.http.proxy.url = proxy;
  cfg.http.proxy.username = proxy_user;
  // The passwords only with what they unlock: an exported variable alone is not an error.
  if (!proxy_user.empty()) cfg.http.proxy.password = proxy_password;
  cfg.http.proxy.from_environment = proxy_from_environment;
  if (!no_proxy.empty()) cfg.http.proxy.no_proxy.push_back(no_proxy);
  cfg.http.tls.certificate_file = certificate_file;
  cfg.http.tls.private_key_file = private_key_file;
  if (!private_key_file.empty()) cfg.http.tls.private_key_password = private_key_password;
  if (!store.empty()) cfg.storage.store = std::make_shared<auth::file_store>(store);
  return cfg;
}

}  // namespace nxsys::auth::cli
