// SPDX-License-Identifier: BSL-1.0
// The mock server's protected /api/ endpoint, and the 401 flow a caller runs with the client:
// compare-and-invalidate the rejected token, get a new one, retry once.
#include "helpers.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

namespace asio = boost::asio;
namespace http = boost::beast::http;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;

namespace {

// GET /api/orders with `authorization` (none when empty); the HTTP status.
unsigned get_api(const mock_server& server, const std::string& authorization) {
  asio::io_context ctx;
  asio::ip::tcp::socket sock(ctx);
  sock.connect({asio::ip::make_address("127.0.0.1"), server.port()});
  http::request<http::empty_body> req{http::verb::get, "/api/orders", 11};
  req.set(http::field::host, "127.0.0.1");
  if (!authorization.empty()) req.set(http::field::authorization, authorization);
  http::write(sock, req);
  boost::beast::flat_buffer buf;
  http::response<http::string_body> res;
  http::read(sock, buf, res);
  return res.result_int();
}

std::string bearer(const na::access_token& t) {
  return std::string(t.type()) + " " + std::string(t.value());
}

}  // namespace

BOOST_AUTO_TEST_SUITE(protected_api)

BOOST_AUTO_TEST_CASE(a_401_is_answered_by_one_refresh_and_one_retry) {
  mock_server server;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server));
  auto t = get_token(ctx, c);
  BOOST_TEST(get_api(server, bearer(t)) == 200u);
  BOOST_TEST(get_api(server, "") == 401u);
  BOOST_TEST(get_api(server, "Bearer at-0-forged") == 401u);

  server.revoke_access_tokens();  // the API stops accepting it before its expiry
  BOOST_TEST(get_api(server, bearer(t)) == 401u);
  BOOST_TEST(c.invalidate(t));
  const auto fresh = get_token(ctx, c);
  BOOST_TEST(fresh.serial() == t.serial() + 1);
  BOOST_TEST(get_api(server, bearer(fresh)) == 200u);
  // A late 401 for the replaced token changes nothing.
  BOOST_TEST(!c.invalidate(t));
  BOOST_TEST(get_token(ctx, c).serial() == fresh.serial());
  const auto s = server.stats();
  BOOST_TEST(s.refreshes == 2u);
  BOOST_TEST(s.api_requests == 5u);
  BOOST_TEST(s.api_unauthorized == 3u);
}

BOOST_AUTO_TEST_SUITE_END()
