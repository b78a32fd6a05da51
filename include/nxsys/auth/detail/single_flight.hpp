// "Many waiters, one operation": waiters attach to the one flight in progress and all complete
// with its result, each on its own executor. Knows nothing of OAuth.
#ifndef NXSYS_AUTH_DETAIL_SINGLE_FLIGHT_HPP
#define NXSYS_AUTH_DETAIL_SINGLE_FLIGHT_HPP

#include <boost/asio/any_completion_executor.hpp>
#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/system/error_code.hpp>

#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>

namespace nxsys::auth::detail {

/// Counters of a single_flight, read under its lock.
struct single_flight_counters {
  std::uint64_t flights = 0;      ///< operations started (first waiter of a flight)
  std::uint64_t coalesced = 0;    ///< waiters that joined a flight already in progress
  std::uint64_t cancelled = 0;    ///< waiters completed early by their cancellation slot
  std::uint64_t max_waiters = 0;  ///< most waiters attached to one flight
};

/// Thread-safe. R must be default-constructible and copyable (it is copied to every waiter).
/// Each waiter may carry a context pointer that `finish` sees on the waiter's executor just
/// before its handler runs (the client uses it to fill the caller's diagnostics).
///
/// Cancellation: a waiter's slot (any cancellation type: removing a waiter has no side effect)
/// completes only that waiter with operation_aborted; the flight goes on. As for every Asio
/// operation, the signal must be emitted from the waiter's own executor.
template <class R>
class single_flight {
 public:
  using handler_type = boost::asio::any_completion_handler<void(boost::system::error_code, R)>;

 private:
  struct node {
    node(handler_type&& h, boost::asio::any_completion_executor&& w, void* ctx)
        : handler(std::move(h)), work(std::move(w)), context(ctx) {}
    // Whichever way the node ends (completed, or destroyed with an io_context that never ran
    // it), no cancellation handler may outlive it in the waiter's slot.
    ~node() {
      if (slot.is_connected()) slot.clear();
    }
    node(const node&) = delete;
    node& operator=(const node&) = delete;
    node* prev = nullptr;
    node* next = nullptr;
    bool linked = false;
    handler_type handler;
    boost::asio::any_completion_executor work;  // keeps the waiter's execution context running
    void* context;
    boost::asio::cancellation_slot slot;  // connected while our cancel_handler is installed
  };

  struct state {
    explicit state(boost::asio::any_io_executor ex) : io_ex(std::move(ex)) {}
    const boost::asio::any_io_executor io_ex;
    std::mutex mu;
    node* head = nullptr;
    node* tail = nullptr;
    std::uint64_t size = 0;
    bool in_flight = false;
    single_flight_counters counters;

    void link(node* n) noexcept {
      n->prev = tail;
      n->next = nullptr;
      (tail ? tail->next : head) = n;
      tail = n;
      n->linked = true;
      ++size;
    }
    void unlink(node* n) noexcept {
      (n->prev ? n->prev->next : head) = n->next;
      (n->next ? n->next->prev : tail) = n->prev;
      n->prev = n->next = nullptr;
      n->linked = false;
      --size;
    }
  };

  // Completes one waiter on its own executor. The node stays alive until that posted function
  // runs, so a cancellation handler that fires before it still finds valid memory.
  // any_completion_executor cannot be required to be non-blocking in Boost 1.81, so the
  // function is posted through the flight's I/O executor and from there dispatched to the
  // waiter's executor (Asio's work_dispatcher), which never runs it inline here.
  template <class Finish>
  static void deliver(const boost::asio::any_io_executor& io_ex, node* n,
                      boost::system::error_code ec, const R& value, const Finish& finish) {
    auto ex = n->work;
    auto fn = [owned = std::unique_ptr<node>(n), ec, value, finish]() mutable {
      finish(owned->context);
      handler_type h(std::move(owned->handler));  // move-construct: 1.81's move-assign is broken
      owned.reset();  // clears the slot before the handler runs
      std::move(h)(ec, std::move(value));
    };
    boost::asio::post(io_ex, boost::asio::bind_executor(std::move(ex), std::move(fn)));
  }

