// SPDX-License-Identifier: BSL-1.0
// "Many waiters, one operation": waiters attach to the one flight in progress and all complete
// with its result, each on its own executor. Knows nothing of OAuth.
#ifndef NXSYS_AUTH_DETAIL_SINGLE_FLIGHT_HPP
#define NXSYS_AUTH_DETAIL_SINGLE_FLIGHT_HPP

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_allocator.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/recycling_allocator.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <type_traits>
#include <utility>

namespace nxsys::auth::detail {

/// Counters of a single_flight, read under its lock.
struct single_flight_counters {
  std::uint64_t flights = 0;      ///< operations started (first waiter of a flight)
  std::uint64_t coalesced = 0;    ///< waiters that joined a flight already in progress
  std::uint64_t cancelled = 0;    ///< waiters completed early by their cancellation slot
  std::uint64_t max_waiters = 0;  ///< most waiters attached to one flight
};

/// True when `ex` is (a type-erased copy of) `io_ex`: a handler on it may be run directly by a
/// function already running on io_ex.
template <class Executor>
bool same_executor(const Executor& ex, const boost::asio::any_io_executor& io_ex) {
  if constexpr (std::is_same_v<Executor, boost::asio::any_io_executor>) {
    return ex == io_ex;
  } else {
    const auto* target = io_ex.template target<Executor>();
    return target != nullptr && *target == ex;
  }
}

/// Calls a waiter's handler with the flight's result as is: handler(ec, value).
struct plain_call {
  template <class Handler, class R>
  void operator()(Handler&& h, boost::system::error_code ec, const R& value) const {
    std::forward<Handler>(h)(ec, value);
  }
};

/// Caller-owned room for one waiter (see single_flight::make_waiter): it must outlive the
/// waiter, which ends before its handler runs.
template <std::size_t Size>
struct waiter_storage {
  alignas(std::max_align_t) std::byte bytes[Size];
};

/// Thread-safe. R must be default-constructible and copyable (it is copied to every waiter).
///
/// A waiter is a node holding its handler, like an Asio operation: allocated with the handler's
/// associated allocator (Asio's recycling allocator by default), or placed by the caller in
/// storage it owns until the handler runs (a coroutine's frame: no allocation at all). Waiters
/// whose handler runs on the flight's own I/O executor are completed in chunks, one posted function
/// per chunk resuming each of them in turn, as a timer's cancel() completes its waiters. Other
/// waiters are each posted to their own executor, whose context they keep running while they
/// wait.
///
/// Cancellation: a waiter's slot (any cancellation type: removing a waiter has no side effect)
/// completes only that waiter with operation_aborted; the flight goes on. As for every Asio
/// operation, the signal must be emitted from the waiter's own executor.
template <class R>
class single_flight {
 public:
  /// Waiters completed by one posted function.
  static constexpr std::size_t chunk_size = 32;

  /// A waiting handler. Owned by the flight while linked, then by whatever completes it.
  class waiter {
   public:
    /// Owns a waiter not yet joined: destroy() frees it.
    struct deleter {
      void operator()(waiter* w) const noexcept { w->destroy(); }
    };
    virtual ~waiter() {
      // Whichever way the waiter ends (completed, or destroyed with an io_context that never
      // ran it), no cancellation handler may outlive it in the waiter's slot.
      if (slot_.is_connected()) slot_.clear();
    }
    waiter(const waiter&) = delete;
    waiter& operator=(const waiter&) = delete;

    /// The handler's executor is the flight's I/O executor.
    bool on_io_executor() const noexcept { return on_io_executor_; }
    /// Destroys the waiter without running its handler and frees its node. The handler is
    /// destroyed last, once the node is gone: it may own the node's storage.
    virtual void destroy() noexcept = 0;
    /// Runs the handler now, after destroying this. The caller is running on the handler's
    /// executor (for on_io_executor() waiters: in a function posted to the I/O executor).
    virtual void invoke(boost::system::error_code ec, const R& value) = 0;
    /// Schedules invoke() on the handler's own executor; never runs it inline.
    virtual void post_invoke(const boost::asio::any_io_executor& io_ex,
                             boost::system::error_code ec, R value) = 0;

   protected:
    explicit waiter(bool on_io_executor) : on_io_executor_(on_io_executor) {}
    boost::asio::cancellation_slot slot_;  // connected while our cancel_handler is installed

   private:
    friend class single_flight;
    waiter* prev = nullptr;
    waiter* next = nullptr;
    std::uint64_t flight = 0;  // linked into the list only while this is the flight in progress
    bool linked = false;
    const bool on_io_executor_;
  };

