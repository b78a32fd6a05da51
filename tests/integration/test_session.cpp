// SPDX-License-Identifier: BSL-1.0
// nxsys::auth::session against the mock server's protected /api/ endpoint (and a raw TCP
// server for misbehaving connections): the bearer header, the 401 retry with
// compare-and-invalidate, the connection pool, errors, timeouts, TLS, cancellation and
// destruction.
#include "helpers.hpp"
#include "session_requests.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/json/parse.hpp>

#include <functional>
#include <mutex>
#include <optional>
#include <thread>

namespace asio = boost::asio;
namespace http = boost::beast::http;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;
using namespace std::chrono_literals;
using asio::ip::tcp;
using boost::system::error_code;

namespace {

na::session_config session_config_for(const mock_server& api) {
  na::session_config cfg;
  cfg.base_url = api.base_url();
  cfg.http.tls.ca_file = test_data_dir() + "/ca.pem";
  cfg.http.connect_timeout = 5s;
  cfg.http.request_timeout = 20s;
  return cfg;
}

// A TCP server on 127.0.0.1 that hands each accepted connection to `serve`, on a thread of
// its own; the destructor shuts every socket down and joins.
class raw_server {
 public:
  using handler = std::function<void(tcp::socket&, int /*connection number, from 0*/)>;
  explicit raw_server(handler serve)
      : serve_(std::move(serve)), acceptor_(ctx_, {asio::ip::make_address("127.0.0.1"), 0}) {
    accept_thread_ = std::thread([this] {
      for (int n = 0;; ++n) {
        auto sock = std::make_shared<tcp::socket>(ctx_);
        error_code ec;
        acceptor_.accept(*sock, ec);
        if (ec) return;
        std::lock_guard lk(mu_);
        if (stopping_) return;
        sockets_.push_back(sock);
        threads_.emplace_back([this, sock, n] {
          serve_(*sock, n);
          std::lock_guard lk(mu_);  // the destructor shuts sockets down under it too
          error_code ignored;
          sock->shutdown(tcp::socket::shutdown_both, ignored);
          sock->close(ignored);
        });
      }
    });
  }
  ~raw_server() {
    {
      std::lock_guard lk(mu_);
      stopping_ = true;
      for (auto& s : sockets_) {
        error_code ignored;
        s->shutdown(tcp::socket::shutdown_both, ignored);
      }
    }
    error_code ignored;
    acceptor_.cancel(ignored);
    // A blocking accept is not woken by cancel(): connect once to unblock it.
    {
      tcp::socket poke(ctx_);
      poke.connect(acceptor_.local_endpoint(), ignored);
    }
    accept_thread_.join();
    for (auto& t : threads_) t.join();
  }
  std::string base_url() const {
    return "http://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port());
  }

 private:
  handler serve_;
  asio::io_context ctx_;
  tcp::acceptor acceptor_;
  std::mutex mu_;
  bool stopping_ = false;
  std::vector<std::shared_ptr<tcp::socket>> sockets_;
  std::vector<std::thread> threads_;
  std::thread accept_thread_;
};

// Reads one request's headers; false when the peer closed.
bool read_request(tcp::socket& s, asio::streambuf& buf) {
  error_code ec;
  const auto n = asio::read_until(s, buf, "\r\n\r\n", ec);
  if (ec) return false;
  buf.consume(n);
  return true;
}

void answer_ok(tcp::socket& s, bool keep_alive) {
  const std::string body = R"({"ok":true})";
  std::string a = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                  std::to_string(body.size()) + "\r\n" +
                  (keep_alive ? "" : "Connection: close\r\n") + "\r\n" + body;
  error_code ec;
  asio::write(s, asio::buffer(a), ec);
}

// Answers every request of every connection, then keeps reading until the peer goes.
void serve_forever(tcp::socket& s, int) {
  asio::streambuf buf;
  while (read_request(s, buf)) answer_ok(s, true);
}

// Reads requests and never answers.
void serve_silence(tcp::socket& s, int) {
  asio::streambuf buf;
  while (read_request(s, buf)) {
  }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(session)

BOOST_AUTO_TEST_CASE(sends_the_bearer_token_and_reuses_the_connection) {
  mock_server server;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server));
  na::session s(c, session_config_for(server));

