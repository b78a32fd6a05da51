// SPDX-License-Identifier: BSL-1.0
// The Redis rows of issue 12's fault matrix: redis_store under a restart that brings back an
// older state, a failover's READONLY, OOM and a stored value that would inject a header, against
// a token server that rotates on every refresh and revokes the chain when a rotated-away token
// comes back. What is checked each time: an error reply is a state of a Redis that answers (it is
// retried within command_timeout and never turns on local_fallback), only an unreachable Redis
// is; failures name the server, the step and the cause; the server saw no reuse; the store ends
// with the server's current refresh token; and the client serves again.
#include <nxsys/auth/redis_store.hpp>

#include "helpers.hpp"
#include "redis_fixture.hpp"
#include "store_driver.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

namespace asio = boost::asio;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;
using namespace std::chrono_literals;
using boost::system::error_code;

namespace {

const std::string state_key = "nxsys-auth:{faults}";  // "<key_prefix>{<name>}", a hash

na::redis_store_options store_options(const redis_server& r) {
  na::redis_store_options o;
  o.port = r.port();
  o.name = "faults";
  return o;
}

std::string stored_refresh_token(const redis_server& r) {
  return r.command({"HGET", state_key, "refresh_token"});
}

// How many error replies starting with `code` Redis has sent (INFO errorstats, Redis 7).
int error_replies(const redis_server& r, const std::string& code) {
  const auto info = r.command({"INFO", "errorstats"});
  const std::string field = "errorstat_" + code + ":count=";
  const auto at = info.find(field);
  return at == std::string::npos ? 0 : std::atoi(info.c_str() + at + field.size());
}

// A token() call started now, and what it gave once `done`.
struct call {
  attempt result;
  bool done = false;
};

std::shared_ptr<call> start_token(asio::io_context& ctx, na::client& c) {
  auto out = std::make_shared<call>();
  asio::co_spawn(
      ctx,
      [&c, out]() -> asio::awaitable<void> {
        try {
          out->result.token = co_await c.token();
        } catch (const na::error_with_diagnostics& e) {
          out->result.ec = e.code();
          out->result.diag = e.get_diagnostics();
          out->result.what = e.what();
        }
        out->done = true;
      },
      asio::detached);
  return out;
}

// One store operation with its diagnostics, run to completion (bounded).
std::tuple<error_code, std::string> load_with_diagnostics(asio::io_context& ctx,
                                                          na::token_store& s) {
  std::tuple<error_code, std::string> out;
  run_coro(ctx, [&]() -> asio::awaitable<void> {
    auto [ec, state, diag] = co_await s.async_load(use_tuple);
    out = {ec, diag.client_message};
  });
  return out;
}

std::tuple<error_code, std::string> save_with_diagnostics(asio::io_context& ctx, na::token_store& s,
                                                          na::stored_tokens next,
                                                          std::string expected) {
  std::tuple<error_code, std::string> out;
  run_coro(ctx, [&]() -> asio::awaitable<void> {
    auto [ec, diag] = co_await s.async_save(std::move(next), std::move(expected), use_tuple);
    out = {ec, diag.client_message};
  });
  return out;
}

bool contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

bool no_duplicates(const std::vector<std::string>& v) {
  return std::set<std::string>(v.begin(), v.end()).size() == v.size();
}

// The end of every row: a forced refresh goes through, the server saw no reuse, and Redis holds
// the server's current refresh token.
void serves_again(asio::io_context& ctx, na::client& c, const mock_server& server,
                  const redis_server& redis) {
  c.invalidate();
  const auto a = token_until_done(ctx, c);
  BOOST_TEST(!a.ec, a.what);
  BOOST_TEST(a.token.value() == server.last_access_token());
  BOOST_TEST(server.stats().reuse_detected == 0u);
  BOOST_TEST(stored_refresh_token(redis) == server.current_refresh_token());
  BOOST_TEST(no_duplicates(server.presented_refresh_tokens()));
}

}  // namespace

BOOST_AUTO_TEST_SUITE(redis_faults)

// -- A restart that brings back an older state (I2 across a Redis outage).

