// SPDX-License-Identifier: BSL-1.0
// nxsys-bench-summary: the targets of several benchmark runs (their --json files) in one
// compact table, misses included, so that the main job ends with one answer. Exit status 1
// when a correctness target failed or a file cannot be read, 0 otherwise (a performance miss
// is a measurement on a shared machine, not an error).
#include "bench_util.hpp"

#include <boost/json.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace json = boost::json;
namespace bench = nxsys::auth::bench;

namespace {

struct row {
  std::string result, benchmark, name, measured, goal;
};

// The rows of one file, or a message saying why there are none.
std::string read_rows(const std::string& path, std::vector<row>& rows) {
  std::ifstream in(path);
  if (!in) return "cannot read " + path;
  std::stringstream text;
  text << in.rdbuf();
  boost::system::error_code ec;
  const auto v = json::parse(text.str(), ec);
  if (ec || !v.is_object()) return path + " is not a benchmark's JSON output";
  const auto& o = v.as_object();
  const auto* name = o.if_contains("benchmark");
  const auto* targets = o.if_contains("targets");
  if (name == nullptr || !name->is_string() || targets == nullptr || !targets->is_array())
    return path + " has no \"benchmark\" name or \"targets\" list";
  for (const auto& t : targets->as_array()) {
    const auto* to = t.if_object();
    auto field = [&](const char* key) {
      const auto* f = to ? to->if_contains(key) : nullptr;
      return f && f->is_string() ? std::string(f->as_string()) : std::string("?");
    };
    rows.push_back({field("result"), std::string(name->as_string()), field("name"),
                    field("measured"), field("goal")});
  }
  return {};
}

constexpr std::string_view usage = R"(usage: nxsys-bench-summary RESULTS.json...
       nxsys-bench-summary --version

Prints the targets of each benchmark's --json output (nxsys-contention-bench,
nxsys-fast-path-bench, ...) in one table: PASS, MISS (a performance target this run missed) or
FAIL (a correctness target). Exit status 1 on a FAIL or an unreadable file.
)";

}  // namespace

int main(int argc, char** argv) {
  if (bench::print_version_if_asked("nxsys-bench-summary", argc, argv)) return 0;
  if (argc < 2 || std::string_view(argv[1]) == "--help") {
    std::cout << usage;
    return argc < 2 ? 2 : 0;
  }
  std::vector<row> rows;
  std::vector<std::string> problems;
  for (int i = 1; i < argc; ++i)
    if (auto p = read_rows(argv[i], rows); !p.empty()) problems.push_back(std::move(p));

  std::size_t widths[4] = {9, 6, 8, 4};  // benchmark, target, measured, goal
  int met = 0, missed = 0, failed = 0;
  for (const auto& r : rows) {
    widths[0] = std::max(widths[0], r.benchmark.size());
    widths[1] = std::max(widths[1], r.name.size());
    widths[2] = std::max(widths[2], r.measured.size());
    widths[3] = std::max(widths[3], r.goal.size());
    (r.result == "PASS" ? met : r.result == "MISS" ? missed : failed) += 1;
  }
  std::printf("\ntargets of this run: %d met, %d missed, %d failed\n", met, missed, failed);
  auto line = [&](const std::string& result, const std::string& b, const std::string& n,
                  const std::string& m, const std::string& g) {
    std::printf("%-6s %-*s  %-*s  %-*s  %s\n", result.c_str(), static_cast<int>(widths[0]),
                b.c_str(), static_cast<int>(widths[1]), n.c_str(), static_cast<int>(widths[2]),
                m.c_str(), g.c_str());
  };
  line("result", "benchmark", "target", "measured", "goal");
  for (const auto& r : rows) line(r.result, r.benchmark, r.name, r.measured, r.goal);
  for (const auto& p : problems) std::printf("(%s)\n", p.c_str());
  return failed == 0 && problems.empty() ? 0 : 1;
}