  auto req = get("/api/orders?page=2");
  req.set(http::field::authorization, "Bearer forged");  // replaced by the session's
  auto first = send(ctx, s, std::move(req));
  BOOST_REQUIRE(!first.ec);
  BOOST_TEST(first.res.result_int() == 200u);
  BOOST_TEST(boost::json::parse(first.res.body()).at("path").as_string() == "/api/orders");
  auto second = send(ctx, s, get("/api/customers"));
  BOOST_REQUIRE(!second.ec);
  BOOST_TEST(second.res.result_int() == 200u);

  const auto st = s.stats();
  BOOST_TEST(st.requests == 2u);
  BOOST_TEST(st.responses == 2u);
  BOOST_TEST(st.failures == 0u);
  BOOST_TEST(st.connections_opened == 1u);
  BOOST_TEST(st.connections_reused == 1u);
  BOOST_TEST(st.unauthorized_retries == 0u);
  const auto ms = server.stats();
  BOOST_TEST(ms.refreshes == 1u);
  BOOST_TEST(ms.api_requests == 2u);
  BOOST_TEST(ms.api_unauthorized == 0u);
}

BOOST_AUTO_TEST_CASE(a_401_invalidates_the_token_and_retries_once) {
  mock_server server;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server));
  na::session s(c, session_config_for(server));
  BOOST_REQUIRE(send(ctx, s, get("/api/orders")).res.result_int() == 200u);

  server.revoke_access_tokens();
  auto r = send(ctx, s, get("/api/orders"));
  BOOST_REQUIRE(!r.ec);
  BOOST_TEST(r.res.result_int() == 200u);
  const auto st = s.stats();
  BOOST_TEST(st.unauthorized_retries == 1u);
  BOOST_TEST(st.tokens_invalidated == 1u);
  const auto ms = server.stats();
  BOOST_TEST(ms.refreshes == 2u);
  BOOST_TEST(ms.api_requests == 3u);
  BOOST_TEST(ms.api_unauthorized == 1u);
}

BOOST_AUTO_TEST_CASE(a_thousand_concurrent_401s_cause_one_refresh) {
  mock_server server;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server));
  auto cfg = session_config_for(server);
  cfg.max_connections = 16;
  na::session s(c, cfg);
  BOOST_REQUIRE(send(ctx, s, get("/api/warm-up")).res.result_int() == 200u);
  server.revoke_access_tokens();

  constexpr int n = 1000;
  int ok = 0, failed = 0;
  for (int i = 0; i < n; ++i) {
    s.async_request(get("/api/orders/" + std::to_string(i)),
                    [&](error_code ec, na::session::response_type res) {
                      (!ec && res.result_int() == 200u ? ok : failed)++;
                    });
  }
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 1));
  BOOST_TEST(ok == n);
  BOOST_TEST(failed == 0);
  const auto ms = server.stats();
  BOOST_TEST(ms.refreshes == 2u);  // the first token and the one after the revocation
  const auto st = s.stats();
  BOOST_TEST(st.tokens_invalidated == 1u);
  BOOST_TEST(st.unauthorized_retries == ms.api_unauthorized);
  BOOST_TEST(ms.api_requests == 1u + n + ms.api_unauthorized);
  BOOST_TEST(st.connections_opened <= 16u);
  BOOST_TEST(st.waited_for_connection > 0u);
}

