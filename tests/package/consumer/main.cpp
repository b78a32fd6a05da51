// SPDX-License-Identifier: BSL-1.0
// A program using nxsys-auth the way an application does, built by tests/package/run.sh against
// the installed package (consumer/) and through add_subdirectory (subdir-consumer/). It builds
// the token URL, constructs a client and gets one token from a canned answer served on
// 127.0.0.1 by this process itself, then sends one API request through a session (the README's
// quick start): headers, library and its dependencies link and work. From the installed
// package it also runs a client against the installed mock server (testing.cpp).
#include <nxsys/auth.hpp>

#include <boost/asio.hpp>

#include <charconv>
#include <exception>
#include <iostream>
#include <string>
#include <string_view>

namespace asio = boost::asio;
namespace auth = nxsys::auth;
using asio::ip::tcp;

#ifdef NXSYS_AUTH_CONSUMER_TESTING
bool token_from_the_mock_server();  // testing.cpp: nxsys::auth_testing, installed package only
#endif

namespace {

// Answers one request with `body` (what it makes of the request's headers), then closes.
template <class Body>
asio::awaitable<void> serve_one(tcp::acceptor& acceptor, Body body_of) {
  tcp::socket s = co_await acceptor.async_accept(asio::use_awaitable);
  std::string in;
  const std::size_t header_end =
      co_await asio::async_read_until(s, asio::dynamic_buffer(in), "\r\n\r\n", asio::use_awaitable);
  std::size_t body_length = 0;
  std::string headers = in.substr(0, header_end);
  for (char& c : headers) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (auto at = headers.find("content-length:"); at != std::string::npos) {
    at += std::string_view("content-length:").size();
    while (at < headers.size() && headers[at] == ' ') ++at;
    std::from_chars(headers.data() + at, headers.data() + headers.size(), body_length);
  }
  if (in.size() < header_end + body_length) {
    co_await asio::async_read(s, asio::dynamic_buffer(in),
                              asio::transfer_exactly(header_end + body_length - in.size()),
                              asio::use_awaitable);
  }
  const std::string body = body_of(headers);
  const std::string answer =
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
      "Connection: close\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body;
  co_await asio::async_write(s, asio::buffer(answer), asio::use_awaitable);
  boost::system::error_code ignored;
  s.shutdown(tcp::socket::shutdown_send, ignored);
}

}  // namespace

int main() {
  try {
    asio::io_context ctx;
    tcp::acceptor acceptor(ctx, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    const std::string base = "http://127.0.0.1:" + std::to_string(acceptor.local_endpoint().port());

    auth::client_config cfg;
    cfg.token_url = auth::make_token_url(base);
    if (cfg.token_url != base + "/nxsys/oauth/token") {
      std::cerr << "unexpected token URL " << cfg.token_url << "\n";
      return 1;
    }
    cfg.client_id = "consumer";
    cfg.client_secret = "consumer-secret";
    cfg.refresh_token = "consumer-refresh-token";
    cfg.refresh.retry.max_attempts = 1;
    cfg.refresh.deadline = std::chrono::seconds(20);
    auth::client client(ctx.get_executor(), cfg);

    asio::co_spawn(ctx,
                   serve_one(acceptor,
                             [](const std::string&) {
                               return std::string(R"({"accessToken":"consumer-access-token",)"
                                                  R"("tokenType":"Bearer","expiresIn":3600})");
                             }),
                   asio::detached);
    boost::system::error_code result = asio::error::would_block;
    auth::access_token token;
    client.async_token([&](boost::system::error_code ec, auth::access_token t) {
      result = ec;
      token = std::move(t);
    });
    ctx.run_for(std::chrono::seconds(30));

    if (result || token.value() != "consumer-access-token" || token.type() != "Bearer") {
      std::cerr << "token request failed: " << result.message() << "\n";
      return 1;
    }

    // The API request: the canned server answers with whether it got the bearer header
    // (its headers are lower-cased).
    namespace http = boost::beast::http;
    auth::session api(client, {.base_url = base});
    asio::co_spawn(
        ctx,
        serve_one(acceptor,
                  [](const std::string& headers) {
                    const bool ok =
                        headers.find("authorization: bearer consumer-access-token\r\n") !=
                        std::string::npos;
                    return std::string(ok ? "authorized" : "no bearer token");
                  }),
        asio::detached);
    std::string api_answer;
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          auto res = co_await api.request({http::verb::get, "/v1/ping", 11});
          api_answer = std::to_string(res.result_int()) + " " + res.body();
        },
        [&](std::exception_ptr e) {
          if (e) api_answer = "request failed";
        });
    ctx.restart();
    ctx.run_for(std::chrono::seconds(30));
    if (api_answer != "200 authorized") {
      std::cerr << "API request: " << api_answer << "\n";
      return 1;
    }
    std::cout << "nxsys-auth consumer: " << cfg.token_url << " answered a " << token.type()
              << " token (" << client.stats().refreshes_succeeded << " refresh); the API answered "
              << api_answer << "\n";
#ifdef NXSYS_AUTH_CONSUMER_TESTING
    if (!token_from_the_mock_server()) return 1;
#endif
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "nxsys-auth consumer: " << e.what() << "\n";
    return 1;
  }
}
