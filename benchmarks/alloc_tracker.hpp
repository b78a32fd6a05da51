// SPDX-License-Identifier: BSL-1.0
// Heap attribution for the benchmarks: answers "how many heap bytes does one waiting token()
// call hold inside the SDK" directly (contention bench), instead of subtracting RSS figures
// that also hold the caller's own coroutine frames, and "how many allocations does one API
// request make" (session bench).
//
// Asio allocates its frames and operations with std::aligned_alloc, not operator new, so the
// counting sits under malloc itself: the program that includes this header (exactly one
// translation unit) replaces malloc, free, calloc, realloc, aligned_alloc, posix_memalign and
// memalign by ELF symbol interposition, as glibc documents for replacement allocators, and
// forwards every call to glibc's own implementation (found with dlsym(RTLD_NEXT)).
#ifndef NXSYS_AUTH_BENCHMARKS_ALLOC_TRACKER_HPP
#define NXSYS_AUTH_BENCHMARKS_ALLOC_TRACKER_HPP

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <dlfcn.h>
#include <malloc.h>

namespace nxsys::auth::bench::alloc {

/// Counting is off unless switched on: other measurements then pay one relaxed load per call.
inline std::atomic<bool> enabled{false};
/// Net bytes (malloc_usable_size) allocated minus freed by threads while marked `in_sdk`.
inline std::atomic<std::int64_t> sdk_bytes{0};
/// Set by the caller around its token() call.
inline thread_local bool in_sdk = false;
/// Set by a thread whose allocation calls are to be counted, whatever their size or caller (the
/// session bench's io_context threads): a plain thread-local increment, so that the design
/// that allocates more is not also charged for the counting.
inline thread_local bool count_calls = false;
/// The calling thread's allocations (malloc, calloc, realloc, aligned and memalign calls that
/// returned memory) while count_calls was set.
inline thread_local std::uint64_t calls = 0;

/// Bytes in use on the heap (all arenas, including mmap'ed blocks).
inline std::int64_t heap_in_use() {
  const auto mi = mallinfo2();
  return static_cast<std::int64_t>(mi.uordblks + mi.hblkhd);
}

namespace detail {

struct real_allocator {
  void* (*malloc)(std::size_t) = nullptr;
  void (*free)(void*) = nullptr;
  void* (*calloc)(std::size_t, std::size_t) = nullptr;
  void* (*realloc)(void*, std::size_t) = nullptr;
  void* (*aligned_alloc)(std::size_t, std::size_t) = nullptr;
  int (*posix_memalign)(void**, std::size_t, std::size_t) = nullptr;
  void* (*memalign)(std::size_t, std::size_t) = nullptr;
};

// dlsym itself may allocate (calloc) before the real functions are known: those few bytes come
// from a static buffer and are never freed.
alignas(std::max_align_t) inline unsigned char bootstrap[8192];
inline std::size_t bootstrap_used = 0;
inline bool resolving = false;

inline void* bootstrap_alloc(std::size_t n) {
  n = (n + alignof(std::max_align_t) - 1) / alignof(std::max_align_t) * alignof(std::max_align_t);
  if (bootstrap_used + n > sizeof bootstrap) return nullptr;
  void* p = bootstrap + bootstrap_used;
  bootstrap_used += n;
  return p;
}

inline bool is_bootstrap(const void* p) {
  return p >= static_cast<const void*>(bootstrap) &&
         p < static_cast<const void*>(bootstrap + sizeof bootstrap);
}

template <class F>
void resolve(F& f, const char* name) {
  f = reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}

inline real_allocator& real() {
  static real_allocator r = [] {
    resolving = true;
    real_allocator a;
    resolve(a.malloc, "malloc");
    resolve(a.free, "free");
    resolve(a.calloc, "calloc");
    resolve(a.realloc, "realloc");
    resolve(a.aligned_alloc, "aligned_alloc");
    resolve(a.posix_memalign, "posix_memalign");
    resolve(a.memalign, "memalign");
    resolving = false;
    return a;
  }();
  return r;
}

inline void* note(void* p) {
  if (p != nullptr && count_calls) ++calls;
  if (p != nullptr && in_sdk && enabled.load(std::memory_order_relaxed))
    sdk_bytes.fetch_add(static_cast<std::int64_t>(malloc_usable_size(p)),
                        std::memory_order_relaxed);
  return p;
}

inline void unnote(void* p) {
  if (p != nullptr && in_sdk && enabled.load(std::memory_order_relaxed))
    sdk_bytes.fetch_sub(static_cast<std::int64_t>(malloc_usable_size(p)),
                        std::memory_order_relaxed);
}

}  // namespace detail
}  // namespace nxsys::auth::bench::alloc

extern "C" {

void* malloc(std::size_t n) {
  namespace d = nxsys::auth::bench::alloc::detail;
  if (d::resolving) return d::bootstrap_alloc(n);
  return d::note(d::real().malloc(n));
}

void free(void* p) {
  namespace d = nxsys::auth::bench::alloc::detail;
  if (p == nullptr || d::is_bootstrap(p)) return;
  d::unnote(p);
  d::real().free(p);
}

void* calloc(std::size_t count, std::size_t size) {
  namespace d = nxsys::auth::bench::alloc::detail;
  if (d::resolving) return d::bootstrap_alloc(count * size);  // static storage: already zero
  return d::note(d::real().calloc(count, size));
}

void* realloc(void* p, std::size_t n) {
  namespace d = nxsys::auth::bench::alloc::detail;
  namespace a = nxsys::auth::bench::alloc;
  if (d::is_bootstrap(p)) {
    void* q = malloc(n);
    const auto left = static_cast<std::size_t>(d::bootstrap + sizeof d::bootstrap -
                                               static_cast<unsigned char*>(p));
    if (q != nullptr) std::memcpy(q, p, n < left ? n : left);
    return q;
  }
  const bool counted = p != nullptr && a::in_sdk && a::enabled.load(std::memory_order_relaxed);
  const auto old_size = counted ? static_cast<std::int64_t>(malloc_usable_size(p)) : 0;
  void* q = d::real().realloc(p, n);
  if (q == nullptr && n != 0) return nullptr;  // p is untouched
  a::sdk_bytes.fetch_sub(old_size, std::memory_order_relaxed);
  return d::note(q);
}

void* aligned_alloc(std::size_t align, std::size_t n) {
  namespace d = nxsys::auth::bench::alloc::detail;
  return d::note(d::real().aligned_alloc(align, n));
}

int posix_memalign(void** out, std::size_t align, std::size_t n) {
  namespace d = nxsys::auth::bench::alloc::detail;
  const int rc = d::real().posix_memalign(out, align, n);
  if (rc == 0) d::note(*out);
  return rc;
}

void* memalign(std::size_t align, std::size_t n) {
  namespace d = nxsys::auth::bench::alloc::detail;
  return d::note(d::real().memalign(align, n));
}
}

#endif
