// SPDX-License-Identifier: BSL-1.0
// Shared helpers of the integration and thread-safety tests: configs for the mock server,
// bounded io_context runs, a clock tests can move.
#ifndef NXSYS_AUTH_TESTS_COMMON_HELPERS_HPP
#define NXSYS_AUTH_TESTS_COMMON_HELPERS_HPP

#include <nxsys/auth.hpp>
#include <nxsys/auth/testing/manual_clock.hpp>
#include <nxsys/auth/testing/mock_server.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <exception>
#include <filesystem>
#include <memory>
#include <mutex>
#include <set>
#include <stdlib.h>
#include <string>
#include <thread>
#include <vector>

#ifndef NXSYS_AUTH_TEST_DATA_DIR
#error "NXSYS_AUTH_TEST_DATA_DIR must name testing/data (see tests/CMakeLists.txt)"
#endif

namespace nxsys::auth::testing {

/// The directory of the test certificates (testing/data): the test CA and the server
/// certificates the TLS tests serve, the mock's built-in one among them.
inline std::string test_data_dir() {
  return NXSYS_AUTH_TEST_DATA_DIR;
}

/// A client_config that talks to `server` with its credentials (and its test CA for TLS).
inline client_config config_for(const mock_server& server, const mock_server_options& opts = {}) {
  client_config cfg;
  cfg.token_url = server.token_url();
  cfg.client_id = opts.client_id;
  cfg.client_secret = opts.client_secret;
  cfg.refresh_token = opts.initial_refresh_token;
  cfg.http.tls.ca_file = test_data_dir() + "/ca.pem";
  cfg.http.connect_timeout = std::chrono::seconds(5);
  cfg.http.request_timeout = std::chrono::seconds(20);
  // Most tests script a failure and expect the next call to try again; the spacing after a
  // failure has its own tests.
  cfg.refresh.min_retry_spacing = std::chrono::milliseconds(0);
  // Likewise one request per refresh and no background refresh, so tests count requests
  // exactly; retries and refresh-ahead have their own tests.
  cfg.refresh.retry.max_attempts = 1;
  cfg.refresh.ahead_fraction = 0;
  return cfg;
}

/// A token_store that forwards to a memory_store of its own. Tests derive from it and override
/// the operations they script (a failing save, a slow one, a load that never answers).
class forwarding_store : public token_store {
 public:
  explicit forwarding_store(boost::asio::any_io_executor ex) : inner_(ex), ex_(std::move(ex)) {}

 protected:
  void do_load(boost::asio::any_completion_handler<load_signature> h) override {
    inner_.async_load(std::move(h));
  }
  void do_acquire(std::chrono::steady_clock::time_point deadline,
                  boost::asio::any_completion_handler<acquire_signature> h) override {
    inner_.async_acquire(deadline, std::move(h));
  }
  void do_save(stored_tokens next, std::string expected,
               boost::asio::any_completion_handler<save_signature> h) override {
    inner_.async_save(std::move(next), std::move(expected), std::move(h));
  }

