// SPDX-License-Identifier: BSL-1.0
// Helpers for building a client_config.
#include <nxsys/auth/config.hpp>

namespace nxsys::auth {

std::string make_token_url(std::string_view base_api_url) {
  while (!base_api_url.empty() && base_api_url.back() == '/') base_api_url.remove_suffix(1);
  std::string url(base_api_url);
  url += "/nxsys/oauth/token";
  return url;
}

}  // namespace nxsys::auth
