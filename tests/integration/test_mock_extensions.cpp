// SPDX-License-Identifier: BSL-1.0
// The mock server's mutual TLS (require_client_certificate) and client_credentials grant,
// driven by hand (raw Beast): what a client with and without the certificate sees, the grant in
// both dialects and with HTTP Basic, and how both are counted.
#include <nxsys/auth/testing/connect_proxy.hpp>
#include <nxsys/auth/testing/mock_server.hpp>

#include "raw_http.hpp"

#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>

using namespace raw;
using nxsys::auth::testing::connect_proxy;
using nxsys::auth::testing::connect_proxy_options;
using nxsys::auth::testing::field_names;
using nxsys::auth::testing::mock_server;
using nxsys::auth::testing::mock_server_options;
using nxsys::auth::testing::scripted_failure;

namespace {

mock_server_options mtls() {
  mock_server_options opts;
  opts.tls = true;
  opts.require_client_certificate = true;
  return opts;
}

// One TLS connection to `server`: handshake, then a refresh. The reply's ec is what stopped it:
// with TLS 1.3 a refused client certificate shows only on the client's first read.
reply refresh_over_tls(const mock_server& server, ssl::context& ctx) {
  reply out;
  run([&]() -> asio::awaitable<void> {
    beast::ssl_stream<beast::tcp_stream> tls(co_await connect_to(server.port()), ctx);
    auto [ec] = co_await tls.async_handshake(ssl::stream_base::client, use_tuple);
    if (ec) {
      out.ec = ec;
      co_return;
    }
    beast::flat_buffer buffer;
    out = co_await exchange(tls, buffer, token_request(refresh_form()));
  });
  return out;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A token request on a connection of its own.
reply post_token(const mock_server& server, std::string form, std::string authorization = {}) {
  reply out;
  run([&]() -> asio::awaitable<void> {
    auto s = co_await connect_to(server.port());
    beast::flat_buffer buffer;
    out = co_await exchange(s, buffer, token_request(form, authorization));
  });
  BOOST_REQUIRE_MESSAGE(!out.ec, out.ec.message());
  return out;
}

const std::string camel_grant =
    "grantType=client_credentials&clientId=test-client&clientSecret=test-secret";
const std::string rfc_grant =
    "grant_type=client_credentials&client_id=test-client&client_secret=test-secret";

void check_error(const reply& r, http::status status, std::string_view error) {
  BOOST_TEST(r.res.result() == status);
  BOOST_TEST(json_body(r.res).at("error").as_string() == error);
  BOOST_TEST(r.res[http::field::cache_control] == "no-store");
}

}  // namespace

BOOST_AUTO_TEST_SUITE(mock_mutual_tls)

BOOST_AUTO_TEST_CASE(a_client_without_a_certificate_gets_no_answer) {
  mock_server server(mtls());
  auto ctx = tls_client();
  auto r = refresh_over_tls(server, ctx);
  BOOST_TEST(r.ec != error_code(), "the exchange must fail");
  BOOST_TEST(eventually([&] { return server.stats().tls_handshake_failures == 1; }));
  const auto st = server.stats();
  BOOST_TEST(st.tls_handshakes == 0u);
  BOOST_TEST(st.client_certificates == 0u);
  BOOST_TEST(st.requests == 0u);
  BOOST_TEST(st.refreshes == 0u);
}

BOOST_AUTO_TEST_CASE(the_built_in_client_certificate_files_are_accepted) {
  mock_server server(mtls());
  const auto cert = server.client_certificate_file();
  const auto key = server.client_key_file();
  BOOST_TEST(server.client_certificate_file() == cert);  // written once
  auto ctx = tls_client();
  ctx.use_certificate_chain_file(cert);
  ctx.use_private_key_file(key, ssl::context::pem);
  for (int i = 0; i < 2; ++i) {
    auto r = refresh_over_tls(server, ctx);
    BOOST_REQUIRE_MESSAGE(!r.ec, r.ec.message());
    BOOST_TEST(r.res.result_int() == 200);
    BOOST_TEST(json_body(r.res).at("accessToken").as_string() == server.last_access_token());
  }
  const auto st = server.stats();
  BOOST_TEST(st.tls_handshakes == 2u);
  BOOST_TEST(st.client_certificates == 2u);
  BOOST_TEST(st.tls_handshake_failures == 0u);
  BOOST_TEST(st.refreshes == 2u);
}

BOOST_AUTO_TEST_CASE(the_certificate_in_memory_is_the_one_of_the_files_and_of_testing_data) {
  mock_server server(mtls());
  BOOST_TEST(read_file(server.client_certificate_file()) == mock_server::client_certificate_pem());
  BOOST_TEST(read_file(server.client_key_file()) == mock_server::client_key_pem());
  BOOST_TEST(read_file(data_file("client.pem")) == mock_server::client_certificate_pem());
  BOOST_TEST(read_file(data_file("ca.pem")) == mock_server::ca_certificate_pem());
  BOOST_TEST(read_file(server.ca_file()) == mock_server::ca_certificate_pem());

  auto ctx = tls_client();
  const auto cert = mock_server::client_certificate_pem();
  const auto key = mock_server::client_key_pem();
  ctx.use_certificate_chain(asio::buffer(cert));
  ctx.use_private_key(asio::buffer(key), ssl::context::pem);
  auto r = refresh_over_tls(server, ctx);
  BOOST_REQUIRE_MESSAGE(!r.ec, r.ec.message());
  BOOST_TEST(r.res.result_int() == 200);
  BOOST_TEST(server.stats().client_certificates == 1u);
}

BOOST_AUTO_TEST_CASE(the_client_certificate_files_go_with_the_server) {
  std::string cert;
  std::string key;
  {
    mock_server server;  // plain HTTP: the files are there all the same
    cert = server.client_certificate_file();
    key = server.client_key_file();
    BOOST_TEST(std::filesystem::exists(cert));
    BOOST_TEST(std::filesystem::exists(key));
    BOOST_TEST(cert != key);
  }
  BOOST_TEST(!std::filesystem::exists(cert));
  BOOST_TEST(!std::filesystem::exists(key));
}

BOOST_AUTO_TEST_CASE(certificates_that_do_not_verify_as_a_client_are_refused) {
  mock_server server(mtls());
  // Signed by the test CA, but for servers only (extendedKeyUsage serverAuth).
  auto server_cert = tls_client();
  server_cert.use_certificate_chain_file(data_file("server.pem"));
  server_cert.use_private_key_file(data_file("server.key"), ssl::context::pem);
  BOOST_TEST(refresh_over_tls(server, server_cert).ec != error_code());
  // Signed by nobody the server trusts.
  auto self_signed = tls_client();
  self_signed.use_certificate_chain_file(data_file("self-signed.pem"));
  self_signed.use_private_key_file(data_file("self-signed.key"), ssl::context::pem);
  BOOST_TEST(refresh_over_tls(server, self_signed).ec != error_code());
  BOOST_TEST(eventually([&] { return server.stats().tls_handshake_failures == 2; }));
  BOOST_TEST(server.stats().client_certificates == 0u);
  BOOST_TEST(server.stats().refreshes == 0u);
}

BOOST_AUTO_TEST_CASE(client_ca_file_names_the_cas_clients_must_chain_to) {
  auto opts = mtls();
  opts.client_ca_file = data_file("ca.pem");
  mock_server trusting(opts);
  auto ctx = tls_client();
  ctx.use_certificate_chain_file(trusting.client_certificate_file());
  ctx.use_private_key_file(trusting.client_key_file(), ssl::context::pem);
  BOOST_TEST(!refresh_over_tls(trusting, ctx).ec);
  BOOST_TEST(trusting.stats().client_certificates == 1u);

  // A CA that did not sign the client certificate.
  opts.client_ca_file = data_file("self-signed.pem");
  mock_server other(opts);
  BOOST_TEST(refresh_over_tls(other, ctx).ec != error_code());
  BOOST_TEST(eventually([&] { return other.stats().tls_handshake_failures == 1; }));
  BOOST_TEST(other.stats().client_certificates == 0u);
}

BOOST_AUTO_TEST_CASE(without_the_option_no_certificate_is_asked_for) {
  mock_server_options opts;
  opts.tls = true;
  mock_server server(opts);
  auto plain = tls_client();
  BOOST_TEST(!refresh_over_tls(server, plain).ec);
  auto with_cert = tls_client();
  with_cert.use_certificate_chain_file(server.client_certificate_file());
  with_cert.use_private_key_file(server.client_key_file(), ssl::context::pem);
  BOOST_TEST(!refresh_over_tls(server, with_cert).ec);
  BOOST_TEST(server.stats().tls_handshakes == 2u);
  BOOST_TEST(server.stats().client_certificates == 0u);  // never requested, never sent
}

BOOST_AUTO_TEST_CASE(require_client_certificate_needs_tls) {
  mock_server_options opts;
  opts.require_client_certificate = true;
  BOOST_CHECK_THROW(mock_server{opts}, std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(a_handshake_abandoned_by_the_client_is_a_failure) {
  mock_server server(mtls());
  run([&]() -> asio::awaitable<void> {
    auto s = co_await connect_to(server.port());
    s.close();
  });
  BOOST_TEST(eventually([&] { return server.stats().tls_handshake_failures == 1; }));
  BOOST_TEST(server.stats().connections == 1u);
}

BOOST_AUTO_TEST_CASE(client_credentials_over_mutual_tls_through_an_authenticating_proxy) {
  mock_server server(mtls());
  connect_proxy_options popts;
  popts.username = "alice";
  popts.password = "s3cret";
  connect_proxy proxy(popts);
  auto ctx = tls_client();
  ctx.use_certificate_chain_file(server.client_certificate_file());
  ctx.use_private_key_file(server.client_key_file(), ssl::context::pem);
  run([&]() -> asio::awaitable<void> {
    auto s = co_await connect_to(proxy.port());
    beast::flat_buffer buffer;
    auto established = co_await exchange(
        s, buffer,
        connect_request("127.0.0.1:" + std::to_string(server.port()), basic("alice", "s3cret")),
        true);
    BOOST_REQUIRE(established.res.result_int() == 200);
    beast::ssl_stream<beast::tcp_stream> tls(std::move(s), ctx);
    co_await tls.async_handshake(ssl::stream_base::client, asio::use_awaitable);
    auto token = co_await exchange(tls, buffer, token_request(camel_grant));
    BOOST_REQUIRE(!token.ec);
    BOOST_TEST(token.res.result_int() == 200);
    BOOST_TEST(!json_body(token.res).contains("refreshToken"));
  });
  BOOST_TEST(server.stats().client_certificates == 1u);
  BOOST_TEST(server.stats().client_credentials_grants == 1u);
  BOOST_TEST(proxy.stats().tunnels == 1u);
  BOOST_TEST(proxy.stats().last_user == "alice");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(mock_client_credentials)

BOOST_AUTO_TEST_CASE(the_nxsys_dialect_gets_an_access_token_and_no_refresh_token) {
  mock_server_options opts;
  opts.rotate = true;  // even a rotating server issues no refresh token for this grant
  mock_server server(opts);
  auto r = post_token(server, camel_grant + "&scope=read%20write");
  BOOST_TEST(r.res.result_int() == 200);
  BOOST_TEST(r.res[http::field::cache_control] == "no-store");
  auto body = json_body(r.res);
  BOOST_TEST(body.at("accessToken").as_string() == server.last_access_token());
  BOOST_TEST(body.at("tokenType").as_string() == "Bearer");
  BOOST_TEST(body.at("expiresIn").as_int64() == 3600);
  BOOST_TEST(body.at("scope").as_string() == "read write");
  BOOST_TEST(!body.contains("refreshToken"));
  BOOST_TEST(!body.contains("refresh_token"));
  const auto st = server.stats();
  BOOST_TEST(st.client_credentials_grants == 1u);
  BOOST_TEST(st.refreshes == 1u);  // every token issued
  BOOST_TEST(st.errors == 0u);
  BOOST_TEST(st.rfc6749_requests == 0u);
  // The refresh token chain is left as it was.
  BOOST_TEST(server.current_refresh_token() == "refresh-0");
  BOOST_TEST(server.presented_refresh_tokens().empty());
  // The token is as good as a refreshed one on the API.
  run([&]() -> asio::awaitable<void> {
    auto s = co_await connect_to(server.port());
    beast::flat_buffer buffer;
    auto api =
        co_await exchange(s, buffer,
                          "GET /api/x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " +
                              server.last_access_token() + "\r\n\r\n");
    BOOST_TEST(api.res.result_int() == 200);
  });
}

BOOST_AUTO_TEST_CASE(rfc_6749_names_and_snake_case_answers) {
  mock_server_options opts;
  opts.names = field_names::snake;
  mock_server server(opts);
  auto r = post_token(server, rfc_grant + "&scope=read");
  BOOST_TEST(r.res.result_int() == 200);
  auto body = json_body(r.res);
  BOOST_TEST(body.at("access_token").as_string() == server.last_access_token());
  BOOST_TEST(body.at("token_type").as_string() == "Bearer");
  BOOST_TEST(body.at("scope").as_string() == "read");
  BOOST_TEST(!body.contains("refresh_token"));
  // Without a scope, none is echoed.
  auto bare = post_token(server, rfc_grant);
  BOOST_TEST(!json_body(bare.res).contains("scope"));
  BOOST_TEST(server.stats().rfc6749_requests == 2u);
  BOOST_TEST(server.stats().client_credentials_grants == 2u);
}

BOOST_AUTO_TEST_CASE(client_authentication_with_http_basic) {
  mock_server server;
  auto r = post_token(server, "grant_type=client_credentials", basic("test-client", "test-secret"));
  BOOST_TEST(r.res.result_int() == 200);
  BOOST_TEST(!json_body(r.res).contains("refreshToken"));
  auto camel = post_token(server, "grantType=client_credentials&scope=a",
                          basic("test-client", "test-secret"));
  BOOST_TEST(camel.res.result_int() == 200);
  BOOST_TEST(json_body(camel.res).at("scope").as_string() == "a");
  BOOST_TEST(server.stats().basic_auth_requests == 2u);
  BOOST_TEST(server.stats().client_credentials_grants == 2u);
  // Basic and the body at once, as for a refresh: refused.
  check_error(post_token(server, rfc_grant, basic("test-client", "test-secret")),
              http::status::bad_request, "invalid_request");
}

BOOST_AUTO_TEST_CASE(wrong_client_credentials_get_invalid_client) {
  mock_server server;
  auto body =
      post_token(server, "grant_type=client_credentials&client_id=test-client&client_secret=wrong");
  check_error(body, http::status::unauthorized, "invalid_client");
  BOOST_TEST(body.res[http::field::www_authenticate] == "Basic realm=\"nxsys\"");
  check_error(post_token(server, "grantType=client_credentials", basic("test-client", "wrong")),
              http::status::unauthorized, "invalid_client");
  check_error(post_token(server, "grantType=client_credentials&clientId=test-client"),
              http::status::bad_request, "invalid_request");  // no secret at all
  const auto st = server.stats();
  BOOST_TEST(st.errors == 3u);
  BOOST_TEST(st.client_credentials_grants == 0u);
  BOOST_TEST(st.refreshes == 0u);
  BOOST_TEST(server.last_access_token() == "");
}

BOOST_AUTO_TEST_CASE(disabled_it_answers_unauthorized_client_to_an_authenticated_client) {
  mock_server_options opts;
  opts.allow_client_credentials = false;
  mock_server server(opts);
  check_error(post_token(server, camel_grant), http::status::bad_request, "unauthorized_client");
  check_error(
      post_token(server, "grant_type=client_credentials", basic("test-client", "test-secret")),
      http::status::bad_request, "unauthorized_client");
  // Client authentication comes first.
  check_error(post_token(server, "grant_type=client_credentials", basic("test-client", "wrong")),
              http::status::unauthorized, "invalid_client");
  // Refreshes are not affected.
  BOOST_TEST(post_token(server, refresh_form()).res.result_int() == 200);
  const auto st = server.stats();
  BOOST_TEST(st.errors == 3u);
  BOOST_TEST(st.refreshes == 1u);
  BOOST_TEST(st.client_credentials_grants == 0u);
}

BOOST_AUTO_TEST_CASE(other_grant_types_are_still_unsupported) {
  mock_server server;
  auto r =
      post_token(server, "grant_type=password&client_id=test-client&client_secret=test-secret");
  check_error(r, http::status::bad_request, "unsupported_grant_type");
  // A refresh still needs its refresh token.
  check_error(post_token(server, "grantType=refresh_token&clientId=test-client&clientSecret=x"),
              http::status::bad_request, "invalid_request");
}

BOOST_AUTO_TEST_CASE(scripted_failures_outages_and_latency_apply_to_the_grant) {
  mock_server_options opts;
  opts.fail_every = 3;
  mock_server server(opts);
  server.fail_next({.status = 429, .body = R"({"error":"slow_down"})"});
  auto scripted = post_token(server, camel_grant);
  BOOST_TEST(scripted.res.result_int() == 429);
  BOOST_TEST(scripted.res.body() == R"({"error":"slow_down"})");
  BOOST_TEST(post_token(server, camel_grant).res.result_int() == 200);
  auto outage = post_token(server, rfc_grant);  // the third token request
  check_error(outage, http::status::service_unavailable, "temporarily_unavailable");
  BOOST_TEST(outage.res[http::field::retry_after] == "1");
  server.set_latency(std::chrono::milliseconds(20));
  BOOST_TEST(post_token(server, rfc_grant).res.result_int() == 200);
  const auto st = server.stats();
  BOOST_TEST(st.client_credentials_grants == 2u);
  BOOST_TEST(st.errors == 2u);
  BOOST_TEST(st.max_in_flight == 1u);
}

BOOST_AUTO_TEST_CASE(the_new_counters_are_in_get_stats) {
  mock_server server;
  post_token(server, camel_grant);
  run([&]() -> asio::awaitable<void> {
    auto s = co_await connect_to(server.port());
    beast::flat_buffer buffer;
    auto r = co_await exchange(s, buffer, "GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    auto stats = json_body(r.res);
    BOOST_TEST(stats.at("client_credentials_grants").to_number<std::uint64_t>() == 1u);
    BOOST_TEST(stats.at("refreshes").to_number<std::uint64_t>() == 1u);
    BOOST_TEST(stats.at("tls_handshakes").to_number<std::uint64_t>() == 0u);
    BOOST_TEST(stats.at("tls_handshake_failures").to_number<std::uint64_t>() == 0u);
    BOOST_TEST(stats.at("client_certificates").to_number<std::uint64_t>() == 0u);
  });
}

BOOST_AUTO_TEST_SUITE_END()
