// SPDX-License-Identifier: BSL-1.0
// The client over TLS against the mock server: verification on by default, SNI and host-name
// checks, and the typed tls error when trust or the name does not match.
#include "helpers.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/test/unit_test.hpp>

namespace asio = boost::asio;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;
using boost::system::error_code;

namespace {

error_code fetch(na::client_config cfg, std::string* value = nullptr) {
  asio::io_context ctx;
  na::client c(ctx.get_executor(), std::move(cfg));
  error_code result;
  c.async_token([&](error_code ec, na::access_token t) {
    result = ec;
    if (value) *value = t.value();
  });
  BOOST_REQUIRE(run_bounded(ctx, 1));
  return result;
}

mock_server_options tls_opts(const std::string& cert = "server") {
  mock_server_options o;
  o.tls = true;
  o.cert_chain_file = test_data_dir() + "/" + cert + ".pem";
  o.private_key_file = test_data_dir() + "/" + cert + ".key";
  return o;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(tls)

BOOST_AUTO_TEST_CASE(https_with_the_test_ca_works_and_reuses_the_connection) {
  mock_server server(tls_opts());
  BOOST_TEST(server.token_url().rfind("https://127.0.0.1:", 0) == 0u);
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server));
  for (int i = 0; i < 3; ++i) {
    bool ok = false;
    c.async_token([&](error_code ec, na::access_token t) {
      ok = !ec && t.value() == server.last_access_token();
    });
    ctx.restart();
    BOOST_REQUIRE(run_bounded(ctx, 1));
    BOOST_TEST(ok);
    c.invalidate();
  }
  BOOST_TEST(server.stats().refreshes == 3u);
  BOOST_TEST(server.stats().connections == 1u);
}

BOOST_AUTO_TEST_CASE(a_host_name_url_uses_sni_and_name_verification) {
  mock_server server(tls_opts());
  auto cfg = config_for(server);
  cfg.token_url = "https://localhost:" + std::to_string(server.port()) + "/nxsys/oauth/token";
  BOOST_TEST(!fetch(cfg));
}

BOOST_AUTO_TEST_CASE(an_untrusted_ca_is_a_tls_error) {
  mock_server server(tls_opts());
  auto cfg = config_for(server);
  cfg.http.tls.ca_file.clear();  // the system's CAs do not know the test CA
  auto ec = fetch(cfg);
  BOOST_TEST(ec == na::errc::tls);
  BOOST_TEST(server.stats().requests == 0u);  // nothing was sent: the secret stayed here
}

BOOST_AUTO_TEST_CASE(a_certificate_for_another_host_is_a_tls_error) {
  mock_server server(tls_opts("wrong-host"));
  BOOST_TEST(fetch(config_for(server)) == na::errc::tls);
  BOOST_TEST(server.stats().requests == 0u);
}

BOOST_AUTO_TEST_CASE(a_self_signed_certificate_is_a_tls_error) {
  mock_server server(tls_opts("self-signed"));
  BOOST_TEST(fetch(config_for(server)) == na::errc::tls);
}

BOOST_AUTO_TEST_CASE(verification_can_be_switched_off_explicitly) {
  mock_server server(tls_opts("self-signed"));
  auto cfg = config_for(server);
  cfg.http.tls.verify_peer = false;
  BOOST_TEST(!fetch(cfg));
}

BOOST_AUTO_TEST_CASE(plain_http_to_a_tls_server_fails_cleanly) {
  mock_server server(tls_opts());
  auto cfg = config_for(server);
  cfg.token_url = "http://127.0.0.1:" + std::to_string(server.port()) + "/nxsys/oauth/token";
  cfg.http.request_timeout = std::chrono::seconds(2);
  auto ec = fetch(cfg);
  BOOST_TEST((ec == na::errc::connection || ec == na::errc::malformed_response ||
              ec == na::errc::timeout));
}

BOOST_AUTO_TEST_SUITE_END()
