// SPDX-License-Identifier: BSL-1.0
// One slot per thread in an object, found without a lock: what lets a client's fast path touch
// only memory of its own thread, however many clients a thread reads. Internal.
#ifndef NXSYS_AUTH_LIB_PER_THREAD_HPP
#define NXSYS_AUTH_LIB_PER_THREAD_HPP

#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace nxsys::auth::detail {

/// A small number for each live thread of the process: 0, 1, 2, ... in the order threads first
/// ask, and given again to a later thread once its thread has exited, so that the numbers stay
/// as dense as the threads that are alive at once.
class thread_index {
 public:
  /// No number: the thread is exiting (a thread_local destructor that runs after ours).
  static constexpr std::uint32_t none = UINT32_MAX;

  /// This thread's number, or `none`. The first call of a thread takes a lock.
  static std::uint32_t get() noexcept {
    const auto v = tls_value_plus_one;
    return v != 0 ? v - 1 : assign();
  }

 private:
  static std::uint32_t assign() noexcept;
  // Constant-initialized where it is declared, so that reading it costs no TLS wrapper call;
  // 0: not assigned.
  static constinit inline thread_local std::uint32_t tls_value_plus_one = 0;
};

/// Slots of type T, one per thread index, made on a thread's first use and destroyed with the
/// table. Slots are cache-line aligned: a thread writing its own never slows another's reads.
/// Memory: the directory (16 pointers, 128 B) and, on first use by a thread with index i, the
/// chunk that holds it: chunk k holds 8 << k slots (indices 0-7, 8-23, 24-55, ...).
/// Thread-safe: local() from any thread; the destructor must not race with it.
template <class T>
class per_thread {
 public:
  static constexpr std::size_t first_chunk = 8;
  static constexpr std::size_t chunks = 16;  // 8 * (2^16 - 1) threads

  per_thread() = default;
  per_thread(const per_thread&) = delete;
  per_thread& operator=(const per_thread&) = delete;
  ~per_thread() {
    for (auto& c : dir_) delete[] c.load(std::memory_order_acquire);
  }

  /// This thread's slot, or nullptr when the thread has no index (exiting) or more threads
  /// are alive than the directory holds. Callers then take a path that needs no slot.
  T* local() {
    const std::uint32_t i = thread_index::get();
    if (i == thread_index::none) return nullptr;
    // Index i lives in chunk k = bit_width((i + 8) / 8) - 1, at (i + 8) - (8 << k).
    const std::size_t j = static_cast<std::size_t>(i) + first_chunk;
    const std::size_t k = static_cast<std::size_t>(std::bit_width(j / first_chunk)) - 1;
    if (k >= chunks) return nullptr;
    slot* c = dir_[k].load(std::memory_order_acquire);
    if (c == nullptr) c = make_chunk(k);
    return &c[j - (first_chunk << k)].value;
  }

 private:
  struct alignas(64) slot {
    T value{};
  };

  slot* make_chunk(std::size_t k) {
    auto fresh = std::make_unique<slot[]>(first_chunk << k);
    slot* expected = nullptr;
    if (dir_[k].compare_exchange_strong(expected, fresh.get(), std::memory_order_acq_rel))
      return fresh.release();
    return expected;  // another thread made it first
  }

  std::array<std::atomic<slot*>, chunks> dir_{};
};

}  // namespace nxsys::auth::detail

#endif
