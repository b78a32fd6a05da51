// SPDX-License-Identifier: BSL-1.0
// The small helpers that fill a diagnostics and return the matching error code, shared by the
// library's sources (not installed). Messages never hold a secret: callers pass names and
// problems, never values.
#ifndef NXSYS_AUTH_LIB_DIAG_HPP
#define NXSYS_AUTH_LIB_DIAG_HPP

#include <nxsys/auth/error.hpp>

#include <string>
#include <string_view>
#include <system_error>

namespace nxsys::auth::detail {

/// `e`, with `message` as what we observed.
inline boost::system::error_code fail(errc e, diagnostics& diag, std::string message) {
  diag.client_message = std::move(message);
  return make_error_code(e);
}

/// store_corrupt: "`source`: `problem`" (a file's path, a Redis key).
inline boost::system::error_code corrupt(diagnostics& diag, const std::string& source,
                                         std::string_view problem) {
  return fail(errc::store_corrupt, diag, source + ": " + std::string(problem));
}

/// store_failed for an I/O call that set errno: "`what` `path`: <errno text>". The errno text
/// goes in the message: EACCES and ENOSPC call for different fixes.
inline boost::system::error_code io_failed(diagnostics& diag, std::string_view what,
                                           const std::string& path, int err) {
  return fail(errc::store_failed, diag,
              std::string(what) + " " + path + ": " + std::generic_category().message(err));
}

}  // namespace nxsys::auth::detail

#endif
