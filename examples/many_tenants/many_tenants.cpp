// SPDX-License-Identifier: BSL-1.0
// many_tenants: one process acting for many tenants, each with Nxsys credentials of its own.
// One client per credential, every client on the same io_context and the same threads.
//
// Why one client per credential, and exactly one: the single flight (one refresh however many
// callers) is the client's. Two clients of one credential refresh twice; with a server that
// rotates refresh tokens the second refresh presents a token the first consumed, and reuse
// detection revokes that tenant's chain. A client per request or per thread is the same
// mistake repeated. An idle client holds no thread and sends nothing, so the clients of all
// tenants share the threads of one io_context.
//
//   nxsys-example-many-tenants TENANTS_FILE [CALLERS_PER_TENANT [THREADS]]
//   tenant acme: calls 20, failed 0, refreshes 1, joined a refresh in flight 19
//   ...
//   tenants 50, calls 1000, failed 0, refreshes 50
//
// TENANTS_FILE is a JSON array with one object per tenant:
//   [{"name": "acme", "base_url": "https://api.nxsys.example", "client_id": "...",
//     "client_secret": "...", "refresh_token": "..."}, ...]
// It holds every tenant's secrets, so the program refuses it when it is readable by anyone but
// its owner (chmod 600); a real service would take them from its secret store or database.
//
// Every tenant's token is asked for by CALLERS_PER_TENANT (default 20) coroutines at once, on
// THREADS (default 2) threads, as request handlers would. Exit status: 0 when every call got a
// token and every tenant's client refreshed exactly once, 1 otherwise, 2 for an unusable file or
// configuration.
//
// The tokens live in memory here. Against a server that rotates refresh tokens, give each
// client a store of its own (a file_store per tenant, or a redis_store with the tenant as its
// `name`), as examples/session_restart and examples/redis_replicas do for one.
#include <nxsys/auth.hpp>

#include "../common/program_flags.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace auth = nxsys::auth;
namespace json = boost::json;

namespace {

// A tenant and its client. Built in place and never moved: its counters are atomics, which the
// callers of all threads update.
struct tenant {
  tenant(std::string n, asio::any_io_executor ex, auth::client_config cfg)
      : name(std::move(n)), client(std::move(ex), std::move(cfg)) {}

