// SPDX-License-Identifier: BSL-1.0
// Lifetimes of redis_store's connections (run under ASan): stores destroyed, at random moments,
// while their operations resolve a name, connect to an address that never answers, wait for a
// TLS handshake that never comes, or read a TLS subscription; with the io_context on two
// threads, and with the io_context itself stopped and destroyed. Every handler completes
// exactly once (or, with the io_context destroyed, never), nothing hangs, nothing is touched
// after it is freed.
#include <nxsys/auth/redis_store.hpp>

#include "helpers.hpp"
#include "redis/connection.hpp"  // lib/redis: the connection itself, for the address change
#include "redis_fixture.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>

#include <atomic>
#include <future>
#include <list>
#include <optional>
#include <random>

namespace asio = boost::asio;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;
using namespace std::chrono_literals;
using boost::system::error_code;

namespace {

// A TCP server on 127.0.0.1 that accepts and then says nothing: a TLS handshake with it waits
// until the connect timeout.
class silent_server {
 public:
  silent_server() : acceptor_(ctx_, {asio::ip::make_address("127.0.0.1"), 0}) {
    accept();
    thread_ = std::thread([this] { ctx_.run(); });
  }
  ~silent_server() {
    ctx_.stop();
    thread_.join();
  }
  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }

 private:
  void accept() {
    acceptor_.async_accept([this](error_code ec, asio::ip::tcp::socket s) {
      if (ec) return;
      held_.push_back(std::move(s));  // open, unread, until the end
      accept();
    });
  }
  asio::io_context ctx_;
  asio::ip::tcp::acceptor acceptor_;
  std::list<asio::ip::tcp::socket> held_;
  std::thread thread_;
};

// The servers a store may be pointed at, each holding connects in a different phase.
enum class target { resolving_name, unroutable, silent_tls, tls_subscription };

