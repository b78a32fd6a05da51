// SPDX-License-Identifier: BSL-1.0
// file_store on a real file system: round trip across a restart, compare-and-set, file mode,
// corrupt files (from the constructor and from async_load), atomic replacement leaving no
// temporary files, and the flock lease within one process and across processes.
#include <nxsys/auth/error.hpp>
#include <nxsys/auth/token_store.hpp>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <boost/test/unit_test.hpp>

#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <exception>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <poll.h>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

// GCC 12 pairs the aligned_alloc inside Asio's coroutine-frame operator new with the frame's
// sized operator delete and reports a mismatch that is not there (GCC bug 109224).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace asio = boost::asio;
namespace fs = std::filesystem;
using boost::system::error_code;
using nxsys::auth::errc;
using nxsys::auth::error_with_diagnostics;
using nxsys::auth::file_store;
using nxsys::auth::refresh_lease;
using nxsys::auth::stored_tokens;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

// A fresh directory under /tmp, removed with everything in it.
struct temp_dir {
  temp_dir() {
    char tmpl[] = "/tmp/nxsys-file-store-XXXXXX";
    BOOST_REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return path + "/" + name; }
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(path)) names.push_back(e.path().filename());
    std::sort(names.begin(), names.end());
    return names;
  }
  std::string path;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  BOOST_REQUIRE(out.good());
}

stored_tokens tokens(const std::string& refresh, const std::string& access = "at-SECRET-1") {
  stored_tokens t;
  t.refresh_token = refresh;
  t.access_token = access;
  t.token_type = "Bearer";
  // Whole milliseconds: what the file keeps.
  t.expires_at = std::chrono::floor<std::chrono::milliseconds>(std::chrono::system_clock::now()) +
                 std::chrono::seconds(3600);
  t.lifetime = std::chrono::seconds(3600);
  return t;
}

const std::string valid_file =
    R"({"format":"nxsys-auth-token-store","version":1,"refreshToken":"rt-SECRET-0123456789",)"
    R"("accessToken":"at-SECRET-0123456789","tokenType":"Bearer","expiresAtMs":1700000000000,)"
    R"("lifetimeS":3600})";

// Each call runs `ctx` until the operation completes (bounded) and checks it did: a handler
// that never runs, or an io_context that runs out of work before it, fails the test.
struct driver {
  asio::io_context ctx;

  // run_one_until returns 0 once the io_context has no work left: the store must keep it busy
  // while an operation is on the store's thread.
  void run_until(const bool& done, std::chrono::seconds limit = 20s) {
    ctx.restart();
    const auto end = clock_type::now() + limit;
    while (!done && ctx.run_one_until(end) != 0) {
    }
    BOOST_REQUIRE(done);
  }

  std::pair<error_code, std::optional<stored_tokens>> load(file_store& s) {
    bool done = false;
    std::pair<error_code, std::optional<stored_tokens>> r;
    s.async_load(asio::bind_executor(
        ctx, [&](error_code ec, std::optional<stored_tokens> t, nxsys::auth::diagnostics) {
          BOOST_TEST(ctx.get_executor().running_in_this_thread());
          r = {ec, std::move(t)};
          done = true;
        }));
    BOOST_TEST(!done);  // never inline
    run_until(done);
    return r;
  }

  error_code save(file_store& s, stored_tokens next, std::string expected) {
    bool done = false;
    error_code r;
    s.async_save(std::move(next), std::move(expected),
                 asio::bind_executor(ctx, [&](error_code ec, nxsys::auth::diagnostics) {
                   BOOST_TEST(ctx.get_executor().running_in_this_thread());
                   r = ec;
                   done = true;
                 }));
    BOOST_TEST(!done);
    run_until(done);
    return r;
  }

  // Starts an acquire; `done` and the results are filled in when it completes.
  struct acquisition {
    bool done = false;
    error_code ec;
    refresh_lease lease;
  };
  std::shared_ptr<acquisition> start_acquire(file_store& s, clock_type::duration wait) {
    auto a = std::make_shared<acquisition>();
    s.async_acquire(
        clock_type::now() + wait,
        asio::bind_executor(ctx, [a](error_code ec, refresh_lease l, nxsys::auth::diagnostics) {
          a->ec = ec;
          a->lease = std::move(l);
          a->done = true;
        }));
    return a;
  }
  std::shared_ptr<acquisition> acquire(file_store& s, clock_type::duration wait) {
    auto a = start_acquire(s, wait);
    run_until(a->done);
    return a;
  }
};

