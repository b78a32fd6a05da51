// SPDX-License-Identifier: BSL-1.0
// nxsys::auth_testing's CONNECT proxy, driven by hand (raw Beast): tunnels to the mock server in
// plain HTTP and TLS, proxy authentication, the targets it refuses, malformed requests, tunnels
// that end from either side, and many tunnels at once.
#include <nxsys/auth/testing/connect_proxy.hpp>
#include <nxsys/auth/testing/mock_server.hpp>

#include "raw_http.hpp"

#include <boost/asio/detached.hpp>
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace raw;
using nxsys::auth::testing::connect_proxy;
using nxsys::auth::testing::connect_proxy_options;
using nxsys::auth::testing::mock_server;
using nxsys::auth::testing::mock_server_options;

namespace {

std::string loopback(std::uint16_t port) {
  return "127.0.0.1:" + std::to_string(port);
}

// A port nothing listens on: bound, then released.
std::uint16_t closed_port() {
  asio::io_context ctx;
  tcp::acceptor a(ctx, tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), 0));
  return a.local_endpoint().port();
}

// Sends `request` to the proxy on a new connection and reads its answer (the 200 of a tunnel
// or an error), then what follows until the proxy closes (for errors: it must).
struct refused {
  reply answer;
  error_code after;  // how the connection ended after the answer
};

refused ask_proxy(const connect_proxy& proxy, std::string request) {
  refused out;
  run([&]() -> asio::awaitable<void> {
    auto s = co_await connect_to(proxy.port());
    beast::flat_buffer buffer;
    out.answer = co_await exchange(s, buffer, std::move(request), true);
    if (!out.answer.ec && out.answer.res.result() != http::status::ok)
      out.after = co_await read_to_end(s, buffer);
  });
  return out;
}

void check_refused(const refused& r, http::status status) {
  BOOST_REQUIRE_MESSAGE(!r.answer.ec, r.answer.ec.message());
  BOOST_TEST(r.answer.res.result() == status);
  BOOST_TEST(!r.answer.res.keep_alive());
  BOOST_TEST(r.after == asio::error::eof);  // and the proxy closed the connection
}

}  // namespace

BOOST_AUTO_TEST_SUITE(connect_proxy_tunnels)

BOOST_AUTO_TEST_CASE(a_token_request_through_the_tunnel_reaches_the_mock_server) {
  mock_server server;
  connect_proxy proxy;
  BOOST_TEST(proxy.url() == "http://127.0.0.1:" + std::to_string(proxy.port()));
  const std::string request = token_request(refresh_form());
  std::size_t received = 0;
  run([&]() -> asio::awaitable<void> {
    auto s = co_await connect_to(proxy.port());
    beast::flat_buffer buffer;
    auto established = co_await exchange(s, buffer, connect_request(loopback(server.port())), true);
    BOOST_REQUIRE(!established.ec);
    BOOST_TEST(established.res.result_int() == 200);
    BOOST_TEST(established.res.reason() == "Connection established");
    BOOST_TEST(buffer.size() == 0u);
    auto token = co_await exchange(s, buffer, request);
    BOOST_REQUIRE(!token.ec);
    BOOST_TEST(token.res.result_int() == 200);
    BOOST_TEST(json_body(token.res).at("accessToken").as_string() == server.last_access_token());
    received = token.bytes + buffer.size();
  });
  BOOST_TEST(server.stats().refreshes == 1u);
  BOOST_TEST(server.stats().connections == 1u);
  const auto st = proxy.stats();
  BOOST_TEST(st.connections == 1u);
  BOOST_TEST(st.tunnels == 1u);
  BOOST_TEST(st.last_target == loopback(server.port()));
  BOOST_TEST(st.last_user == "");
  BOOST_TEST(st.bytes_up == request.size());
  BOOST_TEST(st.bytes_down == received);
  BOOST_TEST(st.refused_auth + st.refused_target + st.refused_method + st.failed_connects +
                 st.bad_requests ==
             0u);
  // The client's close ends the tunnel, and with it the proxy's connection to the server.
  BOOST_TEST(eventually([&] { return proxy.open_connections() == 0; }));
  BOOST_TEST(eventually([&] { return server.open_connections() == 0; }));
}

