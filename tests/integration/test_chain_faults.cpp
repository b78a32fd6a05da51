// SPDX-License-Identifier: BSL-1.0
// The fault matrix of issue 12: the refresh-token chain against a server that rotates on every
// refresh and revokes the chain when a rotated-away token comes back (no grace), under failing
// saves, a client destroyed at each stage of a refresh, strict durability, a lost answer,
// Retry-After and invalid_grant under looping callers, a stored value that would inject a
// header, and a server echoing the Basic credential. Each row ends with the same checks: the
// server saw no reuse, the store holds the server's current refresh token, and a client serves
// tokens again. The one exception is the lost answer without a server grace, which no client
// can recover from: there the error must say so.
#include "helpers.hpp"

#include <boost/asio/append.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <sys/resource.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>

namespace asio = boost::asio;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;
using namespace std::chrono_literals;
using boost::system::error_code;

namespace {

// A memory_store behind switches the tests flip: saves that fail, a save that completes late, a
// hook run as a save starts, and a value every load returns instead of the stored state.
class scripted_store final : public forwarding_store {
 public:
  explicit scripted_store(asio::any_io_executor ex) : forwarding_store(std::move(ex)) {}

  std::atomic<bool> broken{false};  // saves fail with store_failed
  std::atomic<int> saves_started{0};
  std::chrono::milliseconds save_delay{0};  // a save completes only after this
  std::function<void()> before_save;        // run once, as the next save starts
  std::optional<na::stored_tokens> load_instead;

 protected:
  void do_load(asio::any_completion_handler<load_signature> h) override {
    if (load_instead) {
      asio::post(ex_, asio::append(std::move(h), error_code{}, load_instead, na::diagnostics{}));
      return;
    }
    inner_.async_load(std::move(h));
  }
  void do_save(na::stored_tokens next, std::string expected,
               asio::any_completion_handler<save_signature> h) override {
    ++saves_started;
    if (auto hook = std::exchange(before_save, nullptr)) hook();
    if (broken.load()) {
      na::diagnostics d;
      d.client_message = "the test broke this store";
      asio::post(ex_,
                 asio::append(std::move(h), make_error_code(na::errc::store_failed), std::move(d)));
      return;
    }
    if (save_delay.count() > 0) {
      auto t = std::make_shared<asio::steady_timer>(ex_, save_delay);
      t->async_wait([this, t, next = std::move(next), expected = std::move(expected),
                     h = std::move(h)](error_code) mutable {
        inner_.async_save(std::move(next), std::move(expected), std::move(h));
      });
      return;
    }
    inner_.async_save(std::move(next), std::move(expected), std::move(h));
  }
};

// While alive, no file of this process can grow past 16 bytes, so every file_store save fails
// (EFBIG): the tests run as root, for whom permissions and read-only directories stop nothing.
// SIGXFSZ is ignored so that the write fails instead of the process dying. The limit is
// process-wide: Boost.Test's output, if it went to a regular file, would be cut meanwhile.
class file_size_limit {
 public:
  file_size_limit() {
    if (::getrlimit(RLIMIT_FSIZE, &old_) != 0) BOOST_FAIL("getrlimit(RLIMIT_FSIZE) failed");
    old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit tiny = old_;
    tiny.rlim_cur = 16;
    if (::setrlimit(RLIMIT_FSIZE, &tiny) != 0) {
      std::signal(SIGXFSZ, old_handler_);  // the destructor will not run
      BOOST_FAIL("setrlimit(RLIMIT_FSIZE) failed");
    }
  }
  ~file_size_limit() {
    ::setrlimit(RLIMIT_FSIZE, &old_);
    std::signal(SIGXFSZ, old_handler_);
  }
  file_size_limit(const file_size_limit&) = delete;
  file_size_limit& operator=(const file_size_limit&) = delete;

 private:
  rlimit old_{};
  void (*old_handler_)(int) = SIG_DFL;
};

// What `store` holds now. Stops `ctx` once read, whatever other work it has.
std::optional<na::stored_tokens> stored(asio::io_context& ctx, na::token_store& store) {
  std::optional<na::stored_tokens> out;
  bool done = false;
  store.async_load(asio::bind_executor(
      ctx, [&](error_code ec, std::optional<na::stored_tokens> s, na::diagnostics d) {
        BOOST_TEST(!ec, ec.message() << ": " << d.client_message);
        out = std::move(s);
        done = true;
        ctx.stop();
      }));
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 1, 10s));
  BOOST_REQUIRE(done);
  return out;
}

