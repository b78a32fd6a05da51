// SPDX-License-Identifier: BSL-1.0
// Processes sharing one file_store against the mock server (rotating refresh tokens, reuse
// detection on), with nxsys-store-child as the other processes:
//  - four processes, 1,000 callers each, find an expired token in the file at once: the server
//    sees exactly one refresh and every caller of every process gets the same access token;
//  - a process rotating refresh tokens in a loop is killed with SIGKILL at random points, over
//    and over: the file always parses, and holds the server's current refresh token or the one
//    the server replaced last (rotated, but the process died before its save).
#include <nxsys/auth.hpp>

#include "helpers.hpp"

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/test/unit_test.hpp>

#include <openssl/evp.h>
#include <sys/wait.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <poll.h>
#include <random>
#include <signal.h>
#include <spawn.h>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <unistd.h>
#include <vector>

#ifndef NXSYS_STORE_CHILD
#error "NXSYS_STORE_CHILD must name the nxsys-store-child executable (see tests/CMakeLists.txt)"
#endif

extern char** environ;

namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;

// A GET /stats on a connection of our own, read to the end. The kernel's accept queue is FIFO,
// so when it is answered every connection established before it has been accepted.
void drain(const nxsys::auth::testing::mock_server& server) {
  asio::io_context ctx;
  asio::ip::tcp::socket sock(ctx);
  sock.connect({asio::ip::make_address("127.0.0.1"), server.port()});
  const std::string req = "GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  asio::write(sock, asio::buffer(req));
  timeval tv{10, 0};  // bounded: a hung server fails the test instead of hanging it
  ::setsockopt(sock.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[4096];
  boost::system::error_code ec;
  std::size_t got = 0;
  while (!ec) got += sock.read_some(asio::buffer(buf), ec);
  BOOST_REQUIRE_MESSAGE(ec == asio::error::eof && got > 0, "GET /stats: " << ec.message());
}
using boost::system::error_code;
using nxsys::auth::error_with_diagnostics;
using nxsys::auth::file_store;
using nxsys::auth::stored_tokens;
using nxsys::auth::testing::eventually;
using nxsys::auth::testing::mock_server;
using nxsys::auth::testing::mock_server_options;
using nxsys::auth::testing::run_bounded;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

// A fresh directory under /tmp, removed with everything in it.
struct temp_dir {
  temp_dir() {
    char tmpl[] = "/tmp/nxsys-store-processes-XXXXXX";
    BOOST_REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  std::string file(const std::string& name) const { return path + "/" + name; }
  std::string path;
};

// What the child prints instead of a token: the first 16 bytes of SHA-256, in hex.
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

// A copy of `fd` numbered 10 or above (close-on-exec), the original closed: a descriptor that
// is to become the child's 3 must not already be 3 (dup2 onto itself keeps close-on-exec).
int high_fd(int fd) {
  const int h = ::fcntl(fd, F_DUPFD_CLOEXEC, 10);
  BOOST_REQUIRE(h >= 0);
  ::close(fd);
  return h;
}

// A nxsys-store-child and the pipe of its stdout. Killed and reaped when dropped unreaped, so a
// failed assertion never leaves a process behind.
struct child_process {
  pid_t pid = -1;
  int out = -1;
  std::string output;
  bool eof = false;
  bool reaped = false;
  int status = 0;

  child_process() = default;
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  ~child_process() {
    if (pid > 0 && !reaped) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
    }
    if (out >= 0) ::close(out);
  }

  // Appends what the pipe holds now, without waiting.
  void drain() {
    if (eof || out < 0) return;
    char buf[4096];
    for (;;) {
      const auto n = ::read(out, buf, sizeof buf);
      if (n > 0) {
        output.append(buf, static_cast<std::size_t>(n));
        continue;
      }
      if (n == 0) eof = true;
      if (n < 0 && errno == EINTR) continue;
      return;  // EAGAIN: nothing more for now
    }
  }

  // Reads for up to `d` (less when the pipe closes).
  void read_for(clock_type::duration d) {
    const auto end = clock_type::now() + d;
    for (;;) {
      drain();
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(end - clock_type::now());
      if (eof || left.count() <= 0) return;
      pollfd p{out, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(left.count()));
    }
  }

  bool has_line(std::string_view prefix) const { return !lines_with(prefix).empty(); }

  std::vector<std::string> lines_with(std::string_view prefix) const {
    std::vector<std::string> found;
    std::istringstream in(output);
    for (std::string line; std::getline(in, line);)
      if (line.rfind(prefix, 0) == 0) found.push_back(line);
    return found;
  }

  // Waits (bounded) for a line starting with `prefix`; false if the pipe closed or time ran out.
  bool wait_for_line(std::string_view prefix, clock_type::time_point deadline) {
    for (;;) {
      drain();
      if (has_line(prefix)) return true;
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now());
      if (eof || left.count() <= 0) return false;
      pollfd p{out, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(std::min<long>(left.count(), 100)));
    }
  }

  bool exited() {
    if (reaped) return true;
    const auto r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) reaped = true;
    return reaped;
  }

  // Waits (bounded) for the exit, reading its output meanwhile; past the deadline it is killed
  // and false returned.
  bool reap(clock_type::time_point deadline) {
    while (!exited()) {
      if (clock_type::now() >= deadline) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        reaped = true;
        drain();
        return false;
      }
      read_for(2ms);
    }
    // Everything it wrote is in the pipe by now; grandchildren do not exist, so EOF follows.
    read_for(100ms);
    return true;
  }

  bool exited_ok() const { return reaped && WIFEXITED(status) && WEXITSTATUS(status) == 0; }

  std::string describe_exit() const {
    if (!reaped) return "still running";
    if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
    return "status " + std::to_string(status);
  }
};

