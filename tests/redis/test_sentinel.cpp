// SPDX-License-Identifier: BSL-1.0
// redis_store with Redis Sentinel (a master, its replica and a sentinel of the test's own):
// discovery past a sentinel that is down, a sentinel that does not know the name, the options,
// WAIT for replicas, re-discovery of an idle store after READONLY and after its master is gone,
// replicas refreshing one rotating chain through a forced failover, and all of it over TLS to
// the sentinels (redis_sentinel_tls).
#include <nxsys/auth/redis_store.hpp>

#include "helpers.hpp"
#include "sentinel_fixture.hpp"
#include "store_driver.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <mutex>
#include <set>
#include <thread>

namespace asio = boost::asio;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;
using namespace std::chrono_literals;
using boost::system::error_code;

namespace {

// The store's log lines, from any thread; asserted on from the test's thread.
struct log_lines {
  std::mutex mu;
  std::vector<std::string> lines;
  na::log_function fn() {
    return [this](na::log_level, std::string_view text) {
      std::lock_guard lk(mu);
      lines.emplace_back(text);
    };
  }
  // Lines holding `needle` (and `also`, when given).
  std::size_t count(std::string_view needle, std::string_view also = {}) {
    std::lock_guard lk(mu);
    return static_cast<std::size_t>(std::count_if(lines.begin(), lines.end(), [&](const auto& l) {
      return l.find(needle) != std::string::npos && l.find(also) != std::string::npos;
    }));
  }
  std::string all() {
    std::lock_guard lk(mu);
    std::string out;
    for (const auto& l : lines) out += l + "\n";
    return out;
  }
};

std::string at(std::uint16_t port) {
  return "127.0.0.1:" + std::to_string(port);
}

na::redis_store_options sentinel_options(std::vector<std::string> sentinels, std::string master,
                                         log_lines* log, std::string name = "test") {
  na::redis_store_options o;
  o.sentinels = std::move(sentinels);
  o.sentinel_master = std::move(master);
  o.name = std::move(name);
  if (log != nullptr) o.log = log->fn();
  return o;
}

// The TLS deployments: the sentinel's password, which must never cross in clear nor reach a
// message, and the certificate it serves.
constexpr const char* sentinel_password = "sentinel-tls-p4ssw0rd";

redis_tls_setup cluster_tls(std::string cert = "server") {
  return {.data_dir = test_data_dir(), .cert = std::move(cert), .password = sentinel_password};
}

// A store of a TLS deployment: TLS to the master and to the sentinels, trusting the test CA
// (`tls`, which the sentinels share).
na::redis_store_options tls_sentinel_options(std::vector<std::string> sentinels,
                                             const std::string& master, log_lines* log,
                                             std::string name = "test") {
  auto o = sentinel_options(std::move(sentinels), master, log, std::move(name));
  o.use_tls = true;
  o.tls.ca_file = test_data_dir() + "/ca.pem";
  o.sentinel_use_tls = true;
  o.sentinel_password = sentinel_password;
  return o;
}

bool contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

struct result {
  error_code ec;
  na::diagnostics diag;
};

result save(asio::io_context& ctx, na::token_store& s, na::stored_tokens t, std::string expected) {
  result out;
  run_to_end(ctx, [&]() -> asio::awaitable<void> {
    std::tie(out.ec, out.diag) =
        co_await s.async_save(std::move(t), std::move(expected), use_tuple);
  });
  return out;
}

result load(asio::io_context& ctx, na::token_store& s) {
  result out;
  run_to_end(ctx, [&]() -> asio::awaitable<void> {
    std::tie(out.ec, std::ignore, out.diag) = co_await s.async_load(use_tuple);
  });
  return out;
}

// Runs `ctx` on this thread until `pred` holds (at most 10 s).
template <class Pred>
bool run_ctx_until(asio::io_context& ctx, Pred pred) {
  ctx.restart();
  const auto end = std::chrono::steady_clock::now() + 10s;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    ctx.run_one_for(10ms);
  }
  return true;
}