std::string stored_refresh_token(asio::io_context& ctx, na::token_store& store) {
  const auto s = stored(ctx, store);
  return s ? s->refresh_token : std::string();
}

bool no_duplicates(const std::vector<std::string>& v) {
  return std::set<std::string>(v.begin(), v.end()).size() == v.size();
}

// A new client on `store` (configured with refresh-0, perhaps consumed long ago) continues the
// chain: a first token (the stored one, if the store holds a valid one), then a forced refresh.
// Returns how many refreshes the server answered for it.
std::uint64_t continue_with_new_client(asio::io_context& ctx, mock_server& server,
                                       const std::shared_ptr<na::token_store>& store) {
  const auto before = server.stats().refreshes;
  auto cfg = config_for(server, rotating());
  cfg.storage.store = store;
  na::client c(ctx.get_executor(), cfg);
  const auto first = try_token(ctx, c);
  BOOST_TEST(!first.ec, first.what);
  c.invalidate();
  const auto second = try_token(ctx, c);
  BOOST_TEST(!second.ec, second.what);
  BOOST_TEST(second.token.value() == server.last_access_token());
  BOOST_TEST(server.stats().reuse_detected == 0u);
  BOOST_TEST(stored_refresh_token(ctx, *store) == server.current_refresh_token());
  return server.stats().refreshes - before;
}

// Row 1: one healthy refresh, then three rotations while `set_broken(true)` makes every save
// fail, then the store mended. The store is left holding an old state meanwhile (I2: written
// over, never adopted), and the rotated tokens are kept pending and retried (I3).
void saves_fail_for_three_rotations(asio::io_context& ctx, mock_server& server,
                                    const std::shared_ptr<na::token_store>& store,
                                    const std::function<void(bool)>& set_broken) {
  auto cfg = config_for(server, rotating());
  cfg.storage.store = store;
  cfg.storage.retry_interval = 50ms;
  na::client c(ctx.get_executor(), cfg);
  BOOST_REQUIRE(!try_token(ctx, c).ec);
  BOOST_REQUIRE(stored_refresh_token(ctx, *store) == server.current_refresh_token());

  set_broken(true);
  for (int i = 0; i < 3; ++i) {
    c.invalidate();
    const auto a = token_until_done(ctx, c);
    // Not strict: the new token is served although unsaved (the old refresh token is consumed).
    BOOST_TEST(!a.ec, a.what);
    BOOST_TEST(a.token.value() == server.last_access_token());
  }
  BOOST_TEST(server.stats().refreshes == 4u);
  // The save is retried in the background, and keeps failing while the store is broken.
  const auto failures = c.stats().store_save_failures;
  BOOST_TEST(failures >= 3u);
  BOOST_TEST(run_until(ctx, [&] { return c.stats().store_save_failures > failures; }));
  BOOST_TEST(c.stats().store_saves == 1u);  // the healthy refresh's only
  set_broken(false);

  c.invalidate();
  const auto a = try_token(ctx, c);  // to the end: the pending save and the refresh are done
  BOOST_TEST(!a.ec, a.what);
  BOOST_TEST(a.token.value() == server.last_access_token());
  BOOST_TEST(server.stats().refreshes == 5u);
  BOOST_TEST(server.stats().reuse_detected == 0u);
  BOOST_TEST(stored_refresh_token(ctx, *store) == server.current_refresh_token());
  // I1: the machine never presented a token it had presented before.
  const auto presented = server.presented_refresh_tokens();
  BOOST_TEST(presented.size() == 5u);
  BOOST_TEST(no_duplicates(presented));
  BOOST_TEST(c.stats().store_save_failures > 0u);
}

// What token() threw to looping callers, counted.
struct loop_outcome {
  std::uint64_t calls = 0;
  std::uint64_t tokens = 0;
  std::uint64_t errors = 0;
  std::uint64_t unexpected = 0;  // errors `expected` refused
  std::string first_unexpected;
};

