// SPDX-License-Identifier: BSL-1.0
// The scale-out acceptance tests: 8 replica processes × 1,000 coroutines sharing one rotating
// refresh-token chain through Redis, over 30+ token expiries, against the mock server with
// reuse detection: one refresh per expiry and no reuse; again with the lease holder killed at
// random points of its refresh (a reuse grace on the server), with Redis restarted once, and
// with lease holders paused (SIGSTOP) past the lease's lifetime right before their request,
// then resumed (no grace: the resumed holder must not send its stale refresh token).
#include "helpers.hpp"
#include "redis_fixture.hpp"

#include <sys/wait.h>

#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <spawn.h>
#include <sstream>

namespace na = nxsys::auth;
using namespace nxsys::auth::testing;
using namespace std::chrono_literals;

extern char** environ;

namespace {

constexpr int replicas = 8;
constexpr int callers = 1000;
constexpr std::uint64_t expiries = 30;

enum class variant { plain, kill_holder, restart_redis, pause_holder };

// Replicas that stop themselves before their first request in the pause_holder variant.
constexpr int pausing_replicas = 4;

struct child {
  pid_t pid = -1;
  std::string out_path;
  bool killed = false;
  int status = -1;
  bool paused = false;  // stopped itself (pause_holder), SIGCONT not sent yet
  std::chrono::steady_clock::time_point paused_at{};
  int pauses = 0;
};

child spawn_child(const std::vector<std::string>& args, const std::string& out_path) {
  child c;
  c.out_path = out_path;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  if (posix_spawn(&c.pid, argv[0], &fa, nullptr, argv.data(), environ) != 0) c.pid = -1;
  posix_spawn_file_actions_destroy(&fa);
  return c;
}

// Waits for the child, at most `limit` (then kills it: the test fails on its status).
void reap(child& c, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (::waitpid(c.pid, &c.status, WNOHANG) == c.pid) return;
    std::this_thread::sleep_for(10ms);
  }
  ::kill(c.pid, SIGKILL);
  ::waitpid(c.pid, &c.status, 0);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void run_cluster(variant v) {
  redis_server redis({}, v == variant::restart_redis);
  mock_server_options mopts;
  mopts.rotate = true;
  mopts.reuse_detection = true;
  mopts.ttl = 1s;
  mopts.latency = 20ms;  // a refresh takes a while: kills land before, during and after it
  mopts.threads = 2;
  // Generous: a take-over comes after lease_ttl (2 s), slower under sanitizers. The lease is
  // 2 s so that a replica starved of CPU (8 processes on 2 cores, sanitizers) still renews it.
  if (v == variant::kill_holder) mopts.reuse_grace = 10s;
  mock_server server(mopts);

  char tmpl[] = "/tmp/nxsys-cluster-XXXXXX";
  BOOST_REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  const std::string stop_file = dir + "/stop";
  int spawned = 0;
  auto start_replica = [&] {
    const std::string out = dir + "/replica-" + std::to_string(spawned) + ".out";
    std::vector<std::string> args = {NXSYS_CLUSTER_CHILD,
                                     "--url",
                                     server.token_url(),
                                     "--redis-port",
                                     std::to_string(redis.port()),
                                     "--stop-file",
                                     stop_file,
                                     "--callers",
                                     std::to_string(callers),
                                     "--threads",
                                     "1",
                                     "--pause-ms",
                                     "50",
                                     "--lease-ttl-ms",
                                     "2000"};
    if (v == variant::pause_holder && spawned < pausing_replicas) {
      args.emplace_back("--pause-before-request");
      args.emplace_back("1");
    }
    ++spawned;
    return spawn_child(args, out);
  };
  std::vector<child> children;
  for (int i = 0; i < replicas; ++i) {
    children.push_back(start_replica());
    BOOST_REQUIRE(children.back().pid > 0);
  }

  std::mt19937 rng(std::random_device{}());
  int kills = 0;
  int pauses = 0;
  std::uint64_t refreshes_at_kill = 0;
  bool restarted = false;
  auto last_kill = std::chrono::steady_clock::now();
  const auto started = std::chrono::steady_clock::now();
  const auto end = started + 240s;
  while (std::chrono::steady_clock::now() < end) {
    const auto s = server.stats();
    if (s.refreshes >= expiries && (v != variant::kill_holder || kills >= 5) &&
        std::none_of(children.begin(), children.end(), [](const child& c) { return c.paused; }))
      break;
    if (s.reuse_detected != 0) break;  // the chain is gone: no point waiting
    if (v == variant::restart_redis && !restarted && s.refreshes >= expiries / 2) {
      redis.restart();  // SIGKILL and start: the append-only file keeps the state
      restarted = true;
    }
    // One kill per generation, and only once the chain is stored again: a grace period
    // covers a holder killed at any point, not a take-over killed before it stored in turn
    // (two rotations lost in a row), which no server grace of one token can cover.
    const bool in_sync = s.refreshes > refreshes_at_kill &&
                         redis.command({"HGET", "nxsys-auth:{cluster}", "refresh_token"}) ==
                             server.current_refresh_token();
    if (v == variant::kill_holder && in_sync &&
        std::chrono::steady_clock::now() - last_kill > 600ms) {
      // The lease's value is "<pid>-<random>": kill its holder 0-40 ms into its refresh.
      const auto holder = redis.command({"GET", "nxsys-auth:{cluster}:lease"});
      const auto pid = static_cast<pid_t>(std::atoi(holder.c_str()));
      for (auto& c : children) {
        if (c.pid != pid || c.killed) continue;
        std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 41));
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &c.status, 0);
        c.killed = true;
        ++kills;
        refreshes_at_kill = server.stats().refreshes;
        last_kill = std::chrono::steady_clock::now();
        children.push_back(start_replica());  // a replacement joins the cluster
        break;
      }
    }
    if (v == variant::pause_holder) {
      // A holder that stopped itself with the lease stays stopped past lease_ttl (2 s): its
      // lease expires, another replica takes over and rotates the token it was about to send.
      for (auto& c : children) {
        int status = 0;
        if (!c.paused && !c.killed && ::waitpid(c.pid, &status, WUNTRACED | WNOHANG) == c.pid &&
            WIFSTOPPED(status)) {
          c.paused = true;
          c.paused_at = std::chrono::steady_clock::now();
        }
        if (c.paused && std::chrono::steady_clock::now() - c.paused_at > 3s) {
          ::kill(c.pid, SIGCONT);
          c.paused = false;
          ++c.pauses;
          ++pauses;
        }
      }
    }
    std::this_thread::sleep_for(5ms);
  }
  for (auto& c : children)
    if (c.paused) ::kill(c.pid, SIGCONT);
  const auto elapsed = std::chrono::steady_clock::now() - started;
  std::ofstream(stop_file).put('\n');
  for (auto& c : children)
    if (!c.killed) reap(c, 60s);

  const auto s = server.stats();
  BOOST_TEST_MESSAGE(
      "refreshes " << s.refreshes << " in " << std::chrono::duration<double>(elapsed).count()
                   << " s, min gap " << s.min_refresh_gap_ms << " ms, grace " << s.grace_refreshes
                   << ", kills " << kills << ", pauses " << pauses);
  BOOST_TEST(s.refreshes >= expiries);
  BOOST_TEST(s.reuse_detected == 0u);
  // One refresh per expiry: a 1 s token is refreshed 0.55-0.75 s into its life, so two
  // refreshes for one expiry would be milliseconds apart.
  BOOST_TEST(s.min_refresh_gap_ms >= 300u);
  if (v == variant::kill_holder) BOOST_TEST(kills >= 5);
  if (v == variant::restart_redis) BOOST_TEST(restarted);
  if (v == variant::pause_holder) BOOST_TEST(pauses >= 1);
  if (v != variant::kill_holder) BOOST_TEST(s.grace_refreshes == 0u);

  // Every caller of every replica that was not killed was served valid tokens, no error.
  int reported = 0;
  long handoffs = 0;
  for (auto& c : children) {
    if (c.killed) continue;
    const auto out = read_file(c.out_path);
    if (const auto at = out.find("store_handoffs="); at != std::string::npos)
      handoffs += std::atol(out.c_str() + at + 15);
    const bool ok = WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0 &&
                    out.find("\nok\n") != std::string::npos;
    BOOST_TEST(ok, c.out_path << ":\n" << out);
    if (ok) ++reported;
    // A resumed holder found its lease run out and withheld its request: the check right
    // before the write, and no other (a stale token sent would have been reuse).
    if (c.pauses != 0) {
      const auto at = out.find("leases_lost=");
      BOOST_TEST((at != std::string::npos && std::atoi(out.c_str() + at + 12) == c.pauses),
                 c.out_path << ":\n"
                            << out);
    }
  }
  BOOST_TEST(reported == replicas);  // the killed ones were replaced
  // The other replicas read each new state without the lease (about R - 1 per generation).
  BOOST_TEST(handoffs >= static_cast<long>(expiries));

  // The chain in Redis is the server's (or, after a kill in the window, the one it replaced).
  const auto stored = redis.command({"HGET", "nxsys-auth:{cluster}", "refresh_token"});
  BOOST_TEST(
      (stored == server.current_refresh_token() || stored == server.previous_refresh_token()),
      "stored " << stored << ", server " << server.current_refresh_token());
  std::filesystem::remove_all(dir);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(redis_cluster)

BOOST_AUTO_TEST_CASE(eight_replicas_refresh_once_per_expiry) {
  run_cluster(variant::plain);
}

BOOST_AUTO_TEST_CASE(a_lease_holder_killed_mid_refresh_is_taken_over) {
  run_cluster(variant::kill_holder);
}

BOOST_AUTO_TEST_CASE(a_redis_restart_costs_no_error) {
  run_cluster(variant::restart_redis);
}

BOOST_AUTO_TEST_CASE(a_holder_paused_past_its_lease_withholds_its_request) {
  run_cluster(variant::pause_holder);
}

BOOST_AUTO_TEST_SUITE_END()
