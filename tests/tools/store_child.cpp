// SPDX-License-Identifier: BSL-1.0
// nxsys-store-child: one process of the multi-process file_store tests
// (tests/integration/test_store_processes.cpp). Not a tool for users.
//
//   nxsys-store-child --mode burst|rotate-loop --url URL --store PATH [--callers N]
//                     [--threads T] [--go-fd FD | --go-file F] [--iterations N]
//                     [--refresh-token RT] [--timeout-ms MS]
//
// burst: prints "ready", waits for the go signal (one byte on FD, or F existing), then N
//   coroutines on T threads call token() at once. Prints "token <hash>" (a SHA-256 prefix of
//   the access token, never the token) and "stats k=v ...", then "ok" and exits 0 when all N
//   got the same non-empty token; prints "fail ..." and exits non-zero otherwise.
// rotate-loop: prints "ready", then --iterations times: invalidate(), token(), and a line
//   "iter I rotated=R from_store=S" (flushed) after each. Every iteration but a first one that
//   finds a fresh token in the store is one rotating refresh, saved before token() returns.
//
// Exit codes: 0 success, 1 a check failed, 2 bad usage or setup, 3 the run timed out, 4 no go.
#include <nxsys/auth.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <openssl/evp.h>
#include <sys/prctl.h>
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <poll.h>
#include <string>
#include <string_view>
#include <thread>
#include <unistd.h>
#include <vector>

// GCC 12 pairs the aligned_alloc inside Asio's coroutine-frame operator new with the frame's
// sized operator delete and reports a mismatch that is not there (GCC bug 109224).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace {

namespace asio = boost::asio;
namespace auth = nxsys::auth;

enum exit_code { ok = 0, check_failed = 1, usage = 2, timed_out = 3, no_go = 4 };

struct options {
  std::string mode;
  std::string url;
  std::string store;
  std::string refresh_token;
  unsigned callers = 1000;
  unsigned threads = 2;
  int go_fd = -1;
  std::string go_file;
  unsigned long iterations = 1'000'000;
  long timeout_ms = 60'000;
};

// One line to stdout with a single write(): lines from several threads never interleave
// (a pipe writes up to PIPE_BUF bytes atomically), and nothing waits in a stdio buffer when
// the parent kills us.
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

// The first 16 bytes of SHA-256, in hex: enough to compare tokens, nothing to replay.
std::string token_hash(std::string_view token) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(token.data(), token.size(), md, &len, EVP_sha256(), nullptr) != 1) return "?";
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < 16 && i < len; ++i) {
    out += hex[md[i] >> 4];
    out += hex[md[i] & 0xf];
  }
  return out;
}

bool parse_args(int argc, char** argv, options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (i + 1 >= argc) return false;
    const std::string v = argv[++i];
    try {
      if (a == "--mode") {
        o.mode = v;
      } else if (a == "--url") {
        o.url = v;
      } else if (a == "--store") {
        o.store = v;
      } else if (a == "--refresh-token") {
        o.refresh_token = v;
      } else if (a == "--callers") {
        o.callers = static_cast<unsigned>(std::stoul(v));
      } else if (a == "--threads") {
        o.threads = static_cast<unsigned>(std::stoul(v));
      } else if (a == "--go-fd") {
        o.go_fd = std::stoi(v);
      } else if (a == "--go-file") {
        o.go_file = v;
      } else if (a == "--iterations") {
        o.iterations = std::stoul(v);
      } else if (a == "--timeout-ms") {
        o.timeout_ms = std::stol(v);
      } else {
        return false;
      }
    } catch (const std::exception&) {
      return false;
    }
  }
  return (o.mode == "burst" || o.mode == "rotate-loop") && !o.url.empty() && !o.store.empty() &&
         o.callers > 0 && o.threads > 0 && o.timeout_ms > 0;
}