// `callers` coroutines on one thread, each calling token() again 1 ms after its last call ended,
// failed or not, until `window` has passed.
loop_outcome loop_callers(asio::io_context& ctx, na::client& c, int callers,
                          std::chrono::milliseconds window,
                          const std::function<bool(const na::error_with_diagnostics&)>& expected) {
  loop_outcome out;
  const auto end = std::chrono::steady_clock::now() + window;
  for (int i = 0; i < callers; ++i)
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          asio::steady_timer pause(co_await asio::this_coro::executor);
          while (std::chrono::steady_clock::now() < end) {
            ++out.calls;
            try {
              co_await c.token();
              ++out.tokens;
            } catch (const na::error_with_diagnostics& e) {
              ++out.errors;
              if (!expected(e) && out.unexpected++ == 0) out.first_unexpected = e.what();
            } catch (const std::exception& e) {
              ++out.errors;
              if (out.unexpected++ == 0) out.first_unexpected = e.what();
            }
            pause.expires_after(1ms);
            co_await pause.async_wait(asio::use_awaitable);
          }
        },
        asio::detached);
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 1, window + 30s));
  return out;
}

na::stored_tokens injecting_state() {
  na::stored_tokens s;
  s.refresh_token = "refresh-0";
  s.access_token = "a\r\nX-Injected: 1";
  s.token_type = "Bearer";
  s.expires_at = std::chrono::system_clock::now() + 1h;
  s.lifetime = 3600s;
  return s;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(chain_faults)

// -- Row 1: saves fail for three rotations, then work.

BOOST_AUTO_TEST_CASE(saves_failing_for_three_rotations_lose_no_link_of_the_chain_in_memory) {
  mock_server server(rotating());
  asio::io_context ctx;
  auto store = std::make_shared<scripted_store>(ctx.get_executor());
  saves_fail_for_three_rotations(ctx, server, store, [&](bool b) { store->broken = b; });
}

BOOST_AUTO_TEST_CASE(saves_failing_for_three_rotations_lose_no_link_of_the_chain_in_a_file) {
  mock_server server(rotating());
  asio::io_context ctx;
  temp_directory dir;
  auto store = std::make_shared<na::file_store>((dir.path / "tokens.json").string());
  std::optional<file_size_limit> limit;  // lifted at the end of the test whatever happens
  saves_fail_for_three_rotations(ctx, server, store, [&](bool b) {
    if (b)
      limit.emplace();
    else
      limit.reset();
  });
}

// -- Row 2: the client destroyed at each stage of a refresh; a new client on the store goes on.

BOOST_AUTO_TEST_CASE(a_client_destroyed_before_its_request_is_written_sends_nothing) {
  mock_server server(rotating());
  asio::io_context ctx;
  auto store = std::make_shared<na::memory_store>(ctx.get_executor());
  auto cfg = config_for(server, rotating());
  cfg.storage.store = store;
  error_code waiter_ec;
  bool called = false;
  {
    na::client c(ctx.get_executor(), cfg);
    c.async_token([&](error_code ec, na::access_token) {
      waiter_ec = ec;
      called = true;
    });
  }  // before the io_context ran: nothing was sent
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 1, 10s));
  BOOST_TEST(called);
  BOOST_TEST(waiter_ec == asio::error::operation_aborted);
  BOOST_TEST(server.stats().requests == 0u);
  BOOST_TEST(!stored(ctx, *store).has_value());
  BOOST_TEST(continue_with_new_client(ctx, server, store) == 2u);  // nothing stored to start from
}

// I4: the server may have rotated already; dropping its answer would leave the store with a
// consumed token, and the next client would revoke the chain by presenting it.
BOOST_AUTO_TEST_CASE(a_client_destroyed_after_the_write_saves_the_answer_that_comes_later) {
  mock_server server(rotating());
  server.set_latency(1000ms);  // long enough that the check below sees it unanswered
  asio::io_context ctx;
  auto store = std::make_shared<na::memory_store>(ctx.get_executor());
  auto cfg = config_for(server, rotating());
  cfg.storage.store = store;
  error_code waiter_ec;
  std::optional<na::client> c(std::in_place, ctx.get_executor(), cfg);
  c->async_token([&](error_code ec, na::access_token) { waiter_ec = ec; });
  BOOST_REQUIRE(run_until(ctx, [&] { return server.stats().requests == 1u; }));
  BOOST_REQUIRE(server.stats().refreshes == 0u);  // at the server, not answered yet
  c.reset();
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 1, 10s));  // the request finishes in the background
  BOOST_TEST(waiter_ec == asio::error::operation_aborted);
  BOOST_TEST(server.stats().refreshes == 1u);
  BOOST_TEST(stored_refresh_token(ctx, *store) == server.current_refresh_token());
  BOOST_TEST(server.stats().reuse_detected == 0u);
  server.set_latency(0ms);
  BOOST_TEST(continue_with_new_client(ctx, server, store) == 1u);
}

