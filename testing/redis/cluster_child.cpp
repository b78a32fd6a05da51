// SPDX-License-Identifier: BSL-1.0
// nxsys-cluster-child: one replica of the Redis scale-out test (tests/redis/test_cluster.cpp) and
// benchmark (benchmarks/cluster.cpp).
// Not a tool for users.
//
//   nxsys-cluster-child --url TOKEN_URL --redis-port P --stop-file F [--name N] [--callers C]
//                       [--threads T] [--pause-ms MS] [--lease-ttl-ms MS] [--timeout-ms MS]
//                       [--report-tokens 1] [--pause-before-request N]
//
// C coroutines on T threads call token() in a loop (pausing MS between calls) until F exists,
// with one client whose store is a redis_store on 127.0.0.1:P. Each token handed out must not
// have expired. Then prints "stats k=v ...", "calls N errors E expired X distinct D" and "ok"
// (exit 0) when E and X are 0, else "fail ..." (exit 1). The first error's text is printed
// (never a token). With --report-tokens, also one line "seen <id> <ns>" per distinct token: a
// short hash of it (the same in every process) and when this process first got it
// (steady_clock, which is CLOCK_MONOTONIC and so comparable across processes; for
// nxsys-cluster-bench). With --pause-before-request N the process stops itself (SIGSTOP)
// right before its N-th token request, holding the lease, as a long GC or VM pause would stop
// it; the test sends SIGCONT. "leases_lost=" in the stats counts requests it then withheld.
// Exit 2: bad usage; 3: timed out.
#include <nxsys/auth.hpp>
#include <nxsys/auth/redis_store.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <sys/prctl.h>
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // GCC bug 109224, as in store_child
#endif

