// SPDX-License-Identifier: BSL-1.0
// Testing code that uses nxsys::auth::client against the mock token server of
// nxsys::auth_testing, with Boost.Test. Link nxsys::auth and nxsys::auth_testing.
#define BOOST_TEST_MODULE nxsys_auth_testing_example
#include <nxsys/auth.hpp>
#include <nxsys/auth/testing/mock_server.hpp>

#include <boost/asio.hpp>
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <exception>

namespace asio = boost::asio;
namespace auth = nxsys::auth;
using nxsys::auth::testing::mock_server;

// A client for `server`, with the credentials mock_server_options has by default.
auth::client_config config_for(const mock_server& server) {
  auth::client_config cfg;
  cfg.token_url = server.token_url();
  cfg.client_id = "test-client";
  cfg.client_secret = "test-secret";
  cfg.refresh_token = "refresh-0";
  return cfg;
}

// A mock server on threads of its own, rotating refresh tokens as many servers do, and a
// client on the test's io_context.
struct with_mock_server {
  mock_server server{{.rotate = true}};
  asio::io_context ctx;
  auth::client client{ctx.get_executor(), config_for(server)};

  // Runs a test body written as a coroutine; what it throws fails the test.
  template <class Body>
  void run(Body body) {
    std::exception_ptr failure;
    asio::co_spawn(ctx, body, [&](std::exception_ptr e) { failure = e; });
    ctx.run_for(std::chrono::seconds(30));
    if (failure) std::rethrow_exception(failure);
  }
};

BOOST_FIXTURE_TEST_SUITE(client_against_the_mock_server, with_mock_server)

BOOST_AUTO_TEST_CASE(a_fresh_token_comes_from_the_cache) {
  run([&]() -> asio::awaitable<void> {
    auth::access_token first = co_await client.token();
    auth::access_token again = co_await client.token();
    BOOST_TEST(first.value() == server.last_access_token());
    BOOST_TEST(again.value() == first.value());
  });
  BOOST_TEST(server.stats().refreshes == 1u);
}

BOOST_AUTO_TEST_CASE(a_rejected_token_is_refreshed_with_the_rotated_refresh_token) {
  run([&]() -> asio::awaitable<void> {
    auth::access_token first = co_await client.token();
    client.invalidate(first);  // as after a 401 from the API
    auth::access_token second = co_await client.token();
    BOOST_TEST(second.value() != first.value());
  });
  BOOST_TEST(server.stats().refreshes == 2u);
  BOOST_TEST(server.presented_refresh_tokens().back() == "refresh-1");
}

BOOST_AUTO_TEST_CASE(a_revoked_refresh_token_is_invalid_grant) {
  server.fail_next({.status = 400, .body = R"({"error":"invalid_grant"})"});
  run([&]() -> asio::awaitable<void> {
    try {
      co_await client.token();
      BOOST_FAIL("token() succeeded");
    } catch (const auth::error_with_diagnostics& e) {
      BOOST_TEST((e.code() == auth::errc::invalid_grant));
    }
  });
}

BOOST_AUTO_TEST_SUITE_END()