 private:
  struct state {
    explicit state(boost::asio::any_io_executor ex) : io_ex(std::move(ex)) {}
    const boost::asio::any_io_executor io_ex;
    std::mutex mu;
    waiter* head = nullptr;
    waiter* tail = nullptr;
    std::uint64_t size = 0;
    std::uint64_t flight = 1;  // take_all() moves it on, detaching every waiter at once
    bool in_flight = false;
    // Keeps io_ex's context running while a flight has waiters that complete through it.
    boost::asio::any_io_executor work;
    single_flight_counters counters;

    bool is_linked(const waiter* w) const noexcept { return w->linked && w->flight == flight; }
    void link(waiter* w) noexcept {
      w->flight = flight;
      w->prev = tail;
      w->next = nullptr;
      (tail ? tail->next : head) = w;
      tail = w;
      w->linked = true;
      ++size;
    }
    void unlink(waiter* w) noexcept {
      (w->prev ? w->prev->next : head) = w->next;
      (w->next ? w->next->prev : tail) = w->prev;
      w->prev = w->next = nullptr;
      w->linked = false;
      --size;
    }
  };

  // Completes a chain of on_io_executor() waiters (linked through `next`) in one posted
  // function. Waiters it never reached (its io_context destroyed, a handler that threw) are
  // destroyed or re-posted, never leaked.
  struct chunk_op {
    boost::asio::any_io_executor io_ex;
    waiter* head;
    boost::system::error_code ec;
    R value;

    chunk_op(boost::asio::any_io_executor ex, waiter* h, boost::system::error_code e, R v)
        : io_ex(std::move(ex)), head(h), ec(e), value(std::move(v)) {}
    chunk_op(chunk_op&& o) noexcept
        : io_ex(std::move(o.io_ex)),
          head(std::exchange(o.head, nullptr)),
          ec(o.ec),
          value(std::move(o.value)) {}
    chunk_op& operator=(chunk_op&&) = delete;
    ~chunk_op() {
      while (head != nullptr) std::exchange(head, head->next)->destroy();
    }
    void operator()() {
      try {
        while (head != nullptr) std::exchange(head, head->next)->invoke(ec, value);
      } catch (...) {
        if (head != nullptr) boost::asio::post(io_ex, std::move(*this));
        throw;
      }
    }
  };

  // A waiter's node lives in the caller's storage: freeing it only runs its destructor.
  struct caller_storage {};

  // Alloc: the handler's associated allocator (rebound to bytes), or caller_storage.
  template <class Handler, class Call, class Alloc>
  class handler_waiter final : public waiter {
    using handler_executor =
        boost::asio::associated_executor_t<Handler, boost::asio::any_io_executor>;
    using work_executor = std::decay_t<decltype(boost::asio::prefer(
        std::declval<handler_executor>(), boost::asio::execution::outstanding_work.tracked))>;

   public:
    handler_waiter(Handler&& h, Call&& call, const boost::asio::any_io_executor& io_ex, bool on_io,
                   const Alloc& alloc)
        : waiter(on_io), handler_(std::move(h)), call_(std::move(call)), alloc_(alloc) {
      if (!on_io) {
        work_ = std::make_unique<work_executor>(
            boost::asio::prefer(boost::asio::get_associated_executor(handler_, io_ex),
                                boost::asio::execution::outstanding_work.tracked));
      }
    }

    // The slot first: destroying the handler may free the signal the slot belongs to (a
    // coroutine frame that owns it, destroyed with an io_context that never ran us).
    ~handler_waiter() override {
      if (this->slot_.is_connected()) this->slot_.clear();
      this->slot_ = boost::asio::cancellation_slot();  // the base must not touch it again
    }

    void destroy() noexcept override {
      [[maybe_unused]] Handler h(std::move(handler_));
      free_node();
    }  // h last: it may own the node's storage (the frame of the coroutine it resumes)

    void invoke(boost::system::error_code ec, const R& value) override {
      Handler h(std::move(handler_));
      Call call(std::move(call_));
      free_node();  // clears the slot before the handler runs, and frees the node as Asio does
      call(std::move(h), ec, value);
    }

    // Only for waiters not on the I/O executor, which hold work_.
    void post_invoke(const boost::asio::any_io_executor& io_ex, boost::system::error_code ec,
                     R value) override {
      // Through the I/O executor, which is never blocking; Asio then dispatches to the
      // handler's own executor (work_dispatcher), which never runs it inline here.
      boost::asio::post(
          io_ex, boost::asio::bind_executor(*work_, [self = std::unique_ptr<waiter, deleter>(this),
                                                     ec, value = std::move(value)]() mutable {
            self.release()->invoke(ec, value);
          }));
    }

    void install(const std::weak_ptr<state>& s) {
      auto slot = boost::asio::get_associated_cancellation_slot(handler_);
      if (slot.is_connected()) {
        slot.template emplace<cancel_handler>(cancel_handler{s, this});
        this->slot_ = slot;
      }
    }