// Starts nxsys-store-child with `args`: its stdout into a pipe, `go_fd` (if >= 0) as its
// descriptor 3, nothing else of ours (not the mock server's sockets); stderr shared with us, so
// sanitizer reports show in the test log.
std::unique_ptr<child_process> spawn_child(const std::vector<std::string>& args, int go_fd = -1) {
  auto c = std::make_unique<child_process>();
  int p[2];
  BOOST_REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
  const int read_end = p[0];
  const int write_end = high_fd(p[1]);
  BOOST_REQUIRE(::fcntl(read_end, F_SETFL, O_NONBLOCK) == 0);
  c->out = read_end;

  posix_spawn_file_actions_t fa;
  BOOST_REQUIRE(::posix_spawn_file_actions_init(&fa) == 0);
  ::posix_spawn_file_actions_adddup2(&fa, write_end, STDOUT_FILENO);
  if (go_fd >= 0) ::posix_spawn_file_actions_adddup2(&fa, go_fd, 3);
  ::posix_spawn_file_actions_addclosefrom_np(&fa, go_fd >= 0 ? 4 : 3);

  std::vector<std::string> all{NXSYS_STORE_CHILD};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int rc = ::posix_spawn(&c->pid, NXSYS_STORE_CHILD, &fa, nullptr, argv.data(), environ);
  ::posix_spawn_file_actions_destroy(&fa);
  ::close(write_end);
  BOOST_REQUIRE_MESSAGE(rc == 0, "posix_spawn " NXSYS_STORE_CHILD ": " << std::strerror(rc));
  return c;
}

// key=value pairs of a "stats ..." line.
std::map<std::string, std::uint64_t> parse_stats(const std::string& line) {
  std::map<std::string, std::uint64_t> out;
  std::istringstream in(line);
  std::string word;
  in >> word;  // "stats"
  while (in >> word) {
    const auto eq = word.find('=');
    if (eq != std::string::npos) out[word.substr(0, eq)] = std::stoull(word.substr(eq + 1));
  }
  return out;
}

struct load_result {
  error_code ec;
  std::string what;
  std::optional<stored_tokens> state;
};

// The file as a freshly started process would find it: constructor, then async_load.
load_result load_store(const std::string& path) {
  load_result r;
  try {
    file_store store(path);
    asio::io_context ctx;
    bool done = false;
    store.async_load(asio::bind_executor(
        ctx, [&](error_code ec, std::optional<stored_tokens> s, nxsys::auth::diagnostics) {
          r.ec = ec;
          r.state = std::move(s);
          done = true;
        }));
    BOOST_REQUIRE(run_bounded(ctx, 1, 10s));
    BOOST_REQUIRE(done);
  } catch (const error_with_diagnostics& e) {
    r.ec = e.code();
    r.what = e.what();
  }
  return r;
}

