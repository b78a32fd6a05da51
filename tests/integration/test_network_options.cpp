// SPDX-License-Identifier: BSL-1.0
// The network options of http_options, for the token endpoint and the session alike: an HTTP
// proxy with CONNECT (explicit or from the environment, NO_PROXY, Basic credentials, what a
// proxy may answer), the client certificate of mutual TLS (files, PEM in memory, an encrypted
// key) and the configure_context hook; and http_options::validate for them.
#include <nxsys/auth/testing/connect_proxy.hpp>

#include "helpers.hpp"
#include "proxy.hpp"
#include "session_requests.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509_vfy.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <stdlib.h>
#include <string>
#include <thread>
#include <vector>

// GCC 12 sees a mismatched new/delete in coroutine frames that are not (GCC bug 109224).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace asio = boost::asio;
namespace http = boost::beast::http;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;
using namespace std::chrono_literals;
using asio::ip::tcp;
using boost::system::error_code;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// ---- configurations -----------------------------------------------------------------------

mock_server_options tls_server(bool mutual = false) {
  mock_server_options o;
  o.tls = true;
  o.require_client_certificate = mutual;
  return o;
}

mock_server_options tls_server_with(const std::string& cert) {
  mock_server_options o;
  o.tls = true;
  o.cert_chain_file = test_data_dir() + "/" + cert + ".pem";
  o.private_key_file = test_data_dir() + "/" + cert + ".key";
  return o;
}

na::client_config via(const mock_server& server, const connect_proxy& proxy) {
  auto cfg = config_for(server);
  cfg.http.proxy.url = proxy.url();
  return cfg;
}

na::session_config session_config_for(const mock_server& api) {
  na::session_config cfg;
  cfg.base_url = api.base_url();
  cfg.http.tls.ca_file = test_data_dir() + "/ca.pem";
  cfg.http.connect_timeout = 5s;
  cfg.http.request_timeout = 20s;
  return cfg;
}

std::string target_of(const mock_server& server) {
  return "127.0.0.1:" + std::to_string(server.port());
}

// A port nothing listens on: bound, then released.
std::uint16_t closed_port() {
  asio::io_context ctx;
  tcp::acceptor a(ctx, tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), 0));
  return a.local_endpoint().port();
}

// One token() through a fresh io_context.
attempt token_once(const na::client_config& cfg) {
  asio::io_context ctx;
  na::client c(ctx.get_executor(), cfg);
  return try_token(ctx, c);
}

// The error a construction threw (client or session), or none.
template <class F>
std::optional<na::error_with_diagnostics> construction_error(F f) {
  try {
    f();
  } catch (const na::error_with_diagnostics& e) {
    return e;
  }
  return std::nullopt;
}

// Every place a failure's text goes: what(), the error's message and the diagnostics.
std::string all_text(const attempt& a) {
  return a.what + "|" + a.ec.message() + "|" + a.diag.client_message + "|" + a.diag.server_error +
         "|" + a.diag.server_description;
}

// Sets environment variables for one test and restores them all (set or not) afterwards. The
// proxy variables are cleared first, so that the machine's own settings do not leak in.
class environment {
 public:
  environment() {
    for (const char* n : names_) {
      const char* v = ::getenv(n);
      saved_.emplace_back(v ? std::optional<std::string>(v) : std::nullopt);
      ::unsetenv(n);
    }
  }
  ~environment() {
    for (std::size_t i = 0; i < std::size(names_); ++i) {
      if (saved_[i]) {
        ::setenv(names_[i], saved_[i]->c_str(), 1);
      } else {
        ::unsetenv(names_[i]);
      }
    }
  }
  environment(const environment&) = delete;
  environment& operator=(const environment&) = delete;
  void set(const char* name, const std::string& value) { ::setenv(name, value.c_str(), 1); }

 private:
  static constexpr const char* names_[] = {"http_proxy",    "HTTP_PROXY", "https_proxy",
                                           "HTTPS_PROXY",   "no_proxy",   "NO_PROXY",
                                           "REQUEST_METHOD"};
  std::vector<std::optional<std::string>> saved_;
};

// A fake proxy on 127.0.0.1 that reads each request header and writes `answer` (raw bytes, maybe
// nothing), then holds the connection until the client closes it (or closes it itself with
// `close_after`). It records what it was sent.
class canned_proxy {
 public:
  explicit canned_proxy(std::string answer, bool close_after = false)
      : answer_(std::move(answer)),
        close_after_(close_after),
        acceptor_(ctx_, tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), 0)) {
    asio::co_spawn(ctx_, accept_loop(), asio::detached);
    thread_ = std::thread([this] { ctx_.run(); });
  }
  ~canned_proxy() {
    ctx_.stop();
    thread_.join();
  }
  canned_proxy(const canned_proxy&) = delete;
  canned_proxy& operator=(const canned_proxy&) = delete;

  std::string url() const {
    return "http://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port());
  }
  int requests() const { return requests_.load(); }
  std::string last_request() const {
    std::lock_guard lk(mu_);
    return last_request_;
  }

 private:
  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, s] = co_await acceptor_.async_accept(use_tuple);
      if (ec) co_return;
      asio::co_spawn(ctx_, serve(std::move(s)), asio::detached);
    }
  }
  asio::awaitable<void> serve(tcp::socket s) {
    std::string in;
    auto [ec, n] =
        co_await asio::async_read_until(s, asio::dynamic_buffer(in), "\r\n\r\n", use_tuple);
    if (ec) co_return;
    {
      std::lock_guard lk(mu_);
      last_request_ = in.substr(0, n);
    }
    ++requests_;
    if (!answer_.empty()) co_await asio::async_write(s, asio::buffer(answer_), use_tuple);
    if (close_after_) co_return;
    char sink[512];
    for (;;) {
      auto [rec, got] = co_await s.async_read_some(asio::buffer(sink), use_tuple);
      if (rec) co_return;
    }
  }

  std::string answer_;
  bool close_after_;
  asio::io_context ctx_;
  tcp::acceptor acceptor_;
  std::thread thread_;
  std::atomic<int> requests_{0};
  mutable std::mutex mu_;
  std::string last_request_;
};