void check_equal(const stored_tokens& a, const stored_tokens& b) {
  BOOST_TEST(a.refresh_token == b.refresh_token);
  BOOST_TEST(a.access_token == b.access_token);
  BOOST_TEST(a.token_type == b.token_type);
  BOOST_TEST((a.expires_at == b.expires_at));
  BOOST_TEST(a.lifetime.count() == b.lifetime.count());
}

struct corrupt_case {
  const char* name;
  std::string bytes;
  const char* problem;  // expected in the message
};

std::vector<corrupt_case> corrupt_cases() {
  return {
      {"empty file", "", "empty"},
      {"truncated JSON", valid_file.substr(0, valid_file.size() / 2), "not valid JSON"},
      {"not JSON", "refresh=rt-SECRET-0123456789\n", "not valid JSON"},
      {"JSON null", "null", "not a JSON object"},
      {"JSON array", R"(["rt-SECRET-0123456789"])", "not a JSON object"},
      {"JSON number", "42", "not a JSON object"},
      {"neither token (a client_credentials state has an access token)",
       R"({"format":"nxsys-auth-token-store","version":1,"tokenType":"Bearer"})", "refreshToken"},
      {"empty refreshToken", R"({"format":"nxsys-auth-token-store","version":1,"refreshToken":""})",
       "refreshToken"},
      {"wrong version",
       R"({"format":"nxsys-auth-token-store","version":2,"refreshToken":"rt-SECRET-0123456789"})",
       "version 2"},
      {"wrong format", R"({"format":"other","version":1,"refreshToken":"rt-SECRET-0123456789"})",
       "format"},
      {"refreshToken not a string",
       R"({"format":"nxsys-auth-token-store","version":1,"refreshToken":12345})", "refreshToken"},
      {"expiresAtMs not an integer",
       R"({"format":"nxsys-auth-token-store","version":1,"refreshToken":"rt-SECRET-0123456789",)"
       R"("expiresAtMs":"soon"})",
       "expiresAtMs"},
      {"lifetimeS negative",
       R"({"format":"nxsys-auth-token-store","version":1,"refreshToken":"rt-SECRET-0123456789",)"
       R"("lifetimeS":-5})",
       "lifetimeS"},
  };
}

// Waits for one byte on `fd` (bounded); what was read, or 0 on timeout.
char read_byte(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) != 1) return 0;
  char c = 0;
  return ::read(fd, &c, 1) == 1 ? c : 0;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(file_store_tests)

BOOST_AUTO_TEST_CASE(missing_file_loads_as_nothing_and_construction_creates_nothing) {
  temp_dir dir;
  driver d;
  file_store s(dir.file("tokens.json"));
  BOOST_TEST(s.path() == dir.file("tokens.json"));
  auto [ec, t] = d.load(s);
  BOOST_TEST(!ec);
  BOOST_TEST(!t.has_value());
  BOOST_TEST(dir.entries().empty());
}

BOOST_AUTO_TEST_CASE(save_then_load_survives_a_restart) {
  temp_dir dir;
  const auto saved = tokens("rt-SECRET-first");
  {
    driver d;
    file_store s(dir.file("tokens.json"));
    BOOST_TEST(!d.save(s, saved, "anything: nothing is stored yet"));
    auto [ec, t] = d.load(s);
    BOOST_TEST(!ec);
    BOOST_REQUIRE(t.has_value());
    check_equal(*t, saved);
  }
  driver d;
  file_store restarted(dir.file("tokens.json"));
  auto [ec, t] = d.load(restarted);
  BOOST_TEST(!ec);
  BOOST_REQUIRE(t.has_value());
  check_equal(*t, saved);

  // The documented format, with integer times.
  auto jv = boost::json::parse(read_file(dir.file("tokens.json")));
  const auto& o = jv.as_object();
  BOOST_TEST(o.at("format").as_string() == "nxsys-auth-token-store");
  BOOST_TEST(o.at("version").as_int64() == 1);
  BOOST_TEST(o.at("refreshToken").as_string() == "rt-SECRET-first");
  BOOST_TEST(
      o.at("expiresAtMs").as_int64() ==
      std::chrono::duration_cast<std::chrono::milliseconds>(saved.expires_at.time_since_epoch())
          .count());
  BOOST_TEST(o.at("lifetimeS").as_int64() == 3600);
}

