// SPDX-License-Identifier: BSL-1.0
// detail::thread_index and detail::per_thread: one slot per live thread, numbers reused after
// a thread exits, nothing handed out to a thread that is exiting.
#include "per_thread.hpp"

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdint>
#include <latch>
#include <set>
#include <thread>
#include <vector>

using nxsys::auth::detail::per_thread;
using nxsys::auth::detail::thread_index;

namespace {

// Runs `n` threads at once: each calls `f(i)` and waits until all have, so that all are alive
// together when they call it.
template <class F>
void together(int n, F f) {
  std::latch all(n);
  std::vector<std::thread> ts;
  for (int i = 0; i < n; ++i)
    ts.emplace_back([&, i] {
      f(i);
      all.arrive_and_wait();
    });
  for (auto& t : ts) t.join();
}

}  // namespace

BOOST_AUTO_TEST_SUITE(per_thread_slots)

BOOST_AUTO_TEST_CASE(live_threads_have_distinct_numbers_reused_once_they_exit) {
  constexpr int n = 40;
  std::vector<std::uint32_t> first(n), second(n);
  together(n, [&](int i) { first[static_cast<std::size_t>(i)] = thread_index::get(); });
  BOOST_TEST(std::set(first.begin(), first.end()).size() == static_cast<std::size_t>(n));
  BOOST_TEST(std::count(first.begin(), first.end(), thread_index::none) == 0);
  // The same number on every call of a thread.
  bool same = false;
  std::thread([&] { same = thread_index::get() == thread_index::get(); }).join();
  BOOST_TEST(same);
  // The next threads take the numbers the first ones gave back: the numbers stay dense.
  together(n, [&](int i) { second[static_cast<std::size_t>(i)] = thread_index::get(); });
  BOOST_TEST(std::set(second.begin(), second.end()).size() == static_cast<std::size_t>(n));
  BOOST_TEST(*std::max_element(second.begin(), second.end()) <=
             *std::max_element(first.begin(), first.end()));
}

BOOST_AUTO_TEST_CASE(each_thread_has_its_own_aligned_slot_across_chunks) {
  constexpr int n = 60;  // beyond the first chunks (8, then 16, then 32 slots)
  per_thread<std::uint64_t> table;
  std::vector<std::uint64_t*> slots(n);
  std::vector<int> kept(n), fresh(n);  // Boost.Test asserts on this thread only
  together(n, [&](int i) {
    const auto k = static_cast<std::size_t>(i);
    auto* s = table.local();
    slots[k] = s;
    if (s == nullptr) return;
    fresh[k] = *s == 0u;  // value-initialized
    *s = static_cast<std::uint64_t>(i) + 1;
    kept[k] = table.local() == s;
  });
  BOOST_REQUIRE(std::count(slots.begin(), slots.end(), nullptr) == 0);
  BOOST_TEST(std::set(slots.begin(), slots.end()).size() == static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    const auto* s = slots[static_cast<std::size_t>(i)];
    BOOST_TEST(fresh[static_cast<std::size_t>(i)]);
    BOOST_TEST(kept[static_cast<std::size_t>(i)]);
    BOOST_TEST(reinterpret_cast<std::uintptr_t>(s) % 64 == 0u);
    // No thread wrote into another's slot.
    BOOST_TEST(*s == static_cast<std::uint64_t>(i) + 1);
  }
}

// A thread_local destroyed after the thread's number was given back (constructed before it was
// taken) must get no slot: the number may already be another thread's.
per_thread<int>* exiting_table = nullptr;
bool exiting_got_slot = true;
struct reads_on_exit {
  ~reads_on_exit() { exiting_got_slot = exiting_table->local() != nullptr; }
};

BOOST_AUTO_TEST_CASE(a_thread_that_is_exiting_gets_no_slot) {
  per_thread<int> table;
  exiting_table = &table;
  bool got_slot = false;
  std::thread([&] {
    static thread_local reads_on_exit probe;  // constructed first, so destroyed last
    (void)&probe;
    got_slot = table.local() != nullptr;
  }).join();
  BOOST_TEST(got_slot);
  BOOST_TEST(!exiting_got_slot);
}

BOOST_AUTO_TEST_SUITE_END()
