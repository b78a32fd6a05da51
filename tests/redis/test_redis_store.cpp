// SPDX-License-Identifier: BSL-1.0
// redis_store against a redis-server of the test's own: state round trip and compare-and-set,
// the lease (exclusion, hand-over by publication, expiry of a dead holder's lease, renewal),
// AUTH, an unreachable server, and clients sharing one chain through it.
#include <nxsys/auth/redis_store.hpp>

#include "helpers.hpp"
#include "redis_fixture.hpp"
#include "store_driver.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>

namespace asio = boost::asio;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;
using namespace std::chrono_literals;
using boost::system::error_code;

namespace {

na::redis_store_options options_for(const redis_server& r, std::string name = "test") {
  na::redis_store_options o;
  o.port = r.port();
  o.name = std::move(name);
  return o;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(redis_store)

BOOST_AUTO_TEST_CASE(state_round_trip_and_compare_and_set) {
  redis_server redis;
  driver d;
  na::redis_store s(d.ctx.get_executor(), options_for(redis));
  auto [ec0, none] = d.load(s);
  BOOST_TEST(!ec0);
  BOOST_TEST(!none.has_value());

  BOOST_TEST(!d.save(s, tokens("rt-1", "at-1"), ""));
  auto [ec1, one] = d.load(s);
  BOOST_REQUIRE(one.has_value());
  BOOST_TEST(one->refresh_token == "rt-1");
  BOOST_TEST(one->access_token == "at-1");
  BOOST_TEST(one->lifetime.count() == 3600);

  // A holder that used rt-0 (stale) cannot overwrite rt-1.
  BOOST_TEST(d.save(s, tokens("rt-2"), "rt-0") == na::errc::store_conflict);
  BOOST_TEST(std::get<1>(d.load(s))->refresh_token == "rt-1");
  BOOST_TEST(!d.save(s, tokens("rt-2", "at-2"), "rt-1"));
  BOOST_TEST(std::get<1>(d.load(s))->refresh_token == "rt-2");
  BOOST_TEST(d.save(s, tokens("", ""), "rt-2") == na::errc::invalid_argument);
  // A client_credentials state (no refresh token) never overwrites a chain...
  BOOST_TEST(d.save(s, tokens("", "at-cc"), "") == na::errc::store_conflict);
  BOOST_TEST(std::get<1>(d.load(s))->refresh_token == "rt-2");

  // The keys share one hash slot; the state is a hash; nothing else was written.
  BOOST_TEST(redis.command({"HGET", "nxsys-auth:{test}", "refresh_token"}) == "rt-2");
  BOOST_TEST(redis.command({"DBSIZE"}) == "1");
}

BOOST_AUTO_TEST_CASE(options_are_validated_with_the_field_named) {
  na::redis_store_options o;
  BOOST_TEST(!o.validate());
  na::diagnostics d;
  o.lease_ttl = std::chrono::milliseconds(2);
  BOOST_TEST(o.validate(&d) == na::errc::invalid_config);
  BOOST_TEST(d.client_message.find("lease_ttl") != std::string::npos);
  o = {};
  o.host.clear();
  BOOST_TEST(o.validate(&d) == na::errc::invalid_config);
  BOOST_TEST(d.client_message.find("host") != std::string::npos);
  boost::asio::io_context ctx;
  o.password = "p4ss";
  BOOST_CHECK_THROW(na::redis_store(ctx.get_executor(), o), na::error_with_diagnostics);
}

// The client_credentials grant keeps an access token alone; replicas share it.
BOOST_AUTO_TEST_CASE(a_client_credentials_state_round_trips) {
  redis_server redis;
  driver d;
  na::redis_store s(d.ctx.get_executor(), options_for(redis));
  BOOST_TEST(!d.save(s, tokens("", "at-cc-1"), ""));
  BOOST_TEST(!d.save(s, tokens("", "at-cc-2"), ""));
  auto [ec, t] = d.load(s);
  BOOST_TEST(!ec);
  BOOST_REQUIRE(t.has_value());
  BOOST_TEST(t->refresh_token.empty());
  BOOST_TEST(t->access_token == "at-cc-2");
}

BOOST_AUTO_TEST_CASE(a_damaged_state_is_store_corrupt) {
  redis_server redis;
  driver d;
  na::redis_store s(d.ctx.get_executor(), options_for(redis));
  redis.command({"HSET", "nxsys-auth:{test}", "refresh_token", "x", "state", "{not json"});
  BOOST_TEST(std::get<0>(d.load(s)) == na::errc::store_corrupt);
  redis.command({"HSET", "nxsys-auth:{test}", "state", R"({"format":"other"})"});
  BOOST_TEST(std::get<0>(d.load(s)) == na::errc::store_corrupt);
}

BOOST_AUTO_TEST_CASE(the_lease_excludes_and_is_handed_over_by_publication) {
  redis_server redis;
  driver d;
  auto opts = options_for(redis);
  opts.poll_interval = 30s;  // only the publication can wake a waiter within the test
  na::redis_store a(d.ctx.get_executor(), opts), b(d.ctx.get_executor(), opts);
  auto first = d.acquire(a, 1s);
  BOOST_REQUIRE(!std::get<0>(first));
  auto& held = std::get<1>(first);  // (not a structured binding: lambdas capture it below)
  BOOST_TEST(std::get<0>(d.acquire(b, 50ms)) == na::errc::store_busy);

  // b waits (deadline 20 s); a releases 100 ms later; b gets the lease long before its poll.
  std::optional<error_code> got;
  na::refresh_lease second;
  b.async_acquire(std::chrono::steady_clock::now() + 20s,
                  [&](error_code e, na::refresh_lease l, na::diagnostics) {
                    got = e;
                    second = std::move(l);
                  });
  asio::steady_timer t(d.ctx, 100ms);
  t.async_wait([&](error_code) { held.release(); });
  d.ctx.restart();
  const auto end = std::chrono::steady_clock::now() + 10s;
  while (!got && std::chrono::steady_clock::now() < end) d.ctx.run_one_for(10ms);
  BOOST_REQUIRE(got.has_value());
  BOOST_TEST(!*got);
  BOOST_TEST(std::get<0>(d.acquire(a, 50ms)) == na::errc::store_busy);
}

BOOST_AUTO_TEST_CASE(a_dead_holders_lease_expires) {
  redis_server redis;
  driver d;
  auto opts = options_for(redis);
  opts.poll_interval = 20ms;
  na::redis_store s(d.ctx.get_executor(), opts);
  // A holder that died: its lease is there, nobody renews or releases it.
  BOOST_TEST(redis.command({"SET", "nxsys-auth:{test}:lease", "dead-owner", "PX", "300"}) == "OK");
  BOOST_TEST(std::get<0>(d.acquire(s, 50ms)) == na::errc::store_busy);
  auto [ec, lease] = d.acquire(s, 10s);
  BOOST_TEST(!ec);
}

BOOST_AUTO_TEST_CASE(a_live_holder_renews_its_lease) {
  redis_server redis;
  driver d;
  auto opts = options_for(redis);
  opts.lease_ttl = 300ms;
  opts.poll_interval = 20ms;
  na::redis_store a(d.ctx.get_executor(), opts), b(d.ctx.get_executor(), opts);
  auto [ec, held] = d.acquire(a, 1s);
  BOOST_REQUIRE(!ec);
  // Three lease lifetimes later b still cannot take it: a's renewals kept it (b's attempts
  // run the io_context, and with it a's renewals).
  BOOST_TEST(std::get<0>(d.acquire(b, 900ms)) == na::errc::store_busy);
  held.release();
  BOOST_TEST(!std::get<0>(d.acquire(b, 2s)));
}

BOOST_AUTO_TEST_CASE(auth_is_sent_and_a_wrong_password_is_store_failed) {
  redis_server redis("s3cret-pass");
  driver d;
  auto opts = options_for(redis);
  opts.password = "wrong";
  na::redis_store bad(d.ctx.get_executor(), opts);
  BOOST_TEST(std::get<0>(d.load(bad)) == na::errc::store_failed);
  opts.password = "s3cret-pass";
  na::redis_store good(d.ctx.get_executor(), opts);
  BOOST_TEST(!d.save(good, tokens("rt-1"), ""));
  BOOST_TEST(std::get<1>(d.load(good))->refresh_token == "rt-1");
}

BOOST_AUTO_TEST_CASE(an_unreachable_server_is_store_failed_and_recovers) {
  auto redis = std::make_unique<redis_server>();
  driver d;
  na::redis_store s(d.ctx.get_executor(), options_for(*redis));
  BOOST_TEST(!d.save(s, tokens("rt-1"), ""));
  redis->stop();
  BOOST_TEST(std::get<0>(d.load(s)) == na::errc::store_failed);
  BOOST_TEST(std::get<0>(d.acquire(s, 1s)) == na::errc::store_failed);
  redis->start();  // empty again: no persistence
  auto [ec, state] = d.load(s);
  BOOST_TEST(!ec);
  BOOST_TEST(!state.has_value());
}

BOOST_AUTO_TEST_CASE(a_restart_shorter_than_the_command_timeout_costs_no_error) {
  redis_server redis({}, true);
  driver d;
  na::redis_store s(d.ctx.get_executor(), options_for(redis));
  BOOST_TEST(!d.save(s, tokens("rt-1"), ""));
  redis.stop();
  std::thread restart([&] {
    std::this_thread::sleep_for(300ms);  // well inside command_timeout (2 s)
    redis.start();
  });
  auto [ec, state] = d.load(s);  // sent while Redis is down
  restart.join();
  BOOST_TEST(!ec);
  BOOST_REQUIRE(state.has_value());
  BOOST_TEST(state->refresh_token == "rt-1");  // the append-only file kept it
}

// Redis down: the replica keeps serving its valid token and reports the store failure.
BOOST_AUTO_TEST_CASE(with_redis_down_the_valid_token_is_served_and_the_failure_reported) {
  auto redis = std::make_unique<redis_server>();
  mock_server_options mopts;
  mopts.ttl = 100s;
  mock_server server(mopts);
  asio::io_context ctx;
  auto ropts = options_for(*redis);
  ropts.command_timeout = 300ms;
  auto cfg = config_for(server, mopts);
  auto clk = std::make_shared<manual_clock>();
  cfg.clock = clk;
  cfg.storage.store = std::make_shared<na::redis_store>(ctx.get_executor(), ropts);
  na::client c(ctx.get_executor(), cfg);
  const auto first = get_token(ctx, c);
  redis->stop();
  clk->advance(80s);  // past the refresh point: a refresh is due, Redis is gone
  auto a = try_token(ctx, c);
  BOOST_TEST(!a.ec);
  BOOST_TEST(a.token.serial() == first.serial());
  const auto s = c.stats();
  BOOST_TEST(s.refreshes_failed == 1u);
  BOOST_TEST(s.refreshes_failed_by_reason.count("token store failure") == 1u);
  BOOST_TEST(s.valid_tokens_served_after_failure == 1u);
  BOOST_TEST(server.stats().refreshes == 1u);  // no refresh without the lease
}

// local_fallback: with Redis gone the replica refreshes alone from the state it last saw, and
// its save reaches Redis once Redis is back.
BOOST_AUTO_TEST_CASE(local_fallback_refreshes_alone_and_saves_when_redis_returns) {
  redis_server redis;
  mock_server_options mopts;
  mopts.ttl = 100s;
  mopts.rotate = true;
  mock_server server(mopts);
  asio::io_context ctx;
  auto ropts = options_for(redis);
  ropts.command_timeout = 300ms;
  ropts.local_fallback = true;
  auto cfg = config_for(server, mopts);
  auto clk = std::make_shared<manual_clock>();
  cfg.clock = clk;
  cfg.storage.retry_interval = 100ms;
  cfg.storage.store = std::make_shared<na::redis_store>(ctx.get_executor(), ropts);
  na::client c(ctx.get_executor(), cfg);
  const auto first = get_token(ctx, c);
  redis.stop();
  clk->advance(101s);  // expired
  // Run until the call completes: the pending save keeps the io_context busy meanwhile.
  std::optional<boost::system::error_code> ec;
  na::access_token token;
  c.async_token([&](boost::system::error_code e, na::access_token t) {
    ec = e;
    token = std::move(t);
  });
  ctx.restart();
  for (auto end = std::chrono::steady_clock::now() + 20s;
       !ec && std::chrono::steady_clock::now() < end;)
    ctx.run_one_for(10ms);
  BOOST_REQUIRE(ec.has_value());
  BOOST_TEST(!*ec);
  BOOST_TEST(token.serial() == first.serial() + 1);
  BOOST_TEST(server.stats().refreshes == 2u);
  BOOST_TEST(c.stats().store_save_failures >= 1u);

  redis.start();  // empty (no persistence): the pending save is the first state again
  std::atomic<bool> saved{false};
  std::thread poll([&] {
    saved = eventually([&] {
      return redis.command({"HGET", "nxsys-auth:{test}", "refresh_token"}) ==
             server.current_refresh_token();
    });
  });
  for (auto end = std::chrono::steady_clock::now() + 20s;
       !saved && std::chrono::steady_clock::now() < end;)
    ctx.run_one_for(10ms);
  poll.join();
  BOOST_TEST(saved.load(),
             "saves " << c.stats().store_saves << " failures " << c.stats().store_save_failures
                      << " conflicts " << c.stats().store_conflicts << " redis "
                      << redis.command({"HGET", "nxsys-auth:{test}", "refresh_token"}));
  BOOST_TEST(server.stats().reuse_detected == 0u);
}

// The window no client can close alone: the server rotated, the holder died before storing.
// The take-over presents the stored (replaced) token: with a reuse grace it succeeds and the
// chain goes on; without one it is reported as what it is, re-authorization needed.
void take_over_after_a_lost_rotation(std::chrono::milliseconds grace) {
  redis_server redis;
  mock_server_options mopts;
  mopts.rotate = true;
  mopts.reuse_detection = true;
  mopts.reuse_grace = grace;
  mock_server server(mopts);
  asio::io_context ctx;
  driver d;
  na::redis_store seed(d.ctx.get_executor(), options_for(redis));
  BOOST_REQUIRE(!d.save(seed, tokens("refresh-0", ""), ""));  // the chain as stored
  {
    // The dead holder: its request reached the server (rotated) but nothing was stored.
    na::client holder(ctx.get_executor(), config_for(server, mopts));
    get_token(ctx, holder);
  }
  BOOST_REQUIRE(server.current_refresh_token() != "refresh-0");
  auto cfg = config_for(server, mopts);
  cfg.refresh_token = "";  // only the store's
  cfg.storage.store = std::make_shared<na::redis_store>(ctx.get_executor(), options_for(redis));
  na::client take_over(ctx.get_executor(), cfg);
  auto a = try_token(ctx, take_over);
  if (grace.count() > 0) {
    BOOST_TEST(!a.ec);
    BOOST_TEST(server.stats().grace_refreshes == 1u);
    BOOST_TEST(redis.command({"HGET", "nxsys-auth:{test}", "refresh_token"}) ==
               server.current_refresh_token());
  } else {
    BOOST_TEST(a.ec == na::errc::invalid_grant);
    BOOST_TEST(a.diag.server_description.find("reuse detected") != std::string::npos);
    BOOST_TEST(a.what.find("invalid_grant") != std::string::npos);
  }
}

BOOST_AUTO_TEST_CASE(a_take_over_after_a_lost_rotation_survives_with_a_grace) {
  take_over_after_a_lost_rotation(2s);
}

BOOST_AUTO_TEST_CASE(a_take_over_after_a_lost_rotation_without_grace_needs_reauthorization) {
  take_over_after_a_lost_rotation(0ms);
}

// Inside one process the single flight holds: 10,000 callers on an expired token make one
// lease attempt, one save and one release (EVAL calls counted by Redis).
BOOST_AUTO_TEST_CASE(ten_thousand_callers_make_one_lease_attempt) {
  redis_server redis;
  mock_server_options mopts;
  mopts.rotate = true;
  mopts.latency = 50ms;
  mock_server server(mopts);
  asio::io_context ctx;
  auto cfg = config_for(server, mopts);
  cfg.storage.store = std::make_shared<na::redis_store>(ctx.get_executor(), options_for(redis));
  na::client c(ctx.get_executor(), cfg);
  redis.command({"CONFIG", "RESETSTAT"});
  std::atomic<int> ok{0};
  for (int i = 0; i < 10'000; ++i)
    c.async_token([&](boost::system::error_code ec, na::access_token) { ok += !ec; });
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 1));
  BOOST_TEST(ok.load() == 10'000);
  BOOST_TEST(server.stats().refreshes == 1u);
  const auto info = redis.command({"INFO", "commandstats"});
  const auto at = info.find("cmdstat_eval:calls=");
  BOOST_REQUIRE(at != std::string::npos);
  const int evals = std::atoi(info.c_str() + at + std::string_view("cmdstat_eval:calls=").size());
  BOOST_TEST(evals == 3);  // acquire, save, release (a 50 ms refresh needs no renewal)
}

// Replicas (clients with stores of their own, as separate processes would have) sharing one
// chain: 4 × 250 coroutines on an empty cache → one refresh; the others read the stored token.
BOOST_AUTO_TEST_CASE(replicas_refresh_once_through_redis) {
  redis_server redis;
  mock_server_options mopts;
  mopts.rotate = true;
  mopts.reuse_detection = true;
  mopts.latency = 50ms;
  mock_server server(mopts);
  asio::io_context ctx(2);
  std::vector<std::unique_ptr<na::client>> replicas;
  for (int i = 0; i < 4; ++i) {
    auto cfg = config_for(server, mopts);
    cfg.storage.store = std::make_shared<na::redis_store>(ctx.get_executor(), options_for(redis));
    replicas.push_back(std::make_unique<na::client>(ctx.get_executor(), cfg));
  }
  const auto burst = burst_of_tokens(ctx, replicas, 250, 2, 30s);
  BOOST_REQUIRE(burst.finished);
  BOOST_TEST(burst.errors == 0);
  BOOST_TEST(burst.values.size() == 1u);
  BOOST_TEST(server.stats().refreshes == 1u);
  BOOST_TEST(server.stats().reuse_detected == 0u);
  std::uint64_t from_store = 0;
  for (auto& c : replicas) from_store += c->stats().tokens_from_store;
  BOOST_TEST(from_store == 3u);
  BOOST_TEST(redis.command({"HGET", "nxsys-auth:{test}", "refresh_token"}) ==
             server.current_refresh_token());
}

BOOST_AUTO_TEST_SUITE_END()

// The hand-off without the lease (issue 15): a waiter reads a state another replica saved, as
// soon as its publication arrives, and the lease's safety: a lease lost by a renewal or by time
// alone, and a renewal that ends with its lease.
BOOST_AUTO_TEST_SUITE(redis_lease)

namespace {
int eval_calls(const redis_server& redis) {
  const auto info = redis.command({"INFO", "commandstats"});
  const auto at = info.find("cmdstat_eval:calls=");
  if (at == std::string::npos) return 0;
  return std::atoi(info.c_str() + at + std::string_view("cmdstat_eval:calls=").size());
}
}  // namespace

BOOST_AUTO_TEST_CASE(a_waiter_reads_a_saved_state_without_the_lease) {
  redis_server redis;
  driver d;
  auto opts = options_for(redis);
  opts.poll_interval = 30s;  // only the publication can wake the waiter within the test
  na::redis_store a(d.ctx.get_executor(), opts), b(d.ctx.get_executor(), opts);
  auto first = d.acquire(a, 1s);
  BOOST_REQUIRE(!std::get<0>(first));
  // b waits (deadline 20 s); a saves 100 ms later and keeps its lease.
  std::optional<error_code> got;
  na::refresh_lease second;
  b.async_acquire(std::chrono::steady_clock::now() + 20s,
                  [&](error_code e, na::refresh_lease l, na::diagnostics) {
                    got = e;
                    second = std::move(l);
                  });
  std::optional<error_code> saved;
  asio::steady_timer t(d.ctx, 100ms);
  t.async_wait([&](error_code) {
    a.async_save(tokens("rt-1"), "", [&](error_code e, na::diagnostics) { saved = e; });
  });
  d.ctx.restart();
  const auto end = std::chrono::steady_clock::now() + 10s;
  while (!got && std::chrono::steady_clock::now() < end) d.ctx.run_one_for(10ms);
  BOOST_REQUIRE(got.has_value());
  BOOST_TEST(*got == na::errc::store_updated);
  BOOST_TEST(saved.has_value());
  BOOST_TEST(!second.lost());
  BOOST_TEST(redis.command({"GET", "nxsys-auth:{test}:lease"}) != "(nil)");  // still a's
  // b reads it; with nothing newer, its next acquire waits for the lease again.
  auto [ec, state] = d.load(b);
  BOOST_REQUIRE(state.has_value());
  BOOST_TEST(state->refresh_token == "rt-1");
  BOOST_TEST(std::get<0>(d.acquire(b, 50ms)) == na::errc::store_busy);
}

BOOST_AUTO_TEST_CASE(a_replica_that_comes_after_the_save_learns_it_from_the_lease_script) {
  redis_server redis;
  driver d;
  auto opts = options_for(redis);
  opts.poll_interval = 30s;
  na::redis_store a(d.ctx.get_executor(), opts);
  auto [ec, held] = d.acquire(a, 1s);
  BOOST_REQUIRE(!ec);
  BOOST_REQUIRE(!d.save(a, tokens("rt-1"), ""));
  // b subscribes after the publication: the lease script's version tells it, at once.
  na::redis_store b(d.ctx.get_executor(), opts);
  BOOST_TEST(std::get<0>(d.acquire(b, 20s)) == na::errc::store_updated);
  BOOST_TEST(std::get<1>(d.load(b))->refresh_token == "rt-1");
  BOOST_TEST(std::get<0>(d.acquire(b, 50ms)) == na::errc::store_busy);
  // a itself saved that version: it is not told about its own save.
  BOOST_TEST(std::get<0>(d.acquire(a, 50ms)) == na::errc::store_busy);  // its first lease holds
  held.release();
  auto [ec2, lease] = d.acquire(b, 5s);
  BOOST_TEST(!ec2);
}

BOOST_AUTO_TEST_CASE(a_renewal_that_finds_the_lease_gone_marks_it_lost) {
  redis_server redis;
  driver d;
  auto opts = options_for(redis);
  opts.lease_ttl = 300ms;  // renewed every 100 ms
  na::redis_store a(d.ctx.get_executor(), opts);
  auto [ec, held] = d.acquire(a, 1s);
  BOOST_REQUIRE(!ec);
  BOOST_TEST(!held.lost());
  // Another owner has it now (a failover lost ours, or it expired and was taken).
  BOOST_TEST(redis.command({"SET", "nxsys-auth:{test}:lease", "other", "PX", "60000"}) == "OK");
  d.ctx.restart();
  const auto end = std::chrono::steady_clock::now() + 10s;
  while (!held.lost() && std::chrono::steady_clock::now() < end) d.ctx.run_one_for(10ms);
  BOOST_TEST(held.lost());
  BOOST_TEST(redis.command({"GET", "nxsys-auth:{test}:lease"}) == "other");  // left alone
}

BOOST_AUTO_TEST_CASE(a_lease_whose_holder_paused_past_its_lifetime_is_lost_by_time_alone) {
  redis_server redis;
  driver d;
  auto opts = options_for(redis);
  opts.lease_ttl = 200ms;
  na::redis_store a(d.ctx.get_executor(), opts);
  auto [ec, held] = d.acquire(a, 1s);
  BOOST_REQUIRE(!ec);
  BOOST_TEST(!held.lost());
  // The io_context does not run: no renewal can go out, as in a process stopped for a while.
  std::this_thread::sleep_for(250ms);
  BOOST_TEST(held.lost());
  BOOST_TEST(held.lost(std::chrono::steady_clock::now() + 1h));
  held.release();
  BOOST_TEST(!held.lost());  // an empty lease cannot run out
}

BOOST_AUTO_TEST_CASE(renewals_end_with_their_lease_and_run_returns_once_the_store_is_gone) {
  redis_server redis;
  auto opts = options_for(redis);
  opts.lease_ttl = 30ms;  // renewed every 10 ms: releases land while a renewal is in Redis
  std::mt19937 rng(std::random_device{}());
  asio::io_context ctx;
  {
    na::redis_store s(ctx.get_executor(), opts);
    for (int i = 0; i < 150; ++i) {
      std::optional<na::refresh_lease> lease;
      s.async_acquire(std::chrono::steady_clock::now() + 5s,
                      [&](error_code e, na::refresh_lease l, na::diagnostics) {
                        BOOST_REQUIRE(!e);
                        lease = std::move(l);
                      });
      ctx.restart();
      const auto end = std::chrono::steady_clock::now() + 10s;
      while (!lease && std::chrono::steady_clock::now() < end) ctx.run_one_for(10ms);
      BOOST_REQUIRE(lease.has_value());
      ctx.restart();
      ctx.run_for(std::chrono::microseconds(rng() % 25'000));
      lease->release();
    }
    // Every renewal has ended: no EVAL goes out any more while the store lives on.
    ctx.restart();
    ctx.run_for(100ms);
    const int before = eval_calls(redis);
    ctx.restart();
    ctx.run_for(300ms);
    BOOST_TEST(eval_calls(redis) == before);
  }
  // The store is gone: nothing of it keeps the io_context busy.
  ctx.restart();
  ctx.run_for(5s);
  BOOST_TEST(ctx.stopped());
}

BOOST_AUTO_TEST_SUITE_END()