BOOST_AUTO_TEST_CASE(tls_to_the_mock_server_runs_end_to_end_through_the_tunnel) {
  mock_server_options opts;
  opts.tls = true;
  mock_server server(opts);
  connect_proxy proxy;
  run([&]() -> asio::awaitable<void> {
    auto s = co_await connect_to(proxy.port());
    beast::flat_buffer buffer;
    auto established = co_await exchange(s, buffer, connect_request(loopback(server.port())), true);
    BOOST_REQUIRE(!established.ec);
    BOOST_REQUIRE(established.res.result_int() == 200);
    auto ctx = tls_client();
    beast::ssl_stream<beast::tcp_stream> tls(std::move(s), ctx);
    // The server's name is checked as a client would check it, through the tunnel.
    tls.set_verify_callback(ssl::host_name_verification("localhost"));
    co_await tls.async_handshake(ssl::stream_base::client, asio::use_awaitable);
    auto token = co_await exchange(tls, buffer, token_request(refresh_form()));
    BOOST_REQUIRE(!token.ec);
    BOOST_TEST(token.res.result_int() == 200);
    BOOST_TEST(json_body(token.res).at("accessToken").as_string() == server.last_access_token());
  });
  BOOST_TEST(server.stats().tls_handshakes == 1u);
  BOOST_TEST(server.stats().refreshes == 1u);
  BOOST_TEST(proxy.stats().tunnels == 1u);
  // TLS records, not the request's plain bytes, went through.
  BOOST_TEST(proxy.stats().bytes_up > token_request(refresh_form()).size());
}

BOOST_AUTO_TEST_CASE(bytes_sent_right_behind_the_connect_are_relayed) {
  mock_server server;
  connect_proxy proxy;
  const std::string request = token_request(refresh_form());
  run([&]() -> asio::awaitable<void> {
    auto s = co_await connect_to(proxy.port());
    beast::flat_buffer buffer;
    // One write: the proxy reads the token request together with the CONNECT.
    co_await asio::async_write(s, asio::buffer(connect_request(loopback(server.port())) + request),
                               asio::use_awaitable);
    auto established = co_await read_response(s, buffer, true);
    BOOST_REQUIRE(!established.ec);
    BOOST_REQUIRE(established.res.result_int() == 200);
    auto token = co_await read_response(s, buffer);
    BOOST_REQUIRE(!token.ec);
    BOOST_TEST(token.res.result_int() == 200);
  });
  BOOST_TEST(server.stats().refreshes == 1u);
  BOOST_TEST(proxy.stats().bytes_up == request.size());
}

BOOST_AUTO_TEST_CASE(localhost_is_a_loopback_target) {
  mock_server server;
  connect_proxy proxy;
  run([&]() -> asio::awaitable<void> {
    auto s = co_await connect_to(proxy.port());
    beast::flat_buffer buffer;
    auto established = co_await exchange(
        s, buffer, connect_request("localhost:" + std::to_string(server.port())), true);
    BOOST_REQUIRE(!established.ec);
    BOOST_TEST(established.res.result_int() == 200);
    auto token = co_await exchange(s, buffer, token_request(refresh_form()));
    BOOST_TEST(token.res.result_int() == 200);
  });
  BOOST_TEST(proxy.stats().tunnels == 1u);
  BOOST_TEST(proxy.stats().last_target == "localhost:" + std::to_string(server.port()));
}

