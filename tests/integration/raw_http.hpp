// SPDX-License-Identifier: BSL-1.0
// Raw Boost.Asio/Beast helpers for the tests of nxsys::auth_testing's own features (the CONNECT
// proxy, mutual TLS and client_credentials in the mock server): they speak HTTP by hand, never
// through nxsys::auth::client, so the test support is tested without the client it supports.
#ifndef NXSYS_AUTH_TESTS_INTEGRATION_RAW_HTTP_HPP
#define NXSYS_AUTH_TESTS_INTEGRATION_RAW_HTTP_HPP

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <string>
#include <string_view>
#include <thread>

#ifndef NXSYS_AUTH_TEST_DATA_DIR
#error "NXSYS_AUTH_TEST_DATA_DIR must name testing/data (see tests/CMakeLists.txt)"
#endif

namespace raw {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using response = http::response<http::string_body>;

inline constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// testing/data: the test CA and the certificates the mock does not serve itself.
inline std::string data_file(std::string_view name) {
  return std::string(NXSYS_AUTH_TEST_DATA_DIR) + "/" + std::string(name);
}

// Runs the coroutine `f()` on an io_context of its own until it ends, rethrowing what it threw.
// The bound only keeps a broken test from hanging the suite; no test depends on it.
inline void run(std::function<asio::awaitable<void>()> f) {
  asio::io_context ctx;
  std::exception_ptr error;
  bool done = false;
  asio::co_spawn(ctx, f(), [&](std::exception_ptr e) {
    error = e;
    done = true;
  });
  ctx.run_for(std::chrono::seconds(120));
  BOOST_REQUIRE_MESSAGE(done, "the test coroutine did not end");
  if (error) std::rethrow_exception(error);
}

// Polls `condition` until it holds, for things that happen just after what a test can observe
// (a server's side of a failed handshake, a tunnel closing after its client). Only the outcome
// is asserted; the bound keeps a broken test from hanging.
inline bool eventually(const std::function<bool()>& condition) {
  for (int i = 0; i < 6000; ++i) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return condition();
}

inline std::string base64(std::string_view in) {
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const unsigned v = (unsigned(static_cast<unsigned char>(in[i])) << 16) |
                       (unsigned(static_cast<unsigned char>(in[i + 1])) << 8) |
                       unsigned(static_cast<unsigned char>(in[i + 2]));
    for (int shift : {18, 12, 6, 0}) out += alphabet[(v >> shift) & 63];
  }
  if (i < in.size()) {
    unsigned v = unsigned(static_cast<unsigned char>(in[i])) << 16;
    if (i + 1 < in.size()) v |= unsigned(static_cast<unsigned char>(in[i + 1])) << 8;
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += i + 1 < in.size() ? alphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

inline std::string basic(std::string_view user, std::string_view password) {
  return "Basic " + base64(std::string(user) + ":" + std::string(password));
}

inline std::string connect_request(std::string_view target, std::string_view proxy_auth = {}) {
  std::string r =
      "CONNECT " + std::string(target) + " HTTP/1.1\r\nHost: " + std::string(target) + "\r\n";
  if (!proxy_auth.empty()) r += "Proxy-Authorization: " + std::string(proxy_auth) + "\r\n";
  return r + "\r\n";
}

// POST /nxsys/oauth/token with a form body (and an Authorization header when given).
inline std::string token_request(std::string_view form, std::string_view authorization = {}) {
  std::string r =
      "POST /nxsys/oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
      "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " +
      std::to_string(form.size()) + "\r\n";
  if (!authorization.empty()) r += "Authorization: " + std::string(authorization) + "\r\n";
  return r + "\r\n" + std::string(form);
}

inline std::string refresh_form() {
  return "grantType=refresh_token&refreshToken=refresh-0&clientId=test-client&"
         "clientSecret=test-secret";
}

inline asio::awaitable<beast::tcp_stream> connect_to(std::uint16_t port) {
  beast::tcp_stream s(co_await asio::this_coro::executor);
  co_await s.async_connect(tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), port),
                           asio::use_awaitable);
  co_return s;
}

// What came back for a request: the response, or the error that stopped it, and how many
// bytes were read for it.
struct reply {
  error_code ec;
  response res;
  std::size_t bytes = 0;
};

// Reads one response. `to_connect`: the answer to a CONNECT, whose 2xx has no body however it
// looks.
template <class Stream>
asio::awaitable<reply> read_response(Stream& s, beast::flat_buffer& buffer,
                                     bool to_connect = false) {
  reply r;
  http::response_parser<http::string_body> parser;
  auto [ec, n] = co_await http::async_read_header(s, buffer, parser, use_tuple);
  r.bytes = n;
  if (!ec && !(to_connect && parser.get().result_int() / 100 == 2) && !parser.is_done()) {
    auto [bec, bn] = co_await http::async_read(s, buffer, parser, use_tuple);
    ec = bec;
    r.bytes += bn;
  }
  r.ec = ec;
  if (!ec) r.res = parser.release();
  co_return r;
}

// Writes `request` as it is and reads the response.
template <class Stream>
asio::awaitable<reply> exchange(Stream& s, beast::flat_buffer& buffer, std::string request,
                                bool to_connect = false) {
  auto [ec, n] = co_await asio::async_write(s, asio::buffer(request), use_tuple);
  if (ec) co_return reply{ec, {}, 0};
  co_return co_await read_response(s, buffer, to_connect);
}

// The rest of the connection after an answer: eof when the peer closed it cleanly.
template <class Stream>
asio::awaitable<error_code> read_to_end(Stream& s, beast::flat_buffer& buffer) {
  for (;;) {
    auto [ec, n] = co_await s.async_read_some(buffer.prepare(4096), use_tuple);
    buffer.commit(n);
    if (ec) co_return ec;
  }
}

inline boost::json::object json_body(const response& res) {
  return boost::json::parse(res.body()).as_object();
}

// A TLS client context that trusts the test CA and verifies the server's certificate.
inline ssl::context tls_client() {
  ssl::context ctx(ssl::context::tls_client);
  ctx.load_verify_file(data_file("ca.pem"));
  ctx.set_verify_mode(ssl::verify_peer);
  return ctx;
}

}  // namespace raw

#endif