BOOST_AUTO_TEST_CASE(a_client_destroyed_after_the_answer_and_before_the_save_still_saves) {
  mock_server server(rotating());
  asio::io_context ctx;
  auto store = std::make_shared<scripted_store>(ctx.get_executor());
  auto cfg = config_for(server, rotating());
  cfg.storage.store = store;
  error_code waiter_ec;
  std::optional<na::client> c(std::in_place, ctx.get_executor(), cfg);
  c->async_token([&](error_code ec, na::access_token) { waiter_ec = ec; });
  store->before_save = [&] { c.reset(); };  // the answer is in; its save is about to start
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 1, 10s));
  BOOST_TEST(!c.has_value());
  BOOST_TEST(waiter_ec == asio::error::operation_aborted);
  BOOST_TEST(server.stats().refreshes == 1u);
  BOOST_TEST(store->saves_started.load() == 1);
  BOOST_TEST(stored_refresh_token(ctx, *store) == server.current_refresh_token());
  BOOST_TEST(server.stats().reuse_detected == 0u);
  BOOST_TEST(continue_with_new_client(ctx, server, store) == 1u);
}

BOOST_AUTO_TEST_CASE(a_client_destroyed_during_the_save_lets_the_save_finish) {
  mock_server server(rotating());
  asio::io_context ctx;
  auto store = std::make_shared<scripted_store>(ctx.get_executor());
  store->save_delay = 200ms;
  auto cfg = config_for(server, rotating());
  cfg.storage.store = store;
  error_code waiter_ec;
  std::optional<na::client> c(std::in_place, ctx.get_executor(), cfg);
  c->async_token([&](error_code ec, na::access_token) { waiter_ec = ec; });
  BOOST_REQUIRE(run_until(ctx, [&] { return store->saves_started.load() == 1; }));
  c.reset();
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 1, 10s));
  BOOST_TEST(waiter_ec == asio::error::operation_aborted);
  BOOST_TEST(store->saves_started.load() == 1);
  BOOST_TEST(stored_refresh_token(ctx, *store) == server.current_refresh_token());
  BOOST_TEST(server.stats().reuse_detected == 0u);
  store->save_delay = 0ms;
  BOOST_TEST(continue_with_new_client(ctx, server, store) == 1u);
}

// -- Row 3: strict durability while the file cannot be written.

BOOST_AUTO_TEST_CASE(strict_durability_with_failing_saves_fails_the_waiter_and_keeps_the_chain) {
  mock_server server(rotating());
  asio::io_context ctx;
  temp_directory dir;
  const auto path = (dir.path / "tokens.json").string();
  auto cfg = config_for(server, rotating());
  cfg.storage.store = std::make_shared<na::file_store>(path);
  cfg.storage.strict_durability = true;
  cfg.storage.retry_interval = 200ms;
  std::optional<na::client> c(std::in_place, ctx.get_executor(), cfg);
  std::optional<file_size_limit> limit(std::in_place);
  const auto a = token_until_done(ctx, *c);
  limit.reset();
  BOOST_TEST(a.ec == na::errc::store_failed, a.what);
  // The store's own words reach the caller: which file, and why.
  BOOST_TEST(a.what.find("File too large") != std::string::npos, a.what);
  BOOST_TEST(server.stats().refreshes == 1u);
  BOOST_TEST(c->stats().store_save_failures > 0u);
  BOOST_TEST(c->stats().store_saves == 0u);
  // I3: destruction makes one last bounded save attempt, which works now.
  c.reset();
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 1, 10s));
  // A new process on the same file.
  auto store = std::make_shared<na::file_store>(path);
  BOOST_TEST(stored_refresh_token(ctx, *store) == server.current_refresh_token());
  BOOST_TEST(server.stats().reuse_detected == 0u);
  BOOST_TEST(continue_with_new_client(ctx, server, store) == 1u);
}

