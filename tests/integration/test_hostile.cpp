// SPDX-License-Identifier: BSL-1.0
// Hostile and broken token endpoints: each failure is its typed error, and the client works
// again as soon as the server answers properly.
//   - transport-level misbehaviour comes from a scripted raw TCP server (resets mid-headers and
//     mid-body, silence, a one-byte-per-second trickle, a 10 MB body);
//   - answer-level misbehaviour from the mock server's scripted answers (bad JSON, bad expiry,
//     HTML 500, 503 with Retry-After).
#include "helpers.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <thread>

namespace asio = boost::asio;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;
using asio::ip::tcp;

namespace {

const std::string good_body = R"({"accessToken":"good-token","expiresIn":3600})";
const std::string good_answer =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
    std::to_string(good_body.size()) + "\r\nConnection: close\r\n\r\n" + good_body;

// What the server does with one connection, after reading the request's headers.
enum class behaviour { answer, reset_mid_headers, reset_mid_body, silent, trickle, huge_body };

// Accepts on 127.0.0.1 and treats the n-th connection with the n-th behaviour; once the
// script is used up, every connection gets `good_answer`.
class scripted_tcp_server {
 public:
  explicit scripted_tcp_server(std::deque<behaviour> script)
      : script_(std::move(script)), acceptor_(ctx_, {asio::ip::make_address("127.0.0.1"), 0}) {
    accept();
    thread_ = std::thread([this] { ctx_.run(); });
  }
  ~scripted_tcp_server() {
    asio::post(ctx_, [this] { ctx_.stop(); });
    thread_.join();
  }
  std::string token_url() const {
    return "http://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()) +
           "/nxsys/oauth/token";
  }

 private:
  struct session {
    tcp::socket socket;
    asio::streambuf request;
    asio::steady_timer timer;
    std::string pending;
    explicit session(tcp::socket s) : socket(std::move(s)), timer(socket.get_executor()) {}
  };

  void accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket s) {
      if (ec) return;
      auto b = behaviour::answer;
      if (!script_.empty()) {
        b = script_.front();
        script_.pop_front();
      }
      auto sess = std::make_shared<session>(std::move(s));
      asio::async_read_until(sess->socket, sess->request, "\r\n\r\n",
                             [this, sess, b](boost::system::error_code ec, std::size_t) {
                               if (!ec) act(sess, b);
                             });
      accept();
    });
  }

  // Closes with RST instead of FIN: what a crashing server or a middlebox does.
  static void reset(const std::shared_ptr<session>& s) {
    boost::system::error_code ignored;
    s->socket.set_option(asio::socket_base::linger(true, 0), ignored);
    s->socket.close(ignored);
  }

  void act(const std::shared_ptr<session>& s, behaviour b) {
    switch (b) {
      case behaviour::answer:
        return write_then(s, good_answer, [](auto) {});
      case behaviour::reset_mid_headers:
        return write_then(s, "HTTP/1.1 200 OK\r\nContent-Type: applic", reset);
      case behaviour::reset_mid_body:
        return write_then(s,
                          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          "Content-Length: 100\r\n\r\n{\"accessToken\":",
                          reset);
      case behaviour::silent:
        return held_.push_back(s);  // open, never answered, until the server stops
      case behaviour::trickle:
        s->pending = good_answer;
        return trickle(s);
      case behaviour::huge_body: {
        std::string head =
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10485760\r\n\r\n";
        return write_then(s, head + std::string(10 * 1024 * 1024, 'x'), [](auto) {});
      }
    }
  }

  template <class Then>
  void write_then(const std::shared_ptr<session>& s, std::string data, Then then) {
    auto buf = std::make_shared<std::string>(std::move(data));
    asio::async_write(s->socket, asio::buffer(*buf),
                      [s, buf, then](boost::system::error_code, std::size_t) { then(s); });
  }

  void trickle(const std::shared_ptr<session>& s) {
    if (s->pending.empty()) return;
    const std::string one = s->pending.substr(0, 1);
    s->pending.erase(0, 1);
    write_then(s, one, [this](const std::shared_ptr<session>& s) {
      s->timer.expires_after(std::chrono::seconds(1));
      s->timer.async_wait([this, s](boost::system::error_code ec) {
        if (!ec) trickle(s);
      });
    });
  }

  asio::io_context ctx_;
  std::deque<behaviour> script_;
  tcp::acceptor acceptor_;
  std::vector<std::shared_ptr<session>> held_;
  std::thread thread_;
};