// The io_context on `n` threads until finish() (work guard dropped) lets them run out of work.
struct pool {
  asio::io_context ctx;
  asio::executor_work_guard<asio::io_context::executor_type> guard{ctx.get_executor()};
  std::vector<std::thread> threads;
  explicit pool(int n) {
    for (int i = 0; i < n; ++i) threads.emplace_back([this] { ctx.run(); });
  }
  // True when the threads ran out of work within `limit` (else stopped: something hangs).
  bool finish(std::chrono::milliseconds limit) {
    guard.reset();
    std::atomic<bool> done{false};
    bool hung = false;
    std::thread watchdog([&] {
      const auto end = std::chrono::steady_clock::now() + limit;
      while (!done && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(5ms);
      if (!done) {
        hung = true;
        ctx.stop();
      }
    });
    for (auto& t : threads) t.join();
    threads.clear();
    done = true;
    watchdog.join();
    return !hung;
  }
  ~pool() {
    if (!threads.empty()) finish(60s);
  }
};

struct scenario {
  std::uint16_t closed_port = redis_server::free_port();  // nothing listens (connect refused)
  silent_server silent;
  std::optional<tls_redis_server> tls;  // with a holder of the lease, for the subscription case
};

na::redis_store_options options(const scenario& s, target t) {
  na::redis_store_options o;
  o.name = "lifetimes";
  o.connect_timeout = 100ms;
  o.command_timeout = 300ms;
  o.poll_interval = 20ms;
  switch (t) {
    case target::resolving_name:  // /etc/hosts, then a refused connect, retried every 50 ms
      o.host = "localhost";
      o.port = s.closed_port;
      break;
    case target::unroutable:  // a connect that never answers (or fails at once, no route)
      o.host = "10.255.255.1";
      o.allow_plaintext = true;
      o.connect_timeout = 20ms;
      break;
    case target::silent_tls:  // a TLS handshake that never answers
      o.host = "localhost";
      o.port = s.silent.port();
      o.use_tls = true;
      o.tls.ca_file = test_data_dir() + "/ca.pem";
      break;
    case target::tls_subscription:  // the lease is held: acquire subscribes and waits
      o.port = s.tls->port();
      o.use_tls = true;
      o.tls.ca_file = test_data_dir() + "/ca.pem";
      o.command_timeout = 2s;
      o.poll_interval = 30s;
      break;
  }
  return o;
}

// Starts a load, a save and an acquire on `store`, each counting its completions in a counter
// of its own.
void start_operations(na::redis_store& store,
                      std::vector<std::shared_ptr<std::atomic<int>>>& counters,
                      std::chrono::milliseconds acquire_wait) {
  auto load = std::make_shared<std::atomic<int>>(0);
  auto save = std::make_shared<std::atomic<int>>(0);
  auto acquire = std::make_shared<std::atomic<int>>(0);
  counters.push_back(load);
  counters.push_back(save);
  counters.push_back(acquire);
  store.async_load([load](error_code, std::optional<na::stored_tokens>, na::diagnostics) {
    load->fetch_add(1);
  });
  na::stored_tokens t;
  t.refresh_token = "rt-lifetimes";
  t.access_token = "at-lifetimes";
  t.token_type = "Bearer";
  store.async_save(std::move(t), "", [save](error_code, na::diagnostics) { save->fetch_add(1); });
  store.async_acquire(
      std::chrono::steady_clock::now() + acquire_wait,
      [acquire](error_code, na::refresh_lease, na::diagnostics) { acquire->fetch_add(1); });
}

int completed(const std::vector<std::shared_ptr<std::atomic<int>>>& counters) {
  int n = 0;
  for (const auto& c : counters) n += c->load() > 0 ? 1 : 0;
  return n;
}

std::string counts_above_one(const std::vector<std::shared_ptr<std::atomic<int>>>& counters) {
  std::string out;
  for (std::size_t i = 0; i < counters.size(); ++i)
    if (counters[i]->load() > 1)
      out += " #" + std::to_string(i) + "=" + std::to_string(counters[i]->load());
  return out;
}

bool contains_port(const std::string& text, std::uint16_t port) {
  return text.find("127.0.0.1:" + std::to_string(port)) != std::string::npos;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(redis_lifetimes)

// The io_context keeps running: every operation of a destroyed store completes, once.
BOOST_AUTO_TEST_CASE(stores_destroyed_mid_connect_complete_every_handler_exactly_once) {
  scenario s;
  s.tls.emplace(redis_tls_setup{.data_dir = test_data_dir()});
  pool p(2);
  // The holder keeps the lease for the whole test, so that acquirers subscribe and wait.
  na::redis_store holder(p.ctx.get_executor(), options(s, target::tls_subscription));
  std::promise<std::pair<error_code, na::refresh_lease>> held_promise;
  holder.async_acquire(std::chrono::steady_clock::now() + 10s,
                       [&](error_code e, na::refresh_lease l, na::diagnostics) {
                         held_promise.set_value({e, std::move(l)});
                       });
  auto held = held_promise.get_future();
  BOOST_REQUIRE(held.wait_for(30s) == std::future_status::ready);
  auto lease = held.get();
  BOOST_REQUIRE(!lease.first);

  const unsigned seed = std::random_device{}();
  BOOST_TEST_MESSAGE("seed " << seed);
  std::mt19937 rng(seed);
  std::vector<std::shared_ptr<std::atomic<int>>> counters;
  constexpr int iterations = 400;
  for (int i = 0; i < iterations; ++i) {
    const auto t = static_cast<target>(i % 4);
    auto store = std::make_unique<na::redis_store>(p.ctx.get_executor(), options(s, t));
    start_operations(*store, counters, t == target::tls_subscription ? 10s : 200ms);
    // Destroyed at once, or after up to 3 ms: before, during or after the resolve, the connect,
    // the handshake, the subscription.
    const auto pause = std::uniform_int_distribution<int>(0, 3000)(rng);
    if (pause > 300) std::this_thread::sleep_for(std::chrono::microseconds(pause));
    store.reset();
  }
  const bool all = eventually([&] { return completed(counters) == int(counters.size()); }, 60s);
  BOOST_TEST(all, completed(counters) << " of " << counters.size() << " handlers completed");
  BOOST_TEST(counts_above_one(counters).empty(), "completed twice:" << counts_above_one(counters));
  lease.second.release();
  BOOST_TEST(p.finish(60s), "the io_context still had work 60 s after the stores were gone");
  BOOST_TEST(counts_above_one(counters).empty(), "completed twice:" << counts_above_one(counters));
}

// The io_context stopped and destroyed while operations are in every phase: their handlers are
// destroyed without running (never twice), and nothing is touched after it is freed or leaked
// (ASan, LeakSanitizer).
BOOST_AUTO_TEST_CASE(an_io_context_destroyed_mid_connect_frees_everything) {
  scenario s;
  const unsigned seed = std::random_device{}();
  BOOST_TEST_MESSAGE("seed " << seed);
  std::mt19937 rng(seed);
  std::vector<std::shared_ptr<std::atomic<int>>> counters;
  for (int i = 0; i < 40; ++i) {
    auto p = std::make_unique<pool>(2);
    std::vector<std::unique_ptr<na::redis_store>> stores;
    for (auto t : {target::resolving_name, target::unroutable, target::silent_tls}) {
      stores.push_back(std::make_unique<na::redis_store>(p->ctx.get_executor(), options(s, t)));
      start_operations(*stores.back(), counters, 200ms);
    }
    const auto pause = std::uniform_int_distribution<int>(0, 3000)(rng);
    if (pause > 300) std::this_thread::sleep_for(std::chrono::microseconds(pause));
    if (i % 2 == 0) stores.clear();  // the stores first, or the io_context's stop first
    p->ctx.stop();
    for (auto& t : p->threads) t.join();
    p->threads.clear();
    stores.clear();
    p.reset();  // ~io_context: the pending operations' handlers are destroyed
  }
  BOOST_TEST(counts_above_one(counters).empty(), "completed twice:" << counts_above_one(counters));
}

// A failover moves the address (host, port) and closes the connection: the next connect goes to
// the new address, and its messages name it, not the one of the first connect.
BOOST_AUTO_TEST_CASE(a_changed_address_is_used_and_named_at_the_next_connect) {
  redis_server redis;
  const auto closed = redis_server::free_port();
  asio::io_context ctx;
  auto strand = asio::make_strand(ctx.get_executor());
  na::redis::server_address addr;
  addr.port = std::to_string(closed);
  na::redis::connection c(strand, addr);
  const auto ping = [&](na::diagnostics& diag) {
    error_code out;
    bool done = false;
    asio::co_spawn(
        strand,
        [&]() -> asio::awaitable<void> {
          na::redis::reply r;
          out = co_await c.exec(na::redis::command("PING"), r,
                                std::chrono::steady_clock::now() + 5s, diag);
          if (!out && r.str != "PONG") out = na::errc::connection;
        },
        [&](std::exception_ptr) { done = true; });
    ctx.restart();
    const auto end = std::chrono::steady_clock::now() + 30s;
    while (!done && std::chrono::steady_clock::now() < end) ctx.run_one_for(10ms);
    BOOST_REQUIRE(done);
    return out;
  };
  na::diagnostics d;
  BOOST_TEST(ping(d) == na::errc::connection);
  BOOST_TEST(contains_port(d.client_message, closed), d.client_message);

  addr.port = std::to_string(redis.port());  // what the store does on a failover
  c.close();
  d = {};
  BOOST_TEST(!ping(d), d.client_message);

  addr.host = "localhost";  // and a name, resolved at the next connect
  addr.port = std::to_string(closed);
  c.close();
  d = {};
  BOOST_TEST(ping(d) == na::errc::connection);
  BOOST_TEST(d.client_message.find("localhost:" + std::to_string(closed)) != std::string::npos,
             d.client_message);
}

BOOST_AUTO_TEST_SUITE_END()