// -- Row 4: the server rotated, and its answer came after request_timeout.

// The retry presents the same refresh token (I1 allows it: its answer was lost). Without a
// server grace the server sees reuse and revokes the chain: nothing a client can do, so the
// error must say what happened. With a grace, the retry gets the current refresh token.
BOOST_AUTO_TEST_CASE(an_answer_lost_after_a_rotation_is_explained_and_a_grace_recovers_it) {
  for (const bool grace : {false, true}) {
    BOOST_TEST_CONTEXT((grace ? "reuse grace of 5 s" : "no reuse grace")) {
      auto opts = rotating();
      opts.decide_on_arrival = true;  // rotated at once; only the answer is slow
      if (grace) opts.reuse_grace = 5s;
      mock_server server(opts);
      server.set_latency(1500ms);
      asio::io_context ctx;
      auto store = std::make_shared<na::memory_store>(ctx.get_executor());
      auto cfg = config_for(server, opts);
      cfg.storage.store = store;
      cfg.http.request_timeout = 300ms;
      cfg.refresh.retry.max_attempts = 2;
      na::client c(ctx.get_executor(), cfg);
      attempt a;
      bool done = false;
      spawn_attempt(ctx, c, a, done);
      BOOST_REQUIRE(run_until(ctx, [&] { return server.stats().requests == 1u; }));
      server.set_latency(0ms);  // the retry is answered at once
      ctx.restart();
      BOOST_REQUIRE(run_bounded(ctx, 1, 20s));
      BOOST_REQUIRE(done);
      BOOST_TEST(server.stats().requests == 2u);
      const auto presented = server.presented_refresh_tokens();
      BOOST_REQUIRE(presented.size() == 2u);
      BOOST_TEST(presented[0] == presented[1]);
      if (!grace) {
        BOOST_TEST(a.ec == na::errc::invalid_grant, a.what);
        BOOST_TEST(a.what.find("answer was lost") != std::string::npos, a.what);
        BOOST_TEST(a.what.find("grace period") != std::string::npos, a.what);
        BOOST_TEST(server.stats().reuse_detected == 1u);  // the mock revoked the chain
        // I5: the dead token is not presented again.
        const auto b = try_token(ctx, c);
        BOOST_TEST(b.ec == na::errc::invalid_grant);
        BOOST_TEST(server.stats().requests == 2u);
      } else {
        BOOST_TEST(!a.ec, a.what);
        BOOST_TEST(server.stats().grace_refreshes == 1u);
        BOOST_TEST(server.stats().reuse_detected == 0u);
        BOOST_TEST(stored_refresh_token(ctx, *store) == server.current_refresh_token());
        c.invalidate();
        const auto b = try_token(ctx, c);
        BOOST_TEST(!b.ec, b.what);
        BOOST_TEST(server.stats().reuse_detected == 0u);
        BOOST_TEST(server.presented_refresh_tokens().back() != presented[0]);
        BOOST_TEST(stored_refresh_token(ctx, *store) == server.current_refresh_token());
      }
    }
  }
}

// -- Row 5: looping callers against Retry-After and invalid_grant (I5).