na::client_config config_at(const std::string& url) {
  na::client_config cfg;
  cfg.token_url = url;
  cfg.client_id = "test-client";
  cfg.client_secret = "test-secret";
  cfg.refresh_token = "refresh-0";
  cfg.http.connect_timeout = std::chrono::seconds(2);
  cfg.http.request_timeout = std::chrono::milliseconds(1500);
  cfg.refresh.min_retry_spacing = std::chrono::milliseconds(0);  // the next call must try again
  cfg.refresh.retry.max_attempts = 1;  // and the error must reach the caller
  return cfg;
}

// One bad connection, then a good one: the error first, then a token. With retries on
// (`retried`), a transient failure never reaches the caller: the same call gets the token.
void bad_then_good(behaviour b, na::errc expected, bool retried = false) {
  {
    scripted_tcp_server server({b});
    asio::io_context ctx;
    na::client c(ctx.get_executor(), config_at(server.token_url()));
    const auto bad = try_token(ctx, c);
    BOOST_TEST(bad.ec == expected, bad.ec.message() << ": " << bad.what);
    const auto good = try_token(ctx, c);
    BOOST_TEST(!good.ec, good.what);
    BOOST_TEST(good.token.value() == "good-token");
    BOOST_TEST(c.stats().retries == 0u);
  }
  if (!retried) return;
  scripted_tcp_server server({b});
  asio::io_context ctx;
  auto cfg = config_at(server.token_url());
  cfg.refresh.retry = {3, std::chrono::milliseconds(10), std::chrono::milliseconds(50)};
  na::client c(ctx.get_executor(), cfg);
  const auto first = try_token(ctx, c);
  BOOST_TEST(!first.ec, first.what);
  BOOST_TEST(first.token.value() == "good-token");
  const auto s = c.stats();
  BOOST_TEST(s.retries == 1u);
  BOOST_TEST(s.refreshes_started == 1u);
  BOOST_TEST(s.refreshes_succeeded == 1u);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(hostile_servers)

BOOST_AUTO_TEST_CASE(a_reset_in_the_headers_is_a_connection_error_and_is_retried) {
  bad_then_good(behaviour::reset_mid_headers, na::errc::connection, true);
}

BOOST_AUTO_TEST_CASE(a_reset_in_the_body_is_a_connection_error_and_is_retried) {
  bad_then_good(behaviour::reset_mid_body, na::errc::connection, true);
}

BOOST_AUTO_TEST_CASE(a_server_that_never_answers_times_out_and_is_retried) {
  bad_then_good(behaviour::silent, na::errc::timeout, true);
}

BOOST_AUTO_TEST_CASE(a_one_byte_per_second_trickle_times_out_and_is_retried) {
  bad_then_good(behaviour::trickle, na::errc::timeout, true);
}

BOOST_AUTO_TEST_CASE(a_10_mb_body_is_refused_without_reading_it) {
  bad_then_good(behaviour::huge_body, na::errc::response_too_large);
}

// Answers with the right framing and the wrong content, from the mock server.
BOOST_AUTO_TEST_CASE(broken_answers_are_typed_errors_and_the_next_call_succeeds) {
  struct bad_answer {
    const char* name;
    scripted_failure answer;
    na::errc expected;
  };
  const std::vector<bad_answer> cases = {
      {"invalid JSON",
       {200, R"({"accessToken":)", "application/json", {}},
       na::errc::malformed_response},
      {"JSON null", {200, "null", "application/json", {}}, na::errc::malformed_response},
      {"JSON array",
       {200, R"(["accessToken"])", "application/json", {}},
       na::errc::malformed_response},
      {"JSON number", {200, "42", "application/json", {}}, na::errc::malformed_response},
      {"no access token",
       {200, R"({"expiresIn":3600})", "application/json", {}},
       na::errc::malformed_response},
      {"negative expiry",
       {200, R"({"accessToken":"a","expiresIn":-1})", "application/json", {}},
       na::errc::malformed_response},
      {"zero expiry",
       {200, R"({"accessToken":"a","expiresIn":0})", "application/json", {}},
       na::errc::malformed_response},
      {"non-numeric expiry",
       {200, R"({"accessToken":"a","expiresIn":"soon"})", "application/json", {}},
       na::errc::malformed_response},
      {"HTML 500",
       {500, "<html><body>Internal Server Error</body></html>", "text/html", {}},
       na::errc::server_error},
      {"503 with Retry-After",
       {503, R"({"error":"temporarily_unavailable"})", "application/json", {{"Retry-After", "1"}}},
       na::errc::temporarily_unavailable},
      {"301",
       {301, "", "text/plain", {{"Location", "https://elsewhere.example/"}}},
       na::errc::unexpected_status},
  };
  mock_server server;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server));
  for (const auto& k : cases) {
    BOOST_TEST_CONTEXT(k.name) {
      server.fail_next(k.answer);
      const auto bad = try_token(ctx, c);
      BOOST_TEST(bad.ec == k.expected, bad.ec.message() << ": " << bad.what);
      BOOST_TEST(!bad.what.empty());
      const bool retry_after = std::any_of(k.answer.headers.begin(), k.answer.headers.end(),
                                           [](const auto& h) { return h.first == "Retry-After"; });
      if (retry_after) {
        // Retry-After holds across refreshes (I5): until it passes, callers get the failure
        // without a request.
        const auto requests = server.stats().requests;
        BOOST_TEST(try_token(ctx, c).ec == k.expected);
        BOOST_TEST(server.stats().requests == requests);
        std::this_thread::sleep_for(std::chrono::milliseconds(1050));
      }
      const auto good = try_token(ctx, c);
      BOOST_TEST(!good.ec, good.what);
      c.invalidate();  // the next case needs a refresh again
    }
  }
}