BOOST_AUTO_TEST_CASE(a_second_401_is_the_answer) {
  // The API (another mock) knows none of the token server's tokens: every request is 401.
  mock_server tokens, api;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(tokens));
  na::session s(c, session_config_for(api));
  auto r = send(ctx, s, get("/api/orders"));
  BOOST_REQUIRE(!r.ec);
  BOOST_TEST(r.res.result_int() == 401u);
  BOOST_TEST(r.res[http::field::www_authenticate] == "Bearer error=\"invalid_token\"");
  BOOST_TEST(s.stats().unauthorized_retries == 1u);
  BOOST_TEST(tokens.stats().refreshes == 2u);  // one forced refresh, not a loop
  BOOST_TEST(api.stats().api_requests == 2u);
}

BOOST_AUTO_TEST_CASE(the_base_url_path_prefixes_targets) {
  mock_server server;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server));
  auto cfg = session_config_for(server);
  cfg.base_url = server.base_url() + "/api/";
  na::session s(c, cfg);
  auto r = send(ctx, s, get("/orders"));
  BOOST_REQUIRE(!r.ec);
  BOOST_TEST(r.res.result_int() == 200u);
  BOOST_TEST(boost::json::parse(r.res.body()).at("path").as_string() == "/api/orders");
}

BOOST_AUTO_TEST_CASE(a_bad_target_is_refused_before_anything_is_sent) {
  mock_server server;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server));
  na::session s(c, session_config_for(server));
  for (const char* target : {"", "api/orders", "http://elsewhere/api"}) {
    auto r = send(ctx, s, get(target));
    BOOST_TEST(r.ec == na::errc::invalid_argument);
    BOOST_TEST(r.diag.client_message.find("'/'") != std::string::npos);
  }
  BOOST_TEST(server.stats().requests == 0u);
  BOOST_TEST(s.stats().failures == 3u);
}

BOOST_AUTO_TEST_CASE(an_unusable_configuration_is_invalid_config) {
  mock_server server;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server));
  auto expect_invalid = [&](na::session_config cfg, std::string_view says) {
    try {
      na::session s(c, cfg);
      BOOST_ERROR("accepted: " << cfg.base_url);
    } catch (const na::error_with_diagnostics& e) {
      BOOST_TEST(e.code() == na::errc::invalid_config);
      BOOST_TEST(e.get_diagnostics().client_message.find(says) != std::string::npos,
                 e.get_diagnostics().client_message);
    }
  };
  na::session_config cfg;
  cfg.base_url = "http://api.example.com";
  expect_invalid(cfg, "bearer token unencrypted");
  cfg.base_url = "ftp://127.0.0.1";
  expect_invalid(cfg, "base_url must be http");
  cfg.base_url = "http://127.0.0.1/?q=1";
  expect_invalid(cfg, "query");
  cfg.base_url = server.base_url();
  cfg.max_connections = 0;
  expect_invalid(cfg, "max_connections");
  cfg.max_connections = 1;
  cfg.http.tls.ca_file = "/nonexistent/ca.pem";
  cfg.base_url = "https://127.0.0.1:1";
  expect_invalid(cfg, "ca_file");
}

BOOST_AUTO_TEST_CASE(token_errors_are_the_request_errors) {
  mock_server server;
  asio::io_context ctx;
  auto cfg = config_for(server);
  cfg.refresh_token = "not-the-refresh-token";
  na::client c(ctx.get_executor(), cfg);
  na::session s(c, session_config_for(server));
  auto r = send(ctx, s, get("/api/orders"));
  BOOST_TEST(r.ec == na::errc::invalid_grant);
  BOOST_TEST(r.diag.server_error == "invalid_grant");
  BOOST_TEST(server.stats().api_requests == 0u);
}

BOOST_AUTO_TEST_CASE(the_pool_never_exceeds_max_connections) {
  mock_server server;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server));
  auto cfg = session_config_for(server);
  cfg.max_connections = 2;
  na::session s(c, cfg);
  int ok = 0;
  for (int i = 0; i < 50; ++i)
    s.async_request(get("/api/x"), [&](error_code ec, na::session::response_type res) {
      ok += !ec && res.result_int() == 200u;
    });
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 1));
  BOOST_TEST(ok == 50);
  const auto st = s.stats();
  BOOST_TEST(st.connections_opened == 2u);
  BOOST_TEST(st.connections_reused == 48u);
  BOOST_TEST(st.waited_for_connection == 48u);
}