// The built-in client key encrypted with `password` (PKCS#8, AES-256-CBC).
std::string encrypted_client_key(const std::string& password) {
  const auto pem = mock_server::client_key_pem();
  BIO* in = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(in, nullptr, nullptr, nullptr);
  BIO_free(in);
  BOOST_REQUIRE(key != nullptr);
  BIO* out = BIO_new(BIO_s_mem());
  const int ok =
      PEM_write_bio_PKCS8PrivateKey(out, key, EVP_aes_256_cbc(), const_cast<char*>(password.data()),
                                    static_cast<int>(password.size()), nullptr, nullptr);
  EVP_PKEY_free(key);
  char* data = nullptr;
  const long len = BIO_get_mem_data(out, &data);
  std::string result(data, static_cast<std::size_t>(len));
  BIO_free(out);
  BOOST_REQUIRE(ok == 1);
  return result;
}

// The base64 part of the Basic credentials for `user` and `password`.
std::string raw_basic(std::string_view user, std::string_view password) {
  const auto header = nxsys::auth::detail::proxy_basic_authorization(user, password);
  return std::string(header.view().substr(6));  // after "Basic "
}

na::protocol::endpoint target(std::string host, std::string port, bool is_ip) {
  na::protocol::endpoint ep;
  ep.host = std::move(host);
  ep.port = std::move(port);
  ep.host_is_ip = is_ip;
  return ep;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(network_proxy)

BOOST_AUTO_TEST_CASE(tokens_over_plain_http_go_through_one_kept_alive_tunnel) {
  mock_server server;
  connect_proxy proxy;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), via(server, proxy));
  for (int i = 0; i < 3; ++i) {
    const auto t = get_token(ctx, c);
    BOOST_TEST(t.value() == server.last_access_token());
    c.invalidate();
  }
  const auto ps = proxy.stats();
  BOOST_TEST(ps.tunnels == 1u);
  BOOST_TEST(ps.connections == 1u);
  BOOST_TEST(ps.last_target == target_of(server));
  BOOST_TEST(ps.last_user == "");
  BOOST_TEST(ps.bytes_up > 0u);
  BOOST_TEST(server.stats().refreshes == 3u);
  BOOST_TEST(server.stats().connections == 1u);  // the proxy's, kept alive
  BOOST_TEST(c.stats().connections_opened == 1u);
}

BOOST_AUTO_TEST_CASE(tls_runs_end_to_end_through_the_tunnel) {
  mock_server server(tls_server());
  connect_proxy proxy;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), via(server, proxy));
  for (int i = 0; i < 3; ++i) {
    const auto t = get_token(ctx, c);
    BOOST_TEST(t.value() == server.last_access_token());
    c.invalidate();
  }
  BOOST_TEST(proxy.stats().tunnels == 1u);
  BOOST_TEST(server.stats().tls_handshakes == 1u);
  BOOST_TEST(server.stats().refreshes == 3u);
}

BOOST_AUTO_TEST_CASE(the_target_name_is_what_tls_verifies_not_the_proxy) {
  // SNI and host-name verification of "localhost" through a proxy at 127.0.0.1.
  mock_server server(tls_server());
  connect_proxy proxy;
  auto cfg = via(server, proxy);
  cfg.token_url = "https://localhost:" + std::to_string(server.port()) + "/nxsys/oauth/token";
  auto a = token_once(cfg);
  BOOST_TEST(!a.ec, a.what);
  BOOST_TEST(proxy.stats().last_target == "localhost:" + std::to_string(server.port()));

  // A certificate for another host fails through the proxy as it does directly.
  mock_server wrong(tls_server_with("wrong-host"));
  auto b = token_once(via(wrong, proxy));
  BOOST_TEST(b.ec == na::errc::tls);
  BOOST_TEST(wrong.stats().requests == 0u);
}