BOOST_AUTO_TEST_CASE(a_huge_expiry_is_clamped_not_overflowed) {
  mock_server server;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server));
  server.fail_next(
      {200, R"({"accessToken":"long-lived","expiresIn":1e300})", "application/json", {}});
  const auto a = try_token(ctx, c);
  BOOST_TEST(!a.ec, a.what);
  const auto left = a.token.expires_at() - std::chrono::steady_clock::now();
  BOOST_TEST((left > std::chrono::hours(24 * 365 * 9)));
  BOOST_TEST((left <= na::protocol::max_expires_in));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(down_server)

// The token endpoint refuses connections for 5 s; 10,000 callers on 2 threads keep asking, with
// retries on. The endpoint must see a bounded number of attempts (one refresh per
// min_retry_spacing, each with its few bounded retries), every call must end with the failure
// rather than wait, and once the server is back and the spacing has passed, the next call gets
// a token.
BOOST_AUTO_TEST_CASE(looping_callers_cannot_storm_a_down_server) {
  std::uint16_t port;
  {
    asio::io_context tmp;
    tcp::acceptor a(tmp, {asio::ip::make_address("127.0.0.1"), 0});
    port = a.local_endpoint().port();
  }  // nothing listens there now
  auto cfg = config_at("http://127.0.0.1:" + std::to_string(port) + "/nxsys/oauth/token");
  cfg.refresh.min_retry_spacing = std::chrono::milliseconds(500);
  cfg.refresh.retry = {3, std::chrono::milliseconds(1), std::chrono::milliseconds(4)};
  auto clk = std::make_shared<manual_clock>();
  cfg.clock = clk;
  asio::io_context ctx(2);
  na::client c(ctx.get_executor(), cfg);

  std::atomic<bool> stop{false};
  std::atomic<long> failures{0}, other_errors{0}, successes{0};  // Boost.Test is one-thread
  for (int i = 0; i < 10'000; ++i)
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          while (!stop.load()) {
            try {
              co_await c.token();
              ++successes;
            } catch (const na::error_with_diagnostics& e) {
              ++(e.code() == na::errc::connection ? failures : other_errors);
            }
            co_await asio::post(ctx, asio::use_awaitable);  // a caller's loop, not a spin
          }
        },
        asio::detached);
  std::vector<std::thread> pool;
  for (int i = 0; i < 2; ++i) pool.emplace_back([&] { ctx.run(); });
  // "Down" for 5 s of the client's clock: 10 spacing intervals, moved by hand so that the
  // count of intervals does not depend on how fast this machine runs the loop. Each interval
  // lasts until the callers have failed another 10,000 times (a loaded machine takes longer).
  auto callers_loop_on = [&] {
    const long before = failures.load();
    return eventually([&] { return failures.load() >= before + 10'000; });
  };
  for (int step = 0; step < 10; ++step) {
    BOOST_TEST(callers_loop_on());
    clk->advance(std::chrono::milliseconds(500));
  }
  BOOST_TEST(callers_loop_on());
  const auto during = c.stats();
  mock_server_options opts;
  opts.port = port;
  mock_server server(opts);                      // back up
  clk->advance(std::chrono::milliseconds(500));  // the spacing passes
  BOOST_TEST(eventually([&] { return successes.load() > 0; }));
  stop = true;
  for (auto& t : pool) t.join();

  // One refresh per interval (+1 for the first), whatever the callers did meanwhile, and each
  // made at most max_attempts requests.
  BOOST_TEST(during.refreshes_started <= 11u);
  BOOST_TEST(during.refreshes_started >= 2u);
  BOOST_TEST(during.retries <= 2 * during.refreshes_started);
  // Every other call was answered without an attempt of its own: with the failure inside the
  // spacing, or by joining the refresh in flight (how many of each depends on machine speed).
  BOOST_TEST(during.calls_failed_fast + during.waiters_coalesced > 10'000u);
  BOOST_TEST(failures.load() > 10'000);
  BOOST_TEST(other_errors.load() == 0);
  // Back up: one attempt, and it succeeded.
  BOOST_TEST(server.stats().refreshes == 1u);
  BOOST_TEST(server.stats().errors == 0u);
}

BOOST_AUTO_TEST_CASE(a_call_after_the_spacing_tries_again) {
  mock_server server;
  asio::io_context ctx;
  auto cfg = config_for(server);
  cfg.refresh.min_retry_spacing = std::chrono::seconds(5);
  auto clk = std::make_shared<manual_clock>();
  cfg.clock = clk;
  na::client c(ctx.get_executor(), cfg);
  server.fail_next({503,
                    R"({"error":"temporarily_unavailable","error_description":"down"})",
                    "application/json",
                    {}});
  const auto first = try_token(ctx, c);
  BOOST_TEST(first.ec == na::errc::temporarily_unavailable);
  const auto fast = try_token(ctx, c);  // inside the spacing: the same failure, no request
  BOOST_TEST(fast.ec == na::errc::temporarily_unavailable);
  BOOST_TEST(fast.diag.server_description == "down");
  BOOST_TEST(server.stats().requests == 1u);
  BOOST_TEST(c.stats().calls_failed_fast == 1u);
  clk->advance(std::chrono::seconds(5));
  BOOST_TEST(!try_token(ctx, c).ec);
  BOOST_TEST(server.stats().requests == 2u);
}

BOOST_AUTO_TEST_SUITE_END()
