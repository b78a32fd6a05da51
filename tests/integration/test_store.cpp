// SPDX-License-Identifier: BSL-1.0
// The client and its token store: save before serve, failed saves, strict durability, restart
// from a file, corrupt files, and invalid_grant after a rotation race.
#include "helpers.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>

namespace asio = boost::asio;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;

namespace {

// A memory_store the test can script: failing saves, a stale first load (as a lagging replica
// of a shared store would give), and a record of what was saved when.
class scripted_store final : public forwarding_store {
 public:
  explicit scripted_store(asio::any_io_executor ex) : forwarding_store(std::move(ex)) {}

  std::atomic<int> fail_saves{0};
  std::atomic<int> stale_loads{0};
  std::atomic<int> saves{0};
  std::atomic<int> loads{0};
  // Set by the test: incremented by each waiter that got its token, read at each save.
  std::atomic<int>* served = nullptr;
  std::atomic<int> served_at_last_save{-1};

  std::optional<na::stored_tokens> value(asio::io_context& ctx) {
    std::optional<na::stored_tokens> v;
    inner_.async_load([&](boost::system::error_code, std::optional<na::stored_tokens> s,
                          na::diagnostics) { v = std::move(s); });
    ctx.restart();
    ctx.run();
    return v;
  }

 protected:
  void do_load(asio::any_completion_handler<load_signature> h) override {
    ++loads;
    if (stale_loads.load() > 0) {
      --stale_loads;
      asio::post(ex_, asio::append(std::move(h), boost::system::error_code{},
                                   std::optional<na::stored_tokens>{}, na::diagnostics{}));
      return;
    }
    inner_.async_load(std::move(h));
  }
  void do_save(na::stored_tokens next, std::string expected,
               asio::any_completion_handler<save_signature> h) override {
    if (served != nullptr) served_at_last_save = served->load();
    if (fail_saves.load() > 0) {
      --fail_saves;
      asio::post(ex_, asio::append(std::move(h), make_error_code(na::errc::store_failed),
                                   na::diagnostics{}));
      return;
    }
    ++saves;
    inner_.async_save(std::move(next), std::move(expected), std::move(h));
  }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(token_storage)

// 200 waiters on 2 threads: every one of them resumes after the save of the rotated token.
BOOST_AUTO_TEST_CASE(the_rotated_token_is_saved_before_any_waiter_gets_the_new_access_token) {
  mock_server server(rotating());
  server.set_latency(std::chrono::milliseconds(20));
  asio::io_context ctx(2);
  auto store = std::make_shared<scripted_store>(ctx.get_executor());
  std::atomic<int> served{0};
  store->served = &served;
  auto cfg = config_for(server, rotating());
  cfg.storage.store = store;
  na::client c(ctx.get_executor(), cfg);
  for (int i = 0; i < 200; ++i)
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          co_await c.token();
          ++served;
        },
        asio::detached);
  BOOST_REQUIRE(run_bounded(ctx, 2));
  BOOST_TEST(served.load() == 200);
  BOOST_TEST(store->saves.load() == 1);
  BOOST_TEST(store->served_at_last_save.load() == 0);  // nobody had the token at save time
  const auto stored = store->value(ctx);
  BOOST_REQUIRE(stored.has_value());
  BOOST_TEST(stored->refresh_token == server.current_refresh_token());
  BOOST_TEST(stored->access_token == server.last_access_token());
  BOOST_TEST(server.stats().refreshes == 1u);
  BOOST_TEST(c.stats().store_saves == 1u);
}

// The old refresh token is consumed: a failed save must not cost the new one. The tokens are
// served, the failure is reported, and the save is retried in the background.
BOOST_AUTO_TEST_CASE(a_failed_save_still_serves_reports_and_retries) {
  mock_server server(rotating());
  asio::io_context ctx;
  auto store = std::make_shared<scripted_store>(ctx.get_executor());
  store->fail_saves = 2;
  auto cfg = config_for(server, rotating());
  cfg.storage.store = store;
  cfg.storage.retry_interval = std::chrono::milliseconds(10);
  std::vector<na::refresh_event> events;
  cfg.observers.on_refresh = [&](const na::refresh_event& e) { events.push_back(e); };
  std::vector<std::string> errors;
  cfg.observers.log = [&](na::log_level l, std::string_view m) {
    if (l == na::log_level::error) errors.emplace_back(m);
  };
  na::client c(ctx.get_executor(), cfg);
  const auto a = try_token(ctx, c);  // runs until the background retries are done too
  BOOST_TEST(!a.ec, a.what);
  BOOST_TEST(a.token.value() == server.last_access_token());
  BOOST_REQUIRE(events.size() == 1u);
  BOOST_TEST(events[0].store_ec == na::errc::store_failed);
  BOOST_TEST(!errors.empty());
  const auto s = c.stats();
  BOOST_TEST(s.store_save_failures == 2u);  // the first save and the first retry
  BOOST_TEST(s.store_saves == 1u);          // the second retry
  const auto stored = store->value(ctx);
  BOOST_REQUIRE(stored.has_value());
  BOOST_TEST(stored->refresh_token == server.current_refresh_token());
  // The next refresh continues the chain from the rotated token.
  c.invalidate();
  BOOST_TEST(!try_token(ctx, c).ec);
  BOOST_TEST(server.stats().reuse_detected == 0u);
  BOOST_TEST(store->value(ctx)->refresh_token == server.current_refresh_token());
}

