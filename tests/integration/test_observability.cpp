// SPDX-License-Identifier: BSL-1.0
// Logging and metrics (client_config::log, client_config::on_refresh, client_stats): what an
// operator sees, and that no secret is ever in it (nor in exception messages), in a succeeding
// run with rotation and in failing runs where the server echoes every credential it was sent.
#include "helpers.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

namespace asio = boost::asio;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;

namespace {

struct captured_log {
  std::mutex mu;
  std::vector<std::pair<na::log_level, std::string>> lines;

  na::log_function sink() {
    return [this](na::log_level level, std::string_view message) {
      std::lock_guard lk(mu);
      lines.emplace_back(level, std::string(message));
    };
  }
  int count(na::log_level level, std::string_view containing) {
    std::lock_guard lk(mu);
    int n = 0;
    for (const auto& [l, m] : lines)
      if (l == level && m.find(containing) != std::string::npos) ++n;
    return n;
  }
  // Every secret, and its form-encoded spelling, absent from every line.
  void check_absent(const std::vector<std::string>& secrets) {
    std::lock_guard lk(mu);
    for (const auto& s : secrets) {
      BOOST_REQUIRE(!s.empty());
      for (const auto& [level, line] : lines) {
        BOOST_TEST(line.find(s) == std::string::npos, "secret in log line: " << line);
        const auto encoded = na::protocol::form_urlencode(s);
        BOOST_TEST(line.find(encoded) == std::string::npos, "encoded secret in: " << line);
      }
    }
  }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(logging)

BOOST_AUTO_TEST_CASE(a_rotating_run_logs_each_refresh_and_no_token) {
  mock_server_options opts;
  opts.rotate = true;
  opts.initial_refresh_token = "rt-initial-0123456789";
  opts.client_secret = "cs-0123456789abcdef";
  mock_server server(opts);
  asio::io_context ctx;
  captured_log log;
  auto cfg = config_for(server, opts);
  auto clk = std::make_shared<manual_clock>();
  cfg.clock = clk;
  cfg.observers.log = log.sink();
  std::vector<std::string> secrets{opts.client_secret, opts.initial_refresh_token};
  {
    na::client c(ctx.get_executor(), cfg);
    for (int i = 0; i < 3; ++i) {
      secrets.emplace_back(get_token(ctx, c).value());
      secrets.push_back(server.current_refresh_token());
      clk->advance(std::chrono::hours(2));  // past the 1 h token's expiry
    }
  }
  BOOST_TEST(log.count(na::log_level::info, "access token refreshed") == 3);
  BOOST_TEST(log.count(na::log_level::info, "refresh token rotated") == 3);
  BOOST_TEST(log.count(na::log_level::debug, "opened a connection") == 1);
  log.check_absent(secrets);
}

BOOST_AUTO_TEST_CASE(failures_echoing_every_credential_leak_none) {
  mock_server_options opts;
  opts.initial_refresh_token = "rt+/= 0123456789";  // form-encoding changes it
  opts.client_secret = "cs-0123456789abcdef";
  mock_server server(opts);
  asio::io_context ctx;
  captured_log log;
  auto cfg = config_for(server, opts);
  cfg.observers.log = log.sink();
  na::client c(ctx.get_executor(), cfg);
  const std::string echo = "token " + opts.initial_refresh_token + " (" +
                           na::protocol::form_urlencode(opts.initial_refresh_token) +
                           ") with secret " + opts.client_secret;
  // invalid_request, not invalid_grant: after invalid_grant no request is sent with the same
  // refresh token again (I5), and this test wants a third request.
  server.fail_next({400,
                    R"({"error":"invalid_request","error_description":")" + echo + R"("})",
                    "application/json",
                    {}});
  server.fail_next({500, "<html>" + echo + "</html>", "text/html", {}});
  std::vector<std::string> messages;
  for (int i = 0; i < 2; ++i) {
    try {
      get_token(ctx, c);
      BOOST_FAIL("the refresh should have failed");
    } catch (const na::error_with_diagnostics& e) {
      messages.emplace_back(e.what());
    }
  }
  const auto t = get_token(ctx, c);  // the third attempt succeeds
  BOOST_TEST(log.count(na::log_level::warning, "refresh failed") == 2);
  BOOST_TEST(log.count(na::log_level::warning, "[redacted]") >= 1);
  BOOST_TEST(log.count(na::log_level::info, "access token refreshed") == 1);
  const std::vector<std::string> secrets{opts.client_secret, opts.initial_refresh_token,
                                         std::string(t.value())};
  log.check_absent(secrets);
  for (const auto& m : messages)
    for (const auto& s : secrets) BOOST_TEST(m.find(s) == std::string::npos, m);
}

// The paths issue 4 added: retries (the log line quotes the server's echo), a file store with
// rotation, a restart that takes the token from the file, and a corrupt file.
BOOST_AUTO_TEST_CASE(retries_and_storage_log_no_secret) {
  mock_server_options opts;
  opts.rotate = true;
  opts.initial_refresh_token = "rt-initial-0123456789";
  opts.client_secret = "cs-0123456789abcdef";
  mock_server server(opts);
  char tmpl[] = "/tmp/nxsys-log-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  const std::string path = dir + "/tokens.json";
  captured_log log;
  auto cfg = config_for(server, opts);
  cfg.observers.log = log.sink();
  cfg.refresh.retry = {3, std::chrono::milliseconds(1), std::chrono::milliseconds(5)};
  std::vector<std::string> secrets{opts.client_secret, opts.initial_refresh_token};
  std::vector<std::string> messages;
  {
    asio::io_context ctx;
    cfg.storage.store = std::make_shared<na::file_store>(path);
    na::client c(ctx.get_executor(), cfg);
    const std::string echo =
        "you sent " + opts.initial_refresh_token + " and " + opts.client_secret;
    server.fail_next(
        {503,
         R"({"error":"temporarily_unavailable","error_description":")" + echo + R"("})",
         "application/json",
         {{"Retry-After", "0"}}});
    secrets.emplace_back(get_token(ctx, c).value());
    secrets.push_back(server.current_refresh_token());
    BOOST_TEST(c.stats().retries == 1u);
    c.invalidate();
    secrets.emplace_back(get_token(ctx, c).value());
    secrets.push_back(server.current_refresh_token());
  }
  {
    asio::io_context ctx;  // a restart: the token comes from the file
    cfg.storage.store = std::make_shared<na::file_store>(path);
    na::client c(ctx.get_executor(), cfg);
    BOOST_TEST(get_token(ctx, c).value() == secrets[secrets.size() - 2]);  // the last access token
    BOOST_TEST(c.stats().tokens_from_store == 1u);
    { std::ofstream(path, std::ios::trunc) << "{\"refreshToken\": \"" << secrets.back(); }
    c.invalidate();
    try {
      get_token(ctx, c);
      BOOST_FAIL("a corrupt store must fail the refresh");
    } catch (const na::error_with_diagnostics& e) {
      BOOST_TEST(e.code() == na::errc::store_corrupt);
      messages.emplace_back(e.what());
    }
  }
  BOOST_TEST(log.count(na::log_level::info, "attempt 2 of 3") == 1);
  BOOST_TEST(log.count(na::log_level::info, "[redacted]") >= 1);
  BOOST_TEST(log.count(na::log_level::info, "taken from the token store") == 1);
  log.check_absent(secrets);
  for (const auto& m : messages)
    for (const auto& sec : secrets) BOOST_TEST(m.find(sec) == std::string::npos, m);
  std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(a_throwing_logger_does_not_break_the_refresh) {
  mock_server server;
  asio::io_context ctx;
  auto cfg = config_for(server);
  cfg.observers.log = [](na::log_level, std::string_view) {
    throw std::runtime_error("log sink full");
  };
  na::client c(ctx.get_executor(), cfg);
  BOOST_TEST(!get_token(ctx, c).value().empty());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(observability)

BOOST_AUTO_TEST_CASE(stats_and_the_observer_show_each_refresh) {
  mock_server_options opts;
  opts.latency = std::chrono::milliseconds(100);  // long enough for every caller to join
  opts.rotate = true;
  mock_server server(opts);
  asio::io_context ctx;
  std::mutex mu;
  std::vector<na::refresh_event> events;
  auto cfg = config_for(server, opts);
  auto clk = std::make_shared<manual_clock>();
  cfg.clock = clk;
  cfg.observers.on_refresh = [&](const na::refresh_event& e) {
    std::lock_guard lk(mu);
    events.push_back(e);
  };
  na::client c(ctx.get_executor(), cfg);

  // A burst of 50 callers, then a failure seen by one caller, then a single caller.
  int completed = 0;
  for (int i = 0; i < 50; ++i)
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          co_await c.token();
          ++completed;
        },
        asio::detached);
  BOOST_REQUIRE(run_bounded(ctx, 1));
  BOOST_REQUIRE(completed == 50);
  clk->advance(std::chrono::hours(2));
  server.fail_next({400, R"({"error":"invalid_grant"})", "application/json", {}});
  BOOST_TEST(try_token(ctx, c).ec == na::errc::invalid_grant);
  // The refresh token is dead (I5): the user re-authorizes, and the client goes on.
  c.set_refresh_token(server.current_refresh_token());
  BOOST_TEST(!try_token(ctx, c).ec);

  const auto s = c.stats();
  BOOST_TEST(s.refreshes_started == 3u);
  BOOST_TEST(s.refreshes_failed == 1u);
  BOOST_TEST(s.refreshes_failed_by_reason.size() == 1u);
  BOOST_TEST(s.refreshes_failed_by_reason.at("invalid_grant") == 1u);
  BOOST_TEST(s.waiters_per_refresh_histogram[0] == 2u);                   // the two single callers
  BOOST_TEST(s.waiters_per_refresh_histogram[2] == 1u);                   // the burst of 50 (10-99)
  BOOST_TEST((s.refresh_latency_max >= std::chrono::milliseconds(100)));  // the server's delay
  BOOST_TEST((s.refresh_latency_max >= s.refresh_latency_last));
  BOOST_TEST((s.refresh_latency_total >= 3 * std::chrono::milliseconds(100)));

  std::lock_guard lk(mu);
  BOOST_REQUIRE(events.size() == 3u);
  BOOST_TEST(!events[0].ec);
  BOOST_TEST(events[0].waiters == 50u);
  BOOST_TEST(events[0].refresh_token_rotated);
  BOOST_TEST((events[0].lifetime == std::chrono::seconds(3600)));
  BOOST_TEST(events[1].ec == na::errc::invalid_grant);
  BOOST_TEST(events[1].waiters == 1u);
  BOOST_TEST((events[1].lifetime == std::chrono::seconds(0)));
  BOOST_TEST(!events[2].ec);
}

BOOST_AUTO_TEST_SUITE_END()
