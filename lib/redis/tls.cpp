// SPDX-License-Identifier: BSL-1.0
// redis_store's transport options: checks, and the SSL context built the way the HTTP side
// builds its own (make_ssl_context), so that one tls_options means the same in both places.
#include "tls.hpp"

#include "../connection.hpp"  // nxsys::auth::detail::make_ssl_context (lib/, not lib/redis/)

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

// The first field of `tls` (or tls_server_name) that differs from its default, or nullptr.
const char* tls_field_set(const redis_store_options& o) {
  const tls_options& t = o.tls;
  if (!t.verify_peer) return "tls.verify_peer";
  if (!t.ca_file.empty()) return "tls.ca_file";
  if (!t.ca_dir.empty()) return "tls.ca_dir";
  if (!t.certificate_file.empty()) return "tls.certificate_file";
  if (!t.private_key_file.empty()) return "tls.private_key_file";
  if (!t.certificate_pem.empty()) return "tls.certificate_pem";
  if (!t.private_key_pem.empty()) return "tls.private_key_pem";
  if (!t.private_key_password.empty()) return "tls.private_key_password";
  if (t.configure_context) return "tls.configure_context";
  if (!o.tls_server_name.empty()) return "tls_server_name";
  return nullptr;
}

error_code invalid(diagnostics* diag, std::string message) {
  if (diag != nullptr) diag->client_message = "redis_store: " + std::move(message);
  return make_error_code(errc::invalid_config);
}

}  // namespace

bool is_loopback(std::string_view host) {
  if (iequals(host, "localhost")) return true;
  error_code ec;
  const auto a = asio::ip::make_address(std::string(host), ec);
  return !ec && a.is_loopback();
}

error_code check_transport(const redis_store_options& o, diagnostics* diag) {
  if (!o.use_tls) {
    if (const char* field = tls_field_set(o))
      return invalid(diag, std::string(field) +
                               " is set but use_tls is false: set use_tls to connect over TLS");
    if (!o.allow_plaintext && !is_loopback(o.host))
      return invalid(diag, "plain TCP to " + o.host +
                               " (not a loopback address) would send the password and the "
                               "tokens unencrypted: set use_tls, or allow_plaintext to accept it");
    return {};
  }
  if (o.tls_server_name.find('\0') != std::string::npos)
    return invalid(diag, "tls_server_name contains a NUL byte");
  // The client certificate's fields pair up as for HTTP: the same checks, the same words.
  http_options h;
  h.tls = o.tls;
  diagnostics d;
  if (auto ec = h.validate(&d, "redis_store: ")) {
    if (diag != nullptr) *diag = std::move(d);
    return ec;
  }
  return {};
}

tls_settings make_tls_settings(const redis_store_options& o) {
  tls_settings out;
  if (!o.use_tls) return out;
  try {
    out.context = std::make_shared<asio::ssl::context>(detail::make_ssl_context(o.tls));
  } catch (const error_with_diagnostics& e) {
    diagnostics d = e.get_diagnostics();
    d.client_message = "redis_store: " + d.client_message;
    throw error_with_diagnostics(e.code(), std::move(d));
  }
  out.server_name = o.tls_server_name;
  out.verify_peer = o.tls.verify_peer;
  return out;
}

}  // namespace nxsys::auth::redis