BOOST_AUTO_TEST_CASE(a_connection_the_server_closed_is_not_reused) {
  mock_server server;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server));
  na::session s(c, session_config_for(server));
  BOOST_REQUIRE(send(ctx, s, get("/api/a")).res.result_int() == 200u);
  server.close_idle_connections();
  auto r = send(ctx, s, get("/api/b"));
  BOOST_REQUIRE(!r.ec);
  BOOST_TEST(r.res.result_int() == 200u);
  const auto st = s.stats();
  BOOST_TEST(st.connections_opened == 2u);
  BOOST_TEST(st.connections_reused == 0u);
  BOOST_TEST(st.stale_connection_retries == 0u);
}

BOOST_AUTO_TEST_CASE(connection_close_answers_are_honoured) {
  mock_server server;
  server.set_close_after_response(true);
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server));
  auto cfg = session_config_for(server);
  cfg.base_url = server.base_url();
  na::session s(c, cfg);
  for (int i = 0; i < 3; ++i) BOOST_TEST(send(ctx, s, get("/api/a")).res.result_int() == 200u);
  BOOST_TEST(s.stats().connections_reused == 0u);
}

// The server reads the second request on a kept-alive connection and closes without a word:
// a GET goes out again on a new connection, a POST fails (it may have been executed).
BOOST_AUTO_TEST_CASE(a_connection_closed_under_a_request_retries_only_idempotent_ones) {
  mock_server tokens;
  raw_server api([](tcp::socket& s, int n) {
    asio::streambuf buf;
    if (n % 2 == 0) {  // answers one request, then drops the connection under the next
      if (read_request(s, buf)) answer_ok(s, true);
      read_request(s, buf);
      return;
    }
    serve_forever(s, n);
  });
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(tokens));
  na::session_config cfg;
  cfg.base_url = api.base_url();
  na::session s(c, cfg);

  BOOST_REQUIRE(send(ctx, s, get("/get/1")).res.result_int() == 200u);  // connection 0
  auto r = send(ctx, s, get("/get/2"));  // dropped on connection 0, sent again on 1
  BOOST_REQUIRE(!r.ec);
  BOOST_TEST(r.res.result_int() == 200u);
  BOOST_TEST(s.stats().stale_connection_retries == 1u);

  // Connection 1 keeps answering; connection 2 (opened by the POST) answers the POST, and the
  // next POST on it is dropped: no retry.
  na::session s2(c, cfg);
  na::session::request_type post{http::verb::post, "/orders", 11};
  post.body() = "{}";
  BOOST_REQUIRE(send(ctx, s2, post).res.result_int() == 200u);
  auto p = send(ctx, s2, post);
  BOOST_TEST(p.ec == na::errc::connection);
  BOOST_TEST(s2.stats().stale_connection_retries == 0u);
}

BOOST_AUTO_TEST_CASE(a_silent_api_times_out) {
  mock_server tokens;
  raw_server api(serve_silence);
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(tokens));
  na::session_config cfg;
  cfg.base_url = api.base_url();
  cfg.http.request_timeout = 200ms;
  na::session s(c, cfg);
  auto r = send(ctx, s, get("/api/slow"));
  BOOST_TEST(r.ec == na::errc::timeout);
  BOOST_TEST(r.diag.client_message.find("timed out") != std::string::npos);
  BOOST_TEST(s.stats().failures == 1u);
}

BOOST_AUTO_TEST_CASE(an_answer_beyond_max_response_bytes_is_refused) {
  mock_server tokens;
  raw_server api([](tcp::socket& s, int) {
    asio::streambuf buf;
    if (!read_request(s, buf)) return;
    std::string a = "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + std::string(100000, 'x');
    error_code ec;
    asio::write(s, asio::buffer(a), ec);
  });
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(tokens));
  na::session_config cfg;
  cfg.base_url = api.base_url();
  cfg.http.max_response_bytes = 50'000;
  na::session s(c, cfg);
  BOOST_TEST(send(ctx, s, get("/api/big")).ec == na::errc::response_too_large);
}