   private:
    using deleter = typename waiter::deleter;

    void free_node() noexcept {
      if constexpr (std::is_same_v<Alloc, caller_storage>) {
        this->~handler_waiter();
      } else {
        using traits =
            typename std::allocator_traits<Alloc>::template rebind_traits<handler_waiter>;
        typename traits::allocator_type alloc(alloc_);
        traits::destroy(alloc, this);
        traits::deallocate(alloc, this, 1);
      }
    }

    Handler handler_;
    Call call_;
    [[no_unique_address]] Alloc alloc_;
    // Separate, and only for waiters on other executors: it would double the size of the
    // common waiter, which the I/O executor's own flight-wide work count already covers.
    std::unique_ptr<work_executor> work_;
  };

  struct cancel_handler {
    std::weak_ptr<state> weak;
    waiter* w;
    void operator()(boost::asio::cancellation_type_t) const {
      auto s = weak.lock();
      if (!s) return;
      {
        std::lock_guard lk(s->mu);
        if (!s->is_linked(w)) return;  // already being completed
        s->unlink(w);
        ++s->counters.cancelled;
      }
      complete_one(s->io_ex, w, boost::asio::error::operation_aborted, R{});
    }
  };

 public:
  /// A detached list of waiters, taken under the lock and completed outside it.
  class batch {
   public:
    batch() = default;
    batch(batch&& o) noexcept
        : io_ex_(std::move(o.io_ex_)),
          work_(std::move(o.work_)),
          head_(std::exchange(o.head_, nullptr)) {}
    batch& operator=(batch&& o) noexcept {
      if (this != &o) {
        complete(boost::asio::error::operation_aborted, R{});
        io_ex_ = std::move(o.io_ex_);
        work_ = std::move(o.work_);
        head_ = std::exchange(o.head_, nullptr);
      }
      return *this;
    }
    ~batch() { complete(boost::asio::error::operation_aborted, R{}); }

    /// Completes every waiter of the batch with (ec, value), each on its executor. Each chunk
    /// of waiters gets its own `replicate(value)`, so that waiters resumed on different
    /// threads do not share one reference count.
    template <class Replicate = std::nullptr_t>
    void complete(boost::system::error_code ec, const R& value, Replicate replicate = nullptr) {
      auto copy = [&]() -> R {
        if constexpr (std::is_same_v<Replicate, std::nullptr_t>) {
          return value;
        } else {
          return replicate(value);
        }
      };
      waiter* chunk = nullptr;
      waiter* chunk_tail = nullptr;
      std::size_t chunk_count = 0;
      auto flush = [&] {
        if (chunk == nullptr) return;
        chunk_tail->next = nullptr;
        boost::asio::post(io_ex_, chunk_op(io_ex_, std::exchange(chunk, nullptr), ec, copy()));
        chunk_count = 0;
      };
      for (waiter* w = std::exchange(head_, nullptr); w != nullptr;) {
        waiter* next = w->next;
        if (w->on_io_executor()) {
          (chunk ? chunk_tail->next : chunk) = w;
          chunk_tail = w;
          if (++chunk_count == chunk_size) flush();
        } else {
          w->post_invoke(io_ex_, ec, value);
        }
        w = next;
      }
      flush();
      work_ = boost::asio::any_io_executor();  // the posted functions hold the context now
    }

   private:
    friend class single_flight;
    batch(boost::asio::any_io_executor io_ex, boost::asio::any_io_executor work,
          waiter* head) noexcept
        : io_ex_(std::move(io_ex)), work_(std::move(work)), head_(head) {}
    boost::asio::any_io_executor io_ex_;
    boost::asio::any_io_executor work_;
    waiter* head_ = nullptr;
  };

  /// `io_ex` completes waiters whose handler has no associated executor, and carries every
  /// completion to the waiter's own executor.
  explicit single_flight(boost::asio::any_io_executor io_ex)
      : s_(std::make_shared<state>(std::move(io_ex))) {}
  single_flight(const single_flight&) = delete;
  single_flight& operator=(const single_flight&) = delete;
  /// Completes every remaining waiter with operation_aborted.
  ~single_flight() { take_all().complete(boost::asio::error::operation_aborted, R{}); }

  /// A waiter not yet joined; destroying it frees it without running its handler.
  using waiter_ptr = std::unique_ptr<waiter, typename waiter::deleter>;