// One byte on the go descriptor, or the go file appearing; bounded by `limit`.
bool wait_for_go(const options& o, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  if (o.go_fd >= 0) {
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          end - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{o.go_fd, POLLIN, 0};
      const int r = ::poll(&p, 1, static_cast<int>(left.count()));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      char byte = 0;
      const auto n = ::read(o.go_fd, &byte, 1);
      if (n < 0 && errno == EINTR) continue;
      return n == 1;  // 0: the parent closed the pipe without saying go
    }
  }
  if (!o.go_file.empty()) {
    struct stat st {};
    while (::stat(o.go_file.c_str(), &st) != 0) {
      if (std::chrono::steady_clock::now() >= end) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  return true;
}

// Runs `ctx` on `threads` threads until finish() or the limit. False when the limit hit.
class bounded_run {
 public:
  bounded_run(asio::io_context& ctx, std::chrono::milliseconds limit) : ctx_(ctx), limit_(limit) {}

  void finish() {
    {
      std::lock_guard lk(mu_);
      finished_ = true;
    }
    cv_.notify_all();
    ctx_.stop();
  }

  bool run(unsigned threads) {
    std::thread watchdog([this] {
      std::unique_lock lk(mu_);
      if (!cv_.wait_for(lk, limit_, [this] { return finished_; })) {
        expired_ = true;
        ctx_.stop();
      }
    });
    std::vector<std::thread> pool;
    for (unsigned i = 1; i < threads; ++i) pool.emplace_back([this] { ctx_.run(); });
    ctx_.run();
    for (auto& t : pool) t.join();
    {
      std::lock_guard lk(mu_);
      finished_ = true;  // run() returned on its own: the watchdog may go
    }
    cv_.notify_all();
    watchdog.join();
    return !expired_;
  }

 private:
  asio::io_context& ctx_;
  std::chrono::milliseconds limit_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool finished_ = false;
  bool expired_ = false;
};

std::string stats_line(const auth::client_stats& s) {
  auto kv = [](const char* k, std::uint64_t v) {
    return std::string(" ") + k + "=" + std::to_string(v);
  };
  return "stats" + kv("refreshes_started", s.refreshes_started) +
         kv("refreshes_succeeded", s.refreshes_succeeded) +
         kv("refreshes_failed", s.refreshes_failed) +
         kv("refresh_tokens_rotated", s.refresh_tokens_rotated) +
         kv("tokens_from_store", s.tokens_from_store) +
         kv("refresh_tokens_adopted", s.refresh_tokens_adopted) +
         kv("waiters_coalesced", s.waiters_coalesced) + kv("slow_path_calls", s.slow_path_calls) +
         kv("store_loads", s.store_loads) + kv("store_load_failures", s.store_load_failures) +
         kv("store_saves", s.store_saves) + kv("store_save_failures", s.store_save_failures) +
         kv("store_conflicts", s.store_conflicts) +
         kv("invalid_grant_retries", s.invalid_grant_retries) +
         kv("connections_opened", s.connections_opened);
}

std::string describe(const std::exception& e) {
  if (const auto* d = dynamic_cast<const auth::error_with_diagnostics*>(&e))
    return d->code().message() + ": " + d->what();
  return e.what();
}

int run_burst(const options& o, auth::client_config cfg) {
  asio::io_context ctx(static_cast<int>(o.threads));
  auth::client c(ctx.get_executor(), std::move(cfg));
  say("ready");
  if (!wait_for_go(o, std::chrono::milliseconds(o.timeout_ms))) {
    say("fail no go signal");
    return no_go;
  }

  std::vector<std::string> got(o.callers), errors(o.callers);
  std::atomic<unsigned> done{0};
  bounded_run runner(ctx, std::chrono::milliseconds(o.timeout_ms));
  // All spawned before any thread runs: the calls start together.
  for (unsigned i = 0; i < o.callers; ++i) {
    asio::co_spawn(
        ctx,
        [&, i]() -> asio::awaitable<void> {
          try {
            const auto t = co_await c.token();
            got[i] = std::string(t.value());
          } catch (const std::exception& e) {
            errors[i] = describe(e);
          }
          if (done.fetch_add(1) + 1 == o.callers) runner.finish();
        },
        asio::detached);
  }
  if (!runner.run(o.threads)) {
    say("fail timed out with " + std::to_string(done.load()) + " of " + std::to_string(o.callers) +
        " calls done");
    return timed_out;
  }

  unsigned failures = 0, empty = 0, different = 0;
  std::string first_error;
  for (unsigned i = 0; i < o.callers; ++i) {
    if (!errors[i].empty()) {
      if (failures++ == 0) first_error = errors[i];
    } else if (got[i].empty()) {
      ++empty;
    } else if (got[i] != got[0]) {
      ++different;
    }
  }
  say(stats_line(c.stats()));
  if (failures != 0 || empty != 0 || different != 0 || got[0].empty()) {
    say("fail errors=" + std::to_string(failures) + " empty=" + std::to_string(empty) +
        " different=" + std::to_string(different) + " first_error=" + first_error);
    return check_failed;
  }
  say("token " + token_hash(got[0]));
  say("ok");
  return ok;
}

int run_rotate_loop(const options& o, auth::client_config cfg) {
  asio::io_context ctx(static_cast<int>(o.threads));
  auth::client c(ctx.get_executor(), std::move(cfg));
  bounded_run runner(ctx, std::chrono::milliseconds(o.timeout_ms));
  std::string failure;
  bool completed = false;
  say("ready");
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        for (unsigned long i = 0; i < o.iterations; ++i) {
          c.invalidate();
          const auto t = co_await c.token();
          if (t.value().empty()) throw std::runtime_error("empty token");
          const auto s = c.stats();
          say("iter " + std::to_string(i) + " rotated=" + std::to_string(s.refresh_tokens_rotated) +
              " from_store=" + std::to_string(s.tokens_from_store));
        }
      },
      [&](std::exception_ptr e) {
        if (e) {
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& ex) {
            failure = describe(ex);
          }
        }
        completed = true;
        runner.finish();
      });
  if (!runner.run(o.threads) || !completed) {
    say("fail timed out");
    return timed_out;
  }
  say(stats_line(c.stats()));
  if (!failure.empty()) {
    say("fail " + failure);
    return check_failed;
  }
  say("ok");
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  // The test that started us may die without reaping us: do not outlive it.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  options o;
  if (!parse_args(argc, argv, o)) {
    std::fprintf(stderr,
                 "usage: %s --mode burst|rotate-loop --url URL --store PATH [--callers N] "
                 "[--threads T] [--go-fd FD | --go-file F] [--iterations N] "
                 "[--refresh-token RT] [--timeout-ms MS]\n",
                 argv[0]);
    return usage;
  }
  try {
    auth::client_config cfg;
    cfg.token_url = o.url;
    cfg.client_id = "test-client";
    cfg.client_secret = "test-secret";
    cfg.refresh_token = o.refresh_token;  // empty: the store's
    cfg.refresh.min_retry_spacing = std::chrono::milliseconds(0);
    cfg.refresh.retry.max_attempts = 1;
    cfg.refresh.ahead_fraction = 0;
    cfg.storage.store = std::make_shared<auth::file_store>(o.store);
    return o.mode == "burst" ? run_burst(o, std::move(cfg)) : run_rotate_loop(o, std::move(cfg));
  } catch (const std::exception& e) {
    say("fail setup: " + describe(e));
    return usage;
  }
}
