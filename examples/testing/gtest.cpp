// SPDX-License-Identifier: BSL-1.0
// Testing code that uses nxsys::auth::client against the mock token server of
// nxsys::auth_testing, with GoogleTest. Link nxsys::auth, nxsys::auth_testing and
// GTest::gtest_main.
#include <nxsys/auth.hpp>
#include <nxsys/auth/testing/mock_server.hpp>

#include <boost/asio.hpp>

#include <chrono>
#include <exception>
#include <gtest/gtest.h>

namespace asio = boost::asio;
namespace auth = nxsys::auth;
using nxsys::auth::testing::mock_server;

// A mock server on threads of its own, rotating refresh tokens as many servers do, and a
// client on the test's io_context with the credentials mock_server_options has by default.
class ClientAgainstMockServer : public ::testing::Test {
 protected:
  static auth::client_config config_for(const mock_server& server) {
    auth::client_config cfg;
    cfg.token_url = server.token_url();
    cfg.client_id = "test-client";
    cfg.client_secret = "test-secret";
    cfg.refresh_token = "refresh-0";
    return cfg;
  }

  // Runs a test body written as a coroutine; what it throws fails the test.
  template <class Body>
  void run(Body body) {
    std::exception_ptr failure;
    asio::co_spawn(ctx_, body, [&](std::exception_ptr e) { failure = e; });
    ctx_.run_for(std::chrono::seconds(30));
    if (failure) std::rethrow_exception(failure);
  }

  mock_server server_{{.rotate = true}};
  asio::io_context ctx_;
  auth::client client_{ctx_.get_executor(), config_for(server_)};
};

TEST_F(ClientAgainstMockServer, FreshTokenComesFromTheCache) {
  run([&]() -> asio::awaitable<void> {
    auth::access_token first = co_await client_.token();
    auth::access_token again = co_await client_.token();
    EXPECT_EQ(first.value(), server_.last_access_token());
    EXPECT_EQ(again.value(), first.value());
  });
  EXPECT_EQ(server_.stats().refreshes, 1u);
}

TEST_F(ClientAgainstMockServer, RejectedTokenIsRefreshedWithTheRotatedRefreshToken) {
  run([&]() -> asio::awaitable<void> {
    auth::access_token first = co_await client_.token();
    client_.invalidate(first);  // as after a 401 from the API
    auth::access_token second = co_await client_.token();
    EXPECT_NE(second.value(), first.value());
  });
  EXPECT_EQ(server_.stats().refreshes, 2u);
  EXPECT_EQ(server_.presented_refresh_tokens().back(), "refresh-1");
}

TEST_F(ClientAgainstMockServer, RevokedRefreshTokenIsInvalidGrant) {
  server_.fail_next({.status = 400, .body = R"({"error":"invalid_grant"})"});
  run([&]() -> asio::awaitable<void> {
    try {
      co_await client_.token();
      ADD_FAILURE() << "token() succeeded";
    } catch (const auth::error_with_diagnostics& e) {
      EXPECT_EQ(e.code(), auth::errc::invalid_grant);
    }
  });
}
