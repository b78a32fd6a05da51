// SPDX-License-Identifier: BSL-1.0
// nxsys-fast-path-bench: the cost of reading a fresh token, on 1 and 2 threads, beside the
// designs a user would otherwise write. Every coroutine candidate is one co_await of a coroutine
// returning the result, in a loop in one coroutine per thread; every thread runs its own
// io_context, so the only thing two threads can share is the candidate itself:
//
//   floor                 co_await of an awaitable returning a pointer (the least a coroutine
//                         API costs)
//   client.token()        nxsys::auth, one client shared by every thread
//   mutex                 a std::mutex-guarded cache handing out a shared_ptr copy
//   shared_mutex          the same with a reader lock
//   shared_ptr            no lock, but every reader copies one shared_ptr (one shared count)
//   many tenants          token() over 1,000 clients read in turn (a gateway holding one
//                         client per credential), beside client.token() of one client
//
// and, for completion-handler users, a chain of async_token(callback) calls beside the same
// chain of asio::post(ctx, callback): async_token's fast path completes through the executor
// too, so that post is its floor.
#include "bench_util.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <array>
#include <benchmark/benchmark.h>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <malloc.h>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <tuple>
#include <unistd.h>
#include <utility>
#include <vector>

namespace asio = boost::asio;
namespace json = boost::json;
namespace na = nxsys::auth;
namespace bench = nxsys::auth::bench;

namespace {

constexpr int max_threads = 2;
constexpr std::size_t tenant_count = 1000;

struct token_copy {
  std::string value = std::string(40, 't');
};

std::mutex cache_mutex;
std::shared_mutex cache_shared_mutex;
std::shared_ptr<const token_copy> cached = std::make_shared<const token_copy>();
const int floor_value = 42;

asio::awaitable<const int*> floor_op() {
  co_return &floor_value;
}

asio::awaitable<std::shared_ptr<const token_copy>> mutex_op() {
  std::lock_guard lk(cache_mutex);
  co_return cached;
}

asio::awaitable<std::shared_ptr<const token_copy>> shared_mutex_op() {
  std::shared_lock lk(cache_shared_mutex);
  co_return cached;
}

asio::awaitable<std::shared_ptr<const token_copy>> shared_ptr_op() {
  co_return cached;
}

// What benchmark thread i owns. A plain callback completes on the executor of the client that
// took it, so the async_token chain of a thread needs a client of its own on that thread's
// io_context; token() against the shared client never touches an executor on a fresh token.
struct thread_env {
  asio::io_context ctx{1};
  std::optional<na::client> own_client;
};

void rethrow(std::exception_ptr e) {
  if (e) std::rethrow_exception(e);
}

// One coroutine on this thread's io_context runs the benchmark loop, awaiting `read()` once
// per iteration; Google Benchmark's loop works there because ctx.run() keeps the coroutine on
// the benchmark thread until the loop ends.
template <class Read, class Check>
void await_loop(benchmark::State& state, thread_env& env, Read read, Check check) {
  env.ctx.restart();
  asio::co_spawn(
      env.ctx,
      [&]() -> asio::awaitable<void> {
        for (auto _ : state) {
          const auto result = co_await read();
          bool ok = check(result);
          benchmark::DoNotOptimize(ok);
        }
      },
      rethrow);
  env.ctx.run();
  state.SetItemsProcessed(state.iterations());
}

// The benchmark loop unrolled into a chain of completion handlers: each completion advances
// the loop and starts the next operation.
struct chain {
  explicit chain(benchmark::State& s) : it(s.begin()), end(s.end()) {}
  bool advance() {
    ++it;
    return it != end;
  }
  benchmark::State::StateIterator it;
  benchmark::State::StateIterator end;
  std::uint64_t errors = 0;
};

struct post_step {
  asio::io_context* ctx;
  chain* c;
  void operator()() const {
    if (c->advance()) asio::post(*ctx, *this);
  }
};

struct token_step {
  na::client* client;
  chain* c;
  void operator()(boost::system::error_code ec, const na::access_token& t) const {
    if (ec || t.value().empty()) ++c->errors;
    if (c->advance()) client->async_token(*this);
  }
};

template <class Start>
void callback_chain(benchmark::State& state, thread_env& env, Start start) {
  env.ctx.restart();
  chain c(state);
  if (c.it != c.end) start(c);
  env.ctx.run();
  if (c.errors) state.SkipWithError("async_token completed with an error");
  state.SetItemsProcessed(state.iterations());
}

struct row {
  double items_per_second = 0;
  double ns_per_op = 0;  // as one thread sees it: its own iterations over the wall time
};

// The console output as usual, plus the figures of every run for the summary.
class recording_reporter : public benchmark::ConsoleReporter {
 public:
  using ConsoleReporter::ConsoleReporter;

  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& r : runs) {
      if (r.error_occurred) continue;
      // With --benchmark_repetitions the median stands for the run; otherwise the single run.
      const bool median = r.run_type == Run::RT_Aggregate && r.aggregate_name == "median";
      if (r.run_type != Run::RT_Iteration && !median) continue;
      const auto ips = r.counters.find("items_per_second");
      if (ips == r.counters.end() || ips->second.value <= 0) continue;
      row& out = rows_[{r.run_name.function_name, r.threads}];
      out.items_per_second = ips->second.value;
      out.ns_per_op = 1e9 * static_cast<double>(r.threads) / ips->second.value;
    }
  }

  const row* find(const std::string& name, int threads) const {
    auto it = rows_.find({name, threads});
    return it == rows_.end() ? nullptr : &it->second;
  }

 private:
  std::map<std::pair<std::string, std::int64_t>, row> rows_;
};