namespace {

namespace asio = boost::asio;
namespace auth = nxsys::auth;

struct options {
  std::string url;
  std::uint16_t redis_port = 0;
  std::string stop_file;
  std::string name = "cluster";
  std::string refresh_token = "refresh-0";
  unsigned callers = 1000;
  unsigned threads = 1;
  long pause_ms = 20;
  long lease_ttl_ms = 1000;
  long timeout_ms = 300'000;
  bool report_tokens = false;
  long pause_before_request = 0;
};

void say(std::string line) {
  line += '\n';
  std::string_view rest = line;
  while (!rest.empty()) {
    const auto n = ::write(STDOUT_FILENO, rest.data(), rest.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    rest.remove_prefix(static_cast<std::size_t>(n));
  }
}

bool parse_args(int argc, char** argv, options& o) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view a = argv[i];
    const std::string v = argv[i + 1];
    try {
      if (a == "--url")
        o.url = v;
      else if (a == "--redis-port")
        o.redis_port = static_cast<std::uint16_t>(std::stoul(v));
      else if (a == "--stop-file")
        o.stop_file = v;
      else if (a == "--name")
        o.name = v;
      else if (a == "--refresh-token")
        o.refresh_token = v;
      else if (a == "--callers")
        o.callers = static_cast<unsigned>(std::stoul(v));
      else if (a == "--threads")
        o.threads = static_cast<unsigned>(std::stoul(v));
      else if (a == "--pause-ms")
        o.pause_ms = std::stol(v);
      else if (a == "--lease-ttl-ms")
        o.lease_ttl_ms = std::stol(v);
      else if (a == "--timeout-ms")
        o.timeout_ms = std::stol(v);
      else if (a == "--report-tokens")
        o.report_tokens = v == "1";
      else if (a == "--pause-before-request")
        o.pause_before_request = std::stol(v);
      else
        return false;
    } catch (const std::exception&) {
      return false;
    }
  }
  return argc % 2 == 1 && !o.url.empty() && o.redis_port != 0 && !o.stop_file.empty() &&
         o.callers > 0 && o.threads > 0;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test
  options o;
  if (!parse_args(argc, argv, o)) {
    std::fprintf(stderr, "usage: see the comment at the top of testing/redis/cluster_child.cpp\n");
    return 2;
  }
  asio::io_context ctx(static_cast<int>(o.threads));
  auth::redis_store_options ro;
  ro.port = o.redis_port;
  ro.name = o.name;
  ro.lease_ttl = std::chrono::milliseconds(o.lease_ttl_ms);
  ro.poll_interval = std::chrono::milliseconds(100);
  auth::client_config cfg;
  cfg.token_url = o.url;
  cfg.client_id = "test-client";
  cfg.client_secret = "test-secret";
  cfg.refresh_token = o.refresh_token;  // used only while Redis holds no state
  cfg.storage.store = std::make_shared<auth::redis_store>(ctx.get_executor(), ro);
  std::atomic<long> requests{0};
  if (o.pause_before_request > 0) {
    cfg.observers.log = [&](auth::log_level, std::string_view text) {
      // Logged on the client's strand just before the request is built and sent.
      if (text == "refreshing the access token" && ++requests == o.pause_before_request)
        ::raise(SIGSTOP);
    };
  }
  // Destroyed by the last caller: run() must then return on its own, with nothing of the
  // client or its store (a renewal, a subscription) keeping the io_context busy.
  std::optional<auth::client> client(std::in_place, ctx.get_executor(), cfg);
  cfg = {};  // the client holds the only reference to the store
  auth::client_stats final_stats;

  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> calls{0}, errors{0}, expired{0};
  std::atomic<unsigned> running{o.callers};
  std::mutex mu;
  std::string first_error;
  std::set<std::string> distinct;  // values are compared, never printed
  std::vector<std::pair<std::size_t, std::int64_t>> first_seen;  // hash, steady ns
  for (unsigned i = 0; i < o.callers; ++i) {
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          asio::steady_timer pause(co_await asio::this_coro::executor);
          while (!stop.load(std::memory_order_relaxed)) {
            try {
              auto t = co_await client->token();
              calls.fetch_add(1, std::memory_order_relaxed);
              if (t.expires_at() <= std::chrono::steady_clock::now()) expired.fetch_add(1);
              std::lock_guard lk(mu);
              if (distinct.size() < 100'000 && distinct.emplace(t.value()).second &&
                  o.report_tokens)
                first_seen.emplace_back(
                    std::hash<std::string_view>{}(t.value()),
                    std::chrono::steady_clock::now().time_since_epoch().count());
            } catch (const std::exception& e) {
              errors.fetch_add(1);
              std::lock_guard lk(mu);
              if (first_error.empty()) first_error = e.what();
            }
            pause.expires_after(std::chrono::milliseconds(o.pause_ms));
            co_await pause.async_wait(asio::use_awaitable);
          }
          if (--running == 0) {
            final_stats = client->stats();
            client.reset();
          }
        },
        asio::detached);
  }
  // The stop file is polled from a thread of its own: the callers' executor may be busy.
  std::atomic<bool> returned{false};
  std::thread watcher([&] {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(o.timeout_ms);
    while (!exists(o.stop_file) && std::chrono::steady_clock::now() < end)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    stop = true;
    // The callers end within a pause and a token wait; then the client goes, and run() must
    // return by itself.
    const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!returned && std::chrono::steady_clock::now() < limit)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (!returned) {
      say(running.load() != 0 ? "fail callers still running 30 s after the stop"
                              : "fail io_context::run() did not return once the client was gone");
      std::_Exit(3);
    }
  });
  say("ready");
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < o.threads; ++i) pool.emplace_back([&] { ctx.run(); });
  ctx.run();
  for (auto& t : pool) t.join();
  returned = true;
  watcher.join();

  const auto& s = final_stats;
  say("stats refreshes_started=" + std::to_string(s.refreshes_started) +
      " refreshes_succeeded=" + std::to_string(s.refreshes_succeeded) +
      " refreshes_failed=" + std::to_string(s.refreshes_failed) +
      " tokens_from_store=" + std::to_string(s.tokens_from_store) +
      " refresh_tokens_adopted=" + std::to_string(s.refresh_tokens_adopted) +
      " refreshes_ahead=" + std::to_string(s.refreshes_ahead) +
      " store_load_failures=" + std::to_string(s.store_load_failures) +
      " store_save_failures=" + std::to_string(s.store_save_failures) + " store_handoffs=" +
      std::to_string(s.store_handoffs) + " leases_lost=" + std::to_string(s.leases_lost));
  for (const auto& [id, ns] : first_seen)
    say("seen " + std::to_string(id) + " " + std::to_string(ns));
  say("calls " + std::to_string(calls.load()) + " errors " + std::to_string(errors.load()) +
      " expired " + std::to_string(expired.load()) + " distinct " +
      std::to_string(distinct.size()));
  if (errors.load() != 0 || expired.load() != 0 || running.load() != 0) {
    say("fail first_error=" + first_error);
    return running.load() != 0 ? 3 : 1;
  }
  say("ok");
  return 0;
}
