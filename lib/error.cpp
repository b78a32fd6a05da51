// SPDX-License-Identifier: BSL-1.0
// Error categories and the diagnostics-carrying exception.
#include <nxsys/auth/error.hpp>

#include <ostream>

namespace nxsys::auth {
namespace {

const char* name_of(errc e) noexcept {
  switch (e) {
    case errc::invalid_request:
      return "invalid_request";
    case errc::invalid_client:
      return "invalid_client";
    case errc::invalid_grant:
      return "invalid_grant";
    case errc::unauthorized_client:
      return "unauthorized_client";
    case errc::unsupported_grant_type:
      return "unsupported_grant_type";
    case errc::invalid_scope:
      return "invalid_scope";
    case errc::server_error:
      return "server_error";
    case errc::temporarily_unavailable:
      return "temporarily_unavailable";
    case errc::unrecognized_error:
      return "unrecognized OAuth error";
    case errc::malformed_response:
      return "malformed token response";
    case errc::timeout:
      return "timed out";
    case errc::tls:
      return "TLS failure";
    case errc::connection:
      return "connection failure";
    case errc::response_too_large:
      return "response too large";
    case errc::unexpected_status:
      return "unexpected HTTP status";
    case errc::invalid_config:
      return "invalid configuration";
    case errc::store_failed:
      return "token store failure";
    case errc::store_corrupt:
      return "token store corrupt";
    case errc::store_conflict:
      return "token store conflict";
    case errc::store_busy:
      return "token store busy";
    case errc::invalid_argument:
      return "invalid argument";
    case errc::internal:
      return "internal error";
    case errc::proxy_authentication:
      return "proxy authentication failed";
    case errc::store_updated:
      return "token store updated by another holder";
    case errc::lease_lost:
      return "token store lease lost";
  }
  return "unknown nxsys.auth error";
}

class oauth_category_impl final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "nxsys.auth.oauth"; }
  std::string message(int ev) const override { return name_of(static_cast<errc>(ev)); }
};

class client_category_impl final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "nxsys.auth.client"; }
  std::string message(int ev) const override { return name_of(static_cast<errc>(ev)); }
};

}  // namespace

const boost::system::error_category& oauth_category() noexcept {
  static const oauth_category_impl c;
  return c;
}

const boost::system::error_category& client_category() noexcept {
  static const client_category_impl c;
  return c;
}

boost::system::error_code make_error_code(errc e) noexcept {
  const int v = static_cast<int>(e);
  return {v, v < static_cast<int>(errc::malformed_response) ? oauth_category() : client_category()};
}

std::ostream& operator<<(std::ostream& os, errc e) {
  return os << name_of(e);
}

std::string describe(const boost::system::error_code& ec, const diagnostics& diag) {
  std::string s = ec.message();
  if (diag.http_status != 0) s += " (HTTP " + std::to_string(diag.http_status) + ")";
  if (!diag.client_message.empty()) s += ": " + diag.client_message;
  if (!diag.server_error.empty() || !diag.server_description.empty()) {
    s += "; server says: " + diag.server_error;
    if (!diag.server_description.empty()) {
      if (!diag.server_error.empty()) s += ": ";
      s += diag.server_description;
    }
  }
  return s;
}

error_with_diagnostics::error_with_diagnostics(const boost::system::error_code& ec,
                                               diagnostics diag)
    : boost::system::system_error(ec), diag_(std::move(diag)), what_(describe(ec, diag_)) {}

}  // namespace nxsys::auth
