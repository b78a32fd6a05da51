// SPDX-License-Identifier: BSL-1.0
// redis_store's transport options: checks, and the SSL context built the way the HTTP side
// builds its own (make_ssl_context), so that one tls_options means the same in both places.
#include "tls.hpp"

#include "../connection.hpp"  // make_ssl_context, validate_client_certificate (lib/)
#include "sentinel.hpp"       // parse_host_port

#include <boost/asio/ip/address.hpp>

#include <algorithm>
#include <cctype>

namespace nxsys::auth::redis {
namespace asio = boost::asio;
using boost::system::error_code;

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// The first field of `t` that differs from its default, named "<name>.<field>", or "".
std::string tls_field_set(const tls_options& t, const std::string& name) {
  const char* field = nullptr;
  if (!t.verify_peer)
    field = "verify_peer";
  else if (!t.ca_file.empty())
    field = "ca_file";
  else if (!t.ca_dir.empty())
    field = "ca_dir";
  else if (!t.certificate_file.empty())
    field = "certificate_file";
  else if (!t.private_key_file.empty())
    field = "private_key_file";
  else if (!t.certificate_pem.empty())
    field = "certificate_pem";
  else if (!t.private_key_pem.empty())
    field = "private_key_pem";
  else if (!t.private_key_password.empty())
    field = "private_key_password";
  else if (t.configure_context)
    field = "configure_context";
  return field != nullptr ? name + "." + field : std::string();
}

error_code invalid(diagnostics* diag, std::string message) {
  if (diag != nullptr) diag->client_message = "redis_store: " + std::move(message);
  return make_error_code(errc::invalid_config);
}

// The SSL context of `t`; a file that cannot be used throws, naming the field.
std::shared_ptr<asio::ssl::context> context_of(const tls_options& t, std::string_view field) {
  try {
    return std::make_shared<asio::ssl::context>(detail::make_ssl_context(t, field));
  } catch (const error_with_diagnostics& e) {
    diagnostics d = e.get_diagnostics();
    d.client_message = "redis_store: " + std::move(d.client_message);
    throw error_with_diagnostics(e.code(), std::move(d));
  }
}

}  // namespace

bool is_loopback(std::string_view host) {
  if (iequals(host, "localhost")) return true;
  error_code ec;
  const auto a = asio::ip::make_address(std::string(host), ec);
  return !ec && a.is_loopback();
}

error_code check_transport(const redis_store_options& o, diagnostics* diag) {
  // `tls` serves the master with use_tls, and the sentinels when they have no sentinel_tls.
  const bool tls_used = o.use_tls || (o.sentinel_use_tls && !o.sentinel_tls);
  if (!tls_used) {
    if (const auto field = tls_field_set(o.tls, "tls"); !field.empty())
      return invalid(diag, field + " is set but use_tls is false: set use_tls to connect over TLS" +
                               (o.sentinel_use_tls ? " (the sentinels use sentinel_tls)" : ""));
  }
  if (!o.use_tls) {
    if (!o.tls_server_name.empty())
      return invalid(
          diag, "tls_server_name is set but use_tls is false: set use_tls to connect over TLS");
    if (!o.allow_plaintext && !is_loopback(o.host))
      return invalid(diag, "plain TCP to " + o.host +
                               " (not a loopback address) would send the password and the "
                               "tokens unencrypted: set use_tls, or allow_plaintext to accept it");
  } else if (o.tls_server_name.find('\0') != std::string::npos) {
    return invalid(diag, "tls_server_name contains a NUL byte");
  }
  if (tls_used) {
    if (auto ec = detail::validate_client_certificate(o.tls, "tls", "redis_store: ", diag))
      return ec;
  }

  if (!o.sentinel_use_tls) {
    if (o.sentinel_tls)
      return invalid(diag,
                     "sentinel_tls is set but sentinel_use_tls is false: set sentinel_use_tls to "
                     "connect to the sentinels over TLS");
    if (!o.sentinel_tls_server_name.empty())
      return invalid(diag,
                     "sentinel_tls_server_name is set but sentinel_use_tls is false: set "
                     "sentinel_use_tls to connect to the sentinels over TLS");
    if (o.allow_plaintext) return {};
    for (const auto& s : o.sentinels) {
      std::string host, port;
      if (parse_host_port(s, host, port) && is_loopback(host)) continue;
      return invalid(diag, "sentinels: " + s +
                               " is not a loopback address and would be asked over plain TCP (the "
                               "sentinel password and the master's address unencrypted): set "
                               "sentinel_use_tls, or allow_plaintext to accept it");
    }
    return {};
  }
  if (o.sentinels.empty()) return invalid(diag, "sentinel_use_tls is set but sentinels is empty");
  if (o.sentinel_tls_server_name.find('\0') != std::string::npos)
    return invalid(diag, "sentinel_tls_server_name contains a NUL byte");
  if (o.sentinel_tls)
    return detail::validate_client_certificate(*o.sentinel_tls, "sentinel_tls",
                                               "redis_store: ", diag);
  return {};
}

tls_settings make_tls_settings(const redis_store_options& o) {
  tls_settings out;
  if (!o.use_tls) return out;
  out.context = context_of(o.tls, "tls");
  out.server_name = o.tls_server_name;
  out.verify_peer = o.tls.verify_peer;
  return out;
}

tls_settings make_sentinel_tls_settings(const redis_store_options& o, const tls_settings& master) {
  tls_settings out;
  out.server_name_field = "sentinel_tls_server_name";
  if (!o.sentinel_use_tls) return out;
  if (o.sentinel_tls) {
    out.context = context_of(*o.sentinel_tls, "sentinel_tls");
    out.verify_peer = o.sentinel_tls->verify_peer;
    out.field = "sentinel_tls";
  } else {
    // One context for both: tls.configure_context runs once, as for one https client.
    out.context = master.context ? master.context : context_of(o.tls, "tls");
    out.verify_peer = o.tls.verify_peer;
  }
  out.server_name = o.sentinel_tls_server_name;
  return out;
}

}  // namespace nxsys::auth::redis