BOOST_AUTO_TEST_CASE(works_with_awaitables) {
  temp_dir dir;
  asio::io_context ctx;
  file_store s(dir.file("tokens.json"));
  bool finished = false;
  std::exception_ptr failure;
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        co_await s.async_save(tokens("rt-SECRET-a"), "", asio::use_awaitable);
        co_await s.async_save(tokens("rt-SECRET-b"), "rt-SECRET-a", asio::use_awaitable);
        auto lease = co_await s.async_acquire(clock_type::now() + 5s, asio::use_awaitable);
        auto [t, diag] = co_await s.async_load(asio::use_awaitable);
        BOOST_REQUIRE(t.has_value());
        BOOST_TEST(t->refresh_token == "rt-SECRET-b");
      },
      [&](std::exception_ptr e) {
        failure = e;
        finished = true;
      });
  ctx.run_for(20s);
  BOOST_REQUIRE(finished);
  if (failure) std::rethrow_exception(failure);
}

BOOST_AUTO_TEST_CASE(file_is_private_even_with_umask_0) {
  temp_dir dir;
  driver d;
  file_store s(dir.file("tokens.json"));
  const auto old = ::umask(0);
  const auto ec = d.save(s, tokens("rt-SECRET-1"), "");
  auto lease = d.acquire(s, 5s);
  ::umask(old);
  BOOST_TEST(!ec);
  BOOST_TEST(!lease->ec);
  struct stat st {};
  BOOST_REQUIRE(::stat(dir.file("tokens.json").c_str(), &st) == 0);
  BOOST_TEST((st.st_mode & 07777) == 0600u);
  BOOST_REQUIRE(::stat(dir.file("tokens.json.lock").c_str(), &st) == 0);
  BOOST_TEST((st.st_mode & 07777) == 0600u);
}

BOOST_AUTO_TEST_CASE(a_save_against_a_changed_token_is_a_conflict_and_changes_nothing) {
  temp_dir dir;
  driver d;
  file_store s(dir.file("tokens.json"));
  BOOST_TEST(!d.save(s, tokens("rt-SECRET-1"), ""));
  BOOST_TEST(!d.save(s, tokens("rt-SECRET-2"), "rt-SECRET-1"));
  const auto before = read_file(dir.file("tokens.json"));
  BOOST_TEST(d.save(s, tokens("rt-SECRET-3"), "rt-SECRET-1") == errc::store_conflict);
  BOOST_TEST(d.save(s, tokens("rt-SECRET-3"), "") == errc::store_conflict);
  BOOST_TEST(read_file(dir.file("tokens.json")) == before);
  auto [ec, t] = d.load(s);
  BOOST_TEST(!ec);
  BOOST_REQUIRE(t.has_value());
  BOOST_TEST(t->refresh_token == "rt-SECRET-2");
}

BOOST_AUTO_TEST_CASE(a_save_over_a_corrupt_file_fails_and_leaves_it) {
  temp_dir dir;
  driver d;
  file_store s(dir.file("tokens.json"));
  write_file(dir.file("tokens.json"), "{not json");
  BOOST_TEST(d.save(s, tokens("rt-SECRET-1"), "") == errc::store_corrupt);
  BOOST_TEST(read_file(dir.file("tokens.json")) == "{not json");
}

BOOST_AUTO_TEST_CASE(a_state_with_neither_token_is_not_saved) {
  temp_dir dir;
  driver d;
  file_store s(dir.file("tokens.json"));
  BOOST_TEST(d.save(s, tokens("", ""), "") == errc::invalid_argument);
  BOOST_TEST(dir.entries().empty());
}