BOOST_AUTO_TEST_CASE(works_over_tls_and_verifies_the_server) {
  mock_server_options opts;
  opts.tls = true;
  mock_server server(opts);
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server, opts));
  na::session s(c, session_config_for(server));
  for (int i = 0; i < 2; ++i) {
    auto r = send(ctx, s, get("/api/orders"));
    BOOST_REQUIRE(!r.ec);
    BOOST_TEST(r.res.result_int() == 200u);
  }
  BOOST_TEST(s.stats().connections_opened == 1u);

  auto untrusted = session_config_for(server);
  untrusted.http.tls.ca_file = test_data_dir() + "/self-signed.pem";  // not the server's CA
  na::session bad(c, untrusted);
  auto r = send(ctx, bad, get("/api/orders"));
  BOOST_TEST(r.ec == na::errc::tls);
  BOOST_TEST(server.stats().api_requests == 2u);
}

BOOST_AUTO_TEST_CASE(cancelling_a_request_ends_only_that_request) {
  mock_server tokens;
  raw_server api(serve_silence);
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(tokens));
  na::session_config cfg;
  cfg.base_url = api.base_url();
  na::session s(c, cfg);

  // Waiting for the answer: the connection is closed, the request ends at once.
  asio::cancellation_signal sig;
  std::optional<error_code> got;
  s.async_request(get("/api/slow"),
                  asio::bind_cancellation_slot(
                      sig.slot(), [&](error_code ec, na::session::response_type) { got = ec; }));
  asio::steady_timer t(ctx, 200ms);
  t.async_wait([&](error_code) { sig.emit(asio::cancellation_type::terminal); });
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 1, 10s));
  BOOST_REQUIRE(got.has_value());
  BOOST_TEST(*got == asio::error::operation_aborted);
  BOOST_TEST(s.stats().failures == 1u);
}

BOOST_AUTO_TEST_CASE(cancelling_while_waiting_for_the_token_leaves_the_refresh_running) {
  mock_server_options opts;
  opts.latency = 300ms;
  mock_server server(opts);
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server));
  na::session s(c, session_config_for(server));
  asio::cancellation_signal sig;
  std::optional<error_code> cancelled, other;
  s.async_request(get("/api/a"), asio::bind_cancellation_slot(
                                     sig.slot(), [&](error_code ec, na::session::response_type) {
                                       cancelled = ec;
                                     }));
  s.async_request(get("/api/b"), [&](error_code ec, na::session::response_type res) {
    other =
        ec ? ec : error_code(static_cast<int>(res.result_int()), boost::system::generic_category());
  });
  asio::steady_timer t(ctx, 50ms);
  t.async_wait([&](error_code) { sig.emit(asio::cancellation_type::partial); });
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 1, 10s));
  BOOST_REQUIRE(cancelled.has_value());
  BOOST_TEST(*cancelled == asio::error::operation_aborted);
  BOOST_REQUIRE(other.has_value());
  BOOST_TEST(other->value() == 200);
  BOOST_TEST(server.stats().refreshes == 1u);
  BOOST_TEST(server.stats().api_requests == 1u);
}

BOOST_AUTO_TEST_CASE(total_cancellation_is_not_supported_and_ignored) {
  mock_server_options opts;
  opts.latency = 200ms;
  mock_server server(opts);
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server));
  na::session s(c, session_config_for(server));
  asio::cancellation_signal sig;
  std::optional<error_code> got;
  unsigned status = 0;
  s.async_request(get("/api/a"), asio::bind_cancellation_slot(
                                     sig.slot(), [&](error_code ec, na::session::response_type r) {
                                       got = ec;
                                       status = r.result_int();
                                     }));
  asio::steady_timer t(ctx, 50ms);
  t.async_wait([&](error_code) { sig.emit(asio::cancellation_type::total); });
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 1, 10s));
  BOOST_REQUIRE(got.has_value());
  BOOST_TEST(!*got);
  BOOST_TEST(status == 200u);
}

