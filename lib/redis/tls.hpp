// SPDX-License-Identifier: BSL-1.0
// The transport options of redis_store: their checks (TLS settings only with use_tls, plain TCP
// only to loopback unless allowed) and the SSL context they make. Internal to
// nxsys::auth_redis.
#ifndef NXSYS_AUTH_LIB_REDIS_TLS_HPP
#define NXSYS_AUTH_LIB_REDIS_TLS_HPP

#include <nxsys/auth/redis_store.hpp>

#include "connection.hpp"

#include <string_view>

namespace nxsys::auth::redis {

/// 127.0.0.0/8, ::1, or the name "localhost" (any case): a host that plain TCP may reach.
bool is_loopback(std::string_view host);

/// The part of redis_store_options::validate() for use_tls, tls, tls_server_name and
/// allow_plaintext: empty, or errc::invalid_config with the field named in diag (may be null).
boost::system::error_code check_transport(const redis_store_options& o, diagnostics* diag);

/// The TLS of the store's connections: nothing without use_tls, else an SSL context read from
/// the files of o.tls. Throws error_with_diagnostics(errc::invalid_config) naming the field
/// ("redis_store: cannot load tls.ca_file: ...").
tls_settings make_tls_settings(const redis_store_options& o);

}  // namespace nxsys::auth::redis

#endif
