// SPDX-License-Identifier: BSL-1.0
#include "per_thread.hpp"

#include <mutex>
#include <vector>

namespace nxsys::auth::detail {

namespace {

struct registry {
  std::mutex mu;
  std::vector<std::uint32_t> free;  // numbers of exited threads, the last freed reused first
  std::uint32_t next = 0;
};

// Never destroyed: threads may exit after static destruction began.
registry& the_registry() {
  static auto* r = new registry;
  return *r;
}

// Gives the number back when its thread exits.
struct releaser {
  std::uint32_t value = thread_index::none;
  ~releaser() {
    if (value == thread_index::none) return;
    auto& r = the_registry();
    try {
      std::lock_guard lk(r.mu);
      r.free.push_back(value);
    } catch (...) {  // no memory to keep it: the number is not reused, nothing else breaks
    }
  }
};

}  // namespace

std::uint32_t thread_index::assign() noexcept {
  // Constructed on first use in this thread; destroyed at its exit. A second call after the
  // destructor ran (another thread_local's destructor reading a client) finds `exited`.
  static thread_local bool exited = false;
  if (exited) return none;
  struct guard {
    releaser r;
    ~guard() {
      exited = true;
      tls_value_plus_one = 0;
    }
  };
  static thread_local guard g;
  if (g.r.value == none) {
    auto& r = the_registry();
    try {
      std::lock_guard lk(r.mu);
      if (!r.free.empty()) {
        g.r.value = r.free.back();
        r.free.pop_back();
      } else if (r.next != none) {
        g.r.value = r.next++;
      }
    } catch (...) {  // a vector that cannot grow, a lock that fails: no slot, the slow path
      return none;
    }
  }
  if (g.r.value == none) return none;
  tls_value_plus_one = g.r.value + 1;
  return g.r.value;
}

}  // namespace nxsys::auth::detail
