// SPDX-License-Identifier: BSL-1.0
// Failures against a real server: each maps to its typed error with the server's words, leaks
// no secret, and leaves the client working.
#include "helpers.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/test/unit_test.hpp>

namespace asio = boost::asio;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;
using boost::system::error_code;

namespace {

void check_secrets_absent(const attempt& a, const na::client_config& cfg) {
  for (const auto* text :
       {&a.what, &a.diag.server_description, &a.diag.client_message, &a.diag.server_error}) {
    BOOST_TEST(text->find(cfg.client_secret.view()) == std::string::npos);
    BOOST_TEST(text->find(cfg.refresh_token.view()) == std::string::npos);
  }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(client_errors)

BOOST_AUTO_TEST_CASE(wrong_secret_is_invalid_client_with_the_servers_words) {
  mock_server server;
  asio::io_context ctx;
  auto cfg = config_for(server);
  cfg.client_secret = "not-the-secret-xyz";
  na::client c(ctx.get_executor(), cfg);
  auto a = try_token(ctx, c);
  BOOST_TEST(a.ec == na::errc::invalid_client);
  BOOST_TEST(a.ec.category().name() == std::string("nxsys.auth.oauth"));
  BOOST_TEST(a.diag.http_status == 401);
  BOOST_TEST(a.diag.server_error == "invalid_client");
  BOOST_TEST(!a.diag.server_description.empty());
  BOOST_TEST(a.what.find("invalid_client") != std::string::npos);
  BOOST_TEST(a.what.find("401") != std::string::npos);
  check_secrets_absent(a, cfg);
  BOOST_TEST(c.stats().refreshes_failed == 1u);
}

BOOST_AUTO_TEST_CASE(unknown_refresh_token_is_invalid_grant) {
  mock_server server;
  asio::io_context ctx;
  auto cfg = config_for(server);
  cfg.refresh_token = "stale-refresh-token-123";
  na::client c(ctx.get_executor(), cfg);
  auto a = try_token(ctx, c);
  BOOST_TEST(a.ec == na::errc::invalid_grant);
  BOOST_TEST(a.diag.http_status == 400);
  check_secrets_absent(a, cfg);
}

BOOST_AUTO_TEST_CASE(a_failure_is_not_cached_the_next_call_tries_again) {
  mock_server server;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server));
  server.fail_next({500, "<html><body>Internal Server Error</body></html>", "text/html", {}});
  auto a = try_token(ctx, c);
  BOOST_TEST(a.ec == na::errc::server_error);
  BOOST_TEST(a.diag.http_status == 500);
  auto b = try_token(ctx, c);
  BOOST_TEST(!b.ec);
  BOOST_TEST(b.token.value() == server.last_access_token());
  BOOST_TEST(server.stats().requests == 2u);
}

BOOST_AUTO_TEST_CASE(a_200_without_access_token_is_malformed) {
  mock_server server;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server));
  server.fail_next({200, R"({"tokenType":"Bearer","expiresIn":3600})", "application/json", {}});
  BOOST_TEST(try_token(ctx, c).ec == na::errc::malformed_response);
  server.fail_next({200, "not json at all", "application/json", {}});
  BOOST_TEST(try_token(ctx, c).ec == na::errc::malformed_response);
  BOOST_TEST(!try_token(ctx, c).ec);
}

BOOST_AUTO_TEST_CASE(redirects_are_not_followed) {
  mock_server server;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server));
  server.fail_next({301, "", "text/plain", {{"Location", server.token_url() + "2"}}});
  auto a = try_token(ctx, c);
  BOOST_TEST(a.ec == na::errc::unexpected_status);
  BOOST_TEST(a.diag.http_status == 301);
  BOOST_TEST(server.stats().requests == 1u);
}

BOOST_AUTO_TEST_CASE(an_oversized_answer_is_refused) {
  mock_server server;
  asio::io_context ctx;
  auto cfg = config_for(server);
  cfg.http.max_response_bytes = 4096;
  na::client c(ctx.get_executor(), cfg);
  server.fail_next(
      {200, R"({"accessToken":")" + std::string(100'000, 'a') + R"("})", "application/json", {}});
  BOOST_TEST(try_token(ctx, c).ec == na::errc::response_too_large);
  BOOST_TEST(!try_token(ctx, c).ec);
}