struct candidate {
  std::string id;     // the benchmark's name, for --benchmark_filter
  std::string label;  // its row in the summary
  std::string floor;  // the id of the candidate the ratio column divides by
};

// Google Benchmark's own flags go through; --json FILE is ours.
std::optional<std::string> take_json_flag(int& argc, char** argv) {
  std::optional<std::string> path;
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--json") == 0 && i + 1 < argc) {
      path = argv[++i];
    } else if (std::strncmp(argv[i], "--json=", 7) == 0) {
      path = argv[i] + 7;
    } else {
      argv[out++] = argv[i];
    }
  }
  argc = out;
  return path;
}

void print_help() {
  std::printf(
      "usage: nxsys-fast-path-bench [--json FILE] [Google Benchmark flags]\n\n"
      "ns per fresh-token read on 1 and 2 threads, nxsys::auth beside a mutex, a shared_mutex,\n"
      "a shared shared_ptr and the floors of a co_await and of an asio::post.\n\n"
      "  --json FILE   write the summary as JSON\n"
      "  --version     show the version\n\n");
  benchmark::PrintDefaultHelp();
}

}  // namespace

int main(int argc, char** argv) try {
  if (bench::print_version_if_asked("nxsys-fast-path-bench", argc, argv)) return 0;
  const auto json_path = take_json_flag(argc, argv);
  benchmark::Initialize(&argc, argv, print_help);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;

  na::testing::mock_server server;
  asio::io_context client_ctx;
  na::client client(client_ctx.get_executor(), bench::config_for(server));
  std::array<thread_env, max_threads> envs;
  for (auto& env : envs) env.own_client.emplace(env.ctx.get_executor(), bench::config_for(server));
  // Every client fetches its token now, so that every measured read finds it fresh.
  asio::co_spawn(
      client_ctx, [&]() -> asio::awaitable<void> { co_await client.token(); }, rethrow);
  client_ctx.run();
  for (auto& env : envs) {
    asio::co_spawn(
        env.ctx, [&]() -> asio::awaitable<void> { co_await env.own_client->token(); }, rethrow);
    env.ctx.run();
  }

  // Many tenants: what an idle client costs, and what each thread's first read adds to it.
  auto heap = [] {
    const auto mi = mallinfo2();
    return static_cast<double>(mi.uordblks + mi.hblkhd);
  };
  const double heap_before = heap();
  std::vector<na::client> tenants;
  tenants.reserve(tenant_count);
  for (std::size_t i = 0; i < tenant_count; ++i)
    tenants.emplace_back(client_ctx.get_executor(), bench::config_for(server));
  const double idle_client_bytes = (heap() - heap_before) / tenant_count;
  for (auto& t : tenants)
    asio::co_spawn(
        client_ctx, [&t]() -> asio::awaitable<void> { co_await t.token(); }, rethrow);
  client_ctx.restart();
  client_ctx.run();
  const double heap_fetched = heap();
  asio::co_spawn(
      client_ctx,
      [&]() -> asio::awaitable<void> {
        for (auto& t : tenants) co_await t.token();
      },
      rethrow);
  client_ctx.restart();
  client_ctx.run();
  const double thread_client_bytes = (heap() - heap_fetched) / tenant_count;

  const std::vector<candidate> candidates = {
      {"floor", "floor (co_await returning a pointer)", ""},
      {"token", "nxsys::auth client.token()", "floor"},
      {"tenants", "token() over 1,000 clients", "token"},
      {"mutex", "std::mutex cache", "floor"},
      {"shared_mutex", "std::shared_mutex cache", "floor"},
      {"shared_ptr", "shared shared_ptr copy", "floor"},
      {"post_floor", "floor (asio::post callback chain)", ""},
      {"async_token", "client.async_token(callback) chain", "post_floor"},
  };
  auto reg = [&](const std::string& name, auto fn) {
    benchmark::RegisterBenchmark(name.c_str(),
                                 [&envs, fn](benchmark::State& state) {
                                   fn(state, envs[static_cast<std::size_t>(state.thread_index())]);
                                 })
        ->Threads(1)
        ->Threads(max_threads)
        ->UseRealTime();
  };
  reg(candidates[0].id, [](benchmark::State& state, thread_env& env) {
    await_loop(state, env, floor_op, [](const int* p) { return *p != 0; });
  });
  reg(candidates[1].id, [&client](benchmark::State& state, thread_env& env) {
    await_loop(
        state, env, [&client] { return client.token(); },
        [](const na::access_token& t) { return !t.value().empty(); });
  });
  reg(candidates[2].id, [&tenants](benchmark::State& state, thread_env& env) {
    // The threads start half the ring apart, then each reads the clients in turn.
    std::size_t i = static_cast<std::size_t>(state.thread_index()) * tenants.size() / max_threads;
    await_loop(
        state, env,
        [&] {
          if (++i == tenants.size()) i = 0;
          return tenants[i].token();
        },
        [](const na::access_token& t) { return !t.value().empty(); });
  });
  auto non_empty = [](const std::shared_ptr<const token_copy>& t) { return !t->value.empty(); };
  reg(candidates[3].id, [non_empty](benchmark::State& state, thread_env& env) {
    await_loop(state, env, mutex_op, non_empty);
  });
  reg(candidates[4].id, [non_empty](benchmark::State& state, thread_env& env) {
    await_loop(state, env, shared_mutex_op, non_empty);
  });
  reg(candidates[5].id, [non_empty](benchmark::State& state, thread_env& env) {
    await_loop(state, env, shared_ptr_op, non_empty);
  });
  reg(candidates[6].id, [](benchmark::State& state, thread_env& env) {
    callback_chain(state, env, [&env](chain& c) { asio::post(env.ctx, post_step{&env.ctx, &c}); });
  });
  reg(candidates[7].id, [](benchmark::State& state, thread_env& env) {
    callback_chain(state, env, [&env](chain& c) {
      env.own_client->async_token(token_step{&*env.own_client, &c});
    });
  });

  recording_reporter reporter(isatty(STDOUT_FILENO) ? benchmark::ConsoleReporter::OO_Color
                                                    : benchmark::ConsoleReporter::OO_None);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();

  std::printf("\n%-38s %10s %10s %13s %13s %7s %10s\n", "fresh-token read", "ns/op 1T", "ns/op 2T",
              "ops/s 1T", "ops/s 2T", "2T/1T", "/floor 1T");
  json::array rows;
  for (const auto& c : candidates) {
    const row* one = reporter.find(c.id, 1);
    const row* two = reporter.find(c.id, max_threads);
    const row* floor1 = c.floor.empty() ? nullptr : reporter.find(c.floor, 1);
    if (!one && !two) continue;  // filtered out or failed
    json::object o{{"name", c.id}, {"label", c.label}};
    if (!c.floor.empty()) o["floor"] = c.floor;
    std::printf("%-38s", c.label.c_str());
    for (const row* r : {one, two}) {
      if (r)
        std::printf(" %10.1f", r->ns_per_op);
      else
        std::printf(" %10s", "-");
    }
    for (const row* r : {one, two}) {
      if (r)
        std::printf(" %13.0f", r->items_per_second);
      else
        std::printf(" %13s", "-");
    }
    if (one) {
      o["ns_per_op_1t"] = one->ns_per_op;
      o["ops_per_s_1t"] = one->items_per_second;
    }
    if (two) {
      o["ns_per_op_2t"] = two->ns_per_op;
      o["ops_per_s_2t"] = two->items_per_second;
    }
    if (one && two) {
      o["throughput_2t_over_1t"] = two->items_per_second / one->items_per_second;
      std::printf(" %7.2f", two->items_per_second / one->items_per_second);
    } else {
      std::printf(" %7s", "-");
    }
    if (one && floor1) {
      o["ratio_to_floor_1t"] = one->ns_per_op / floor1->ns_per_op;
      std::printf(" %9.2fx", one->ns_per_op / floor1->ns_per_op);
    }
    std::printf("\n");
    rows.push_back(std::move(o));
  }
  std::printf("(ns/op: one thread's iterations over the wall time; ops/s: all threads together)\n");

  bench::target_list targets;
  const row* tok1 = reporter.find(candidates[1].id, 1);
  const row* tok2 = reporter.find(candidates[1].id, max_threads);
  const row* floor1 = reporter.find(candidates[0].id, 1);
  if (tok1 && floor1) {
    const double ratio = tok1->ns_per_op / floor1->ns_per_op;
    targets.add("fast path: token() / bare co_await floor, T=1", bench::fmt("%.2fx", ratio),
                "<= 1.5x", ratio <= 1.5);
  }
  const row* ten1 = reporter.find(candidates[2].id, 1);
  const row* ten2 = reporter.find(candidates[2].id, max_threads);
  for (auto [ten, tok, t] : {std::tuple{ten1, tok1, 1}, std::tuple{ten2, tok2, max_threads}}) {
    if (ten == nullptr || tok == nullptr) continue;
    const double ratio = ten->ns_per_op / tok->ns_per_op;
    targets.add("many tenants: token() over " + std::to_string(tenant_count) +
                    " clients / one client, T=" + std::to_string(t),
                bench::fmt("%.2fx", ratio), "<= 1.5x", ratio <= 1.5);
  }
  if (tok1 && tok2) {
    const double scaling = tok2->items_per_second / tok1->items_per_second;
    targets.add("fast path: token() throughput T=" + std::to_string(max_threads) + " / T=1",
                bench::fmt("%.2f", scaling), ">= 1.8", scaling >= 1.8);
  }
  targets.print();

  std::printf(
      "\nmany tenants: %.0f heap bytes per idle client (a token fetched: %.0f), and %.0f "
      "per client for each thread that reads it (its slot and its copy of the token)\n",
      idle_client_bytes, (heap_fetched - heap_before) / tenant_count, thread_client_bytes);
  std::uint64_t tenant_slow_path = 0, tenant_refreshes = 0;
  for (const auto& t : tenants) {
    const auto st = t.stats();
    tenant_slow_path += st.slow_path_calls;
    tenant_refreshes += st.refreshes_started;
  }
  std::printf("tenants: %llu refresh(es) for %zu clients, %llu slow-path calls\n",
              static_cast<unsigned long long>(tenant_refreshes), tenant_count,
              static_cast<unsigned long long>(tenant_slow_path));

  const auto shared_stats = client.stats();
  std::uint64_t own_slow_path = 0;
  for (const auto& env : envs) own_slow_path += env.own_client->stats().slow_path_calls;
  std::printf(
      "\nshared client: %llu refresh(es), %llu slow-path calls over all reads "
      "(the async_token clients: %llu)\n",
      static_cast<unsigned long long>(shared_stats.refreshes_started),
      static_cast<unsigned long long>(shared_stats.slow_path_calls),
      static_cast<unsigned long long>(own_slow_path));

  if (json_path) {
    bench::write_json(
        *json_path,
        json::object{{"benchmark", "fast_path"},
                     {"machine", bench::machine_info()},
                     {"candidates", std::move(rows)},
                     {"targets", targets.json()},
                     {"client_stats", bench::to_json(shared_stats)},
                     {"async_token_clients_slow_path_calls", own_slow_path},
                     {"tenants", json::object{{"clients", tenant_count},
                                              {"idle_client_bytes", idle_client_bytes},
                                              {"per_thread_client_bytes", thread_client_bytes},
                                              {"refreshes", tenant_refreshes},
                                              {"slow_path_calls", tenant_slow_path}}}});
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "nxsys-fast-path-bench: %s\n", e.what());
  return 1;
}
