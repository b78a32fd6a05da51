// SPDX-License-Identifier: BSL-1.0
// The JSON form of stored_tokens ({"format":"nxsys-auth-token-store","version":1,
// "refreshToken",...}), shared by file_store and redis_store. Internal.
#ifndef NXSYS_AUTH_LIB_STATE_CODEC_HPP
#define NXSYS_AUTH_LIB_STATE_CODEC_HPP

#include <nxsys/auth/error.hpp>
#include <nxsys/auth/token_store.hpp>

#include "secret_string.hpp"

#include <string>
#include <string_view>

namespace nxsys::auth::detail {

/// Parses a stored state; errc::store_corrupt, with `source` and the problem (never a value:
/// it may be a token) in diag, when it is not one.
boost::system::error_code parse_stored_tokens(std::string_view text, const std::string& source,
                                              stored_tokens& out, diagnostics& diag);

/// Whether a store may take `next`: it holds a refresh token (a chain), or, for the
/// client_credentials grant, which has none, an access token. errc::invalid_argument with the
/// reason in diag otherwise: an empty state would erase a chain. Every store checks this.
boost::system::error_code check_savable(const stored_tokens& next, diagnostics& diag);

/// The JSON text of `t`, built without leaving unwiped copies of its tokens behind (empty if
/// it cannot be serialized).
secret_string serialize_stored_tokens(const stored_tokens& t);

}  // namespace nxsys::auth::detail

#endif