error_code save_store(const std::string& path, stored_tokens next) {
  file_store store(path);
  asio::io_context ctx;
  error_code result = asio::error::operation_aborted;
  store.async_save(
      std::move(next), std::string(),
      asio::bind_executor(ctx, [&](error_code ec, nxsys::auth::diagnostics) { result = ec; }));
  BOOST_REQUIRE(run_bounded(ctx, 1, 10s));
  return result;
}

// The state a process finds when the access token has expired: only the refresh token is good.
stored_tokens expired_state(const std::string& refresh_token) {
  stored_tokens t;
  t.refresh_token = refresh_token;
  t.access_token = "expired-access-token";
  t.token_type = "Bearer";
  t.expires_at = std::chrono::system_clock::now() - 1h;
  t.lifetime = 3600s;
  return t;
}

// Temporary files next to the store ("<path>.tmp.<pid>.<n>"), left by writers that died.
std::size_t temp_files(const temp_dir& dir, const std::string& store_name) {
  std::size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir.path))
    if (e.path().filename().string().rfind(store_name + ".tmp.", 0) == 0) ++n;
  return n;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(store_processes)

// Four processes share a file whose access token has expired; 1,000 callers in each ask for a
// token at the same moment. The flock makes them take turns: the first refreshes (one rotating
// request), the other three read its answer from the file instead of sending a request.
BOOST_AUTO_TEST_CASE(four_processes_refresh_once) {
  mock_server_options so;
  so.rotate = true;
  so.reuse_detection = true;
  so.latency = 50ms;
  so.ttl = 3600s;
  mock_server server(so);

  temp_dir dir;
  const auto path = dir.file("tokens.json");
  const auto initial = server.current_refresh_token();
  BOOST_REQUIRE(!save_store(path, expired_state(initial)));

  int go[2];
  BOOST_REQUIRE(::pipe2(go, O_CLOEXEC) == 0);
  const int go_read = high_fd(go[0]);
  const int go_write = go[1];

  constexpr int processes = 4;
  std::vector<std::unique_ptr<child_process>> kids;
  for (int i = 0; i < processes; ++i) {
    kids.push_back(
        spawn_child({"--mode", "burst", "--url", server.token_url(), "--store", path, "--callers",
                     "1000", "--threads", "2", "--go-fd", "3", "--timeout-ms", "60000"},
                    go_read));
  }
  const auto deadline = clock_type::now() + 90s;
  for (auto& k : kids) {
    // Evaluated first: Boost.Test may build the message before the condition.
    const bool ready = k->wait_for_line("ready", deadline);
    BOOST_REQUIRE_MESSAGE(ready, "a child did not start (" << k->describe_exit() << "):\n"
                                                           << k->output);
  }
  // One byte each, all at once. Our read end stays open until then: a child that died early
  // must not turn this write into SIGPIPE.
  BOOST_REQUIRE(::write(go_write, "gggg", processes) == processes);
  ::close(go_write);
  ::close(go_read);

  std::vector<std::string> hashes;
  std::uint64_t rotated = 0, from_store = 0, succeeded = 0, failed = 0;
  for (auto& k : kids) {
    const bool ended = k->reap(deadline);
    BOOST_REQUIRE_MESSAGE(ended, "a child hung and was killed:\n" << k->output);
    BOOST_TEST_MESSAGE("child " << k->pid << " (" << k->describe_exit() << "):\n" << k->output);
    BOOST_REQUIRE_MESSAGE(k->exited_ok(), "a child failed (" << k->describe_exit() << "):\n"
                                                             << k->output);
    const auto tokens = k->lines_with("token ");
    const auto stats = k->lines_with("stats ");
    BOOST_REQUIRE_EQUAL(tokens.size(), 1u);
    BOOST_REQUIRE_EQUAL(stats.size(), 1u);
    hashes.push_back(tokens[0].substr(6));
    auto s = parse_stats(stats[0]);
    rotated += s["refresh_tokens_rotated"];
    from_store += s["tokens_from_store"];
    succeeded += s["refreshes_succeeded"];
    failed += s["refreshes_failed"];
  }

  // Every process, and so all 4,000 callers, got the one token the server issued.
  const auto issued = token_hash(server.last_access_token());
  for (const auto& h : hashes) BOOST_TEST(h == issued);

  const auto st = server.stats();
  BOOST_TEST(st.refreshes == 1u);
  BOOST_TEST(st.errors == 0u);
  BOOST_TEST(st.reuse_detected == 0u);
  // One process rotated the chain; the others took the token from the file.
  BOOST_TEST(rotated == 1u);
  BOOST_TEST(from_store == std::uint64_t(processes - 1));
  BOOST_TEST(succeeded == std::uint64_t(processes));
  BOOST_TEST(failed == 0u);

  // The file holds the chain's new refresh token and the token everyone got.
  const auto after = load_store(path);
  BOOST_REQUIRE_MESSAGE(!after.ec, after.ec.message() << " " << after.what);
  BOOST_REQUIRE(after.state.has_value());
  BOOST_TEST(after.state->refresh_token == server.current_refresh_token());
  BOOST_TEST(after.state->refresh_token != initial);
  BOOST_TEST(token_hash(after.state->access_token) == issued);
  BOOST_TEST(temp_files(dir, "tokens.json") == 0u);
}