// The client_credentials grant has no refresh token: its state is an access token alone.
BOOST_AUTO_TEST_CASE(a_client_credentials_state_is_saved_and_loaded) {
  temp_dir dir;
  driver d;
  file_store s(dir.file("tokens.json"));
  BOOST_TEST(!d.save(s, tokens("", "at-SECRET-cc-1"), ""));
  // The compare-and-set compares empty refresh tokens: the next save goes through.
  BOOST_TEST(!d.save(s, tokens("", "at-SECRET-cc-2"), ""));
  auto [ec, t] = d.load(s);
  BOOST_TEST(!ec);
  BOOST_REQUIRE(t.has_value());
  BOOST_TEST(t->refresh_token.empty());
  BOOST_TEST(t->access_token == "at-SECRET-cc-2");
  // A refresh-token state is not written over by an empty expectation.
  BOOST_TEST(!d.save(s, tokens("rt-SECRET-1"), ""));
  BOOST_TEST(d.save(s, tokens("", "at-SECRET-cc-3"), "") == errc::store_conflict);
}

BOOST_AUTO_TEST_CASE(a_save_leaves_no_temporary_files) {
  temp_dir dir;
  driver d;
  file_store s(dir.file("tokens.json"));
  std::string expected;
  for (int i = 0; i < 5; ++i) {
    const auto next = "rt-SECRET-" + std::to_string(i);
    BOOST_TEST(!d.save(s, tokens(next), expected));
    expected = next;
  }
  BOOST_TEST(d.save(s, tokens("rt-SECRET-x"), "stale") == errc::store_conflict);
  BOOST_TEST(dir.entries() == std::vector<std::string>{"tokens.json"});
}

// A writer killed between creating its temporary file and the rename leaves it behind, with
// secrets in it: the next holder of the lock removes it (only temporaries of this store).
BOOST_AUTO_TEST_CASE(the_next_lock_holder_removes_temporaries_of_killed_writers) {
  temp_dir dir;
  driver d;
  file_store s(dir.file("tokens.json"));
  BOOST_TEST(!d.save(s, tokens("rt-SECRET-1"), ""));
  write_file(dir.file("tokens.json.tmp.99999.0"), R"({"format":"nxsys-auth-tok)");
  write_file(dir.file("other.json.tmp.1.0"), "not ours");
  auto a = d.acquire(s, 5s);
  BOOST_REQUIRE(!a->ec);
  BOOST_TEST(dir.entries() ==
             (std::vector<std::string>{"other.json.tmp.1.0", "tokens.json", "tokens.json.lock"}));
}

// A write that fails (here: over RLIMIT_FSIZE) leaves the old file whole and no temporary file.
BOOST_AUTO_TEST_CASE(a_failed_write_removes_its_temporary_file) {
  temp_dir dir;
  driver d;
  file_store s(dir.file("tokens.json"));
  BOOST_TEST(!d.save(s, tokens("rt-SECRET-1"), ""));
  const auto before = read_file(dir.file("tokens.json"));

  rlimit old{};
  BOOST_REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);  // write() fails with EFBIG instead
  rlimit small = old;
  small.rlim_cur = 16;
  BOOST_REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
  const auto ec = d.save(s, tokens("rt-SECRET-2"), "rt-SECRET-1");
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);

  BOOST_TEST(ec == errc::store_failed);
  BOOST_TEST(read_file(dir.file("tokens.json")) == before);
  BOOST_TEST(dir.entries() == std::vector<std::string>{"tokens.json"});
}

BOOST_AUTO_TEST_CASE(two_stores_on_one_path_in_one_process) {
  temp_dir dir;
  driver d;
  file_store a(dir.file("tokens.json"));
  file_store b(dir.file("tokens.json"));
  BOOST_TEST(!d.save(a, tokens("rt-SECRET-1"), ""));
  BOOST_TEST(!d.save(b, tokens("rt-SECRET-2"), "rt-SECRET-1"));
  BOOST_TEST(d.save(a, tokens("rt-SECRET-3"), "rt-SECRET-1") == errc::store_conflict);
  auto [ec, t] = d.load(a);
  BOOST_REQUIRE(t.has_value());
  BOOST_TEST(t->refresh_token == "rt-SECRET-2");
  // Each store's acquire has its own lock descriptor: they exclude each other.
  auto held = d.acquire(a, 5s);
  BOOST_REQUIRE(!held->ec);
  BOOST_TEST(d.acquire(b, 30ms)->ec == errc::store_busy);
}

