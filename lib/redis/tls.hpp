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

/// The part of redis_store_options::validate() for use_tls, tls, tls_server_name,
/// sentinel_use_tls, sentinel_tls, sentinel_tls_server_name and allow_plaintext (the sentinels
/// are well-formed "host:port" by then): empty, or errc::invalid_config with the field named in
/// diag (may be null).
boost::system::error_code check_transport(const redis_store_options& o, diagnostics* diag);

/// The TLS of the store's connections to the master: nothing without use_tls, else an SSL
/// context read from the files of o.tls. Throws error_with_diagnostics(errc::invalid_config)
/// naming the field ("redis_store: cannot load tls.ca_file: ...").
tls_settings make_tls_settings(const redis_store_options& o);

/// The TLS of the connections to the sentinels: nothing without sentinel_use_tls; else an SSL
/// context read from o.sentinel_tls, or when that is not set `master`'s context (use_tls) or
/// one read from o.tls. Throws as make_tls_settings(), naming sentinel_tls's fields.
tls_settings make_sentinel_tls_settings(const redis_store_options& o, const tls_settings& master);

}  // namespace nxsys::auth::redis

#endif