  struct no_finish {
    void operator()(void*) const noexcept {}
  };

  struct cancel_handler {
    std::weak_ptr<state> weak;
    node* n;
    void operator()(boost::asio::cancellation_type_t) const {
      auto s = weak.lock();
      if (!s) return;
      {
        std::lock_guard lk(s->mu);
        if (!n->linked) return;  // already being completed
        s->unlink(n);
        ++s->counters.cancelled;
      }
      deliver(s->io_ex, n, boost::asio::error::operation_aborted, R{}, no_finish{});
    }
  };

 public:
  /// A detached list of waiters, taken under the lock and completed outside it.
  class batch {
   public:
    batch() = default;
    batch(batch&& o) noexcept
        : io_ex_(std::move(o.io_ex_)), head_(std::exchange(o.head_, nullptr)) {}
    batch& operator=(batch&& o) noexcept {
      if (this != &o) {
        complete(boost::asio::error::operation_aborted, R{});
        io_ex_ = std::move(o.io_ex_);
        head_ = std::exchange(o.head_, nullptr);
      }
      return *this;
    }
    ~batch() { complete(boost::asio::error::operation_aborted, R{}); }

    /// Completes every waiter of the batch with (ec, value), each on its executor.
    template <class Finish = no_finish>
    void complete(boost::system::error_code ec, const R& value, const Finish& finish = {}) {
      for (node* n = std::exchange(head_, nullptr); n != nullptr;) {
        node* next = n->next;
        deliver(io_ex_, n, ec, value, finish);
        n = next;
      }
    }

   private:
    friend class single_flight;
    batch(boost::asio::any_io_executor io_ex, node* head) noexcept
        : io_ex_(std::move(io_ex)), head_(head) {}
    boost::asio::any_io_executor io_ex_;
    node* head_ = nullptr;
  };

  /// `io_ex` completes waiters whose handler has no associated executor, and carries every
  /// completion to the waiter's own executor.
  explicit single_flight(boost::asio::any_io_executor io_ex)
      : s_(std::make_shared<state>(std::move(io_ex))) {}
  single_flight(const single_flight&) = delete;
  single_flight& operator=(const single_flight&) = delete;
  /// Completes every remaining waiter with operation_aborted.
  ~single_flight() { take_all().complete(boost::asio::error::operation_aborted, R{}); }

  /// Attaches a waiter. Returns true when no flight was in progress: the caller must now start
  /// the operation and later call take_all() and complete the batch.
  bool join(handler_type h, void* context = nullptr) {
    auto work = boost::asio::prefer(boost::asio::get_associated_executor(h, s_->io_ex),
                                    boost::asio::execution::outstanding_work.tracked);
    auto slot = h.get_cancellation_slot();
    auto* n = new node(std::move(h), std::move(work), context);
    // Installed before the node is visible to completers, so no other thread touches the slot
    // while we do.
    if (slot.is_connected()) {
      slot.template emplace<cancel_handler>(cancel_handler{s_, n});
      n->slot = slot;
    }
    std::lock_guard lk(s_->mu);
    s_->link(n);
    if (s_->size > s_->counters.max_waiters) s_->counters.max_waiters = s_->size;
    if (s_->in_flight) {
      ++s_->counters.coalesced;
      return false;
    }
    s_->in_flight = true;
    ++s_->counters.flights;
    return true;
  }

  /// Ends the flight: detaches all its waiters. The next join() starts a new flight.
  batch take_all() {
    std::lock_guard lk(s_->mu);
    node* head = s_->head;
    for (node* n = head; n != nullptr; n = n->next) n->linked = false;
    s_->head = s_->tail = nullptr;
    s_->size = 0;
    s_->in_flight = false;
    return batch(s_->io_ex, head);
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
  std::shared_ptr<state> s_;
};

}  // namespace nxsys::auth::detail

#endif