BOOST_AUTO_TEST_CASE(strict_durability_fails_the_waiters_and_serves_once_saved) {
  mock_server server(rotating());
  asio::io_context ctx;
  auto store = std::make_shared<scripted_store>(ctx.get_executor());
  store->fail_saves = 1;
  auto cfg = config_for(server, rotating());
  cfg.storage.store = store;
  cfg.storage.strict_durability = true;
  na::client c(ctx.get_executor(), cfg);
  const auto first = try_token(ctx, c);
  BOOST_TEST(first.ec == na::errc::store_failed);
  BOOST_TEST(first.what.find("strict_durability") != std::string::npos, first.what);
  BOOST_TEST(server.stats().refreshes == 1u);
  // The next call saves the kept tokens and serves them: no second request.
  const auto second = try_token(ctx, c);
  BOOST_TEST(!second.ec, second.what);
  BOOST_TEST(second.token.value() == server.last_access_token());
  BOOST_TEST(server.stats().refreshes == 1u);
  BOOST_TEST(store->value(ctx)->refresh_token == server.current_refresh_token());
  c.invalidate();
  BOOST_TEST(!try_token(ctx, c).ec);
  BOOST_TEST(server.stats().reuse_detected == 0u);
}

// A restarted process reads the file: the access token is reused while valid (no request), and
// the next refresh uses the rotated refresh token, not the consumed one in its configuration.
BOOST_AUTO_TEST_CASE(a_restarted_process_continues_from_the_file) {
  mock_server server(rotating());
  temp_directory dir;
  const auto path = (dir.path / "tokens.json").string();
  auto cfg = config_for(server, rotating());
  std::string first_token;
  {
    asio::io_context ctx;
    cfg.storage.store = std::make_shared<na::file_store>(path);
    na::client c(ctx.get_executor(), cfg);
    first_token = std::string(get_token(ctx, c).value());
  }
  BOOST_TEST(server.stats().refreshes == 1u);
  BOOST_TEST(((std::filesystem::status(path).permissions() & std::filesystem::perms::all) ==
              (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write)));
  asio::io_context ctx;
  cfg.storage.store = std::make_shared<na::file_store>(path);  // a new process, the same file
  na::client c(ctx.get_executor(), cfg);  // configured with refresh-0 (consumed)
  BOOST_TEST(get_token(ctx, c).value() == first_token);
  BOOST_TEST(server.stats().refreshes == 1u);
  BOOST_TEST(c.stats().tokens_from_store == 1u);
  c.invalidate();
  BOOST_TEST(!try_token(ctx, c).ec);
  BOOST_TEST(server.stats().refreshes == 2u);
  BOOST_TEST(server.stats().reuse_detected == 0u);
}

BOOST_AUTO_TEST_CASE(a_corrupt_file_is_an_error_never_a_fallback_to_the_configured_token) {
  mock_server server(rotating());
  temp_directory dir;
  const auto path = (dir.path / "tokens.json").string();
  auto store = std::make_shared<na::file_store>(path);  // no file yet: fine
  {
    std::ofstream f(path);
    f << R"({"format":"nxsys-auth-token-store","version":1,"refreshToken":"refr)";  // cut off
  }
  asio::io_context ctx;
  auto cfg = config_for(server, rotating());
  cfg.storage.store = store;
  na::client c(ctx.get_executor(), cfg);
  const auto a = try_token(ctx, c);
  BOOST_TEST(a.ec == na::errc::store_corrupt);
  BOOST_TEST(a.what.find("repair or remove") != std::string::npos, a.what);
  BOOST_TEST(server.stats().requests == 0u);  // refresh-0 was never sent
  BOOST_TEST(c.stats().store_load_failures == 1u);
  // At start, the constructor refuses the file outright.
  BOOST_CHECK_THROW(na::file_store{path}, na::error_with_diagnostics);
}

