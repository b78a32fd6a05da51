// SPDX-License-Identifier: BSL-1.0
// redis_store over TLS against a redis-server of the test's own that speaks TLS only: the state
// round trip, the lease and its publications, verification failures (another CA, another host),
// client certificates, and the rule that keeps plain TCP on loopback.
#include <nxsys/auth/redis_store.hpp>

#include "helpers.hpp"
#include "redis_fixture.hpp"
#include "store_driver.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <optional>
#include <stdexcept>

namespace asio = boost::asio;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;
using namespace std::chrono_literals;
using boost::system::error_code;

namespace {

constexpr const char* password = "tls-test-p4ssw0rd";

na::redis_store_options tls_options_for(const tls_redis_server& r) {
  na::redis_store_options o;
  o.port = r.port();
  o.name = "tls";
  o.use_tls = true;
  o.tls.ca_file = test_data_dir() + "/ca.pem";
  o.command_timeout = 2s;
  return o;
}

bool contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

// The message of the error_with_diagnostics a store's constructor throws ("" if none).
std::string construction_error(const na::redis_store_options& o) {
  asio::io_context ctx;
  try {
    na::redis_store s(ctx.get_executor(), o);
  } catch (const na::error_with_diagnostics& e) {
    BOOST_TEST((e.code() == na::errc::invalid_config));
    return e.get_diagnostics().client_message;
  }
  return {};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(redis_tls)

// AUTH, the state, the lease and the publication that hands it over, all over TLS; by address
// (verified against the certificate's IP entry) and by name (SNI and DNS entry).
BOOST_AUTO_TEST_CASE(state_and_lease_round_trip_over_tls) {
  tls_redis_server redis({.data_dir = test_data_dir(), .password = password});
  driver d;
  auto opts = tls_options_for(redis);
  opts.password = password;
  opts.poll_interval = 30s;  // only the publication (over the TLS subscription) wakes a waiter
  na::redis_store a(d.ctx.get_executor(), opts);
  auto first = d.load_with_diag(a);
  BOOST_TEST(!first.ec, first.diag.client_message);
  BOOST_TEST(!first.state.has_value());
  BOOST_TEST(!d.save(a, tokens("rt-1", "at-1"), ""));
  BOOST_TEST(d.save(a, tokens("rt-2"), "rt-0") == na::errc::store_conflict);

  auto by_name = opts;
  by_name.host = "localhost";
  na::redis_store b(d.ctx.get_executor(), by_name);
  auto second = d.load_with_diag(b);
  BOOST_TEST(!second.ec, second.diag.client_message);
  BOOST_REQUIRE(second.state.has_value());
  BOOST_TEST(second.state->refresh_token == "rt-1");
  BOOST_TEST(second.state->access_token == "at-1");

  auto held = d.acquire(a, 1s);
  BOOST_REQUIRE(!std::get<0>(held));
  BOOST_TEST(std::get<0>(d.acquire(b, 50ms)) == na::errc::store_busy);
  std::optional<error_code> got;
  na::refresh_lease handed;
  b.async_acquire(std::chrono::steady_clock::now() + 20s,
                  [&](error_code e, na::refresh_lease l, na::diagnostics) {
                    got = e;
                    handed = std::move(l);
                  });
  asio::steady_timer t(d.ctx, 100ms);
  t.async_wait([&](error_code) { std::get<1>(held).release(); });
  d.ctx.restart();
  const auto end = std::chrono::steady_clock::now() + 10s;
  while (!got && std::chrono::steady_clock::now() < end) d.ctx.run_one_for(10ms);
  BOOST_REQUIRE(got.has_value());
  BOOST_TEST(!*got);
}

BOOST_AUTO_TEST_CASE(a_server_signed_by_another_ca_is_refused_naming_the_verification) {
  tls_redis_server redis({.data_dir = test_data_dir(), .password = password});
  driver d;
  auto opts = tls_options_for(redis);
  opts.password = password;
  opts.tls.ca_file = test_data_dir() + "/self-signed.pem";  // trusts another issuer only
  na::redis_store s(d.ctx.get_executor(), opts);
  const auto r = d.load_with_diag(s);
  BOOST_TEST(r.ec == na::errc::store_failed);
  const auto& m = r.diag.client_message;
  BOOST_TEST(contains(m, "TLS handshake with 127.0.0.1:" + std::to_string(redis.port())), m);
  BOOST_TEST(contains(m, "certificate was not verified"), m);
  BOOST_TEST(contains(m, "tls.ca_file"), m);
  BOOST_TEST(!contains(m, "tried"), m);  // a refusal, not an outage: not retried
  BOOST_TEST(!contains(m, password), m);
}

BOOST_AUTO_TEST_CASE(a_certificate_for_another_host_is_refused_unless_tls_server_name_names_it) {
  tls_redis_server redis({.data_dir = test_data_dir(), .cert = "wrong-host"});
  driver d;
  auto opts = tls_options_for(redis);
  {
    na::redis_store s(d.ctx.get_executor(), opts);
    const auto r = d.load_with_diag(s);
    BOOST_TEST(r.ec == na::errc::store_failed);
    BOOST_TEST(contains(r.diag.client_message, "does not name \"127.0.0.1\""),
               r.diag.client_message);
    BOOST_TEST(contains(r.diag.client_message, "tls_server_name"), r.diag.client_message);
  }
  {
    auto by_name = opts;
    by_name.host = "localhost";
    na::redis_store s(d.ctx.get_executor(), by_name);
    const auto r = d.load_with_diag(s);
    BOOST_TEST(r.ec == na::errc::store_failed);
    BOOST_TEST(contains(r.diag.client_message, "does not name \"localhost\""),
               r.diag.client_message);
  }
  {
    auto named = opts;
    named.tls_server_name = "other.example";  // what the certificate names
    na::redis_store s(d.ctx.get_executor(), named);
    const auto r = d.load_with_diag(s);
    BOOST_TEST(!r.ec, r.diag.client_message);
  }
  {
    auto unverified = opts;
    unverified.tls.verify_peer = false;  // explicit: no check of the chain or the name
    unverified.tls.ca_file.clear();
    na::redis_store s(d.ctx.get_executor(), unverified);
    const auto r = d.load_with_diag(s);
    BOOST_TEST(!r.ec, r.diag.client_message);
  }
}

BOOST_AUTO_TEST_CASE(a_server_requiring_a_client_certificate_takes_ours_and_refuses_none) {
  tls_redis_server redis({.data_dir = test_data_dir(), .auth_clients = "yes"});
  driver d;
  auto opts = tls_options_for(redis);
  {
    auto with_cert = opts;
    with_cert.tls.certificate_file = test_data_dir() + "/client.pem";
    with_cert.tls.private_key_file = test_data_dir() + "/client.key";
    na::redis_store s(d.ctx.get_executor(), with_cert);
    BOOST_TEST(!d.save(s, tokens("rt-mtls"), ""));
    const auto r = d.load_with_diag(s);
    BOOST_TEST(!r.ec, r.diag.client_message);
    BOOST_REQUIRE(r.state.has_value());
    BOOST_TEST(r.state->refresh_token == "rt-mtls");
  }
  {
    na::redis_store s(d.ctx.get_executor(), opts);
    const auto r = d.load_with_diag(s);
    BOOST_TEST(r.ec == na::errc::store_failed);
    BOOST_TEST(contains(r.diag.client_message, "TLS"), r.diag.client_message);
    BOOST_TEST(contains(r.diag.client_message, "client certificate"), r.diag.client_message);
  }
}

// A client whose store is in Redis over TLS refreshes once, and the chain it stored is read
// back by another store.
BOOST_AUTO_TEST_CASE(a_client_refreshes_through_a_store_over_tls) {
  tls_redis_server redis({.data_dir = test_data_dir(), .password = password});
  mock_server_options mopts;
  mopts.rotate = true;
  mock_server server(mopts);
  asio::io_context ctx;
  auto ropts = tls_options_for(redis);
  ropts.password = password;
  auto cfg = config_for(server, mopts);
  cfg.storage.store = std::make_shared<na::redis_store>(ctx.get_executor(), ropts);
  {
    na::client c(ctx.get_executor(), cfg);
    const auto t = get_token(ctx, c);
    BOOST_TEST(!t.value().empty());
    BOOST_TEST(server.stats().refreshes == 1u);
  }
  driver d;
  na::redis_store reader(d.ctx.get_executor(), ropts);
  const auto r = d.load_with_diag(reader);
  BOOST_TEST(!r.ec, r.diag.client_message);
  BOOST_REQUIRE(r.state.has_value());
  BOOST_TEST(r.state->refresh_token == server.current_refresh_token());
}

BOOST_AUTO_TEST_CASE(plain_tcp_off_loopback_is_refused_unless_allowed) {
  na::redis_store_options o;
  na::diagnostics d;
  for (const char* loopback : {"127.0.0.1", "127.9.8.7", "::1", "localhost", "LocalHost"}) {
    o.host = loopback;
    BOOST_TEST(!o.validate(&d), loopback << ": " << d.client_message);
  }
  for (const char* remote : {"10.0.0.5", "redis.example", "0.0.0.0", "::ffff:10.0.0.5"}) {
    o.host = remote;
    d = {};
    BOOST_TEST(o.validate(&d) == na::errc::invalid_config, remote);
    BOOST_TEST(contains(d.client_message, "allow_plaintext"), d.client_message);
    BOOST_TEST(contains(d.client_message, "use_tls"), d.client_message);
  }
  o.host = "10.0.0.5";
  o.password = "must-not-show";
  const auto thrown = construction_error(o);
  BOOST_TEST(contains(thrown, "allow_plaintext"), thrown);
  BOOST_TEST(!contains(thrown, "must-not-show"), thrown);
  o.allow_plaintext = true;
  BOOST_TEST(!o.validate(&d), d.client_message);
  o.allow_plaintext = false;
  o.use_tls = true;  // the system's CAs: nothing to read that could fail here
  BOOST_TEST(!o.validate(&d), d.client_message);
  BOOST_TEST(construction_error(o).empty());
}

BOOST_AUTO_TEST_CASE(tls_settings_are_checked_and_their_files_read_by_the_constructor) {
  na::redis_store_options o;
  na::diagnostics d;
  // Any TLS setting without use_tls: a forgotten switch, not a silent plain connection.
  o.tls.ca_file = test_data_dir() + "/ca.pem";
  BOOST_TEST(o.validate(&d) == na::errc::invalid_config);
  BOOST_TEST(contains(d.client_message, "tls.ca_file is set but use_tls is false"),
             d.client_message);
  o.tls = {};
  o.tls_server_name = "redis.internal";
  BOOST_TEST(o.validate(&d) == na::errc::invalid_config);
  BOOST_TEST(contains(d.client_message, "tls_server_name"), d.client_message);

  // With use_tls, the client certificate's fields pair up as for HTTP.
  o = {};
  o.use_tls = true;
  o.tls.certificate_file = test_data_dir() + "/client.pem";
  BOOST_TEST(o.validate(&d) == na::errc::invalid_config);
  BOOST_TEST(contains(d.client_message, "redis_store: tls.certificate_file"), d.client_message);

  // The files: read by the constructor, which names the field.
  o = {};
  o.use_tls = true;
  o.tls.ca_file = test_data_dir() + "/no-such-ca.pem";
  BOOST_TEST(!o.validate());
  const auto missing = construction_error(o);
  BOOST_TEST(contains(missing, "redis_store: cannot load tls.ca_file"), missing);
  o.tls.ca_file.clear();
  o.tls.certificate_file = test_data_dir() + "/client.pem";
  o.tls.private_key_file = test_data_dir() + "/server.key";  // not client.pem's key
  const auto mismatch = construction_error(o);
  BOOST_TEST(contains(mismatch, "does not match"), mismatch);

  // The hook sees the context; what it throws is invalid_config.
  o = {};
  o.use_tls = true;
  bool called = false;
  o.tls.configure_context = [&](asio::ssl::context&) { called = true; };
  BOOST_TEST(construction_error(o).empty());
  BOOST_TEST(called);
  o.tls.configure_context = [](asio::ssl::context&) { throw std::runtime_error("no ciphers"); };
  const auto hook = construction_error(o);
  BOOST_TEST(contains(hook, "tls.configure_context threw: no ciphers"), hook);
}

BOOST_AUTO_TEST_SUITE_END()
