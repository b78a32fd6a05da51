// SPDX-License-Identifier: BSL-1.0
/// @file
/// nxsys-auth: keeps Nxsys OAuth access tokens valid, one refresh at a time.
///   nxsys::auth::access_token t = co_await client.token();
///
/// Includes every public header but the Redis store's (`<nxsys/auth/redis_store.hpp>`, target
/// nxsys::auth_redis) and the mock server's (`<nxsys/auth/testing/mock_server.hpp>`).
#ifndef NXSYS_AUTH_HPP
#define NXSYS_AUTH_HPP

// The headers use coroutines. Compilers still default to C++17, and the pkg-config flags leave
// the standard to the application: one clear message instead of a page of errors.
#if (defined(_MSVC_LANG) ? _MSVC_LANG : __cplusplus) < 202002L
#error "nxsys-auth needs C++20 (coroutines): compile with -std=c++20 or later"
#endif

#include <nxsys/auth/access_token.hpp>
#include <nxsys/auth/client.hpp>
#include <nxsys/auth/config.hpp>
#include <nxsys/auth/error.hpp>
#include <nxsys/auth/http_options.hpp>
#include <nxsys/auth/protocol.hpp>
#include <nxsys/auth/secret.hpp>
#include <nxsys/auth/session.hpp>
#include <nxsys/auth/stats.hpp>
#include <nxsys/auth/stored_tokens.hpp>
#include <nxsys/auth/token_store.hpp>
#include <nxsys/auth/version.hpp>

/// @namespace nxsys
/// Client libraries for the Nxsys API.

/// @namespace nxsys::auth
/// OAuth access tokens for the Nxsys API: client (the tokens), session (authorized requests),
/// the token stores, errors and configuration.

#endif
