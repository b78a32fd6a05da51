// SPDX-License-Identifier: BSL-1.0
// The mock server as users of nxsys::auth_testing run it: on the client's own io_context, with
// its built-in TLS certificate, and stopped while the test goes on.
#include "helpers.hpp"

#include <boost/asio/use_awaitable.hpp>
#include <boost/test/unit_test.hpp>

#include <filesystem>

namespace asio = boost::asio;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;
using boost::system::error_code;

namespace {

error_code fetch(const na::client_config& cfg) {
  asio::io_context ctx;
  na::client c(ctx.get_executor(), cfg);
  error_code result = asio::error::would_block;
  c.async_token([&](error_code ec, na::access_token) { result = ec; });
  BOOST_REQUIRE(run_bounded(ctx, 1));
  return result;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(mock_server_as_a_library)

BOOST_AUTO_TEST_CASE(one_thread_runs_the_client_and_a_server_on_its_io_context) {
  asio::io_context ctx;
  mock_server server(ctx.get_executor(), rotating());
  na::client c(ctx.get_executor(), config_for(server, rotating()));
  run_coro(ctx, [&]() -> asio::awaitable<void> {
    auto first = co_await c.token();
    BOOST_TEST(first.value() == server.last_access_token());
    // Must not wait for the closes: they need this very thread.
    server.close_idle_connections();
    c.invalidate();
    auto second = co_await c.token();
    BOOST_TEST(second.value() == server.last_access_token());
    BOOST_TEST(second.value() != first.value());
    server.stop();  // else its accept loop keeps run() going
  });
  BOOST_TEST(server.stats().refreshes == 2u);
  BOOST_TEST(server.current_refresh_token() == "refresh-2");
}

BOOST_AUTO_TEST_CASE(a_server_on_an_io_context_may_be_destroyed_before_it_runs_again) {
  asio::io_context ctx;
  {
    mock_server server(ctx.get_executor());
    na::client c(ctx.get_executor(), config_for(server));
    run_coro(ctx, [&]() -> asio::awaitable<void> {
      co_await c.token();
      ctx.stop();  // the server still listens and keeps its connection open
    });
  }
  // What the server left in ctx finishes (or is destroyed with it) without touching freed
  // memory: ASan runs this too.
  ctx.restart();
  BOOST_TEST(run_bounded(ctx, 1));
}

BOOST_AUTO_TEST_CASE(stop_refuses_clients_and_keeps_the_counters) {
  mock_server server;
  auto cfg = config_for(server);
  BOOST_TEST(!fetch(cfg));
  server.stop();
  server.stop();  // idempotent
  BOOST_TEST(fetch(cfg));
  BOOST_TEST(server.stats().refreshes == 1u);
  BOOST_TEST(server.last_access_token() != "");
}

BOOST_AUTO_TEST_CASE(the_built_in_certificate_is_trusted_through_ca_file_while_it_runs) {
  std::string ca;
  {
    mock_server_options opts;
    opts.tls = true;
    mock_server server(opts);
    ca = server.ca_file();
    BOOST_REQUIRE(!ca.empty());
    auto cfg = config_for(server);
    cfg.http.tls.ca_file = ca;
    BOOST_TEST(!fetch(cfg));
    // The compiled-in certificate is testing/data's, which the other TLS tests trust.
    cfg.http.tls.ca_file = test_data_dir() + "/ca.pem";
    BOOST_TEST(!fetch(cfg));
    BOOST_TEST(server.stats().refreshes == 2u);
  }
  BOOST_TEST(!std::filesystem::exists(ca));
}

BOOST_AUTO_TEST_CASE(ca_file_is_empty_without_the_built_in_certificate) {
  mock_server plain;
  BOOST_TEST(plain.ca_file() == "");
  mock_server_options opts;
  opts.tls = true;
  opts.cert_chain_file = test_data_dir() + "/server.pem";
  opts.private_key_file = test_data_dir() + "/server.key";
  mock_server own(opts);
  BOOST_TEST(own.ca_file() == "");
}

BOOST_AUTO_TEST_SUITE_END()
