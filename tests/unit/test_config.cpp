// SPDX-License-Identifier: BSL-1.0
// The configurations' validate(): one error style (invalid_config, the field named), checked
// without building a client or a session; and the grouped fields' defaults.
#include <nxsys/auth/config.hpp>
#include <nxsys/auth/http_options.hpp>
#include <nxsys/auth/session.hpp>
#include <nxsys/auth/token_store.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace na = nxsys::auth;
using namespace std::chrono_literals;

na::client_config good_client() {
  return na::client_config{
      .token_url = "https://auth.example.com/nxsys/oauth/token",
      .client_id = "id",
      .client_secret = "secret",
      .refresh_token = "rt",
  };
}

na::session_config good_session() {
  return na::session_config{.base_url = "https://api.example.com/v2"};
}

// validate() of `cfg` changed by `edit`: the error, and the message naming what is wrong.
template <class Config>
std::pair<boost::system::error_code, std::string> check(Config cfg,
                                                        const std::function<void(Config&)>& edit) {
  edit(cfg);
  na::diagnostics d;
  auto ec = cfg.validate(&d);
  return {ec, d.client_message};
}

struct client_case {
  const char* expected;  // a substring of the message
  std::function<void(na::client_config&)> edit;
};

struct session_case {
  const char* expected;
  std::function<void(na::session_config&)> edit;
};

}  // namespace

BOOST_AUTO_TEST_SUITE(config)

BOOST_AUTO_TEST_CASE(a_good_configuration_validates) {
  BOOST_TEST(!good_client().validate());
  BOOST_TEST(!good_session().validate());
  BOOST_TEST(!na::http_options{}.validate());
  // No refresh token is fine when a store may hold one (a restarted process).
  boost::asio::io_context ctx;
  auto c = good_client();
  c.refresh_token.wipe();
  c.storage.store = std::make_shared<na::memory_store>(ctx.get_executor());
  BOOST_TEST(!c.validate());
  c.http.allow_insecure_http = true;
  c.token_url = "http://auth.example.com/t";
  BOOST_TEST(!c.validate());
  // client_credentials needs no refresh token and no store.
  auto cc = good_client();
  cc.grant = na::grant_type::client_credentials;
  cc.refresh_token.wipe();
  BOOST_TEST(!cc.validate());
}

BOOST_AUTO_TEST_CASE(each_bad_client_field_is_named) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<client_case> cases{
      {"token_url", [](auto& c) { c.token_url = "ftp://x/y"; }},
      {"token_url", [](auto& c) { c.token_url = "http://auth.example.com/t"; }},
      {"client_id is empty", [](auto& c) { c.client_id.clear(); }},
      {"grant is not a grant_type", [](auto& c) { c.grant = static_cast<na::grant_type>(7); }},
      {"dialect is not a dialect", [](auto& c) { c.dialect = static_cast<na::dialect>(7); }},
      {"authentication is not a client_authentication",
       [](auto& c) { c.authentication = static_cast<na::client_authentication>(-1); }},
      {"http.proxy.no_proxy[0]: 'a b' is not a pattern",
       [](auto& c) { c.http.proxy.no_proxy = {"a b"}; }},
      {"refresh_token is empty", [](auto& c) { c.refresh_token.wipe(); }},
      {"refresh.leeway is negative", [](auto& c) { c.refresh.leeway = -1s; }},
      {"refresh.leeway_max_fraction", [](auto& c) { c.refresh.leeway_max_fraction = 1.0; }},
      {"refresh.leeway_max_fraction", [=](auto& c) { c.refresh.leeway_max_fraction = nan; }},
      {"refresh.default_lifetime", [](auto& c) { c.refresh.default_lifetime = 0s; }},
      {"refresh.ahead_fraction", [](auto& c) { c.refresh.ahead_fraction = -0.1; }},
      {"refresh.min_retry_spacing", [](auto& c) { c.refresh.min_retry_spacing = -1ms; }},
      {"refresh.retry.max_attempts", [](auto& c) { c.refresh.retry.max_attempts = 0; }},
      {"refresh.retry back-offs", [](auto& c) { c.refresh.retry.max_backoff = 10ms; }},
      {"refresh.deadline", [](auto& c) { c.refresh.deadline = 0ms; }},
      {"storage.retry_interval", [](auto& c) { c.storage.retry_interval = 0ms; }},
      {"http.connect_timeout", [](auto& c) { c.http.connect_timeout = 0ms; }},
      {"http.request_timeout", [](auto& c) { c.http.request_timeout = -5ms; }},
      {"http.max_idle_connection", [](auto& c) { c.http.max_idle_connection = -1ms; }},
      {"http.max_response_bytes", [](auto& c) { c.http.max_response_bytes = 255; }},
      {"refresh_token must be empty with grant client_credentials",
       [](auto& c) { c.grant = na::grant_type::client_credentials; }},
      {"client_secret is empty",
       [](auto& c) {
         c.grant = na::grant_type::client_credentials;
         c.refresh_token.wipe();
         c.client_secret.wipe();
       }},
  };
  for (const auto& k : cases) {
    const auto [ec, message] = check<na::client_config>(good_client(), k.edit);
    BOOST_TEST_CONTEXT(k.expected) {
      BOOST_TEST(ec == na::errc::invalid_config);
      BOOST_TEST(message.find(k.expected) != std::string::npos, message);
    }
  }
}