// local_fallback keeps one replica rotating while Redis is down; Redis comes back from its
// append-only file with the state of before the outage, whose refresh token the client has
// consumed since. The client must not present it (reuse: the chain would be revoked), and must
// write its newer state over it.
BOOST_AUTO_TEST_CASE(local_fallback_writes_its_newer_chain_over_the_old_state_redis_restarts_with) {
  redis_server redis({}, true);  // appendonly yes, fsync always, its own directory
  mock_server server(rotating());
  asio::io_context ctx;
  auto ropts = store_options(redis);
  ropts.local_fallback = true;
  ropts.command_timeout = 300ms;
  ropts.connect_timeout = 200ms;
  auto cfg = config_for(server, rotating());
  cfg.storage.store = std::make_shared<na::redis_store>(ctx.get_executor(), ropts);
  cfg.storage.retry_interval = 100ms;
  na::client c(ctx.get_executor(), cfg);

  const auto first = try_token(ctx, c);  // to the end: saved and the lease released
  BOOST_REQUIRE(!first.ec);
  const auto before_outage = server.current_refresh_token();
  BOOST_REQUIRE(stored_refresh_token(redis) == before_outage);

  redis.stop(SIGTERM);
  for (int i = 0; i < 2; ++i) {
    c.invalidate();
    const auto a = token_until_done(ctx, c);
    // The saves fail; the local lease and the state the store last saw serve.
    BOOST_TEST(!a.ec, a.what);
    BOOST_TEST(a.token.value() == server.last_access_token());
  }
  BOOST_TEST(server.stats().refreshes == 3u);
  BOOST_TEST(c.stats().store_save_failures >= 2u);
  BOOST_TEST(c.stats().store_saves == 1u);

  redis.start();  // the client is not running meanwhile: Redis holds what it held at SIGTERM
  BOOST_REQUIRE(stored_refresh_token(redis) == before_outage);

  serves_again(ctx, c, server, redis);
  BOOST_TEST(server.stats().refreshes == 4u);
  // I1, I2: the token Redis came back with was presented once, before the outage.
  const auto presented = server.presented_refresh_tokens();
  BOOST_TEST(std::count(presented.begin(), presented.end(), before_outage) == 1);
  serves_again(ctx, c, server, redis);
}

// -- READONLY: a failover in progress (the old primary is a replica now).

// Two replicas with local_fallback ask for a token while Redis answers READONLY; it is a primary
// again before command_timeout. Had READONLY counted as "unreachable", each would have taken a
// local lease and refreshed with the same token: two refreshes, and the chain revoked.
BOOST_AUTO_TEST_CASE(readonly_within_the_command_timeout_is_waited_out_without_a_local_lease) {
  redis_server redis;
  mock_server server(rotating());
  asio::io_context ctx;
  auto ropts = store_options(redis);
  ropts.local_fallback = true;
  ropts.command_timeout = 2s;
  std::vector<std::unique_ptr<na::client>> replicas;
  for (int i = 0; i < 2; ++i) {
    auto cfg = config_for(server, rotating());
    cfg.storage.store = std::make_shared<na::redis_store>(ctx.get_executor(), ropts);
    replicas.push_back(std::make_unique<na::client>(ctx.get_executor(), cfg));
  }
  BOOST_REQUIRE(redis.command({"REPLICAOF", "127.0.0.1", std::to_string(redis.free_port())}) ==
                "OK");
  BOOST_REQUIRE(contains(redis.command({"SET", "probe", "1"}), "READONLY"));
  const int readonly_before = error_replies(redis, "READONLY");

  // A primary again once both replicas' lease scripts have been refused at least twice between
  // them, that is once a refused one was sent again.
  std::atomic<bool> restored{false};
  std::thread failover([&] {
    if (eventually([&] { return error_replies(redis, "READONLY") >= readonly_before + 3; }, 10s))
      restored = redis.command({"REPLICAOF", "NO", "ONE"}) == "OK";
  });
  auto a = start_token(ctx, *replicas[0]);
  auto b = start_token(ctx, *replicas[1]);
  const bool finished = run_until(
      ctx, [&] { return a->done && b->done; }, 20s);
  failover.join();
  BOOST_REQUIRE(finished);
  BOOST_TEST(restored.load());
  BOOST_TEST(!a->result.ec, a->result.what);
  BOOST_TEST(!b->result.ec, b->result.what);
  BOOST_TEST(a->result.token.value() == b->result.token.value());
  BOOST_TEST(server.stats().refreshes == 1u);  // one lease holder; the other read its answer
  BOOST_TEST(server.stats().reuse_detected == 0u);
  BOOST_TEST(replicas[0]->stats().tokens_from_store + replicas[1]->stats().tokens_from_store == 1u);
  BOOST_TEST(stored_refresh_token(redis) == server.current_refresh_token());
  serves_again(ctx, *replicas[0], server, redis);
  serves_again(ctx, *replicas[1], server, redis);
}