BOOST_AUTO_TEST_CASE(connection_refused_is_a_connection_error) {
  std::uint16_t port;
  {
    asio::io_context tmp;
    asio::ip::tcp::acceptor a(tmp, {asio::ip::make_address("127.0.0.1"), 0});
    port = a.local_endpoint().port();
  }  // closed: nothing listens there now
  asio::io_context ctx;
  na::client_config cfg;
  cfg.token_url = "http://127.0.0.1:" + std::to_string(port) + "/nxsys/oauth/token";
  cfg.client_id = "id";
  cfg.client_secret = "secret-value";
  cfg.refresh_token = "refresh-value";
  na::client c(ctx.get_executor(), cfg);
  auto a = try_token(ctx, c);
  BOOST_TEST(a.ec == na::errc::connection);
  BOOST_TEST(a.ec.category().name() == std::string("nxsys.auth.client"));
  BOOST_TEST(!a.diag.client_message.empty());
  check_secrets_absent(a, cfg);
}

BOOST_AUTO_TEST_CASE(a_slow_server_times_out_and_the_client_recovers) {
  mock_server server;
  asio::io_context ctx;
  auto cfg = config_for(server);
  cfg.http.request_timeout = std::chrono::milliseconds(200);
  na::client c(ctx.get_executor(), cfg);
  server.set_latency(std::chrono::milliseconds(3000));
  auto a = try_token(ctx, c);
  BOOST_TEST(a.ec == na::errc::timeout);
  server.set_latency(std::chrono::milliseconds(0));
  // The timed-out refresh may have been processed: without rotation the old token still works.
  auto b = try_token(ctx, c);
  BOOST_TEST(!b.ec);
}

BOOST_AUTO_TEST_CASE(a_server_echoing_secrets_cannot_leak_them) {
  mock_server server;
  asio::io_context ctx;
  auto cfg = config_for(server);
  na::client c(ctx.get_executor(), cfg);
  server.fail_next({400,
                    R"({"error":"invalid_grant","error_description":"token )" +
                        std::string(cfg.refresh_token.view()) + " with secret " +
                        std::string(cfg.client_secret.view()) + R"( rejected"})",
                    "application/json",
                    {}});
  auto a = try_token(ctx, c);
  BOOST_TEST(a.ec == na::errc::invalid_grant);
  BOOST_TEST(a.diag.server_description.find("[redacted]") != std::string::npos);
  check_secrets_absent(a, cfg);
}

BOOST_AUTO_TEST_CASE(bad_configurations_are_refused_at_construction) {
  asio::io_context ctx;
  auto make = [&](std::function<void(na::client_config&)> edit) -> error_code {
    na::client_config cfg;
    cfg.token_url = "https://auth.example.com/nxsys/oauth/token";
    cfg.client_id = "id";
    cfg.client_secret = "secret";
    cfg.refresh_token = "rt";
    edit(cfg);
    try {
      na::client c(ctx.get_executor(), cfg);
    } catch (const na::error_with_diagnostics& e) {
      BOOST_TEST(!e.get_diagnostics().client_message.empty());
      return e.code();
    }
    return {};
  };
  BOOST_TEST(!make([](auto&) {}));
  BOOST_TEST(make([](auto& c) { c.token_url = "http://auth.example.com/t"; }) ==
             na::errc::invalid_config);
  BOOST_TEST(!make([](auto& c) {
    c.token_url = "http://auth.example.com/t";
    c.http.allow_insecure_http = true;
  }));
  BOOST_TEST(make([](auto& c) { c.token_url = "ftp://x/y"; }) == na::errc::invalid_config);
  BOOST_TEST(make([](auto& c) { c.token_url = "not a url"; }) == na::errc::invalid_config);
  BOOST_TEST(make([](auto& c) { c.refresh_token.wipe(); }) == na::errc::invalid_config);
  BOOST_TEST(make([](auto& c) { c.client_id.clear(); }) == na::errc::invalid_config);
  BOOST_TEST(make([](auto& c) { c.refresh.leeway_max_fraction = 1.5; }) ==
             na::errc::invalid_config);
  BOOST_TEST(make([](auto& c) { c.http.tls.ca_file = "/nonexistent/ca.pem"; }) ==
             na::errc::invalid_config);
}

BOOST_AUTO_TEST_SUITE_END()