  memory_store inner_;
  boost::asio::any_io_executor ex_;
};

/// A temporary directory, removed with everything in it.
struct temp_directory {
  std::filesystem::path path;
  temp_directory() {
    char tmpl[] = "/tmp/nxsys-test-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~temp_directory() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

/// A server that rotates the refresh token on every refresh and revokes the whole chain when a
/// rotated-away token comes back (no grace): the one that punishes a lost chain.
inline mock_server_options rotating() {
  mock_server_options o;
  o.rotate = true;
  o.reuse_detection = true;
  return o;
}

/// Runs `ctx` on `threads` threads until it runs out of work or `limit` passes (then stops it).
/// Returns false when the limit stopped it: a hang becomes a failed assertion, not a stuck CI.
inline bool run_bounded(boost::asio::io_context& ctx, unsigned threads,
                        std::chrono::milliseconds limit = std::chrono::seconds(60)) {
  std::atomic<bool> done{false}, timed_out{false};
  std::thread watchdog([&] {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!done.load() && std::chrono::steady_clock::now() < end)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (!done.load()) {
      timed_out = true;
      ctx.stop();
    }
  });
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < threads; ++i) pool.emplace_back([&] { ctx.run(); });
  ctx.run();
  for (auto& t : pool) t.join();
  done = true;
  watchdog.join();
  return !timed_out.load();
}

/// What a burst of token() calls on several clients gave.
struct token_burst {
  std::set<std::string> values;  ///< the distinct tokens handed out
  int errors = 0;                ///< calls that threw
  bool finished = false;         ///< false: the time limit stopped the io_context
};

/// `per_client` token() calls on each client, all spawned before `ctx` runs (on `threads`
/// threads, at most `limit`), so that they ask at once.
inline token_burst burst_of_tokens(boost::asio::io_context& ctx,
                                   const std::vector<std::unique_ptr<client>>& clients,
                                   int per_client, unsigned threads,
                                   std::chrono::milliseconds limit = std::chrono::seconds(60)) {
  token_burst out;
  std::mutex mu;
  std::atomic<int> errors{0};
  for (auto& c : clients)
    for (int i = 0; i < per_client; ++i)
      boost::asio::co_spawn(
          ctx,
          [&, cl = c.get()]() -> boost::asio::awaitable<void> {
            try {
              auto t = co_await cl->token();
              std::lock_guard lk(mu);
              out.values.emplace(t.value());
            } catch (const std::exception&) {
              ++errors;
            }
          },
          boost::asio::detached);
  out.finished = run_bounded(ctx, threads, limit);
  out.errors = errors.load();
  return out;
}

/// Runs one coroutine to completion on `ctx` (one thread, bounded); rethrows what it threw.
template <class F>
void run_coro(boost::asio::io_context& ctx, F f) {
  std::exception_ptr failure;
  bool finished = false;
  boost::asio::co_spawn(ctx, std::move(f), [&](std::exception_ptr e) {
    failure = e;
    finished = true;
  });
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 1));
  BOOST_REQUIRE(finished);
  if (failure) std::rethrow_exception(failure);
}

/// token() run to completion on `ctx` (one thread).
inline access_token get_token(boost::asio::io_context& ctx, client& c) {
  access_token t;
  run_coro(ctx, [&]() -> boost::asio::awaitable<void> { t = co_await c.token(); });
  return t;
}

/// What one token() call gave.
struct attempt {
  boost::system::error_code ec;
  nxsys::auth::diagnostics diag;
  std::string what;  // the exception token() threw
  nxsys::auth::access_token token;
};

/// Spawns one token() call that records its outcome in `a` (the exception's code, diagnostics
/// and message) and then sets `done`.
inline void spawn_attempt(boost::asio::io_context& ctx, nxsys::auth::client& c, attempt& a,
                          bool& done) {
  boost::asio::co_spawn(
      ctx,
      [&]() -> boost::asio::awaitable<void> {
        try {
          a.token = co_await c.token();
        } catch (const nxsys::auth::error_with_diagnostics& e) {
          a.ec = e.code();
          a.diag = e.get_diagnostics();
          a.what = e.what();
        } catch (const boost::system::system_error& e) {  // operation_aborted
          a.ec = e.code();
          a.what = e.what();
        }
        done = true;
      },
      boost::asio::detached);
}

/// Runs `ctx` in 1 ms slices until `pred` holds; false if it did not within `limit`. Unlike
/// run_bounded it does not wait for all work to end (a test that acts at a stage of a refresh;
/// a client retrying a failing save in the background for ever).
template <class Pred>
bool run_until(boost::asio::io_context& ctx, Pred pred,
               std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    ctx.restart();
    ctx.run_for(std::chrono::milliseconds(1));
    // Out of work: whatever the test waits for (a server, a store) is on other threads.
    if (ctx.stopped()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

/// One token() call, run until it completes, whatever other work the io_context has (a store
/// that holds a handler, background save retries while a store is broken).
inline attempt token_until_done(boost::asio::io_context& ctx, nxsys::auth::client& c,
                                std::chrono::milliseconds limit = std::chrono::seconds(30)) {
  attempt a;
  bool done = false;
  spawn_attempt(ctx, c, a, done);
  BOOST_REQUIRE(run_until(
      ctx, [&] { return done; }, limit));
  return a;
}

/// One token() call, run to completion (the io_context must then run out of work).
inline attempt try_token(boost::asio::io_context& ctx, nxsys::auth::client& c) {
  attempt a;
  bool done = false;
  spawn_attempt(ctx, c, a, done);
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 1));
  return a;
}

/// Waits (bounded) until `pred` holds, polling every 2 ms.
template <class Pred>
inline bool eventually(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(30)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

}  // namespace nxsys::auth::testing

#endif