BOOST_AUTO_TEST_CASE(each_bad_session_field_is_named) {
  const std::vector<session_case> cases{
      {"base_url", [](auto& c) { c.base_url.clear(); }},
      {"base_url must not hold a query", [](auto& c) { c.base_url += "?a=b"; }},
      {"base_url", [](auto& c) { c.base_url = "http://api.example.com"; }},
      {"max_connections", [](auto& c) { c.max_connections = 0; }},
      {"http.request_timeout", [](auto& c) { c.http.request_timeout = 0ms; }},
      {"http.max_response_bytes", [](auto& c) { c.http.max_response_bytes = 1; }},
  };
  for (const auto& k : cases) {
    const auto [ec, message] = check<na::session_config>(good_session(), k.edit);
    BOOST_TEST_CONTEXT(k.expected) {
      BOOST_TEST(ec == na::errc::invalid_config);
      BOOST_TEST(message.find(k.expected) != std::string::npos, message);
    }
  }
}

BOOST_AUTO_TEST_CASE(validate_needs_no_diagnostics_and_never_quotes_a_secret) {
  auto c = good_client();
  c.client_secret = "sekret-value";
  c.refresh_token = "refresh-value";
  c.refresh.deadline = 0ms;
  BOOST_TEST(c.validate() == na::errc::invalid_config);  // no diagnostics asked for
  na::diagnostics d;
  BOOST_TEST(c.validate(&d) == na::errc::invalid_config);
  BOOST_TEST(d.client_message.find("sekret-value") == std::string::npos);
  BOOST_TEST(d.client_message.find("refresh-value") == std::string::npos);
  // A URL with user info is refused without quoting it.
  c = good_client();
  c.token_url = "https://user:pa55word@auth.example.com/t";
  d = {};
  BOOST_TEST(c.validate(&d) == na::errc::invalid_config);
  BOOST_TEST(d.client_message.find("pa55word") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(http_options_name_fields_with_the_given_prefix) {
  na::http_options h;
  h.connect_timeout = 0ms;
  na::diagnostics d;
  BOOST_TEST(h.validate(&d, "") == na::errc::invalid_config);
  BOOST_TEST(d.client_message.rfind("connect_timeout", 0) == 0u, d.client_message);
  BOOST_TEST(h.validate(&d, "api.") == na::errc::invalid_config);
  BOOST_TEST(d.client_message.rfind("api.connect_timeout", 0) == 0u, d.client_message);
}

BOOST_AUTO_TEST_CASE(grouped_defaults_are_the_documented_ones) {
  const na::client_config c;
  BOOST_TEST(c.refresh.leeway.count() == 30);
  BOOST_TEST(c.refresh.ahead_fraction == 0.2);
  BOOST_TEST(c.refresh.retry.max_attempts == 4u);
  BOOST_TEST(c.refresh.deadline.count() == 60'000);
  BOOST_TEST(!c.storage.store);
  BOOST_TEST(!c.storage.strict_durability);
  BOOST_TEST(c.http.max_response_bytes == 0u);  // the owner's default: 64 KiB / 8 MiB
  BOOST_TEST(c.http.tls.verify_peer);
  BOOST_TEST(!c.http.allow_insecure_http);
  BOOST_TEST(!c.clock);
  const na::session_config s;
  BOOST_TEST(s.max_connections == 64u);
  BOOST_TEST(s.http.request_timeout.count() == 30'000);
}

BOOST_AUTO_TEST_SUITE_END()