  std::string name;
  auth::client client;
  std::atomic<std::uint64_t> calls{0};
  std::atomic<std::uint64_t> failed{0};
  std::mutex mutex;         // guards first_error
  std::string first_error;  // what() of the first failure: never a secret
};

std::string read_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  // The file holds every tenant's secrets: anyone who can read it can act as every tenant.
  const auto perms = fs::status(path).permissions();
  if ((perms & (fs::perms::group_all | fs::perms::others_all)) != fs::perms::none)
    throw std::runtime_error(path + " is readable by others: chmod 600 it");
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A string member of a tenant's entry. Errors name the entry and the member, never a value.
std::string_view member(const json::value& entry, std::size_t index, const char* key) {
  const json::value* v = entry.is_object() ? entry.get_object().if_contains(key) : nullptr;
  if (v == nullptr || !v->is_string())
    throw std::runtime_error("tenant #" + std::to_string(index + 1) + ": no \"" + key +
                             "\" string");
  return std::string_view(v->get_string());
}

// One client per tenant, all on `ex`. Throws for a malformed file and, from the client's
// constructor, error_with_diagnostics(invalid_config) naming the field; the message says which
// tenant, never a secret.
void load_tenants(const std::string& path, const asio::any_io_executor& ex,
                  std::deque<tenant>& tenants) {
  const json::value doc = json::parse(read_file(path));
  if (!doc.is_array()) throw std::runtime_error(path + ": not a JSON array");
  for (std::size_t i = 0; i < doc.get_array().size(); ++i) {
    const json::value& entry = doc.get_array()[i];
    const std::string name(member(entry, i, "name"));
    auth::client_config cfg;
    cfg.token_url = auth::make_token_url(member(entry, i, "base_url"));
    cfg.client_id = member(entry, i, "client_id");
    cfg.client_secret = member(entry, i, "client_secret");
    cfg.refresh_token = member(entry, i, "refresh_token");
    try {
      tenants.emplace_back(name, ex, std::move(cfg));
    } catch (const auth::error_with_diagnostics& e) {
      throw std::runtime_error("tenant " + name + ": " + e.what());
    }
  }
}

// What a request handler of tenant `t` does before calling the API on the tenant's behalf.
asio::awaitable<void> handle_request(tenant& t) {
  ++t.calls;
  try {
    auth::access_token token = co_await t.client.token();
    // ... "Authorization: Bearer <token.value()>" on the tenant's API request ...
  } catch (const auth::error_with_diagnostics& e) {
    // One tenant's failure (a revoked authorization, say) is that tenant's alone: the other
    // clients go on.
    ++t.failed;
    std::lock_guard lock(t.mutex);
    if (t.first_error.empty()) t.first_error = e.what();
  }
}

int run(const std::string& path, unsigned callers, unsigned threads) {
  asio::io_context ctx(static_cast<int>(threads));
  std::deque<tenant> tenants;  // a deque: growing it never moves the tenants already in it
  load_tenants(path, ctx.get_executor(), tenants);

  // Every caller of every tenant at once, before any thread runs: the first caller of a tenant
  // starts its refresh, the others join it.
  for (tenant& t : tenants)
    for (unsigned i = 0; i < callers; ++i) asio::co_spawn(ctx, handle_request(t), asio::detached);

  std::vector<std::thread> pool;
  for (unsigned i = 1; i < threads; ++i) pool.emplace_back([&ctx] { ctx.run(); });
  ctx.run();  // this thread too; returns when every caller is done
  for (auto& thread : pool) thread.join();

  // client.stats() is each tenant's own account: one refresh however many callers, or the
  // pattern is broken (clients duplicated per request, per thread, ...).
  bool all_good = true;
  std::uint64_t calls = 0, failed = 0, refreshes = 0;
  for (tenant& t : tenants) {
    const auth::client_stats s = t.client.stats();
    std::cout << "tenant " << t.name << ": calls " << t.calls << ", failed " << t.failed
              << ", refreshes " << s.refreshes_started << ", joined a refresh in flight "
              << s.waiters_coalesced << '\n';
    if (!t.first_error.empty()) std::cerr << "tenant " << t.name << ": " << t.first_error << '\n';
    all_good = all_good && t.failed == 0 && s.refreshes_started == 1;
    calls += t.calls;
    failed += t.failed;
    refreshes += s.refreshes_started;
  }
  std::cout << "tenants " << tenants.size() << ", calls " << calls << ", failed " << failed
            << ", refreshes " << refreshes << '\n';
  return all_good ? 0 : 1;
}

unsigned positive(const char* text) {
  const int n = std::atoi(text);
  if (n <= 0 || n > 10'000)
    throw std::runtime_error("CALLERS_PER_TENANT and THREADS are numbers from 1 to 10000");
  return static_cast<unsigned>(n);
}

}  // namespace

int main(int argc, char** argv) {
  if (nxsys_examples::answered_version_or_help(
          argc, argv, "nxsys-example-many-tenants",
          "usage: nxsys-example-many-tenants TENANTS_FILE [CALLERS_PER_TENANT [THREADS]]\n"))
    return 0;
  try {
    if (argc < 2 || argc > 4)
      throw std::runtime_error(
          "usage: nxsys-example-many-tenants TENANTS_FILE [CALLERS_PER_TENANT [THREADS]]");
    const unsigned callers = argc > 2 ? positive(argv[2]) : 20;
    const unsigned threads = argc > 3 ? positive(argv[3]) : 2;
    return run(argv[1], callers, threads);
  } catch (const std::exception& e) {
    // A malformed file, an unusable configuration: nothing was sent.
    std::cerr << "many_tenants: " << e.what() << '\n';
    return 2;
  }
}