// What the callers of the failover test share; read by the test once they stopped.
struct callers_state {
  std::atomic<bool> stop{false};
  std::atomic<int> running{0};
  std::atomic<std::uint64_t> calls{0}, errors{0}, expired{0};
  std::mutex mu;
  std::set<std::string> distinct;  // values compared, never printed
  std::string first_error;
};

// One caller: token() in a loop, 20 ms apart, until told to stop. (A coroutine of its own, not a
// lambda's: a lambda's captures die with the lambda, before the coroutine runs.)
asio::awaitable<void> call_tokens(na::client* client, callers_state* st) {
  asio::steady_timer pause(co_await asio::this_coro::executor);
  while (!st->stop.load()) {
    try {
      auto t = co_await client->token();
      ++st->calls;
      if (t.expires_at() <= std::chrono::steady_clock::now()) ++st->expired;
      std::lock_guard lk(st->mu);
      st->distinct.emplace(t.value());
    } catch (const std::exception& e) {
      ++st->errors;
      std::lock_guard lk(st->mu);
      if (st->first_error.empty()) st->first_error = e.what();
    }
    pause.expires_after(20ms);
    co_await pause.async_wait(use_tuple);
  }
  --st->running;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(redis_sentinel)

BOOST_AUTO_TEST_CASE(sentinel_options_are_validated_with_the_field_named) {
  const auto problem = [](const na::redis_store_options& o) {
    na::diagnostics d;
    const auto ec = o.validate(&d);
    return ec == na::errc::invalid_config ? d.client_message : std::string("valid");
  };
  auto o = sentinel_options({"127.0.0.1:26379", "[::1]:26380", "sentinel.example:26379"},
                            "mymaster", nullptr);
  // Sentinels are asked over plain TCP: off loopback only with allow_plaintext.
  BOOST_TEST(problem(o).find("allow_plaintext") != std::string::npos);
  o.allow_plaintext = true;
  BOOST_TEST(problem(o) == "valid");
  for (const char* bad : {"127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:26379x",
                          ":26379", "::1:26379", "[::1]26379", ""}) {
    o.sentinels = {"127.0.0.1:26379", bad};
    BOOST_TEST(problem(o).find("sentinels") != std::string::npos, bad);
  }
  o.sentinels = {"127.0.0.1:26379"};
  o.sentinel_master.clear();
  BOOST_TEST(problem(o).find("sentinel_master") != std::string::npos);
  o.sentinels.clear();
  o.sentinel_master = "mymaster";
  BOOST_TEST(problem(o).find("sentinel_master") != std::string::npos);
  o = sentinel_options({"127.0.0.1:26379"}, "mymaster", nullptr);
  o.min_replicas_acked = -1;
  BOOST_TEST(problem(o).find("min_replicas_acked") != std::string::npos);
  o.min_replicas_acked = 0;
  BOOST_TEST(problem(o) == "valid");
  o.sentinels = {"nope"};
  asio::io_context ctx;
  BOOST_CHECK_THROW(na::redis_store(ctx.get_executor(), o), na::error_with_diagnostics);
}

BOOST_AUTO_TEST_CASE(the_master_is_found_through_the_second_sentinel_when_the_first_is_down) {
  sentinel_cluster cluster;
  log_lines log;
  asio::io_context ctx;
  const auto down = redis_server::free_port();  // nothing listens there
  auto o = sentinel_options({at(down), at(cluster.sentinel().port())}, cluster.name(), &log);
  na::redis_store s(ctx.get_executor(), o);
  const auto r = save(ctx, s, tokens("rt-1"), "");
  BOOST_TEST(!r.ec, r.diag.client_message);
  BOOST_TEST(cluster.first_master().command({"HGET", "nxsys-auth:{test}", "refresh_token"}) ==
             "rt-1");
  // min_replicas_acked is 1 with Sentinel: the save was acknowledged once the replica had it.
  BOOST_TEST(cluster.first_replica().command({"HGET", "nxsys-auth:{test}", "refresh_token"}) ==
             "rt-1");
  BOOST_TEST(log.count("is " + at(cluster.first_master().port())) == 1u, log.all());
  BOOST_TEST(log.count("sentinel " + at(cluster.sentinel().port())) == 1u, log.all());
}

BOOST_AUTO_TEST_CASE(a_sentinel_that_does_not_know_the_name_fails_with_what_it_answered) {
  redis_server redis;
  sentinel_process sentinel(redis.port(), "mymaster");
  asio::io_context ctx;
  auto o = sentinel_options({at(sentinel.port())}, "nope", nullptr);
  o.command_timeout = 5s;  // not needed: every sentinel answered, so it fails at once
  na::redis_store s(ctx.get_executor(), o);
  const auto r = save(ctx, s, tokens("rt-1"), "");
  BOOST_TEST(r.ec == na::errc::store_failed);
  BOOST_TEST(
      r.diag.client_message.find("sentinel " + at(sentinel.port()) +
                                 " does not know a master named 'nope'") != std::string::npos,
      r.diag.client_message);
  // Not sent again within command_timeout: every sentinel answered.
  BOOST_TEST(r.diag.client_message.find("tried") == std::string::npos, r.diag.client_message);
  const auto l = load(ctx, s);
  BOOST_TEST(l.ec == na::errc::store_failed);
  BOOST_TEST(l.diag.client_message.find("no sentinel named the master 'nope'") != std::string::npos,
             l.diag.client_message);
  BOOST_TEST(redis.command({"EXISTS", "nxsys-auth:{test}"}) == "0");
}

// min_replicas_acked without Sentinel: a lone Redis acknowledges with no replica; the save is
// reported failed (never "unreachable"), and sent again it finds its own token: success.
BOOST_AUTO_TEST_CASE(a_write_no_replica_acknowledges_fails_and_a_repeat_succeeds) {
  redis_server redis;
  asio::io_context ctx;
  na::redis_store_options o;
  o.port = redis.port();
  o.name = "test";
  o.command_timeout = 1s;
  o.min_replicas_acked = 1;
  na::redis_store s(ctx.get_executor(), o);
  const auto r = save(ctx, s, tokens("rt-1"), "");
  BOOST_TEST(r.ec == na::errc::store_failed);
  BOOST_TEST(
      r.diag.client_message.find("acknowledged by 0 of the 1 replica(s)") != std::string::npos,
      r.diag.client_message);
  o.min_replicas_acked = 0;
  na::redis_store again(ctx.get_executor(), o);
  BOOST_TEST(!save(ctx, again, tokens("rt-1"), "").ec);
  BOOST_TEST(redis.command({"HGET", "nxsys-auth:{test}", "refresh_token"}) == "rt-1");
}

// A store that was idle during a failover (no watch) finds the new master by itself: after a
// READONLY reply from the old master, demoted; and after the old master is gone.
BOOST_AUTO_TEST_CASE(an_idle_store_finds_the_new_master_after_readonly_or_a_lost_master) {
  sentinel_cluster cluster;
  log_lines log_a, log_b;
  asio::io_context ctx;
  auto oa = sentinel_options({at(cluster.sentinel().port())}, cluster.name(), &log_a, "a");
  oa.lease_ttl = 100ms;
  oa.command_timeout = 600ms;  // the watch ends after 1.2 s without a command
  auto ob = sentinel_options({at(cluster.sentinel().port())}, cluster.name(), &log_b, "b");
  ob.lease_ttl = oa.lease_ttl;
  ob.command_timeout = oa.command_timeout;
  ob.min_replicas_acked = 0;  // the new master has no replica once the old one is gone
  na::redis_store a(ctx.get_executor(), oa);
  na::redis_store b(ctx.get_executor(), ob);
  for (auto* s : {&a, &b}) {
    const auto r = save(ctx, *s, tokens("rt-1"), "");
    BOOST_REQUIRE_MESSAGE(!r.ec, r.diag.client_message);
  }
  BOOST_REQUIRE(run_ctx_until(ctx, [&] {
    return log_a.count("no watch on the sentinels") == 1 &&
           log_b.count("no watch on the sentinels") == 1;
  }));

  auto& old_master = cluster.first_master();
  auto& new_master = cluster.first_replica();
  BOOST_REQUIRE(cluster.failover());
  BOOST_REQUIRE(cluster.demote(old_master, new_master));
  const auto ra = save(ctx, a, tokens("rt-2"), "rt-1");
  BOOST_TEST(!ra.ec, ra.diag.client_message);
  BOOST_TEST(new_master.command({"HGET", "nxsys-auth:{a}", "refresh_token"}) == "rt-2");
  BOOST_TEST(
      log_a.count("moved from " + at(old_master.port()) + " to " + at(new_master.port())) == 1u,
      log_a.all());
  BOOST_TEST(log_a.count("asked after READONLY") == 1u, log_a.all());

  old_master.stop();
  const auto rb = save(ctx, b, tokens("rt-2"), "rt-1");
  BOOST_TEST(!rb.ec, rb.diag.client_message);
  BOOST_TEST(new_master.command({"HGET", "nxsys-auth:{b}", "refresh_token"}) == "rt-2");
  BOOST_TEST(log_b.count("asked after the master could not be reached") == 1u, log_b.all());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(redis_sentinel_failover)

namespace {

// Replicas (clients with stores of their own) refresh one rotating chain through a forced
// failover: no reuse, one refresh per generation, no caller error, every store on the new
// master. `tls`: every server speaks TLS only, the sentinel included.
void replicas_refresh_through_a_failover(bool tls) {
  constexpr int replicas = 4;
  constexpr int callers = 20;
  sentinel_cluster cluster("mymaster",
                           tls ? std::optional(cluster_tls()) : std::optional<redis_tls_setup>());
  auto& old_master = cluster.first_master();
  auto& new_master = cluster.first_replica();
  mock_server_options mopts;
  mopts.rotate = true;
  mopts.reuse_detection = true;
  mopts.ttl = 2s;
  mopts.latency = 20ms;
  mock_server server(mopts);

  std::vector<std::unique_ptr<log_lines>> logs;
  asio::io_context ctx(2);
  std::vector<std::unique_ptr<na::client>> clients;
  for (int i = 0; i < replicas; ++i) {
    logs.push_back(std::make_unique<log_lines>());
    auto o = tls ? tls_sentinel_options({at(cluster.sentinel().port())}, cluster.name(),
                                        logs.back().get(), "chain")
                 : sentinel_options({at(cluster.sentinel().port())}, cluster.name(),
                                    logs.back().get(), "chain");
    o.lease_ttl = 5s;         // longer than the failover stalls a holder's renewal
    o.command_timeout = 10s;  // longer than the failover takes
    o.poll_interval = 100ms;
    na::client_config cfg;
    cfg.token_url = server.token_url();
    cfg.client_id = mopts.client_id;
    cfg.client_secret = mopts.client_secret;
    cfg.refresh_token = mopts.initial_refresh_token;
    cfg.storage.store = std::make_shared<na::redis_store>(ctx.get_executor(), o);
    clients.push_back(std::make_unique<na::client>(ctx.get_executor(), cfg));
  }

  callers_state st;
  st.running = replicas * callers;
  for (auto& c : clients)
    for (int i = 0; i < callers; ++i)
      asio::co_spawn(ctx, call_tokens(c.get(), &st), asio::detached);
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) threads.emplace_back([&] { ctx.run(); });
  // Whatever happens below, the threads end: callers stopped, then the context.
  struct stopper {
    std::atomic<bool>& stop;
    std::atomic<int>& running;
    asio::io_context& ctx;
    std::vector<std::thread>& threads;
    ~stopper() { finish(); }
    void finish() {
      if (threads.empty()) return;
      stop = true;
      const auto end = std::chrono::steady_clock::now() + 30s;
      while (running.load() > 0 && std::chrono::steady_clock::now() < end)
        std::this_thread::sleep_for(10ms);
      ctx.stop();  // the stores' watches and renewals would keep it running
      for (auto& t : threads) t.join();
      threads.clear();
    }
  } stopper_{st.stop, st.running, ctx, threads};

  const auto refreshes = [&] { return server.stats().refreshes; };
  const auto until = [&](std::uint64_t n) {
    const auto end = std::chrono::steady_clock::now() + 40s;
    while (refreshes() < n && server.stats().reuse_detected == 0 &&
           std::chrono::steady_clock::now() < end)
      std::this_thread::sleep_for(10ms);
    return refreshes() >= n;
  };
  BOOST_REQUIRE_MESSAGE(until(3), "refreshes " << refreshes() << ", reuse "
                                               << server.stats().reuse_detected << ", errors "
                                               << st.errors.load());
  const auto before = refreshes();
  BOOST_REQUIRE(cluster.failover());
  // Sentinel makes the old master a replica of the new one some 10 s later; done at once here,
  // so that the new master has a replica to acknowledge writes (min_replicas_acked is 1).
  BOOST_REQUIRE(cluster.demote(old_master, new_master));
  const auto at_switch = refreshes();
  BOOST_TEST(until(at_switch + 4));
  // The server counts a refresh before it answers: let the callers see the last one.
  const auto seen = [&] {
    std::lock_guard lk(st.mu);
    return st.distinct.size();
  };
  std::uint64_t served_all = 0;  // refreshes when the callers had seen every generation
  for (auto end = std::chrono::steady_clock::now() + 10s;
       served_all == 0 && std::chrono::steady_clock::now() < end;) {
    const auto n = refreshes();
    if (seen() >= n) served_all = n;
    std::this_thread::sleep_for(5ms);
  }
  stopper_.finish();

  const auto s = server.stats();
  std::size_t generations = 0;
  {
    std::lock_guard lk(st.mu);
    generations = st.distinct.size();
  }
  std::size_t switch_master = 0, asked = 0;
  for (auto& l : logs) {
    switch_master += l->count("moved from", "(+switch-master from");
    asked += l->count("moved from", ", asked after");
  }
  BOOST_TEST_MESSAGE("refreshes " << s.refreshes << " (" << before << " before the failover, "
                                  << at_switch << " when the sentinel named the new master), "
                                  << "generations " << generations << ", reuse " << s.reuse_detected
                                  << ", calls " << st.calls.load() << ", errors "
                                  << st.errors.load() << ", expired " << st.expired.load()
                                  << ", min gap " << s.min_refresh_gap_ms
                                  << " ms, master changes: " << switch_master
                                  << " by +switch-master, " << asked << " by a discovery");
  BOOST_TEST(st.errors.load() == 0u, st.first_error);
  BOOST_TEST(st.expired.load() == 0u);
  BOOST_TEST(s.reuse_detected == 0u);
  // One refresh per generation, each one served; the callers stop a few ms after they saw them
  // all, and a refresh started in those ms (its token unseen) is the only other one allowed.
  BOOST_TEST(served_all != 0u);
  BOOST_TEST((s.refreshes == generations ||
              (s.refreshes == generations + 1 && s.refreshes == served_all + 1)),
             "refreshes " << s.refreshes << ", generations " << generations);
  BOOST_TEST(s.min_refresh_gap_ms >= 500u);
  BOOST_TEST(s.refreshes >= at_switch + 4);
  // Every store moved to the new master, once, and the chain is there.
  for (auto& l : logs) {
    BOOST_TEST(
        l->count("moved from " + at(old_master.port()) + " to " + at(new_master.port())) == 1u,
        l->all());
    BOOST_TEST(l->count("moved from") == 1u, l->all());
  }
  const auto stored = new_master.command({"HGET", "nxsys-auth:{chain}", "refresh_token"});
  BOOST_TEST(
      (stored == server.current_refresh_token() || stored == server.previous_refresh_token()),
      "stored " << stored);
}

}  // namespace

BOOST_AUTO_TEST_CASE(replicas_refresh_through_a_failover_without_reuse_or_error) {
  replicas_refresh_through_a_failover(false);
}

BOOST_AUTO_TEST_CASE(replicas_refresh_over_tls_through_a_failover_without_reuse_or_error) {
  replicas_refresh_through_a_failover(true);
}

BOOST_AUTO_TEST_SUITE_END()

// TLS to the sentinels (sentinel_use_tls): a master, its replica and a sentinel that speak TLS
// only, the sentinel with a password.
BOOST_AUTO_TEST_SUITE(redis_sentinel_tls)

BOOST_AUTO_TEST_CASE(sentinel_tls_options_are_validated_with_the_field_named) {
  const auto problem = [](const na::redis_store_options& o) {
    na::diagnostics d;
    const auto ec = o.validate(&d);
    return ec == na::errc::invalid_config ? d.client_message : std::string("valid");
  };
  // Plain TCP to a sentinel off loopback: refused without allow_plaintext, naming the two ways
  // out; over TLS it needs none.
  auto o = sentinel_options({"127.0.0.1:26379", "sentinel.example:26379"}, "mymaster", nullptr);
  BOOST_TEST(contains(problem(o), "sentinels: sentinel.example:26379"), problem(o));
  BOOST_TEST(contains(problem(o), "sentinel_use_tls"), problem(o));
  BOOST_TEST(contains(problem(o), "allow_plaintext"), problem(o));
  o.sentinel_use_tls = true;
  BOOST_TEST(problem(o) == "valid");
  // `tls` serves the sentinels when sentinel_tls is not set, even without use_tls.
  o.tls.ca_file = "/ca.pem";
  BOOST_TEST(problem(o) == "valid");
  o.sentinel_tls = na::tls_options{};
  BOOST_TEST(contains(problem(o), "tls.ca_file is set but use_tls is false"), problem(o));
  o.tls = {};
  o.sentinel_tls->certificate_file = "/client.pem";  // without its key
  BOOST_TEST(contains(problem(o), "sentinel_tls.certificate_file"), problem(o));
  o.sentinel_tls->private_key_file = "/client.key";
  BOOST_TEST(problem(o) == "valid");
  o.sentinel_tls_server_name = std::string("a\0b", 3);
  BOOST_TEST(contains(problem(o), "sentinel_tls_server_name"), problem(o));
  o.sentinel_tls_server_name = "sentinel.example";
  BOOST_TEST(problem(o) == "valid");

  // Set without sentinel_use_tls: each named.
  o.sentinel_use_tls = false;
  o.allow_plaintext = true;
  BOOST_TEST(contains(problem(o), "sentinel_tls is set but sentinel_use_tls is false"), problem(o));
  o.sentinel_tls.reset();
  BOOST_TEST(contains(problem(o), "sentinel_tls_server_name is set but sentinel_use_tls is false"),
             problem(o));
  o.sentinel_tls_server_name.clear();
  BOOST_TEST(problem(o) == "valid");
  // Without sentinels.
  na::redis_store_options lone;
  lone.sentinel_use_tls = true;
  BOOST_TEST(contains(problem(lone), "sentinel_use_tls is set but sentinels is empty"),
             problem(lone));

  // The files are read by the constructor, the field named as the user wrote it.
  o = sentinel_options({"127.0.0.1:26379"}, "mymaster", nullptr);
  o.sentinel_use_tls = true;
  o.sentinel_tls = na::tls_options{.ca_file = "/nonexistent/ca.pem"};
  asio::io_context ctx;
  try {
    na::redis_store s(ctx.get_executor(), o);
    BOOST_ERROR("constructed with an unreadable sentinel_tls.ca_file");
  } catch (const na::error_with_diagnostics& e) {
    BOOST_TEST((e.code() == na::errc::invalid_config));
    BOOST_TEST(contains(e.get_diagnostics().client_message,
                        "redis_store: cannot load sentinel_tls.ca_file"),
               e.get_diagnostics().client_message);
  }
}

// Discovery over TLS (the sentinel asked with AUTH, ROLE on the master over TLS), then a client
// refreshing through the store end to end.
BOOST_AUTO_TEST_CASE(a_client_refreshes_through_a_master_found_over_tls_to_the_sentinel) {
  sentinel_cluster cluster("mymaster", cluster_tls());
  log_lines log;
  mock_server_options mopts;
  mopts.rotate = true;
  mock_server server(mopts);
  asio::io_context ctx;
  na::client_config cfg;
  cfg.token_url = server.token_url();
  cfg.client_id = mopts.client_id;
  cfg.client_secret = mopts.client_secret;
  cfg.refresh_token = mopts.initial_refresh_token;
  // By name: SNI and the certificate's DNS entry, for the sentinel as for the master.
  auto o = tls_sentinel_options({"localhost:" + std::to_string(cluster.sentinel().port())},
                                cluster.name(), &log);
  o.name = "chain";
  cfg.storage.store = std::make_shared<na::redis_store>(ctx.get_executor(), o);
  na::client client(ctx.get_executor(), cfg);
  std::string error;
  std::optional<na::access_token> got;
  run_to_end(ctx, [&]() -> asio::awaitable<void> {
    try {
      got = co_await client.token();
    } catch (const std::exception& e) {
      error = e.what();
    }
  });
  BOOST_REQUIRE_MESSAGE(got.has_value(), error);
  BOOST_TEST(server.stats().refreshes == 1u);
  BOOST_TEST(cluster.first_master().command({"HGET", "nxsys-auth:{chain}", "refresh_token"}) ==
             server.current_refresh_token());
  BOOST_TEST(log.count("is " + at(cluster.first_master().port()),
                       "sentinel localhost:" + std::to_string(cluster.sentinel().port())) == 1u,
             log.all());
  BOOST_TEST(!contains(log.all(), sentinel_password));
}

// A sentinel whose certificate the store cannot verify is passed over like one that cannot be
// reached, with the cause and the field that fixes it; alone, it fails the command at once.
BOOST_AUTO_TEST_CASE(a_sentinel_whose_certificate_is_not_verified_is_passed_over_with_a_hint) {
  sentinel_cluster cluster("mymaster", cluster_tls());
  // Monitors the same master, but serves a certificate of another issuer.
  sentinel_process stranger(cluster.first_master().port(), cluster.name(),
                            cluster_tls("self-signed"));
  const std::string where = "sentinel " + at(stranger.port());
  asio::io_context ctx;
  auto alone = tls_sentinel_options({at(stranger.port())}, cluster.name(), nullptr);
  alone.command_timeout = 5s;  // not waited for: a refusal is no outage
  na::redis_store a(ctx.get_executor(), alone);
  const auto r = load(ctx, a);
  BOOST_TEST(r.ec == na::errc::store_failed);
  const auto& m = r.diag.client_message;
  BOOST_TEST(contains(m, where + ": TLS handshake with " + at(stranger.port())), m);
  BOOST_TEST(contains(m, "certificate was not verified"), m);
  BOOST_TEST(contains(m, "(is the CA that signed it in tls.ca_file or tls.ca_dir?)"), m);
  BOOST_TEST(!contains(m, "tried"), m);
  BOOST_TEST(!contains(m, sentinel_password), m);

  // A refusal is no outage: local_fallback does not take over (no local lease).
  auto fallback = alone;
  fallback.local_fallback = true;
  na::redis_store f(ctx.get_executor(), fallback);
  error_code acquired;
  run_to_end(ctx, [&]() -> asio::awaitable<void> {
    std::tie(acquired, std::ignore, std::ignore) =
        co_await f.async_acquire(std::chrono::steady_clock::now() + 1s, use_tuple);
  });
  BOOST_TEST(acquired == na::errc::store_failed);

  // With sentinel_tls, the hint names it.
  auto own = alone;
  own.sentinel_tls = na::tls_options{.ca_file = test_data_dir() + "/ca.pem"};
  na::redis_store b(ctx.get_executor(), own);
  const auto rb = load(ctx, b);
  BOOST_TEST(rb.ec == na::errc::store_failed);
  BOOST_TEST(contains(rb.diag.client_message, "sentinel_tls.ca_file"), rb.diag.client_message);

  // Followed by one that is verified: that one is used.
  log_lines log;
  auto both = tls_sentinel_options({at(stranger.port()), at(cluster.sentinel().port())},
                                   cluster.name(), &log);
  na::redis_store c(ctx.get_executor(), both);
  const auto rc = save(ctx, c, tokens("rt-1"), "");
  BOOST_TEST(!rc.ec, rc.diag.client_message);
  BOOST_TEST(cluster.first_master().command({"HGET", "nxsys-auth:{test}", "refresh_token"}) ==
             "rt-1");
  BOOST_TEST(log.count("sentinel " + at(cluster.sentinel().port())) == 1u, log.all());
}

// The +switch-master watch runs over TLS as well: a store in use follows a failover without
// sending a command.
BOOST_AUTO_TEST_CASE(a_failover_is_followed_over_the_tls_watch) {
  sentinel_cluster cluster("mymaster", cluster_tls());
  auto& old_master = cluster.first_master();
  auto& new_master = cluster.first_replica();
  log_lines log;
  asio::io_context ctx;
  auto o = tls_sentinel_options({at(cluster.sentinel().port())}, cluster.name(), &log);
  o.lease_ttl = 15s;  // in use, and so watching, for 30 s after the last command
  na::redis_store s(ctx.get_executor(), o);
  const auto r = save(ctx, s, tokens("rt-1"), "");
  BOOST_REQUIRE_MESSAGE(!r.ec, r.diag.client_message);
  // Subscribed: the sentinel lists the store's connection (asked every 100 ms).
  auto next_ask = std::chrono::steady_clock::now();
  BOOST_REQUIRE(run_ctx_until(ctx, [&] {
    if (std::chrono::steady_clock::now() < next_ask) return false;
    next_ask += 100ms;
    return contains(cluster.sentinel().command({"CLIENT", "LIST"}), "cmd=subscribe");
  }));
  BOOST_REQUIRE(cluster.failover());
  const std::string moved = "moved from " + at(old_master.port()) + " to " + at(new_master.port());
  BOOST_TEST(run_ctx_until(ctx, [&] { return log.count(moved) == 1; }), log.all());
  BOOST_TEST(
      log.count(moved, "(+switch-master from sentinel " + at(cluster.sentinel().port())) == 1u,
      log.all());
  BOOST_REQUIRE(cluster.demote(old_master, new_master));
  const auto r2 = save(ctx, s, tokens("rt-2"), "rt-1");
  BOOST_TEST(!r2.ec, r2.diag.client_message);
  BOOST_TEST(new_master.command({"HGET", "nxsys-auth:{test}", "refresh_token"}) == "rt-2");
  BOOST_TEST(log.count("moved from") == 1u, log.all());
}

BOOST_AUTO_TEST_SUITE_END()
