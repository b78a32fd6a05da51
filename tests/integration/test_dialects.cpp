// SPDX-License-Identifier: BSL-1.0
// The two request dialects and the two ways to authenticate the client, against the mock
// server (which speaks all four combinations), and what the answer carries besides the token.
#include "helpers.hpp"

#include <boost/json/object.hpp>

namespace asio = boost::asio;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;

BOOST_AUTO_TEST_SUITE(dialects)

BOOST_AUTO_TEST_CASE(every_dialect_with_every_client_authentication) {
  for (const auto d : {na::dialect::nxsys, na::dialect::rfc6749}) {
    for (const auto a :
         {na::client_authentication::request_body, na::client_authentication::http_basic}) {
      const bool rfc = d == na::dialect::rfc6749;
      const bool basic = a == na::client_authentication::http_basic;
      BOOST_TEST_CONTEXT((rfc ? "rfc6749" : "nxsys") << " + " << (basic ? "basic" : "body")) {
        mock_server_options opts;
        opts.rotate = true;
        opts.client_id = "client:1";        // form-encoded inside the Basic credentials
        opts.client_secret = "p@ss word+";  // ditto
        mock_server server(opts);
        asio::io_context ctx;
        auto cfg = config_for(server, opts);
        cfg.dialect = d;
        cfg.authentication = a;
        na::client c(ctx.get_executor(), cfg);
        const auto first = try_token(ctx, c);
        BOOST_TEST(!first.ec, first.what);
        c.invalidate();  // and once more with the rotated refresh token
        BOOST_TEST(!try_token(ctx, c).ec);
        const auto s = server.stats();
        BOOST_TEST(s.refreshes == 2u);
        BOOST_TEST(s.rfc6749_requests == (rfc ? 2u : 0u));
        BOOST_TEST(s.basic_auth_requests == (basic ? 2u : 0u));

        // A wrong secret is invalid_client whichever way it travels.
        mock_server other(opts);
        cfg = config_for(other, opts);
        cfg.dialect = d;
        cfg.authentication = a;
        cfg.client_secret = "wrong";
        na::client w(ctx.get_executor(), cfg);
        BOOST_TEST(try_token(ctx, w).ec == na::errc::invalid_client);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(scope_is_sent_and_the_answer_scope_and_extra_fields_are_kept) {
  mock_server_options opts;
  opts.extra_answer_fields = R"({"id_token":"h.p.s","tenant":{"id":42}})";
  mock_server server(opts);
  asio::io_context ctx;
  auto cfg = config_for(server, opts);
  cfg.dialect = na::dialect::rfc6749;
  cfg.scope = "read write";
  na::client c(ctx.get_executor(), cfg);
  const auto t = get_token(ctx, c);
  BOOST_TEST(t.scope() == "read write");  // the mock server echoes the scope requested
  BOOST_REQUIRE(t.extra() != nullptr);
  BOOST_TEST(t.extra()->at("id_token").as_string() == "h.p.s");
  BOOST_TEST(t.extra()->at("tenant").at("id").as_int64() == 42);
  // Every copy a caller gets carries them, including the per-thread replicas.
  BOOST_TEST(get_token(ctx, c).extra() != nullptr);
  BOOST_TEST(get_token(ctx, c).scope() == "read write");
}

BOOST_AUTO_TEST_SUITE_END()