BOOST_AUTO_TEST_CASE(the_connect_request_names_the_target_and_carries_basic_credentials) {
  mock_server server;
  canned_proxy fake("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
  auto cfg = config_for(server);
  cfg.http.proxy.url = fake.url();
  cfg.http.proxy.username = "Aladdin";
  cfg.http.proxy.password = "open sesame";
  auto a = token_once(cfg);
  BOOST_TEST(a.ec == na::errc::connection);
  const auto req = fake.last_request();
  BOOST_TEST(req.rfind("CONNECT " + target_of(server) + " HTTP/1.1\r\n", 0) == 0u, req);
  BOOST_TEST(req.find("\r\nHost: " + target_of(server) + "\r\n") != std::string::npos, req);
  // RFC 7617's example.
  BOOST_TEST(req.find("\r\nProxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n") !=
                 std::string::npos,
             req);
  BOOST_TEST(a.what.find("403") != std::string::npos, a.what);
  BOOST_TEST(server.stats().requests == 0u);
}

BOOST_AUTO_TEST_CASE(proxy_credentials_right_wrong_and_missing) {
  mock_server server;
  connect_proxy proxy({.username = "alice", .password = "s3cret-proxy-pw"});
  auto cfg = via(server, proxy);
  cfg.http.proxy.username = "alice";
  cfg.http.proxy.password = "s3cret-proxy-pw";
  auto ok = token_once(cfg);
  BOOST_TEST(!ok.ec, ok.what);
  BOOST_TEST(proxy.stats().tunnels == 1u);
  BOOST_TEST(proxy.stats().last_user == "alice");

  // Wrong password: a typed error, the 407 in the diagnostics, not retried, no password.
  cfg.http.proxy.password = "wrong-proxy-pw";
  cfg.refresh.retry.max_attempts = 3;
  auto wrong = token_once(cfg);
  BOOST_TEST_MESSAGE(wrong.what);
  BOOST_TEST(wrong.ec == na::errc::proxy_authentication);
  BOOST_TEST(wrong.what.find("407") != std::string::npos, wrong.what);
  BOOST_TEST(wrong.what.find("alice") != std::string::npos, wrong.what);
  BOOST_TEST(wrong.what.find("nxsys-test-proxy") != std::string::npos, wrong.what);  // realm
  BOOST_TEST(all_text(wrong).find("wrong-proxy-pw") == std::string::npos, all_text(wrong));
  BOOST_TEST(all_text(wrong).find("s3cret") == std::string::npos, all_text(wrong));
  BOOST_TEST(all_text(wrong).find(raw_basic("alice", "wrong-proxy-pw")) == std::string::npos);
  BOOST_TEST(proxy.stats().refused_auth == 1u);

  // None at all.
  cfg.http.proxy.username.clear();
  cfg.http.proxy.password = "";
  auto missing = token_once(cfg);
  BOOST_TEST_MESSAGE(missing.what);
  BOOST_TEST(missing.ec == na::errc::proxy_authentication);
  BOOST_TEST(missing.what.find("407") != std::string::npos, missing.what);
  BOOST_TEST(missing.what.find("none are configured") != std::string::npos, missing.what);
  BOOST_TEST(proxy.stats().refused_auth == 2u);
  BOOST_TEST(server.stats().requests == 1u);
}

BOOST_AUTO_TEST_CASE(a_proxy_echoing_the_password_has_it_redacted) {
  mock_server server;
  canned_proxy fake(
      "HTTP/1.1 407 no sesame-pw here\r\nProxy-Authenticate: Basic realm=\"sesame-pw\"\r\n"
      "Content-Length: 0\r\n\r\n");
  auto cfg = config_for(server);
  cfg.http.proxy.url = fake.url();
  cfg.http.proxy.username = "u";
  cfg.http.proxy.password = "sesame-pw";
  auto a = token_once(cfg);
  BOOST_TEST(a.ec == na::errc::proxy_authentication);
  BOOST_TEST(all_text(a).find("sesame-pw") == std::string::npos, all_text(a));
  BOOST_TEST(a.what.find("[redacted]") != std::string::npos, a.what);
}

BOOST_AUTO_TEST_CASE(a_session_reaches_the_api_through_the_proxy) {
  mock_server server(tls_server());
  connect_proxy proxy;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server));  // the token endpoint directly
  auto scfg = session_config_for(server);
  scfg.http.proxy.url = proxy.url();
  na::session s(c, scfg);
  for (int i = 0; i < 3; ++i) {
    auto r = send(ctx, s, get("/api/orders"));
    BOOST_REQUIRE_MESSAGE(!r.ec, r.diag.client_message);
    BOOST_TEST(r.res.result_int() == 200u);
  }
  BOOST_TEST(proxy.stats().tunnels == 1u);
  BOOST_TEST(s.stats().connections_opened == 1u);
  BOOST_TEST(s.stats().connections_reused == 2u);
  BOOST_TEST(c.stats().connections_opened == 1u);
  BOOST_TEST(server.stats().api_requests == 3u);
}

BOOST_AUTO_TEST_CASE(a_session_through_an_authenticating_proxy_with_wrong_credentials) {
  mock_server server;
  connect_proxy proxy({.username = "bob", .password = "pw-of-bob"});
  asio::io_context ctx;
  na::client c(ctx.get_executor(), config_for(server));
  auto scfg = session_config_for(server);
  scfg.http.proxy.url = proxy.url();
  scfg.http.proxy.username = "bob";
  scfg.http.proxy.password = "not-pw-of-bob";
  na::session s(c, scfg);
  auto r = send(ctx, s, get("/api/orders"));
  BOOST_TEST(r.ec == na::errc::proxy_authentication);
  BOOST_TEST(r.diag.client_message.find("407") != std::string::npos, r.diag.client_message);
  BOOST_TEST(r.diag.client_message.find("not-pw-of-bob") == std::string::npos);
  BOOST_TEST(server.stats().api_requests == 0u);
}

BOOST_AUTO_TEST_CASE(an_unreachable_proxy_is_a_connection_error_naming_it) {
  mock_server server;
  auto cfg = config_for(server);
  const auto port = closed_port();
  cfg.http.proxy.url = "http://127.0.0.1:" + std::to_string(port);
  auto a = token_once(cfg);
  BOOST_TEST_MESSAGE(a.what);
  BOOST_TEST(a.ec == na::errc::connection);
  BOOST_TEST(a.what.find("proxy 127.0.0.1:" + std::to_string(port)) != std::string::npos, a.what);
  BOOST_TEST(server.stats().requests == 0u);
}

BOOST_AUTO_TEST_CASE(a_proxy_that_cannot_reach_the_target_is_a_connection_error) {
  mock_server server;
  connect_proxy proxy({.refuse_all = true});
  auto a = token_once(via(server, proxy));
  BOOST_TEST_MESSAGE(a.what);
  BOOST_TEST(a.ec == na::errc::connection);
  BOOST_TEST(a.what.find("502") != std::string::npos, a.what);
  BOOST_TEST(proxy.stats().failed_connects == 1u);
}

BOOST_AUTO_TEST_CASE(answers_a_tunnel_cannot_start_after_are_refused) {
  mock_server server;
  struct {
    std::string answer;
    std::string expected;
    bool close_after = false;
  } const cases[] = {
      {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "with a body"},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
       "with a body"},
      {"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 200 OK\r\n", "followed by bytes"},
      {"HTTP/1.1 200 OK\r\nX-Big: " + std::string(9000, 'x') + "\r\n\r\n", "over 8 KiB"},
      {"garbage\r\n\r\n", "not valid HTTP"},
      {"HTTP/1.1 200 OK\r\nContent-", "closed the connection", true},
      {"", "closed the connection", true},
      {"HTTP/1.1 301 Moved Permanently\r\nLocation: /\r\n\r\n", "answered 301"},
  };
  for (const auto& tc : cases) {
    canned_proxy fake(tc.answer, tc.close_after);
    auto cfg = config_for(server);
    cfg.http.proxy.url = fake.url();
    auto a = token_once(cfg);
    BOOST_TEST_MESSAGE(a.what);
    BOOST_TEST(a.ec == na::errc::connection, a.what);
    BOOST_TEST(a.what.find(tc.expected) != std::string::npos, a.what);
    BOOST_TEST(fake.requests() == 1);
  }
  BOOST_TEST(server.stats().requests == 0u);
}