// 429 with Retry-After: 5, and 1,000 callers asking again every millisecond for 8 s: one
// request at 0 s, one at about 5 s.
BOOST_AUTO_TEST_CASE(a_429_retry_after_holds_for_a_thousand_looping_callers) {
  mock_server server(rotating());
  asio::io_context ctx;
  auto store = std::make_shared<na::memory_store>(ctx.get_executor());
  auto cfg = config_for(server, rotating());
  cfg.storage.store = store;
  cfg.refresh.min_retry_spacing = 1s;  // the client's default (config_for turns it off)
  na::client c(ctx.get_executor(), cfg);
  server.fail_next(
      {429, R"({"error":"temporarily_unavailable"})", "application/json", {{"Retry-After", "5"}}},
      1000);
  const auto out = loop_callers(ctx, c, 1000, 8s, [](const na::error_with_diagnostics& e) {
    return e.code() == na::errc::temporarily_unavailable;
  });
  const auto requests = server.stats().requests;
  BOOST_TEST_MESSAGE("429 Retry-After 5, 1000 looping callers for 8 s: "
                     << requests << " request(s), " << out.calls << " calls");
  BOOST_TEST(requests >= 1u);
  BOOST_TEST(requests <= 3u);
  BOOST_TEST(out.calls > 1000u);  // they did loop
  BOOST_TEST(out.tokens == 0u);
  BOOST_TEST(out.unexpected == 0u, out.first_unexpected);
  // The server's wait holds even against a re-authorization (which ends the failure spacing
  // only); once it is over, the client serves again with the chain it has.
  server.clear_failures();
  c.set_refresh_token(server.current_refresh_token());
  const auto before = server.stats().requests;
  BOOST_TEST(try_token(ctx, c).ec == na::errc::temporarily_unavailable);
  BOOST_TEST(server.stats().requests == before);
  // The last 429 came at about 5 s: its wait ends at about 10 s. Calls until then fail fast.
  attempt a;
  for (int i = 0; i < 40; ++i) {
    a = try_token(ctx, c);
    if (!a.ec) break;
    BOOST_TEST(a.ec == na::errc::temporarily_unavailable);
    std::this_thread::sleep_for(200ms);
  }
  BOOST_TEST(!a.ec, a.what);
  BOOST_TEST(server.stats().requests == before + 1);
  BOOST_TEST(server.stats().reuse_detected == 0u);
  BOOST_TEST(stored_refresh_token(ctx, *store) == server.current_refresh_token());
}

BOOST_AUTO_TEST_CASE(after_invalid_grant_a_thousand_looping_callers_send_nothing_more) {
  mock_server server(rotating());
  asio::io_context ctx;
  auto store = std::make_shared<na::memory_store>(ctx.get_executor());
  auto cfg = config_for(server, rotating());
  cfg.storage.store = store;
  cfg.refresh.min_retry_spacing = 1s;
  na::client c(ctx.get_executor(), cfg);
  const std::string words = "the grant was revoked by its owner";
  server.fail_next({400,
                    R"({"error":"invalid_grant","error_description":")" + words + R"("})",
                    "application/json",
                    {}},
                   1000);
  const auto out = loop_callers(ctx, c, 1000, 6s, [&](const na::error_with_diagnostics& e) {
    return e.code() == na::errc::invalid_grant &&
           e.get_diagnostics().server_error == "invalid_grant" &&
           e.get_diagnostics().server_description.find(words) != std::string::npos;
  });
  const auto requests = server.stats().requests;
  BOOST_TEST_MESSAGE("invalid_grant, 1000 looping callers for 6 s: " << requests << " request(s), "
                                                                     << out.calls << " calls");
  BOOST_TEST(requests >= 1u);
  BOOST_TEST(requests <= 2u);
  BOOST_TEST(out.calls > 1000u);
  BOOST_TEST(out.tokens == 0u);
  BOOST_TEST(out.unexpected == 0u, out.first_unexpected);
  server.clear_failures();
  c.set_refresh_token(server.current_refresh_token());
  const auto a = try_token(ctx, c);
  BOOST_TEST(!a.ec, a.what);
  BOOST_TEST(server.stats().reuse_detected == 0u);
  BOOST_TEST(stored_refresh_token(ctx, *store) == server.current_refresh_token());
}

// -- Row 6: a stored access token that would inject a header (I6).

