// SPDX-License-Identifier: BSL-1.0
// The configurations' checks, in one error style: errc::invalid_config and a client_message
// that names the field. Also make_token_url.
#include <nxsys/auth/config.hpp>
#include <nxsys/auth/session.hpp>

#include "connection.hpp"
#include "proxy.hpp"

#include <string>

namespace nxsys::auth {

namespace {

using boost::system::error_code;

// Collects the first problem found; later checks are skipped once one is found.
class checker {
 public:
  explicit checker(diagnostics* diag) : diag_(diag) {}

  // `ok` false: the configuration is invalid because of `what` (prefixed field name first).
  checker& require(bool ok, const char* prefix, const char* what) {
    if (!ok && !ec_) {
      ec_ = make_error_code(errc::invalid_config);
      if (diag_ != nullptr) diag_->client_message = std::string(prefix) + what;
    }
    return *this;
  }
  // Adopts an error found by another check (with its diagnostics already written).
  checker& adopt(error_code ec) {
    if (ec && !ec_) ec_ = ec;
    return *this;
  }
  bool failed() const noexcept { return static_cast<bool>(ec_); }
  error_code result() const noexcept { return ec_; }
  diagnostics* diag() const noexcept { return diag_; }

 private:
  diagnostics* diag_;
  error_code ec_;
};

bool fraction(double f) {
  return f >= 0.0 && f < 1.0;
}  // NaN fails

}  // namespace

std::string make_token_url(std::string_view base_api_url) {
  while (!base_api_url.empty() && base_api_url.back() == '/') base_api_url.remove_suffix(1);
  std::string url(base_api_url);
  url += "/nxsys/oauth/token";
  return url;
}

namespace detail {

error_code validate_client_certificate(const tls_options& tls, std::string_view field,
                                       std::string_view prefix, diagnostics* diag) {
  // The values only: the files are read when the context is built.
  const std::string f(field);
  const bool cert_file = !tls.certificate_file.empty(), cert_pem = !tls.certificate_pem.empty();
  const bool key_file = !tls.private_key_file.empty(), key_pem = !tls.private_key_pem.empty();
  std::string problem;
  if (cert_file && cert_pem)
    problem = f + ".certificate_file and " + f + ".certificate_pem are exclusive: set one";
  else if (key_file && key_pem)
    problem = f + ".private_key_file and " + f + ".private_key_pem are exclusive: set one";
  else if ((cert_file || cert_pem) && !key_file && !key_pem)
    problem = f + ".certificate_file/certificate_pem needs a private key (" + f +
              ".private_key_file or " + f + ".private_key_pem)";
  else if ((key_file || key_pem) && !cert_file && !cert_pem)
    problem = f + ".private_key_file/private_key_pem needs a client certificate (" + f +
              ".certificate_file or " + f + ".certificate_pem)";
  else if (!tls.private_key_password.empty() && !key_file && !key_pem)
    problem = f + ".private_key_password is set without a private key";
  if (problem.empty()) return {};
  if (diag != nullptr) diag->client_message = std::string(prefix) + problem;
  return make_error_code(errc::invalid_config);
}

}  // namespace detail

error_code http_options::validate(diagnostics* diag, const char* prefix) const {
  checker c(diag);
  c.require(connect_timeout.count() > 0, prefix, "connect_timeout must be positive")
      .require(request_timeout.count() > 0, prefix, "request_timeout must be positive")
      .require(max_idle_connection.count() >= 0, prefix, "max_idle_connection is negative")
      .require(max_response_bytes == 0 || max_response_bytes >= 256, prefix,
               "max_response_bytes must be 0 (the default) or at least 256");
  if (!c.failed()) c.adopt(detail::validate_client_certificate(tls, "tls", prefix, diag));
  // Proxy: the URL (an explicit one; the environment's is checked when it is read) and the
  // credentials.
  const bool has_proxy = !proxy.url.empty() || proxy.from_environment;
  c.require(proxy.username.find(':') == std::string::npos, prefix,
            "proxy.username must not contain ':' (RFC 7617)")
      .require(proxy.password.empty() || !proxy.username.empty(), prefix,
               "proxy.password is set without proxy.username")
      .require(proxy.username.empty() || has_proxy, prefix,
               "proxy.username is set without proxy.url or proxy.from_environment");
  // The exclusions as configured (the environment's NO_PROXY, like curl, is taken as it is):
  // a mistyped one would send its targets through the proxy without a word.
  for (std::size_t i = 0; i < proxy.no_proxy.size() && !c.failed(); ++i) {
    std::string bad;
    if (const char* why = detail::no_proxy_error(proxy.no_proxy[i], bad)) {
      const std::string what =
          "proxy.no_proxy[" + std::to_string(i) + "]: '" + bad + "' is not a pattern: " + why;
      c.require(false, prefix, what.c_str());
    }
  }
  if (!c.failed() && !proxy.url.empty()) {
    // The parse the connections use, so that what passes here is what they accept.
    diagnostics url_diag;
    detail::proxy_route route;
    if (auto ec = detail::parse_proxy_url(proxy.url, std::string(prefix) + "proxy.url", false,
                                          route, url_diag)) {
      if (diag != nullptr) *diag = std::move(url_diag);
      return ec;
    }
  }
  return c.result();
}

error_code client_config::validate(diagnostics* diag) const {
  checker c(diag);
  diagnostics url_diag;
  protocol::endpoint ep;
  if (auto ec = protocol::parse_token_url(token_url, http.allow_insecure_http, ep, url_diag)) {
    if (diag != nullptr) *diag = std::move(url_diag);
    return ec;
  }
  c.require(!client_id.empty(), "", "client_id is empty")
      .require(grant == grant_type::refresh_token || grant == grant_type::client_credentials, "",
               "grant is not a grant_type")
      .require(dialect == nxsys::auth::dialect::nxsys || dialect == nxsys::auth::dialect::rfc6749,
               "", "dialect is not a dialect")
      .require(authentication == client_authentication::request_body ||
                   authentication == client_authentication::http_basic,
               "", "authentication is not a client_authentication")
      // With a store, the refresh token may come from it (a restarted process).
      .require(
          grant != grant_type::refresh_token || !refresh_token.empty() || storage.store != nullptr,
          "", "refresh_token is empty and no storage.store is set")
      .require(grant != grant_type::client_credentials || refresh_token.empty(), "",
               "refresh_token must be empty with grant client_credentials (it has none)")
      .require(grant != grant_type::client_credentials || !client_secret.empty(), "",
               "client_secret is empty: grant client_credentials needs a confidential client")
      .require(refresh.leeway.count() >= 0, "refresh.", "leeway is negative")
      .require(fraction(refresh.leeway_max_fraction), "refresh.",
               "leeway_max_fraction must be in [0, 1)")
      .require(refresh.default_lifetime.count() > 0, "refresh.",
               "default_lifetime must be positive")
      .require(fraction(refresh.ahead_fraction), "refresh.", "ahead_fraction must be in [0, 1)")
      .require(refresh.min_retry_spacing.count() >= 0, "refresh.", "min_retry_spacing is negative")
      .require(refresh.retry.max_attempts >= 1, "refresh.", "retry.max_attempts must be at least 1")
      .require(refresh.retry.initial_backoff.count() >= 0 &&
                   refresh.retry.max_backoff >= refresh.retry.initial_backoff,
               "refresh.", "retry back-offs must satisfy 0 <= initial_backoff <= max_backoff")
      .require(refresh.deadline.count() > 0, "refresh.", "deadline must be positive")
      .require(storage.retry_interval.count() > 0, "storage.", "retry_interval must be positive");
  if (!c.failed()) c.adopt(http.validate(diag));
  return c.result();
}

error_code session_config::validate(diagnostics* diag) const {
  diagnostics url_diag;
  protocol::endpoint ep;
  if (auto ec = protocol::parse_url(base_url, "base_url", "bearer token", http.allow_insecure_http,
                                    ep, url_diag)) {
    if (diag != nullptr) *diag = std::move(url_diag);
    return ec;
  }
  checker c(diag);
  c.require(ep.target.find('?') == std::string::npos, "", "base_url must not hold a query")
      .require(max_connections >= 1, "", "max_connections must be at least 1");
  if (!c.failed()) c.adopt(http.validate(diag));
  return c.result();
}

}  // namespace nxsys::auth