BOOST_AUTO_TEST_CASE(a_server_that_closes_ends_the_tunnel_towards_the_client) {
  mock_server server;
  server.set_close_after_response(true);
  connect_proxy proxy;
  run([&]() -> asio::awaitable<void> {
    auto s = co_await connect_to(proxy.port());
    beast::flat_buffer buffer;
    auto established = co_await exchange(s, buffer, connect_request(loopback(server.port())), true);
    BOOST_REQUIRE(established.res.result_int() == 200);
    auto token = co_await exchange(s, buffer, token_request(refresh_form()));
    BOOST_TEST(token.res.result_int() == 200);
    BOOST_TEST(!token.res.keep_alive());
    // The server's close comes through as the end of the stream.
    BOOST_TEST(co_await read_to_end(s, buffer) == asio::error::eof);
  });
  // The server lingers until the client's end of the stream reaches it through the proxy.
  BOOST_TEST(eventually([&] { return proxy.open_connections() == 0; }));
  BOOST_TEST(eventually([&] { return server.open_connections() == 0; }));
}

BOOST_AUTO_TEST_CASE(a_client_gone_mid_tunnel_closes_the_server_side) {
  mock_server server;
  connect_proxy proxy;
  run([&]() -> asio::awaitable<void> {
    auto s = co_await connect_to(proxy.port());
    beast::flat_buffer buffer;
    auto established = co_await exchange(s, buffer, connect_request(loopback(server.port())), true);
    BOOST_REQUIRE(established.res.result_int() == 200);
    // Half a request, then the client vanishes (linger 0: a reset, as a crash would).
    co_await asio::async_write(s, asio::buffer(std::string("POST /nxsys/oauth/token HTTP/1.1\r\n")),
                               asio::use_awaitable);
    BOOST_REQUIRE(eventually([&] { return proxy.stats().bytes_up > 0; }));
    s.socket().set_option(asio::socket_base::linger(true, 0));
    s.close();
  });
  BOOST_TEST(eventually([&] { return proxy.open_connections() == 0; }));
  BOOST_TEST(eventually([&] { return server.open_connections() == 0; }));
  BOOST_TEST(server.stats().refreshes == 0u);
  BOOST_TEST(proxy.stats().tunnels == 1u);
}

BOOST_AUTO_TEST_CASE(stop_closes_open_tunnels) {
  mock_server server;
  connect_proxy proxy;
  run([&]() -> asio::awaitable<void> {
    auto s = co_await connect_to(proxy.port());
    beast::flat_buffer buffer;
    auto established = co_await exchange(s, buffer, connect_request(loopback(server.port())), true);
    BOOST_REQUIRE(established.res.result_int() == 200);
    proxy.stop();
    proxy.stop();  // idempotent
    BOOST_TEST(co_await read_to_end(s, buffer) != error_code());
  });
  BOOST_TEST(proxy.open_connections() == 0u);
  BOOST_TEST(eventually([&] { return server.open_connections() == 0; }));
  BOOST_TEST(proxy.stats().tunnels == 1u);  // the counters outlive stop()
  run([&]() -> asio::awaitable<void> {
    beast::tcp_stream s(co_await asio::this_coro::executor);
    auto [ec] = co_await s.async_connect(
        tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), proxy.port()), use_tuple);
    BOOST_TEST(ec == asio::error::connection_refused);
  });
}

BOOST_AUTO_TEST_CASE(one_thread_runs_a_client_the_proxy_and_the_server_on_its_io_context) {
  asio::io_context ctx;
  mock_server server(ctx.get_executor());
  connect_proxy proxy(ctx.get_executor());
  bool done = false;
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        auto s = co_await connect_to(proxy.port());
        beast::flat_buffer buffer;
        auto established =
            co_await exchange(s, buffer, connect_request(loopback(server.port())), true);
        BOOST_TEST(established.res.result_int() == 200);
        auto token = co_await exchange(s, buffer, token_request(refresh_form()));
        BOOST_TEST(token.res.result_int() == 200);
        done = true;
        proxy.stop();  // else their accept loops keep run() going
        server.stop();
      },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  ctx.run_for(std::chrono::seconds(120));
  BOOST_TEST(done);
  BOOST_TEST(ctx.stopped());  // nothing of the proxy's was left behind
  BOOST_TEST(proxy.stats().tunnels == 1u);
}