BOOST_AUTO_TEST_CASE(a_stored_access_token_holding_cr_lf_is_store_corrupt_and_never_sent) {
  mock_server server(rotating());
  temp_directory dir;
  const auto path = (dir.path / "tokens.json").string();
  const auto write_injecting_file = [&] {
    const auto expires_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                (std::chrono::system_clock::now() + 1h).time_since_epoch())
                                .count();
    std::ofstream f(path, std::ios::trunc);
    f << R"({"format":"nxsys-auth-token-store","version":1,"refreshToken":"refresh-0",)"
      << R"("accessToken":"a\r\nX-Injected: 1","tokenType":"Bearer","expiresAtMs":)" << expires_ms
      << R"(,"lifetimeS":3600})";
  };
  // At start, the file_store refuses the file outright.
  write_injecting_file();
  BOOST_CHECK_EXCEPTION(
      na::file_store{path}, na::error_with_diagnostics,
      [](const na::error_with_diagnostics& e) { return e.code() == na::errc::store_corrupt; });
  // Written after the store was made: the refresh fails, and nothing is sent.
  std::filesystem::remove(path);
  asio::io_context ctx;
  auto store = std::make_shared<na::file_store>(path);
  write_injecting_file();
  auto cfg = config_for(server, rotating());
  cfg.storage.store = store;
  {
    na::client c(ctx.get_executor(), cfg);
    const auto a = try_token(ctx, c);
    BOOST_TEST(a.ec == na::errc::store_corrupt, a.what);
    BOOST_TEST(a.what.find("X-Injected") == std::string::npos, a.what);  // no value quoted
    BOOST_TEST(server.stats().requests == 0u);
    // Repaired (removed), the client goes on.
    std::filesystem::remove(path);
    const auto b = try_token(ctx, c);
    BOOST_TEST(!b.ec, b.what);
    BOOST_TEST(stored_refresh_token(ctx, *store) == server.current_refresh_token());
  }
  // A store of the application's own that hands over such a value: the same.
  auto own = std::make_shared<scripted_store>(ctx.get_executor());
  own->load_instead = injecting_state();
  cfg.storage.store = own;
  mock_server other(rotating());
  cfg.token_url = other.token_url();
  na::client c(ctx.get_executor(), cfg);
  const auto a = try_token(ctx, c);
  BOOST_TEST(a.ec == na::errc::store_corrupt, a.what);
  BOOST_TEST(other.stats().requests == 0u);
  own->load_instead.reset();
  const auto b = try_token(ctx, c);
  BOOST_TEST(!b.ec, b.what);
  BOOST_TEST(stored_refresh_token(ctx, *own) == other.current_refresh_token());
  BOOST_TEST(server.stats().reuse_detected == 0u);
  BOOST_TEST(other.stats().reuse_detected == 0u);
}

// -- Row 7: a server that echoes the Authorization header (I6: the Basic credential is secret).

BOOST_AUTO_TEST_CASE(a_server_echoing_the_basic_credential_gets_it_into_no_log_and_no_error) {
  const auto opts = rotating();
  mock_server server(opts);
  asio::io_context ctx;
  auto store = std::make_shared<na::memory_store>(ctx.get_executor());
  auto cfg = config_for(server, opts);
  cfg.storage.store = store;
  cfg.authentication = na::client_authentication::http_basic;
  std::mutex mu;
  std::vector<std::string> lines;
  cfg.observers.log = [&](na::log_level, std::string_view m) {
    std::lock_guard lk(mu);
    lines.emplace_back(m);
  };
  const auto basic = na::protocol::basic_authorization(opts.client_id, opts.client_secret);
  const auto credentials = basic.substr(basic.find(' ') + 1);
  BOOST_REQUIRE(!credentials.empty());
  BOOST_REQUIRE(credentials != basic);
  server.fail_next({401,
                    R"({"error":"invalid_client","error_description":"you sent Authorization: )" +
                        basic + ", that is " + credentials + " with secret " + opts.client_secret +
                        R"("})",
                    "application/json",
                    {{"WWW-Authenticate", R"(Basic realm="nxsys")"}}});
  na::client c(ctx.get_executor(), cfg);
  const auto a = try_token(ctx, c);
  BOOST_TEST(a.ec == na::errc::invalid_client, a.what);
  BOOST_TEST(server.stats().basic_auth_requests == 1u);
  // The server's words come through, the credentials cut out of them.
  BOOST_TEST(a.what.find("you sent Authorization") != std::string::npos, a.what);
  const auto b = try_token(ctx, c);
  BOOST_TEST(!b.ec, b.what);
  BOOST_TEST(server.stats().reuse_detected == 0u);
  BOOST_TEST(stored_refresh_token(ctx, *store) == server.current_refresh_token());

  std::vector<std::string> texts{a.what, a.diag.server_description, a.diag.client_message};
  {
    std::lock_guard lk(mu);
    BOOST_TEST(!lines.empty());
    texts.insert(texts.end(), lines.begin(), lines.end());
  }
  for (const auto& t : texts)
    for (const auto& secret : {basic, credentials, opts.client_secret})
      BOOST_TEST(t.find(secret) == std::string::npos, "\"" << secret << "\" in: " << t);
}

BOOST_AUTO_TEST_SUITE_END()