// A process rotating the refresh token in a loop (each rotation saved before token() returns)
// is killed with SIGKILL at random moments and restarted, until the server has rotated the
// chain 200 times. After every kill the file must parse and hold either the server's current
// refresh token or the one it replaced last: the server may have rotated (and retired the
// token in the file) just before the process died, before its save. Never an older one.
//
// Temporary files of writers killed mid-save must not pile up: the next lock holder removes
// them.
//
// In that window case the test resynchronises the mock server to the file's token
// (mock_server::set_refresh_token): a real server would have locked the user out, which is the
// unavoidable cost of that window, and the test goes on with the chain the file holds.
BOOST_AUTO_TEST_CASE(killed_while_rotating) {
  mock_server_options so;
  so.rotate = true;
  so.reuse_detection = true;
  so.latency = 1ms;  // a request phase the kills can land in
  so.ttl = 3600s;
  mock_server server(so);

  temp_dir dir;
  const std::string name = "tokens.json";
  const auto path = dir.file(name);
  BOOST_REQUIRE(!save_store(path, expired_state(server.current_refresh_token())));

  const auto seed = std::random_device{}();
  BOOST_TEST_MESSAGE("killed_while_rotating: seed " << seed);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> delay_ms(0, 40);

  constexpr std::uint64_t min_refreshes = 200;
  constexpr unsigned min_kills = 100;
  unsigned kills = 0, file_current = 0, file_previous = 0, iterations = 0, left_temp = 0;
  std::size_t temps = 0, max_temps = 0;
  // Only a guard against a hang: the test normally ends in seconds.
  const auto give_up = clock_type::now() + 150s;
  // A loaded machine (sanitizers, parallel tests) starts the children slowly and they refresh
  // little in the same time: each kill that found no new refresh lets the next child live
  // 20 ms longer (at most 400 ms), so the count needed is reached at any speed.
  unsigned idle_kills = 0;
  while (server.stats().refreshes < min_refreshes || kills < min_kills) {
    BOOST_REQUIRE_MESSAGE(clock_type::now() < give_up, "gave up after " << kills << " kills and "
                                                                        << server.stats().refreshes
                                                                        << " refreshes");
    auto k = spawn_child({"--mode", "rotate-loop", "--url", server.token_url(), "--store", path,
                          "--threads", "1", "--iterations", "1000000", "--timeout-ms", "60000"});
    const bool ready = k->wait_for_line("ready", clock_type::now() + 30s);
    BOOST_REQUIRE_MESSAGE(ready, "the child did not start (" << k->describe_exit() << "):\n"
                                                             << k->output);
    const auto refreshes_before = server.stats().refreshes;
    k->read_for(std::chrono::milliseconds(delay_ms(rng) + std::min(20u * idle_kills, 400u)));
    const bool stopped = k->exited();
    BOOST_REQUIRE_MESSAGE(!stopped, "the child stopped on its own (" << k->describe_exit() << "):\n"
                                                                     << k->output);
    BOOST_REQUIRE(::kill(k->pid, SIGKILL) == 0);
    BOOST_REQUIRE(k->reap(clock_type::now() + 10s));
    BOOST_REQUIRE_MESSAGE(WIFSIGNALED(k->status) && WTERMSIG(k->status) == SIGKILL,
                          "the child ended otherwise (" << k->describe_exit() << "):\n"
                                                        << k->output);
    ++kills;
    BOOST_REQUIRE_MESSAGE(!k->has_line("fail"), k->output);
    idle_kills = server.stats().refreshes > refreshes_before ? 0 : idle_kills + 1;
    iterations += static_cast<unsigned>(k->lines_with("iter ").size());

    // A request the process wrote before dying is answered (and rotates the chain) before its
    // connection ends: wait for that, so that the server's state is final when compared. Its
    // connection may still wait in the accept queue: one of ours answered proves it accepted.
    drain(server);
    BOOST_REQUIRE(eventually([&] { return server.open_connections() == 0; }, 10s));
    const auto r = load_store(path);
    BOOST_REQUIRE_MESSAGE(!r.ec, "after kill " << kills << " the file does not load: "
                                               << r.ec.message() << " " << r.what);
    BOOST_REQUIRE_MESSAGE(r.state.has_value(), "after kill " << kills << " the file is gone");
    BOOST_REQUIRE(eventually([&] { return server.open_connections() == 0; }, 10s));

    const auto current = server.current_refresh_token();
    const auto previous = server.previous_refresh_token();
    BOOST_REQUIRE_MESSAGE(!current.empty(), "the server revoked the chain (reuse detected)");
    const auto& held = r.state->refresh_token;
    if (held == current) {
      ++file_current;
    } else if (held == previous) {
      ++file_previous;
      server.set_refresh_token(held);  // resynchronise: see above
    } else {
      BOOST_FAIL("after kill " << kills << " the file holds refresh token " << held
                               << ", which the server replaced before its last rotation (current "
                               << current << ", last replaced " << previous << ")");
    }

    // A writer killed mid-save leaves its temporary file; the next lock holder removes it
    // before it writes its own (temporaries are written only under the lock). So they never
    // pile up: at most the one of the process just killed.
    temps = temp_files(dir, name);
    max_temps = std::max(max_temps, temps);
    if (temps != 0) ++left_temp;
    BOOST_REQUIRE_LE(temps, 1u);
  }

  const auto st = server.stats();
  BOOST_TEST_MESSAGE("killed_while_rotating: "
                     << kills << " kills, " << st.refreshes << " rotating refreshes, " << iterations
                     << " completed iterations reported; file held the current "
                     << "refresh token " << file_current << " times, the last replaced one "
                     << file_previous << " times (window: resynchronised); " << left_temp
                     << " kills left a temporary file (at most " << max_temps << " at once), "
                     << temps << " left after the last kill");
  BOOST_TEST(st.reuse_detected == 0u);
  BOOST_TEST(st.errors == 0u);
  BOOST_TEST(file_current + file_previous == kills);

  // The next holder of the lock cleans up what the last killed writer left.
  {
    file_store store(path);
    asio::io_context ctx;
    error_code lease_ec = asio::error::operation_aborted;
    nxsys::auth::refresh_lease lease;
    store.async_acquire(clock_type::now() + 10s,
                        asio::bind_executor(ctx, [&](error_code ec, nxsys::auth::refresh_lease l,
                                                     nxsys::auth::diagnostics) {
                          lease_ec = ec;
                          lease = std::move(l);
                        }));
    BOOST_REQUIRE(run_bounded(ctx, 1, 20s));
    BOOST_REQUIRE_MESSAGE(!lease_ec, lease_ec.message());
    BOOST_TEST(temp_files(dir, name) == 0u);
  }
}

BOOST_AUTO_TEST_SUITE_END()