BOOST_AUTO_TEST_CASE(cancelling_while_waiting_for_a_connection) {
  mock_server tokens;
  raw_server api(serve_silence);
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(tokens));
  na::session_config cfg;
  cfg.base_url = api.base_url();
  cfg.max_connections = 1;
  cfg.http.request_timeout = 500ms;
  na::session s(c, cfg);
  std::optional<error_code> first, second;
  s.async_request(get("/api/1"), [&](error_code ec, auto) { first = ec; });
  asio::cancellation_signal sig;
  s.async_request(get("/api/2"), asio::bind_cancellation_slot(
                                     sig.slot(), [&](error_code ec, auto) { second = ec; }));
  asio::steady_timer t(ctx, 100ms);
  t.async_wait([&](error_code) { sig.emit(asio::cancellation_type::terminal); });
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 1, 10s));
  BOOST_TEST(*second == asio::error::operation_aborted);
  BOOST_TEST(*first == na::errc::timeout);  // the one connection was never taken from it
  BOOST_TEST(s.stats().waited_for_connection == 1u);
  BOOST_TEST(s.stats().connections_opened == 1u);
}

BOOST_AUTO_TEST_CASE(destroying_the_session_aborts_its_requests) {
  mock_server tokens;
  raw_server api(serve_silence);
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(tokens));
  na::session_config cfg;
  cfg.base_url = api.base_url();
  cfg.max_connections = 4;
  auto s = std::make_unique<na::session>(c, cfg);
  int aborted = 0, other = 0;
  for (int i = 0; i < 20; ++i)  // 4 on connections, 16 waiting for one
    s->async_request(get("/api/x"), [&](error_code ec, auto) {
      (ec == asio::error::operation_aborted ? aborted : other)++;
    });
  asio::steady_timer t(ctx, 200ms);
  t.async_wait([&](error_code) { s.reset(); });
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 1, 10s));
  BOOST_TEST(aborted == 20);
  BOOST_TEST(other == 0);
}

BOOST_AUTO_TEST_CASE(destroying_the_client_aborts_requests_waiting_for_a_token) {
  mock_server_options opts;
  opts.latency = 2s;
  mock_server server(opts);
  asio::io_context ctx;
  auto c = std::make_unique<na::client>(ctx.get_executor(), config_for(server));
  na::session s(*c, session_config_for(server));
  std::optional<error_code> got;
  s.async_request(get("/api/x"), [&](error_code ec, auto) { got = ec; });
  asio::steady_timer t(ctx, 50ms);
  t.async_wait([&](error_code) { c.reset(); });
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 1, 10s));
  BOOST_REQUIRE(got.has_value());
  BOOST_TEST(*got == asio::error::operation_aborted);
  BOOST_TEST(server.stats().api_requests == 0u);
}

BOOST_AUTO_TEST_CASE(the_awaitable_form_throws_with_diagnostics) {
  mock_server tokens;
  raw_server api(serve_silence);
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(tokens));
  na::session_config cfg;
  cfg.base_url = api.base_url();
  cfg.http.request_timeout = 100ms;
  na::session s(c, cfg);
  run_coro(ctx, [&]() -> asio::awaitable<void> {
    try {
      co_await s.request(get("/api/x"));
      BOOST_ERROR("no exception");
    } catch (const na::error_with_diagnostics& e) {
      BOOST_TEST(e.code() == na::errc::timeout);
      BOOST_TEST(std::string(e.what()).find("timed out") != std::string::npos);
    }
    auto ok = co_await na::session(c, session_config_for(tokens)).request(get("/api/y"));
    BOOST_TEST(ok.result_int() == 200u);
  });
}

BOOST_AUTO_TEST_SUITE_END()