// The same READONLY lasting past command_timeout: the refresh fails with Redis's words, and
// still no request goes out (no local lease).
BOOST_AUTO_TEST_CASE(readonly_past_the_command_timeout_fails_the_refresh_with_redis_words) {
  redis_server redis;
  mock_server server(rotating());
  asio::io_context ctx;
  auto ropts = store_options(redis);
  ropts.local_fallback = true;
  ropts.command_timeout = 300ms;
  auto cfg = config_for(server, rotating());
  cfg.storage.store = std::make_shared<na::redis_store>(ctx.get_executor(), ropts);
  na::client c(ctx.get_executor(), cfg);
  BOOST_REQUIRE(redis.command({"REPLICAOF", "127.0.0.1", std::to_string(redis.free_port())}) ==
                "OK");
  const int readonly_before = error_replies(redis, "READONLY");

  const auto a = token_until_done(ctx, c);
  BOOST_TEST(a.ec == na::errc::store_failed, a.what);
  BOOST_TEST(contains(a.what, "READONLY You can't write against a read only replica"), a.what);
  BOOST_TEST(contains(a.what, "redis 127.0.0.1:" + std::to_string(redis.port()) + ": "), a.what);
  BOOST_TEST(contains(a.what, "the lease script"), a.what);
  BOOST_TEST(!contains(a.what, "refresh-0"), a.what);
  BOOST_TEST(error_replies(redis, "READONLY") > readonly_before + 1);  // sent again meanwhile
  BOOST_TEST(server.stats().requests == 0u);
  BOOST_TEST(c.stats().refreshes_failed == 1u);

  BOOST_REQUIRE(redis.command({"REPLICAOF", "NO", "ONE"}) == "OK");
  serves_again(ctx, c, server, redis);
  BOOST_TEST(server.stats().refreshes == 1u);
}

// -- OOM: Redis is full (maxmemory with noeviction refuses writes).

// The answer arrives while Redis refuses writes: the save fails with Redis's words, the new
// token is served and kept pending, and the retried save goes through once Redis has room.
BOOST_AUTO_TEST_CASE(a_save_refused_for_oom_is_reported_and_goes_through_once_redis_has_room) {
  redis_server redis;
  mock_server server(rotating());
  server.set_latency(1s);  // time to fill Redis up while the request is at the server
  asio::io_context ctx;
  auto ropts = store_options(redis);
  ropts.local_fallback = true;  // OOM must not turn it on: it is not an outage
  ropts.command_timeout = 300ms;
  std::mutex mu;
  std::vector<std::string> lines;
  auto cfg = config_for(server, rotating());
  cfg.storage.store = std::make_shared<na::redis_store>(ctx.get_executor(), ropts);
  cfg.storage.retry_interval = 100ms;
  cfg.observers.log = [&](na::log_level, std::string_view m) {
    std::lock_guard lk(mu);
    lines.emplace_back(m);
  };
  na::client c(ctx.get_executor(), cfg);

  auto pending = start_token(ctx, c);
  BOOST_REQUIRE(run_until(ctx, [&] { return server.stats().requests == 1u; }));
  BOOST_REQUIRE(redis.command({"CONFIG", "SET", "maxmemory-policy", "noeviction"}) == "OK");
  BOOST_REQUIRE(redis.command({"CONFIG", "SET", "maxmemory", "1"}) == "OK");
  BOOST_REQUIRE(run_until(ctx, [&] { return pending->done; }));
  BOOST_TEST(!pending->result.ec, pending->result.what);  // not strict: served although unsaved
  BOOST_TEST(pending->result.token.value() == server.last_access_token());
  BOOST_TEST(c.stats().store_save_failures >= 1u);
  BOOST_TEST(c.stats().store_saves == 0u);
  BOOST_TEST(stored_refresh_token(redis) == "(nil)");
  BOOST_TEST(error_replies(redis, "OOM") >= 2);  // refused, sent again, refused

  BOOST_REQUIRE(redis.command({"CONFIG", "SET", "maxmemory", "0"}) == "OK");
  BOOST_TEST(run_until(ctx, [&] { return c.stats().store_saves == 1u; }));
  BOOST_TEST(stored_refresh_token(redis) == server.current_refresh_token());
  {
    std::lock_guard lk(mu);
    const auto oom = std::find_if(lines.begin(), lines.end(), [&](const std::string& l) {
      return contains(l, "redis 127.0.0.1:" + std::to_string(redis.port()) +
                             ": the save script: OOM command not allowed");
    });
    BOOST_TEST((oom != lines.end()), "no log line names the OOM of the save");
    for (const auto& l : lines) {
      BOOST_TEST(!contains(l, server.current_refresh_token()), l);
      BOOST_TEST(!contains(l, server.last_access_token()), l);
    }
  }
  BOOST_TEST(server.stats().refreshes == 1u);  // the retried save sent no request
  server.set_latency(0ms);
  serves_again(ctx, c, server, redis);
}

// -- Diagnostics of the store itself: error replies and an unreachable server.