BOOST_AUTO_TEST_CASE(a_missing_directory_fails_the_save) {
  temp_dir dir;
  driver d;
  file_store s(dir.file("no-such-dir/tokens.json"));  // nothing is read or created yet
  auto [ec, t] = d.load(s);
  BOOST_TEST(!ec);
  BOOST_TEST(!t.has_value());
  BOOST_TEST(d.save(s, tokens("rt-SECRET-1"), "") == errc::store_failed);
  BOOST_TEST(d.acquire(s, 1s)->ec == errc::store_failed);
  BOOST_TEST(dir.entries().empty());
}

BOOST_AUTO_TEST_CASE(an_unreadable_path_is_an_io_failure) {
  temp_dir dir;
  fs::create_directory(dir.file("tokens.json"));
  try {
    file_store s(dir.file("tokens.json"));
    BOOST_FAIL("a directory was accepted as a token store");
  } catch (const error_with_diagnostics& e) {
    BOOST_TEST(e.code() == errc::store_failed);
    BOOST_TEST(e.get_diagnostics().client_message.find(dir.file("tokens.json")) !=
               std::string::npos);
  }
}

BOOST_AUTO_TEST_CASE(corrupt_files_stop_the_constructor) {
  for (const auto& c : corrupt_cases()) {
    BOOST_TEST_CONTEXT(c.name) {
      temp_dir dir;
      write_file(dir.file("tokens.json"), c.bytes);
      try {
        file_store s(dir.file("tokens.json"));
        BOOST_FAIL("accepted");
      } catch (const error_with_diagnostics& e) {
        const auto& msg = e.get_diagnostics().client_message;
        BOOST_TEST(e.code() == errc::store_corrupt);
        BOOST_TEST(msg.find(dir.file("tokens.json")) != std::string::npos, msg);
        BOOST_TEST(msg.find(c.problem) != std::string::npos, msg);
        BOOST_TEST(msg.find("SECRET") == std::string::npos, msg);
        BOOST_TEST(std::string(e.what()).find("SECRET") == std::string::npos);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(corrupt_files_fail_async_load) {
  for (const auto& c : corrupt_cases()) {
    BOOST_TEST_CONTEXT(c.name) {
      temp_dir dir;
      driver d;
      file_store s(dir.file("tokens.json"));
      write_file(dir.file("tokens.json"), c.bytes);
      auto [ec, t] = d.load(s);
      BOOST_TEST(ec == errc::store_corrupt);
      BOOST_TEST(!t.has_value());
    }
  }
}

BOOST_AUTO_TEST_CASE(a_hand_written_file_with_only_a_refresh_token_is_accepted) {
  temp_dir dir;
  driver d;
  write_file(dir.file("tokens.json"),
             R"({"format":"nxsys-auth-token-store","version":1,"refreshToken":"rt-seed"})");
  file_store s(dir.file("tokens.json"));
  auto [ec, t] = d.load(s);
  BOOST_TEST(!ec);
  BOOST_REQUIRE(t.has_value());
  BOOST_TEST(t->refresh_token == "rt-seed");
  BOOST_TEST(t->access_token.empty());
  BOOST_TEST(t->lifetime.count() == 0);
}

BOOST_AUTO_TEST_CASE(acquire_excludes_a_second_acquire_until_release) {
  temp_dir dir;
  driver d;
  file_store s(dir.file("tokens.json"));
  auto first = d.acquire(s, 5s);
  BOOST_REQUIRE(!first->ec);

  BOOST_TEST(d.acquire(s, 30ms)->ec == errc::store_busy);

  auto second = d.start_acquire(s, 20s);
  d.ctx.restart();
  d.ctx.run_for(150ms);
  BOOST_TEST(!second->done);  // the first lease is still held
  first->lease.release();
  d.run_until(second->done);
  BOOST_TEST(!second->ec);
}

BOOST_AUTO_TEST_CASE(destruction_aborts_waiting_acquires_and_leases_outlive_the_store) {
  temp_dir dir;
  driver d;
  auto s = std::make_unique<file_store>(dir.file("tokens.json"));
  auto held = d.acquire(*s, 5s);
  BOOST_REQUIRE(!held->ec);
  auto waiting = d.start_acquire(*s, 60s);
  d.ctx.restart();
  d.ctx.run_for(50ms);
  BOOST_TEST(!waiting->done);
  s.reset();  // bounded by one poll interval, not by the 60 s deadline
  d.run_until(waiting->done);
  BOOST_TEST(waiting->ec == boost::asio::error::operation_aborted);
  held->lease.release();
}

// A handler with no associated executor runs on the store's own thread; destroying the store
// there must not make that thread join itself.
BOOST_AUTO_TEST_CASE(a_handler_on_the_store_thread_may_destroy_the_store) {
  temp_dir dir;
  auto* s = new file_store(dir.file("tokens.json"));
  std::atomic<bool> initiated{false}, done{false};
  error_code result = make_error_code(errc::store_failed);
  s->async_load([&](error_code ec, std::optional<stored_tokens>, nxsys::auth::diagnostics) {
    // Not before async_load has returned: the store must outlive calls into it.
    while (!initiated) std::this_thread::yield();
    delete s;
    result = ec;  // checked on this test's thread: Boost.Test assertions are not thread-safe
    done = true;
  });
  initiated = true;
  const auto end = clock_type::now() + 20s;
  while (!done && clock_type::now() < end) std::this_thread::sleep_for(1ms);
  BOOST_REQUIRE(done.load());
  BOOST_TEST(!result);
}

// Another process holds the flock: acquire waits (never blocking a thread) until it lets go.
// The child holds the lock until told to let go, so no timing decides the outcome.
BOOST_AUTO_TEST_CASE(acquire_waits_for_another_process) {
  temp_dir dir;
  driver d;
  file_store s(dir.file("tokens.json"));
  const std::string lock_path = dir.file("tokens.json.lock");
  int to_child[2], to_parent[2];
  BOOST_REQUIRE(::pipe(to_child) == 0);
  BOOST_REQUIRE(::pipe(to_parent) == 0);
  const pid_t pid = ::fork();
  BOOST_REQUIRE(pid >= 0);
  if (pid == 0) {
    // Async-signal-safe calls only: the parent has other threads.
    const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || ::flock(fd, LOCK_EX) != 0) ::_exit(1);
    if (::write(to_parent[1], "L", 1) != 1) ::_exit(2);
    pollfd p{to_child[0], POLLIN, 0};
    ::poll(&p, 1, 20'000);  // the parent says when; exits anyway after 20 s
    ::usleep(100'000);      // still holding after the parent was told "released soon"
    if (::write(to_parent[1], "R", 1) != 1) ::_exit(3);
    ::_exit(0);  // closing the descriptor releases the lock
  }
  ::close(to_child[0]);
  ::close(to_parent[1]);
  BOOST_REQUIRE(read_byte(to_parent[0], 10'000) == 'L');

  BOOST_TEST(d.acquire(s, 30ms)->ec == errc::store_busy);
  auto waiting = d.start_acquire(s, 20s);
  d.ctx.restart();
  d.ctx.run_for(150ms);
  BOOST_TEST(!waiting->done);

  BOOST_REQUIRE(::write(to_child[1], "x", 1) == 1);
  d.run_until(waiting->done);
  BOOST_TEST(!waiting->ec);
  // The child wrote "R" before exiting, hence before its lock went.
  BOOST_TEST(read_byte(to_parent[0], 0) == 'R');

  int status = 0;
  BOOST_REQUIRE(::waitpid(pid, &status, 0) == pid);
  BOOST_TEST(WIFEXITED(status));
  BOOST_TEST(WEXITSTATUS(status) == 0);
  ::close(to_child[1]);
  ::close(to_parent[0]);

  // And the other way round: the child cannot take the lock while this process holds it.
  const pid_t pid2 = ::fork();
  BOOST_REQUIRE(pid2 >= 0);
  if (pid2 == 0) {
    const int fd = ::open(lock_path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) ::_exit(1);
    ::_exit(::flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK ? 0 : 2);
  }
  BOOST_REQUIRE(::waitpid(pid2, &status, 0) == pid2);
  BOOST_TEST(WIFEXITED(status));
  BOOST_TEST(WEXITSTATUS(status) == 0);
}

BOOST_AUTO_TEST_SUITE_END()