BOOST_AUTO_TEST_CASE(the_connect_timeout_covers_a_silent_proxy) {
  mock_server server;
  canned_proxy silent("");
  auto cfg = config_for(server);
  cfg.http.proxy.url = silent.url();
  cfg.http.connect_timeout = 200ms;
  auto a = token_once(cfg);
  BOOST_TEST_MESSAGE(a.what);
  BOOST_TEST(a.ec == na::errc::timeout, a.what);
  BOOST_TEST(a.what.find("CONNECT") != std::string::npos, a.what);
}

BOOST_AUTO_TEST_CASE(many_requests_on_two_threads_open_one_tunnel_per_connection) {
  mock_server server(mock_server_options{.threads = 2});
  connect_proxy proxy({.threads = 2});
  asio::io_context ctx;
  na::client c(ctx.get_executor(), via(server, proxy));
  auto scfg = session_config_for(server);
  scfg.http.proxy.url = proxy.url();
  scfg.max_connections = 4;
  na::session s(c, scfg);
  std::atomic<int> ok{0}, failed{0};
  constexpr int n = 60;
  for (int i = 0; i < n; ++i)
    asio::co_spawn(
        ctx,
        [&, i]() -> asio::awaitable<void> {
          auto [ec, res] =
              co_await s.async_request(get("/api/item/" + std::to_string(i)), use_tuple);
          if (!ec && res.result_int() == 200) {
            ++ok;
          } else {
            ++failed;
          }
        },
        asio::detached);
  BOOST_REQUIRE(run_bounded(ctx, 2));
  BOOST_TEST(ok.load() == n);
  BOOST_TEST(failed.load() == 0);
  const auto opened = s.stats().connections_opened;
  BOOST_TEST(opened >= 1u);
  BOOST_TEST(opened <= 4u);
  BOOST_TEST(proxy.stats().tunnels == opened + c.stats().connections_opened);
  BOOST_TEST(server.stats().api_requests == static_cast<std::uint64_t>(n));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(network_proxy_environment)

BOOST_AUTO_TEST_CASE(the_environment_is_ignored_unless_asked_for) {
  environment env;
  mock_server server;
  connect_proxy proxy;
  env.set("http_proxy", proxy.url());
  env.set("HTTP_PROXY", proxy.url());
  auto cfg = config_for(server);
  auto a = token_once(cfg);
  BOOST_TEST(!a.ec, a.what);
  BOOST_TEST(proxy.stats().connections == 0u);

  cfg.http.proxy.from_environment = true;
  auto b = token_once(cfg);
  BOOST_TEST(!b.ec, b.what);
  BOOST_TEST(proxy.stats().tunnels == 1u);
}

BOOST_AUTO_TEST_CASE(the_variable_follows_the_scheme_of_the_target) {
  environment env;
  mock_server plain;
  mock_server secure(tls_server());
  connect_proxy for_http, for_https;
  env.set("http_proxy", for_http.url());
  env.set("https_proxy", for_https.url());
  auto cfg = config_for(plain);
  cfg.http.proxy.from_environment = true;
  BOOST_TEST(!token_once(cfg).ec);
  auto scfg = config_for(secure);
  scfg.http.proxy.from_environment = true;
  BOOST_TEST(!token_once(scfg).ec);
  BOOST_TEST(for_http.stats().tunnels == 1u);
  BOOST_TEST(for_http.stats().last_target == target_of(plain));
  BOOST_TEST(for_https.stats().tunnels == 1u);
  BOOST_TEST(for_https.stats().last_target == target_of(secure));
}

BOOST_AUTO_TEST_CASE(upper_case_names_a_value_without_scheme_and_httpoxy) {
  environment env;
  mock_server server;
  connect_proxy proxy;
  auto cfg = config_for(server);
  cfg.http.proxy.from_environment = true;
  // Upper case, and host:port without a scheme.
  env.set("HTTP_PROXY", "127.0.0.1:" + std::to_string(proxy.port()));
  BOOST_TEST(!token_once(cfg).ec);
  BOOST_TEST(proxy.stats().tunnels == 1u);
  // Under CGI, HTTP_PROXY may be a request's Proxy header: ignored.
  env.set("REQUEST_METHOD", "GET");
  BOOST_TEST(!token_once(cfg).ec);
  BOOST_TEST(proxy.stats().tunnels == 1u);
  // http_proxy (lower case) is still read there.
  env.set("http_proxy", proxy.url());
  BOOST_TEST(!token_once(cfg).ec);
  BOOST_TEST(proxy.stats().tunnels == 2u);
}

BOOST_AUTO_TEST_CASE(credentials_from_the_environment_url_and_username_winning) {
  environment env;
  mock_server server;
  connect_proxy proxy({.username = "carol", .password = "p@ss:word"});
  // Percent-encoded user info, as in curl's variables.
  env.set("http_proxy", "http://carol:p%40ss%3Aword@127.0.0.1:" + std::to_string(proxy.port()));
  auto cfg = config_for(server);
  cfg.http.proxy.from_environment = true;
  auto a = token_once(cfg);
  BOOST_TEST(!a.ec, a.what);
  BOOST_TEST(proxy.stats().last_user == "carol");

  // Explicit credentials replace the URL's.
  cfg.http.proxy.username = "dave";
  cfg.http.proxy.password = "nope";
  auto b = token_once(cfg);
  BOOST_TEST(b.ec == na::errc::proxy_authentication);
  BOOST_TEST(proxy.stats().last_user == "dave");
  BOOST_TEST(all_text(b).find("p@ss") == std::string::npos);
  BOOST_TEST(all_text(b).find("nope") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(an_explicit_url_wins_over_the_environment) {
  environment env;
  mock_server server;
  connect_proxy proxy;
  env.set("http_proxy", "http://127.0.0.1:" + std::to_string(closed_port()));
  auto cfg = via(server, proxy);
  cfg.http.proxy.from_environment = true;
  BOOST_TEST(!token_once(cfg).ec);
  BOOST_TEST(proxy.stats().tunnels == 1u);
}

BOOST_AUTO_TEST_CASE(no_proxy_from_the_environment_and_the_options) {
  environment env;
  mock_server server;
  connect_proxy proxy;
  auto cfg = via(server, proxy);
  const auto port = std::to_string(server.port());
  std::uint64_t tunnels = 0;
  auto check = [&](bool proxied) {
    auto a = token_once(cfg);
    BOOST_TEST(!a.ec, a.what);
    if (proxied) ++tunnels;
    BOOST_TEST(proxy.stats().tunnels == tunnels);
  };
  // NO_PROXY only counts with from_environment.
  env.set("NO_PROXY", "127.0.0.1");
  check(true);
  cfg.http.proxy.from_environment = true;
  check(false);
  env.set("no_proxy", "example.com, localhost");  // lower case first; names are not resolved
  check(true);
  env.set("no_proxy", " .example.com,*");
  check(false);
  env.set("no_proxy", "127.0.0.0/8");
  check(false);
  env.set("no_proxy", "127.0.0.1:1");  // another port
  check(true);
  env.set("no_proxy", "127.0.0.1:" + port);
  check(false);
  // The option, without the environment.
  cfg.http.proxy.from_environment = false;
  cfg.http.proxy.no_proxy = {"example.org", "127.0.0.1:" + port};
  check(false);
  cfg.http.proxy.no_proxy = {"example.org,10.0.0.0/8"};
  check(true);
}

BOOST_AUTO_TEST_CASE(an_unusable_proxy_variable_is_invalid_config_naming_it) {
  environment env;
  mock_server server;
  auto cfg = config_for(server);
  cfg.http.proxy.from_environment = true;
  asio::io_context ctx;
  for (const char* value : {"https://user:hunter2@proxy.example:3128", "socks5://127.0.0.1:1080",
                            "http://127.0.0.1:3128/some/path"}) {
    env.set("http_proxy", value);
    auto e = construction_error([&] { na::client c(ctx.get_executor(), cfg); });
    BOOST_REQUIRE(e.has_value());
    BOOST_TEST_MESSAGE(e->what());
    BOOST_TEST(e->code() == na::errc::invalid_config);
    const std::string what = e->what();
    BOOST_TEST(what.find("http_proxy") != std::string::npos, what);
    BOOST_TEST(what.find("hunter2") == std::string::npos, what);
  }
}

BOOST_AUTO_TEST_CASE(no_proxy_patterns) {
  using nxsys::auth::detail::no_proxy_matches;
  const auto name = target("api.example.com", "443", false);
  const auto v4 = target("10.1.2.3", "8443", true);
  const auto v6 = target("fd00::5", "443", true);
  BOOST_TEST(!no_proxy_matches("", name));
  BOOST_TEST(no_proxy_matches("*", name));
  BOOST_TEST(no_proxy_matches("example.com", name));
  BOOST_TEST(no_proxy_matches(".example.com", name));
  BOOST_TEST(no_proxy_matches("*.example.com", name));
  BOOST_TEST(no_proxy_matches("EXAMPLE.com.", name));
  BOOST_TEST(no_proxy_matches("api.example.com", name));
  BOOST_TEST(no_proxy_matches(".api.example.com", name));  // the host itself too
  BOOST_TEST(!no_proxy_matches("ample.com", name));
  BOOST_TEST(!no_proxy_matches("other.example.com", name));
  BOOST_TEST(no_proxy_matches("example.com:443", name));
  BOOST_TEST(!no_proxy_matches("example.com:8443", name));
  BOOST_TEST(no_proxy_matches("a.org , example.com ,b.org", name));
  BOOST_TEST(!no_proxy_matches(",,", name));
  BOOST_TEST(!no_proxy_matches("10.0.0.0/8", name));
  BOOST_TEST(no_proxy_matches("10.1.2.3", v4));
  BOOST_TEST(no_proxy_matches("10.1.2.3:8443", v4));
  BOOST_TEST(!no_proxy_matches("10.1.2.3:443", v4));
  BOOST_TEST(!no_proxy_matches("10.1.2.4", v4));
  BOOST_TEST(no_proxy_matches("10.0.0.0/8", v4));
  BOOST_TEST(no_proxy_matches("10.1.2.0/24", v4));
  BOOST_TEST(!no_proxy_matches("10.1.3.0/24", v4));
  BOOST_TEST(!no_proxy_matches("2.3", v4));  // not a name suffix of an address
  BOOST_TEST(no_proxy_matches("fd00::5", v6));
  BOOST_TEST(no_proxy_matches("[fd00::5]", v6));
  BOOST_TEST(no_proxy_matches("[fd00::5]:443", v6));
  BOOST_TEST(!no_proxy_matches("[fd00::5]:80", v6));
  BOOST_TEST(no_proxy_matches("fd00::/8", v6));
  BOOST_TEST(no_proxy_matches("[fd00::]/16", v6));
  BOOST_TEST(!no_proxy_matches("fe80::/10", v6));
  BOOST_TEST(!no_proxy_matches("10.0.0.0/8", v6));
  BOOST_TEST(!no_proxy_matches("[fd00::5", v6));  // malformed: matches nothing
  BOOST_TEST(!no_proxy_matches("[fd00::5]x, fd00::5:443x", v6));
  BOOST_TEST(no_proxy_matches("bad pattern, example.com", name));  // the rest still counts
  BOOST_TEST(!no_proxy_matches("example.com:0", name));
  BOOST_TEST(no_proxy_matches("example.com:", name));  // an empty port: any port
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(network_client_certificate)

BOOST_AUTO_TEST_CASE(a_server_requiring_one_refuses_a_client_without) {
  mock_server server(tls_server(true));
  auto a = token_once(config_for(server));
  BOOST_TEST(a.ec == na::errc::tls, a.what);
  BOOST_TEST(server.stats().refreshes == 0u);
}

BOOST_AUTO_TEST_CASE(certificate_and_key_files_are_presented) {
  mock_server server(tls_server(true));
  auto cfg = config_for(server);
  cfg.http.tls.certificate_file = server.client_certificate_file();
  cfg.http.tls.private_key_file = server.client_key_file();
  auto a = token_once(cfg);
  BOOST_TEST(!a.ec, a.what);
  BOOST_TEST(server.stats().client_certificates == 1u);
}

BOOST_AUTO_TEST_CASE(certificate_and_key_in_memory_are_presented_also_through_a_proxy) {
  mock_server server(tls_server(true));
  connect_proxy proxy;
  auto cfg = via(server, proxy);
  cfg.http.tls.certificate_pem = mock_server::client_certificate_pem();
  cfg.http.tls.private_key_pem = mock_server::client_key_pem();
  auto a = token_once(cfg);
  BOOST_TEST(!a.ec, a.what);
  BOOST_TEST(server.stats().client_certificates == 1u);
  BOOST_TEST(proxy.stats().tunnels == 1u);
}

BOOST_AUTO_TEST_CASE(a_session_presents_it_too) {
  mock_server server(tls_server(true));
  asio::io_context ctx;
  auto cfg = config_for(server);
  cfg.http.tls.certificate_file = server.client_certificate_file();
  cfg.http.tls.private_key_file = server.client_key_file();
  na::client c(ctx.get_executor(), cfg);
  auto scfg = session_config_for(server);
  scfg.http.tls.certificate_pem = mock_server::client_certificate_pem();
  scfg.http.tls.private_key_pem = mock_server::client_key_pem();
  na::session s(c, scfg);
  auto r = send(ctx, s, get("/api/orders"));
  BOOST_REQUIRE_MESSAGE(!r.ec, r.diag.client_message);
  BOOST_TEST(r.res.result_int() == 200u);
  BOOST_TEST(server.stats().client_certificates == 2u);
}

BOOST_AUTO_TEST_CASE(an_encrypted_key_needs_its_password) {
  mock_server server(tls_server(true));
  auto cfg = config_for(server);
  cfg.http.tls.certificate_pem = mock_server::client_certificate_pem();
  cfg.http.tls.private_key_pem = encrypted_client_key("key-passphrase");
  cfg.http.tls.private_key_password = "key-passphrase";
  auto a = token_once(cfg);
  BOOST_TEST(!a.ec, a.what);

  asio::io_context ctx;
  for (const char* password : {"wrong-passphrase", ""}) {
    cfg.http.tls.private_key_password = password;
    // Never a prompt on the terminal: a clear error at construction.
    auto e = construction_error([&] { na::client c(ctx.get_executor(), cfg); });
    BOOST_REQUIRE(e.has_value());
    BOOST_TEST_MESSAGE(e->what());
    BOOST_TEST(e->code() == na::errc::invalid_config);
    const std::string what = e->what();
    BOOST_TEST(what.find("tls.private_key_pem") != std::string::npos, what);
    BOOST_TEST(what.find("key-passphrase") == std::string::npos, what);
    // The likely cause named: OpenSSL's own words ("bad decrypt") do not say it.
    BOOST_TEST(what.find(*password != '\0'
                             ? "is tls.private_key_password right?"
                             : "encrypted: set tls.private_key_password") != std::string::npos,
               what);
  }
}

BOOST_AUTO_TEST_CASE(unusable_certificates_and_keys_are_invalid_config_at_construction) {
  mock_server server(tls_server(true));
  asio::io_context ctx;
  auto expect = [&](na::client_config cfg, const std::string& words) {
    auto e = construction_error([&] { na::client c(ctx.get_executor(), cfg); });
    BOOST_REQUIRE_MESSAGE(e.has_value(), words);
    BOOST_TEST_MESSAGE(e->what());
    BOOST_TEST(e->code() == na::errc::invalid_config);
    BOOST_TEST(std::string(e->what()).find(words) != std::string::npos, e->what());
    // The session builds its own context, and fails alike.
    na::client c(ctx.get_executor(), config_for(server));
    auto scfg = session_config_for(server);
    scfg.http.tls = cfg.http.tls;
    auto se = construction_error([&] { na::session s(c, scfg); });
    BOOST_REQUIRE(se.has_value());
    BOOST_TEST(se->code() == na::errc::invalid_config);
  };
  auto base = config_for(server);
  base.http.tls.certificate_file = server.client_certificate_file();
  base.http.tls.private_key_file = server.client_key_file();

  auto wrong_key = base;
  wrong_key.http.tls.private_key_file = test_data_dir() + "/server.key";
  expect(wrong_key, "does not match");
  auto wrong_pem = base;
  wrong_pem.http.tls.private_key_file.clear();
  wrong_pem.http.tls.private_key_pem = mock_server::client_key_pem();
  wrong_pem.http.tls.certificate_file = test_data_dir() + "/server.pem";
  expect(wrong_pem, "does not match");
  auto missing = base;
  missing.http.tls.certificate_file = test_data_dir() + "/no-such-file.pem";
  expect(missing, "cannot load tls.certificate_file");
  auto missing_key = base;
  missing_key.http.tls.private_key_file = test_data_dir() + "/no-such-file.key";
  expect(missing_key, "cannot load tls.private_key_file");
  auto not_pem = base;
  not_pem.http.tls.certificate_file.clear();
  not_pem.http.tls.certificate_pem = "not a certificate";
  expect(not_pem, "cannot load tls.certificate_pem");
  auto both = base;
  both.http.tls.certificate_pem = mock_server::client_certificate_pem();
  expect(both, "exclusive");
  auto lone_cert = base;
  lone_cert.http.tls.private_key_file.clear();
  expect(lone_cert, "private key");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(network_configure_context)

BOOST_AUTO_TEST_CASE(the_hook_is_called_for_the_client_and_the_session) {
  mock_server server(tls_server());
  int client_calls = 0, session_calls = 0;
  auto cfg = config_for(server);
  cfg.http.tls.configure_context = [&](asio::ssl::context& sc) {
    ++client_calls;
    BOOST_TEST(sc.native_handle() != nullptr);
  };
  asio::io_context ctx;
  na::client c(ctx.get_executor(), cfg);
  BOOST_TEST(client_calls == 1);
  auto scfg = session_config_for(server);
  scfg.http.tls.configure_context = [&](asio::ssl::context&) { ++session_calls; };
  na::session s(c, scfg);
  BOOST_TEST(session_calls == 1);
  auto r = send(ctx, s, get("/api/orders"));
  BOOST_TEST(!r.ec);
  BOOST_TEST(client_calls == 1);  // once per construction, not per connection
  BOOST_TEST(session_calls == 1);
}

BOOST_AUTO_TEST_CASE(the_hook_may_load_the_client_certificate_itself) {
  mock_server server(tls_server(true));
  const auto cert = server.client_certificate_file(), key = server.client_key_file();
  auto hook = [cert, key](asio::ssl::context& sc) {
    sc.use_certificate_chain_file(cert);
    sc.use_private_key_file(key, asio::ssl::context::pem);
  };
  auto cfg = config_for(server);
  cfg.http.tls.configure_context = hook;
  asio::io_context ctx;
  na::client c(ctx.get_executor(), cfg);
  BOOST_TEST(!get_token(ctx, c).value().empty());
  auto scfg = session_config_for(server);
  scfg.http.tls.configure_context = hook;
  na::session s(c, scfg);
  auto r = send(ctx, s, get("/api/orders"));
  BOOST_REQUIRE_MESSAGE(!r.ec, r.diag.client_message);
  BOOST_TEST(r.res.result_int() == 200u);
  BOOST_TEST(server.stats().client_certificates == 2u);
}

BOOST_AUTO_TEST_CASE(the_hook_runs_after_the_library_settings) {
  // verify_peer is on; the hook switches verification off, and that is what holds.
  mock_server server(tls_server_with("wrong-host"));
  auto cfg = config_for(server);
  BOOST_TEST(token_once(cfg).ec == na::errc::tls);
  cfg.http.tls.configure_context = [](asio::ssl::context& sc) {
    sc.set_verify_mode(asio::ssl::verify_none);
  };
  auto a = token_once(cfg);
  BOOST_TEST(!a.ec, a.what);
}

BOOST_AUTO_TEST_CASE(a_verify_callback_of_the_hook_runs_beside_the_host_name_check) {
  // A callback that accepts what OpenSSL verified, and sees the leaf (as a pinning one would).
  struct counts {
    std::atomic<int> leaf{0}, leaf_preverified{0};
  };
  auto seen = std::make_shared<counts>();
  auto pinning = [seen](asio::ssl::context& sc) {
    sc.set_verify_callback([seen](bool preverified, asio::ssl::verify_context& vc) {
      if (X509_STORE_CTX_get_error_depth(vc.native_handle()) == 0) {
        ++seen->leaf;
        if (preverified) ++seen->leaf_preverified;
      }
      return preverified;
    });
  };
  mock_server server(tls_server());
  auto cfg = config_for(server);
  cfg.http.tls.configure_context = pinning;
  auto a = token_once(cfg);
  BOOST_TEST(!a.ec, a.what);
  BOOST_TEST(seen->leaf.load() >= 1);
  BOOST_TEST(seen->leaf_preverified.load() == seen->leaf.load());

  // The host-name check still holds: the callback sees the leaf fail.
  mock_server wrong(tls_server_with("wrong-host"));
  auto wcfg = config_for(wrong);
  wcfg.http.tls.configure_context = pinning;
  seen->leaf = 0;
  seen->leaf_preverified = 0;
  auto b = token_once(wcfg);
  BOOST_TEST(b.ec == na::errc::tls, b.what);
  BOOST_TEST(seen->leaf.load() >= 1);
  BOOST_TEST(seen->leaf_preverified.load() == 0);
  BOOST_TEST(wrong.stats().requests == 0u);

  // A callback that refuses a certificate OpenSSL accepted wins.
  cfg.http.tls.configure_context = [](asio::ssl::context& sc) {
    sc.set_verify_callback([](bool, asio::ssl::verify_context&) { return false; });
  };
  auto c = token_once(cfg);
  BOOST_TEST(c.ec == na::errc::tls, c.what);
  BOOST_TEST(server.stats().refreshes == 1u);
}

BOOST_AUTO_TEST_CASE(a_throwing_hook_is_invalid_config) {
  mock_server server(tls_server());
  auto cfg = config_for(server);
  cfg.http.tls.configure_context = [](asio::ssl::context&) {
    throw std::runtime_error("no cipher for you");
  };
  asio::io_context ctx;
  auto e = construction_error([&] { na::client c(ctx.get_executor(), cfg); });
  BOOST_REQUIRE(e.has_value());
  BOOST_TEST(e->code() == na::errc::invalid_config);
  BOOST_TEST(std::string(e->what()).find("no cipher for you") != std::string::npos, e->what());
}

BOOST_AUTO_TEST_CASE(the_hook_is_not_called_for_plain_http) {
  mock_server server;
  bool called = false;
  auto cfg = config_for(server);
  cfg.http.tls.configure_context = [&](asio::ssl::context&) { called = true; };
  BOOST_TEST(!token_once(cfg).ec);
  BOOST_TEST(!called);
}

BOOST_AUTO_TEST_SUITE_END()

// validate() accepts `h` (empty `words`), or refuses it with a message holding `words`.
void check(const na::http_options& h, const std::string& words) {
  na::diagnostics d;
  const auto ec = h.validate(&d);
  if (words.empty()) {
    BOOST_TEST(!ec, d.client_message);
    return;
  }
  BOOST_TEST(ec == na::errc::invalid_config);
  BOOST_TEST(d.client_message.find(words) != std::string::npos, d.client_message);
}

BOOST_AUTO_TEST_SUITE(network_options_validate)

BOOST_AUTO_TEST_CASE(proxy_fields) {
  na::http_options h;
  check(h, "");
  for (const char* ok : {"http://127.0.0.1:3128", "http://proxy.example:3128/", "http://[::1]:8080",
                         "http://proxy.example"}) {
    h.proxy.url = ok;
    check(h, "");
  }
  h.proxy.url = "https://proxy.example:3128";
  check(h, "http.proxy.url must be http://");
  h.proxy.url = "http://user:hunter2@proxy.example:3128";
  check(h, "proxy.username and proxy.password");
  na::diagnostics d;
  (void)h.validate(&d);
  BOOST_TEST(d.client_message.find("hunter2") == std::string::npos);
  h.proxy.url = "http://proxy.example:3128/path";
  check(h, "without a path");
  h.proxy.url = "http://proxy.example:3128?x=1";
  check(h, "without a path, query or fragment");
  h.proxy.url = "socks5://proxy.example:1080";
  check(h, "http.proxy.url");
  h.proxy.url = "proxy.example:3128";
  check(h, "http.proxy.url");
  h.proxy.url = "http://proxy.example:0";
  check(h, "port");

  h.proxy.url = "http://proxy.example:3128";
  h.proxy.username = "a:b";
  check(h, "proxy.username must not contain ':'");
  h.proxy.username.clear();
  h.proxy.password = "pw";
  check(h, "proxy.password is set without proxy.username");
  h.proxy.username = "u";
  check(h, "");
  h.proxy.url.clear();
  check(h, "proxy.username is set without proxy.url");
  h.proxy.from_environment = true;
  check(h, "");
}

// Every pattern form no_proxy_patterns matches passes; a mistyped one is named with its index
// and why, so that it cannot silently send its targets through the proxy.
BOOST_AUTO_TEST_CASE(no_proxy_entries) {
  na::http_options h;
  h.proxy.url = "http://proxy.example:3128";
  h.proxy.no_proxy = {"*",
                      "example.com",
                      ".example.com",
                      "*.example.com:443",
                      "a_b.internal.",
                      "10.1.2.3:8443",
                      "10.0.0.0/8",
                      "fd00::5",
                      "[fd00::5]:443",
                      "[fd00::]/16",
                      " a.org , b.org ,",
                      ""};
  check(h, "");
  const std::pair<const char*, const char*> bad[] = {
      {"[fd00::5", "'[fd00::5' is not a pattern: an IPv6 address opened with '[' is not closed"},
      {"[fd00::5]x", "only ':port' or '/length'"},
      {"example.com:https", "the port is not a number from 1 to 65535"},
      {"example.com:70000", "the port is not a number"},
      {":443", "there is no host"},
      {"10.0.0.0/33", "not an IP network"},
      {"exa mple.com", "not '*', a host name, an IP address or an IP network"},
      {"*example.com", "not '*', a host name"},
      {"http://example.com", "not a pattern"},
      {"ok.org, exa/mple", "'exa/mple' is not a pattern"},
  };
  for (const auto& [pattern, words] : bad) {
    h.proxy.no_proxy = {"fine.example", pattern};
    check(h, words);
    check(h, "http.proxy.no_proxy[1]: ");
  }
  // The environment's NO_PROXY is taken as it is: a bad pattern there matches nothing.
  BOOST_TEST(
      !nxsys::auth::detail::no_proxy_matches("exa mple.com", target("exa mple.com", "443", false)));
}

BOOST_AUTO_TEST_CASE(client_certificate_fields) {
  na::http_options h;
  h.tls.certificate_file = "c.pem";
  check(h, "needs a private key");
  h.tls.private_key_file = "k.pem";
  check(h, "");  // files are read when the context is built
  h.tls.private_key_password = "pw";
  check(h, "");
  h.tls.certificate_pem = "PEM";
  check(h, "http.tls.certificate_file and tls.certificate_pem are exclusive");
  h.tls.certificate_pem.clear();
  h.tls.private_key_pem = "PEM";
  check(h, "tls.private_key_file and tls.private_key_pem are exclusive");
  h.tls.private_key_file.clear();
  check(h, "");
  h.tls.certificate_file.clear();
  check(h, "needs a client certificate");
  h.tls.private_key_pem = "";
  check(h, "private_key_password is set without a private key");
}

BOOST_AUTO_TEST_CASE(the_configurations_check_their_http_options) {
  mock_server server;
  auto cfg = config_for(server);
  cfg.http.proxy.url = "https://proxy.example:3128";
  na::diagnostics d;
  BOOST_TEST(cfg.validate(&d) == na::errc::invalid_config);
  BOOST_TEST(d.client_message.find("http.proxy.url") != std::string::npos, d.client_message);
  asio::io_context ctx;
  BOOST_TEST(construction_error([&] { na::client c(ctx.get_executor(), cfg); }).has_value());

  na::client c(ctx.get_executor(), config_for(server));
  auto scfg = session_config_for(server);
  scfg.http.tls.private_key_file = "k.pem";
  na::diagnostics sd;
  BOOST_TEST(scfg.validate(&sd) == na::errc::invalid_config);
  BOOST_TEST(sd.client_message.find("http.tls.private_key_file") != std::string::npos,
             sd.client_message);
  BOOST_TEST(construction_error([&] { na::session s(c, scfg); }).has_value());
}

BOOST_AUTO_TEST_SUITE_END()