// An error reply that is no passing state (here WRONGTYPE: the key holds a string) fails at
// once, with local_fallback on too; OOM is retried, then fails naming itself; an unreachable
// server says why it could not be reached. None of it names a token.
BOOST_AUTO_TEST_CASE(store_failures_name_the_server_the_step_and_the_cause) {
  auto redis = std::make_unique<redis_server>();
  asio::io_context ctx;
  auto ropts = store_options(*redis);
  ropts.local_fallback = true;
  ropts.command_timeout = 300ms;
  na::redis_store s(ctx.get_executor(), ropts);
  const std::string where = "redis 127.0.0.1:" + std::to_string(redis->port()) + ": ";

  // The store has seen a state (local_fallback keeps it); then the key is damaged.
  BOOST_REQUIRE(std::get<0>(save_with_diagnostics(ctx, s, tokens("refresh-secret-0", "a0"), "")) ==
                error_code{});
  BOOST_REQUIRE(redis->command({"SET", state_key, "not a hash"}) == "OK");
  const auto [wrongtype, wrongtype_text] = load_with_diagnostics(ctx, s);
  BOOST_TEST(wrongtype == na::errc::store_failed);  // not the state kept in memory
  BOOST_TEST(wrongtype_text == where +
                                   "reading the state: WRONGTYPE Operation against a key "
                                   "holding the wrong kind of value");
  BOOST_TEST(error_replies(*redis, "WRONGTYPE") == 1);  // not sent again
  BOOST_REQUIRE(redis->command({"DEL", state_key}) == "1");

  BOOST_REQUIRE(redis->command({"CONFIG", "SET", "maxmemory-policy", "noeviction"}) == "OK");
  BOOST_REQUIRE(redis->command({"CONFIG", "SET", "maxmemory", "1"}) == "OK");
  const auto [oom, oom_text] =
      save_with_diagnostics(ctx, s, tokens("refresh-secret-1", "access-secret-1"), "");
  BOOST_TEST(oom == na::errc::store_failed);
  BOOST_TEST(contains(oom_text, where + "the save script: OOM command not allowed"), oom_text);
  BOOST_TEST(contains(oom_text, "within the command timeout of 300 ms"), oom_text);
  BOOST_TEST(!contains(oom_text, "secret"), oom_text);
  BOOST_REQUIRE(redis->command({"CONFIG", "SET", "maxmemory", "0"}) == "OK");
  BOOST_TEST(std::get<0>(save_with_diagnostics(ctx, s, tokens("refresh-secret-1", "a"), "")) ==
             error_code{});

  const auto port = redis->port();
  redis.reset();                                     // stopped: nothing listens on the port
  na::redis_store fresh(ctx.get_executor(), ropts);  // no state seen: nothing to fall back on
  const auto [down, down_text] = load_with_diagnostics(ctx, fresh);
  BOOST_TEST(down == na::errc::store_failed);
  BOOST_TEST(contains(down_text, "redis: reading the state: cannot connect to 127.0.0.1:" +
                                     std::to_string(port) + ": Connection refused"),
             down_text);
}

// -- A stored access token that would inject a header (I6).

// Written into Redis by hand, as the save script lays it out: "state" (the JSON) and
// "refresh_token" in the hash. The refresh fails as store_corrupt before anything is sent.
BOOST_AUTO_TEST_CASE(a_stored_access_token_holding_cr_lf_is_store_corrupt_and_never_sent) {
  redis_server redis;
  mock_server server(rotating());
  asio::io_context ctx;
  const auto expires_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                              (std::chrono::system_clock::now() + 1h).time_since_epoch())
                              .count();
  const std::string state =
      R"({"format":"nxsys-auth-token-store","version":1,"refreshToken":"refresh-0",)"
      R"("accessToken":"a\r\nX-Injected: 1","tokenType":"Bearer","expiresAtMs":)" +
      std::to_string(expires_ms) + R"(,"lifetimeS":3600})";
  BOOST_REQUIRE(redis.command({"HSET", state_key, "refresh_token", "refresh-0", "state", state}) ==
                "2");
  auto cfg = config_for(server, rotating());
  cfg.storage.store = std::make_shared<na::redis_store>(ctx.get_executor(), store_options(redis));
  na::client c(ctx.get_executor(), cfg);

  const auto a = token_until_done(ctx, c);
  BOOST_TEST(a.ec == na::errc::store_corrupt, a.what);
  BOOST_TEST(!contains(a.what, "X-Injected"), a.what);  // no value quoted
  BOOST_TEST(server.stats().requests == 0u);

  // Repaired (removed), the client goes on.
  BOOST_REQUIRE(redis.command({"DEL", state_key}) == "1");
  serves_again(ctx, c, server, redis);
  BOOST_TEST(server.stats().refreshes == 1u);
}

BOOST_AUTO_TEST_SUITE_END()