BOOST_AUTO_TEST_CASE(many_tunnels_on_several_threads_are_counted_exactly) {
  mock_server_options sopts;
  sopts.threads = 2;
  mock_server server(sopts);
  connect_proxy_options popts;
  popts.threads = 3;
  popts.username = "alice";
  popts.password = "s3cret";
  connect_proxy proxy(popts);
  constexpr int clients = 4;
  constexpr int rounds = 10;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < clients; ++i) {
    threads.emplace_back([&] {
      // Each client its own io_context: blocking only itself.
      asio::io_context ctx;
      asio::co_spawn(
          ctx,
          [&]() -> asio::awaitable<void> {
            for (int r = 0; r < rounds; ++r) {
              auto s = co_await connect_to(proxy.port());
              beast::flat_buffer buffer;
              auto established = co_await exchange(
                  s, buffer, connect_request(loopback(server.port()), basic("alice", "s3cret")),
                  true);
              if (established.ec || established.res.result_int() != 200) continue;
              // Two requests per tunnel: the tunnel is a kept-alive connection to the server.
              auto first = co_await exchange(s, buffer, token_request(refresh_form()));
              auto second = co_await exchange(s, buffer, token_request(refresh_form()));
              if (!first.ec && !second.ec && first.res.result_int() == 200 &&
                  second.res.result_int() == 200)
                ++ok;
            }
          },
          asio::detached);
      ctx.run_for(std::chrono::seconds(120));
    });
  }
  for (auto& t : threads) t.join();
  BOOST_TEST(ok.load() == clients * rounds);
  const auto st = proxy.stats();
  BOOST_TEST(st.connections == unsigned(clients * rounds));
  BOOST_TEST(st.tunnels == unsigned(clients * rounds));
  BOOST_TEST(st.refused_auth == 0u);
  BOOST_TEST(st.last_user == "alice");
  BOOST_TEST(server.stats().refreshes == unsigned(2 * clients * rounds));
  BOOST_TEST(server.stats().connections == unsigned(clients * rounds));
  BOOST_TEST(eventually([&] { return proxy.open_connections() == 0; }));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(connect_proxy_refusals)

BOOST_AUTO_TEST_CASE(missing_or_wrong_proxy_credentials_get_407_and_a_closed_connection) {
  mock_server server;
  connect_proxy_options opts;
  opts.username = "alice";
  opts.password = "s3cret";
  connect_proxy proxy(opts);
  const auto target = loopback(server.port());

  auto none = ask_proxy(proxy, connect_request(target));
  check_refused(none, http::status::proxy_authentication_required);
  BOOST_TEST(none.answer.res[http::field::proxy_authenticate] ==
             "Basic realm=\"nxsys-test-proxy\"");
  BOOST_TEST(proxy.stats().refused_auth == 1u);
  BOOST_TEST(proxy.stats().last_user == "");

  check_refused(ask_proxy(proxy, connect_request(target, basic("alice", "wrong"))),
                http::status::proxy_authentication_required);
  BOOST_TEST(proxy.stats().last_user == "alice");
  check_refused(ask_proxy(proxy, connect_request(target, basic("bob", "s3cret"))),
                http::status::proxy_authentication_required);
  BOOST_TEST(proxy.stats().last_user == "bob");
  check_refused(ask_proxy(proxy, connect_request(target, "Bearer abc")),
                http::status::proxy_authentication_required);
  check_refused(ask_proxy(proxy, connect_request(target, "Basic !!!!")),
                http::status::proxy_authentication_required);
  BOOST_TEST(proxy.stats().refused_auth == 5u);
  BOOST_TEST(proxy.stats().tunnels == 0u);
  BOOST_TEST(server.stats().connections == 0u);  // never connected for a refused client

  auto good = ask_proxy(proxy, connect_request(target, basic("alice", "s3cret")));
  BOOST_TEST(good.answer.res.result_int() == 200);
  BOOST_TEST(proxy.stats().tunnels == 1u);
  BOOST_TEST(proxy.stats().refused_auth == 5u);
  BOOST_TEST(proxy.stats().last_user == "alice");
}