// Another holder rotated the chain and stored refresh-1 just after our load: our refresh-0 gets
// invalid_grant. The client reads the store again, takes refresh-1 and tries once more.
BOOST_AUTO_TEST_CASE(invalid_grant_after_a_rotation_race_rereads_the_store_and_tries_once_more) {
  mock_server_options opts;
  opts.rotate = true;  // no reuse detection: a consumed token is only refused
  mock_server server(opts);
  asio::io_context ctx;
  // The other holder: its own client, which rotates refresh-0 into refresh-1.
  {
    na::client other(ctx.get_executor(), config_for(server, opts));
    get_token(ctx, other);
  }
  const auto rotated = server.current_refresh_token();
  auto store = std::make_shared<scripted_store>(ctx.get_executor());
  store->async_save(na::stored_tokens{rotated, "", "", {}, {}}, "", [](auto, auto) {});
  ctx.restart();
  ctx.run();
  store->stale_loads = 1;  // our first load misses it
  auto cfg = config_for(server, opts);
  cfg.storage.store = store;
  na::client c(ctx.get_executor(), cfg);
  const auto a = try_token(ctx, c);
  BOOST_TEST(!a.ec, a.what);
  BOOST_TEST(c.stats().invalid_grant_retries == 1u);
  const auto presented = server.presented_refresh_tokens();
  BOOST_REQUIRE(presented.size() == 3u);
  BOOST_TEST(presented[1] == "refresh-0");  // ours, refused
  BOOST_TEST(presented[2] == rotated);      // from the store, accepted
  BOOST_TEST(store->value(ctx)->refresh_token == server.current_refresh_token());

  // When the store has nothing newer, invalid_grant is final after one request.
  server.fail_next({400, R"({"error":"invalid_grant"})", "application/json", {}});
  c.invalidate();
  const auto b = try_token(ctx, c);
  BOOST_TEST(b.ec == na::errc::invalid_grant);
  BOOST_TEST(c.stats().invalid_grant_retries == 1u);
  BOOST_TEST(server.presented_refresh_tokens().size() == 4u);
}

BOOST_AUTO_TEST_CASE(a_store_holding_the_only_refresh_token_is_enough) {
  mock_server server;
  asio::io_context ctx;
  auto store = std::make_shared<scripted_store>(ctx.get_executor());
  store->async_save(na::stored_tokens{"refresh-0", "", "", {}, {}}, "", [](auto, auto) {});
  ctx.restart();
  ctx.run();
  auto cfg = config_for(server);
  cfg.refresh_token.wipe();
  cfg.storage.store = store;
  na::client c(ctx.get_executor(), cfg);
  BOOST_TEST(!try_token(ctx, c).ec);
  // Neither configured nor stored: a clear error, no request.
  mock_server other;
  auto empty = std::make_shared<scripted_store>(ctx.get_executor());
  cfg = config_for(other);
  cfg.refresh_token.wipe();
  cfg.storage.store = empty;
  na::client d(ctx.get_executor(), cfg);
  const auto a = try_token(ctx, d);
  BOOST_TEST(a.ec == na::errc::invalid_config);
  BOOST_TEST(other.stats().requests == 0u);
  cfg.storage.store = nullptr;
  BOOST_CHECK_THROW(na::client(ctx.get_executor(), cfg), na::error_with_diagnostics);
}

// A client destroyed while its refresh waits for another holder's lease lets go at once: its
// io_context does not wait out the other holder (up to refresh_deadline, 60 s here).
BOOST_AUTO_TEST_CASE(a_destroyed_client_stops_waiting_for_the_lease) {
  for (const bool file : {false, true}) {
    BOOST_TEST_CONTEXT((file ? "file_store" : "memory_store")) {
      mock_server server;
      asio::io_context ctx;
      temp_directory dir;
      std::shared_ptr<na::token_store> store;
      if (file)
        store = std::make_shared<na::file_store>((dir.path / "tokens.json").string());
      else
        store = std::make_shared<na::memory_store>(ctx.get_executor());
      // The test holds the lease, as another process in the middle of a refresh would.
      na::refresh_lease held;
      bool got = false;
      store->async_acquire(std::chrono::steady_clock::now() + std::chrono::seconds(5),
                           asio::bind_executor(ctx, [&](boost::system::error_code ec,
                                                        na::refresh_lease l, na::diagnostics) {
                             held = std::move(l);
                             got = !ec;
                           }));
      BOOST_REQUIRE(run_bounded(ctx, 1, std::chrono::seconds(10)));
      BOOST_REQUIRE(got);
      auto cfg = config_for(server);
      cfg.storage.store = store;
      cfg.refresh.deadline = std::chrono::seconds(60);
      boost::system::error_code waiter_ec;
      {
        na::client c(ctx.get_executor(), cfg);
        c.async_token([&](boost::system::error_code ec, na::access_token) { waiter_ec = ec; });
        ctx.restart();
        ctx.run_for(std::chrono::milliseconds(100));  // the refresh now waits for the lease
      }
      ctx.restart();
      BOOST_REQUIRE(run_bounded(ctx, 1, std::chrono::seconds(10)));  // not 60 s
      BOOST_TEST(waiter_ec == asio::error::operation_aborted);
      BOOST_TEST(server.stats().requests == 0u);
    }
  }
}

BOOST_AUTO_TEST_SUITE_END()
