// SPDX-License-Identifier: BSL-1.0
#include "url_authority.hpp"

#include "text.hpp"

namespace nxsys::auth::detail {

const char* read_authority(const boost::urls::url_view_base& u, std::string_view default_port,
                           url_authority& out) {
  out.host = u.host_address();
  if (out.host.empty()) return "has no host";
  switch (u.host_type()) {
    case boost::urls::host_type::ipv4:
      out.host_is_ip = true;
      out.loopback = u.host_ipv4_address().is_loopback();
      break;
    case boost::urls::host_type::ipv6:
      out.host_is_ip = true;
      out.loopback = u.host_ipv6_address().is_loopback();
      break;
    case boost::urls::host_type::name:
      out.host_is_ip = false;
      out.loopback = iequals(out.host, "localhost");
      break;
    default:
      return "has an unsupported host";
  }
  if (u.has_port()) {
    if (u.port().empty() || u.port_number() == 0) return "has an invalid port";
    out.port = std::to_string(u.port_number());
  } else {
    out.port = default_port;
  }
  return nullptr;
}

}  // namespace nxsys::auth::detail
