// SPDX-License-Identifier: BSL-1.0
// The consumer's use of nxsys::auth_testing (installed package only, tests/package/run.sh
// find_package): the installed mock server serves TLS with its built-in certificate, without
// the source tree, and a client trusts it through ca_file().
#include <nxsys/auth.hpp>
#include <nxsys/auth/testing/mock_server.hpp>

#include <boost/asio.hpp>

#include <chrono>
#include <exception>
#include <iostream>

namespace asio = boost::asio;
namespace auth = nxsys::auth;
namespace testing = nxsys::auth::testing;

bool token_from_the_mock_server() {
  testing::mock_server server({.tls = true, .rotate = true});
  asio::io_context ctx;
  auth::client_config cfg;
  cfg.token_url = server.token_url();
  cfg.client_id = "test-client";
  cfg.client_secret = "test-secret";
  cfg.refresh_token = "refresh-0";
  cfg.http.tls.ca_file = server.ca_file();
  auth::client client(ctx.get_executor(), cfg);

  std::string error;
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        auto first = co_await client.token();
        client.invalidate(first);
        auto second = co_await client.token();
        if (second.value() != server.last_access_token()) error = "not the server's token";
      },
      [&](std::exception_ptr e) {
        try {
          if (e) std::rethrow_exception(e);
        } catch (const std::exception& x) {
          error = x.what();
        }
      });
  ctx.run_for(std::chrono::seconds(30));
  const auto stats = server.stats();
  if (!error.empty() || stats.refreshes != 2 || server.current_refresh_token() != "refresh-2") {
    std::cerr << "mock server: " << (error.empty() ? "wrong counts" : error) << ", "
              << testing::to_json(stats) << "\n";
    return false;
  }
  std::cout << "nxsys-auth consumer: the installed mock server at " << server.base_url()
            << " answered " << stats.refreshes << " refreshes\n";
  return true;
}