  /// Makes a waiter for `h`, to be passed to join(), in memory from the handler's associated
  /// allocator (Asio's recycling allocator when it has none). `call(handler, ec, value)` runs
  /// on the handler's executor when the flight completes (plain_call: handler(ec, value)).
  template <class Handler, class Call = plain_call>
  waiter_ptr make_waiter(Handler&& h, Call call = {}) const {
    using H = std::decay_t<Handler>;
    using byte_alloc = typename std::allocator_traits<boost::asio::associated_allocator_t<
        H, boost::asio::recycling_allocator<void>>>::template rebind_alloc<std::byte>;
    using node = handler_waiter<H, Call, byte_alloc>;
    using traits = typename std::allocator_traits<byte_alloc>::template rebind_traits<node>;
    typename traits::allocator_type alloc(
        boost::asio::get_associated_allocator(h, boost::asio::recycling_allocator<void>()));
    const bool on_io = on_io_executor(h);  // before h is moved from
    node* w = traits::allocate(alloc, 1);
    try {
      traits::construct(alloc, w, H(std::forward<Handler>(h)), std::move(call), s_->io_ex, on_io,
                        alloc);
    } catch (...) {
      traits::deallocate(alloc, w, 1);
      throw;
    }
    return installed(w);
  }

  /// make_waiter() with the node placed in `room`, which the caller keeps until the handler
  /// runs or the waiter is destroyed (the frame of the coroutine the handler resumes): a
  /// waiter then costs no allocation.
  template <std::size_t Size, class Handler, class Call = plain_call>
  waiter_ptr make_waiter_in(waiter_storage<Size>& room, Handler&& h, Call call = {}) const {
    using H = std::decay_t<Handler>;
    using node = handler_waiter<H, Call, caller_storage>;
    static_assert(sizeof(node) <= Size, "waiter_storage too small for this handler");
    static_assert(alignof(node) <= alignof(std::max_align_t));
    const bool on_io = on_io_executor(h);  // before h is moved from
    auto* w = ::new (static_cast<void*>(room.bytes))
        node(H(std::forward<Handler>(h)), std::move(call), s_->io_ex, on_io, caller_storage{});
    return installed(w);
  }

  /// Attaches a waiter. Returns true when no flight was in progress: the caller must now start
  /// the operation and later call take_all() and complete the batch.
  bool join(waiter_ptr w) {
    std::lock_guard lk(s_->mu);
    if (w->on_io_executor() && !s_->work)
      s_->work = boost::asio::prefer(s_->io_ex, boost::asio::execution::outstanding_work.tracked);
    waiter* raw = w.release();
    s_->link(raw);
    if (s_->size > s_->counters.max_waiters) s_->counters.max_waiters = s_->size;
    if (s_->in_flight) {
      ++s_->counters.coalesced;
      return false;
    }
    s_->in_flight = true;
    ++s_->counters.flights;
    return true;
  }

  /// Starts a flight with no waiter yet (a background operation that later callers may join).
  /// Returns false, changing nothing, when a flight is already in progress.
  bool begin() {
    std::lock_guard lk(s_->mu);
    if (s_->in_flight) return false;
    s_->in_flight = true;
    ++s_->counters.flights;
    return true;
  }

  /// make_waiter() and join() in one.
  template <class Handler, class Call = plain_call>
  bool join(Handler&& h, Call call = {}) {
    return join(make_waiter(std::forward<Handler>(h), std::move(call)));
  }

  /// Completes one waiter that never joined (or was unlinked) with (ec, value), on its
  /// executor, never inline.
  static void complete_one(const boost::asio::any_io_executor& io_ex, waiter* w,
                           boost::system::error_code ec, R value) {
    if (w->on_io_executor()) {
      w->next = nullptr;
      boost::asio::post(io_ex, chunk_op(io_ex, w, ec, std::move(value)));
    } else {
      w->post_invoke(io_ex, ec, std::move(value));
    }
  }

  /// Ends the flight: detaches all its waiters. The next join() starts a new flight.
  batch take_all() {
    std::lock_guard lk(s_->mu);
    waiter* head = s_->head;
    ++s_->flight;  // no pass over the waiters: a big flight's are cold in the cache
    s_->head = s_->tail = nullptr;
    s_->size = 0;
    s_->in_flight = false;
    return batch(s_->io_ex, std::exchange(s_->work, boost::asio::any_io_executor()), head);
  }

  bool in_flight() const {
    std::lock_guard lk(s_->mu);
    return s_->in_flight;
  }
  std::uint64_t waiting() const {
    std::lock_guard lk(s_->mu);
    return s_->size;
  }
  single_flight_counters counters() const {
    std::lock_guard lk(s_->mu);
    return s_->counters;
  }

 private:
  template <class Handler>
  bool on_io_executor(const Handler& h) const {
    return same_executor(boost::asio::get_associated_executor(h, s_->io_ex), s_->io_ex);
  }
  // Installed before the waiter is visible to completers, so no other thread touches the slot
  // while we do.
  template <class Node>
  waiter_ptr installed(Node* w) const {
    waiter_ptr owned(w);
    w->install(s_);
    return owned;
  }

  std::shared_ptr<state> s_;
};

}  // namespace nxsys::auth::detail

#endif
