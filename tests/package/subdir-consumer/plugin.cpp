// SPDX-License-Identifier: BSL-1.0
// A shared library using nxsys-auth (tests/package/subdir-consumer): links only if the static
// library was compiled as position-independent code.
#include <nxsys/auth.hpp>

#include <boost/asio/io_context.hpp>

#include <string>

std::string nxsys_auth_consumer_plugin(boost::asio::io_context& ctx, std::string base) {
  nxsys::auth::client_config cfg;
  cfg.token_url = nxsys::auth::make_token_url(base);
  nxsys::auth::client client(ctx.get_executor(), cfg);
  return std::to_string(client.stats().refreshes_started) + " " + cfg.token_url;
}
