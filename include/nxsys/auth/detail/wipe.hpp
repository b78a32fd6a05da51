// SPDX-License-Identifier: BSL-1.0
// Overwriting credentials in memory: shared by the public types that hold them and the library.
#ifndef NXSYS_AUTH_DETAIL_WIPE_HPP
#define NXSYS_AUTH_DETAIL_WIPE_HPP

#include <string>

namespace nxsys::auth::detail {

/// Overwrites every byte `s` owns (its whole capacity, which covers the short-string buffer),
/// in a way the optimiser keeps, then empties it.
void wipe_all(std::string& s) noexcept;

}  // namespace nxsys::auth::detail

#endif
