// SPDX-License-Identifier: BSL-1.0
// The host and port of a parsed URL, read one way for every URL the library connects to (the
// token endpoint, the API's base URL, a proxy). Internal.
#ifndef NXSYS_AUTH_LIB_URL_AUTHORITY_HPP
#define NXSYS_AUTH_LIB_URL_AUTHORITY_HPP

#include <boost/url/url_view_base.hpp>

#include <string>
#include <string_view>

namespace nxsys::auth::detail {

struct url_authority {
  std::string host;  ///< without brackets for IPv6
  std::string port;  ///< decimal
  bool host_is_ip = false;
  bool loopback = false;  ///< a loopback address, or the name "localhost"
};

/// Reads the host and port of `u` into `out`; `default_port` when the URL names none.
/// @return nullptr, or what is wrong ("has no host", ...), to follow the URL's name in a
///   message (the URL itself is never quoted: it may carry credentials)
const char* read_authority(const boost::urls::url_view_base& u, std::string_view default_port,
                           url_authority& out);

}  // namespace nxsys::auth::detail

#endif
