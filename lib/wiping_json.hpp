// SPDX-License-Identifier: BSL-1.0
// JSON trees that hold tokens (token answers, stored states) in memory that is overwritten
// before it is freed. Internal.
#ifndef NXSYS_AUTH_LIB_WIPING_JSON_HPP
#define NXSYS_AUTH_LIB_WIPING_JSON_HPP

#include <boost/json/storage_ptr.hpp>
#include <boost/json/value.hpp>
#include <boost/system/error_code.hpp>

#include <string_view>

namespace nxsys::auth::detail {

/// A memory resource that overwrites every block it frees (process-wide, never destroyed).
boost::json::storage_ptr wiping_storage();

/// Parses one complete JSON text; the tree and the parser's own working memory both come from
/// wiping_storage().
boost::json::value parse_json_wiping(std::string_view text, boost::system::error_code& ec);

}  // namespace nxsys::auth::detail

#endif