BOOST_AUTO_TEST_CASE(the_realm_of_the_challenge_is_configurable) {
  connect_proxy_options opts;
  opts.password = "only-a-password";
  opts.realm = "tests";
  connect_proxy proxy(opts);
  auto r = ask_proxy(proxy, connect_request("127.0.0.1:1"));
  check_refused(r, http::status::proxy_authentication_required);
  BOOST_TEST(r.answer.res[http::field::proxy_authenticate] == "Basic realm=\"tests\"");
  BOOST_TEST(ask_proxy(proxy, connect_request("127.0.0.1:" + std::to_string(closed_port()),
                                              basic("", "only-a-password")))
                 .answer.res.result_int() == 502);  // past authentication
}

BOOST_AUTO_TEST_CASE(targets_beyond_loopback_get_403) {
  connect_proxy proxy;
  check_refused(ask_proxy(proxy, connect_request("192.0.2.1:443")), http::status::forbidden);
  check_refused(ask_proxy(proxy, connect_request("example.com:443")), http::status::forbidden);
  check_refused(ask_proxy(proxy, connect_request("[2001:db8::1]:443")), http::status::forbidden);
  const auto st = proxy.stats();
  BOOST_TEST(st.refused_target == 3u);
  BOOST_TEST(st.last_target == "[2001:db8::1]:443");
  BOOST_TEST(st.tunnels == 0u);
  BOOST_TEST(st.failed_connects == 0u);
}

BOOST_AUTO_TEST_CASE(an_unreachable_target_gets_502) {
  connect_proxy proxy;
  const auto target = loopback(closed_port());
  check_refused(ask_proxy(proxy, connect_request(target)), http::status::bad_gateway);
  BOOST_TEST(proxy.stats().failed_connects == 1u);
  BOOST_TEST(proxy.stats().last_target == target);
  BOOST_TEST(proxy.stats().tunnels == 0u);
}

BOOST_AUTO_TEST_CASE(refuse_all_answers_502_without_connecting) {
  mock_server server;
  connect_proxy_options opts;
  opts.refuse_all = true;
  connect_proxy proxy(opts);
  check_refused(ask_proxy(proxy, connect_request(loopback(server.port()))),
                http::status::bad_gateway);
  BOOST_TEST(proxy.stats().failed_connects == 1u);
  BOOST_TEST(server.stats().connections == 0u);
}

BOOST_AUTO_TEST_CASE(methods_other_than_connect_get_405) {
  mock_server server;
  connect_proxy proxy;
  auto r = ask_proxy(proxy, "GET http://127.0.0.1:" + std::to_string(server.port()) +
                                "/stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  check_refused(r, http::status::method_not_allowed);
  BOOST_TEST(r.answer.res[http::field::allow] == "CONNECT");
  // With a body, which the proxy reads and discards before it closes.
  check_refused(ask_proxy(proxy, "POST http://127.0.0.1:" + std::to_string(server.port()) +
                                     "/nxsys/oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                     "Content-Length: 5\r\n\r\nhello"),
                http::status::method_not_allowed);
  BOOST_TEST(proxy.stats().refused_method == 2u);
  BOOST_TEST(server.stats().connections == 0u);
}

BOOST_AUTO_TEST_CASE(malformed_requests_get_400) {
  connect_proxy proxy;
  static constexpr char garbage[] = "\x16\x03\x01\x02\x00 garbage\r\n\r\n";  // a NUL inside
  check_refused(ask_proxy(proxy, std::string(garbage, sizeof garbage - 1)),
                http::status::bad_request);
  check_refused(ask_proxy(proxy, "CONNECT 127.0.0.1:1 HTTP/1.1\r\nX-Long: " +
                                     std::string(9000, 'a') + "\r\n\r\n"),
                http::status::bad_request);
  for (const char* target : {"127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
                             "127.0.0.1:8x", ":443", "::1:443", "[::1]443"})
    check_refused(ask_proxy(proxy, connect_request(target)), http::status::bad_request);
  check_refused(
      ask_proxy(proxy, "CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"),
      http::status::bad_request);
  BOOST_TEST(proxy.stats().bad_requests == 11u);
  BOOST_TEST(proxy.stats().tunnels == 0u);
  BOOST_TEST(proxy.stats().failed_connects == 0u);
}

BOOST_AUTO_TEST_CASE(connections_beyond_max_connections_are_closed_unanswered) {
  mock_server server;
  connect_proxy_options opts;
  opts.max_connections = 1;
  connect_proxy proxy(opts);
  run([&]() -> asio::awaitable<void> {
    auto first = co_await connect_to(proxy.port());
    beast::flat_buffer buffer;
    auto established =
        co_await exchange(first, buffer, connect_request(loopback(server.port())), true);
    BOOST_REQUIRE(established.res.result_int() == 200);  // the one connection is open
    auto second = co_await connect_to(proxy.port());
    beast::flat_buffer nothing;
    BOOST_TEST(co_await read_to_end(second, nothing) != error_code());
    BOOST_TEST(nothing.size() == 0u);
    // The tunnel still works, and once it is gone there is room again.
    auto token = co_await exchange(first, buffer, token_request(refresh_form()));
    BOOST_TEST(token.res.result_int() == 200);
    first.close();
    BOOST_REQUIRE(eventually([&] { return proxy.open_connections() == 0; }));
    auto third = co_await connect_to(proxy.port());
    auto again = co_await exchange(third, buffer, connect_request(loopback(server.port())), true);
    BOOST_TEST(again.res.result_int() == 200);
  });
  BOOST_TEST(proxy.stats().connections == 3u);
  BOOST_TEST(proxy.stats().tunnels == 2u);
}

BOOST_AUTO_TEST_CASE(without_loopback_only_other_targets_are_tried) {
  connect_proxy_options opts;
  opts.loopback_only = false;
  opts.timeout = std::chrono::milliseconds(500);  // whether 192.0.2.1 is unroutable or dropped
  connect_proxy proxy(opts);
  // TEST-NET-1 (RFC 5737): nothing answers there, so the proxy's attempt fails.
  check_refused(ask_proxy(proxy, connect_request("192.0.2.1:9")), http::status::bad_gateway);
  BOOST_TEST(proxy.stats().refused_target == 0u);
  BOOST_TEST(proxy.stats().failed_connects == 1u);
}

BOOST_AUTO_TEST_CASE(a_client_that_leaves_before_a_whole_request_is_not_answered) {
  connect_proxy proxy;
  run([&]() -> asio::awaitable<void> {
    auto s = co_await connect_to(proxy.port());
    co_await asio::async_write(s, asio::buffer(std::string("CONNECT 127.0.0.1:1 HTTP/1.1\r\n")),
                               asio::use_awaitable);
    s.socket().shutdown(tcp::socket::shutdown_send);
    beast::flat_buffer buffer;
    BOOST_TEST(co_await read_to_end(s, buffer) == asio::error::eof);
    BOOST_TEST(buffer.size() == 0u);  // no answer
  });
  BOOST_TEST(eventually([&] { return proxy.open_connections() == 0; }));
  BOOST_TEST(proxy.stats().bad_requests == 0u);
  BOOST_TEST(proxy.stats().connections == 1u);
}

BOOST_AUTO_TEST_SUITE_END()
