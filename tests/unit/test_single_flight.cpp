// SPDX-License-Identifier: BSL-1.0
// The single_flight primitive on its own, driven by hand (no sockets): who starts a flight,
// exactly-once completion, per-waiter cancellation, destruction, executors.
#include <nxsys/auth/detail/single_flight.hpp>

#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
using boost::system::error_code;
using flight = nxsys::auth::detail::single_flight<std::string>;

namespace {
struct outcome {
  int calls = 0;
  error_code ec;
  std::string value;
};
auto record(outcome& o) {
  return [&o](error_code ec, std::string v) {
    ++o.calls;
    o.ec = ec;
    o.value = std::move(v);
  };
}

// An allocator that counts what goes through it.
struct allocation_counts {
  int allocated = 0;
  int freed = 0;
};
template <class T>
struct counting_allocator {
  using value_type = T;
  allocation_counts* counts;
  explicit counting_allocator(allocation_counts* c) noexcept : counts(c) {}
  template <class U>
  counting_allocator(const counting_allocator<U>& o) noexcept : counts(o.counts) {}
  T* allocate(std::size_t n) {
    ++counts->allocated;
    return std::allocator<T>().allocate(n);
  }
  void deallocate(T* p, std::size_t n) noexcept {
    ++counts->freed;
    std::allocator<T>().deallocate(p, n);
  }
  template <class U>
  bool operator==(const counting_allocator<U>& o) const noexcept {
    return counts == o.counts;
  }
};
}  // namespace

BOOST_AUTO_TEST_SUITE(single_flight)

BOOST_AUTO_TEST_CASE(first_waiter_starts_the_flight_and_all_get_its_result) {
  asio::io_context ctx;
  flight f(ctx.get_executor());
  std::vector<outcome> out(5);
  BOOST_TEST(f.join(record(out[0])));
  for (int i = 1; i < 5; ++i) BOOST_TEST(!f.join(record(out[i])));
  BOOST_TEST(f.in_flight());
  BOOST_TEST(f.waiting() == 5u);
  f.take_all().complete({}, "tok-1");
  BOOST_TEST(!f.in_flight());
  // Nothing runs inline: completions wait for the executor.
  for (auto& o : out) BOOST_TEST(o.calls == 0);
  ctx.run();
  for (auto& o : out) {
    BOOST_TEST(o.calls == 1);
    BOOST_TEST(!o.ec);
    BOOST_TEST(o.value == "tok-1");
  }
  auto c = f.counters();
  BOOST_TEST(c.flights == 1u);
  BOOST_TEST(c.coalesced == 4u);
  BOOST_TEST(c.max_waiters == 5u);

  // The next join after a completed flight starts a new one.
  outcome again;
  BOOST_TEST(f.join(record(again)));
  f.take_all().complete(asio::error::connection_refused, {});
  ctx.restart();
  ctx.run();
  BOOST_TEST(again.calls == 1);
  BOOST_TEST(again.ec == asio::error::connection_refused);
  BOOST_TEST(f.counters().flights == 2u);
}

BOOST_AUTO_TEST_CASE(cancelling_one_waiter_completes_only_that_waiter) {
  asio::io_context ctx;
  flight f(ctx.get_executor());
  asio::cancellation_signal sig;
  outcome cancelled, other;
  BOOST_TEST(f.join(asio::bind_cancellation_slot(sig.slot(), record(cancelled))));
  BOOST_TEST(!f.join(record(other)));
  sig.emit(asio::cancellation_type::terminal);
  // poll, not run: the remaining waiter keeps ctx busy (tracked work) until it completes.
  ctx.poll();
  BOOST_TEST(cancelled.calls == 1);
  BOOST_TEST(cancelled.ec == asio::error::operation_aborted);
  BOOST_TEST(other.calls == 0);
  BOOST_TEST(f.in_flight());  // the flight goes on
  BOOST_TEST(f.waiting() == 1u);

  f.take_all().complete({}, "tok");
  ctx.restart();
  ctx.run();
  BOOST_TEST(cancelled.calls == 1);  // exactly once, even though the flight completed later
  BOOST_TEST(other.calls == 1);
  BOOST_TEST(other.value == "tok");
  BOOST_TEST(f.counters().cancelled == 1u);
}

BOOST_AUTO_TEST_CASE(cancellation_after_completion_is_a_no_op) {
  asio::io_context ctx;
  flight f(ctx.get_executor());
  asio::cancellation_signal sig;
  outcome o;
  f.join(asio::bind_cancellation_slot(sig.slot(), record(o)));
  f.take_all().complete({}, "tok");
  sig.emit(asio::cancellation_type::total);  // before the completion ran: must not double-complete
  ctx.run();
  BOOST_TEST(o.calls == 1);
  BOOST_TEST(!o.ec);
  BOOST_TEST(f.counters().cancelled == 0u);
}

BOOST_AUTO_TEST_CASE(destruction_aborts_every_waiter) {
  asio::io_context ctx;
  std::vector<outcome> out(3);
  asio::cancellation_signal sig;
  {
    flight f(ctx.get_executor());
    f.join(asio::bind_cancellation_slot(sig.slot(), record(out[0])));
    f.join(record(out[1]));
    f.join(record(out[2]));
  }
  sig.emit(asio::cancellation_type::terminal);  // the flight is gone: nothing to touch
  ctx.run();
  for (auto& o : out) {
    BOOST_TEST(o.calls == 1);
    BOOST_TEST(o.ec == asio::error::operation_aborted);
  }
}

// A completion destroyed unrun (its io_context went away first) must take its cancellation
// handler with it: emitting later would otherwise read the freed waiter (ASan sees it).
BOOST_AUTO_TEST_CASE(a_completion_that_never_runs_leaves_no_cancel_handler_behind) {
  asio::cancellation_signal sig;
  outcome o;
  std::optional<asio::io_context> ctx(std::in_place);
  flight f(ctx->get_executor());
  f.join(asio::bind_cancellation_slot(sig.slot(), record(o)));
  f.take_all().complete({}, "tok");
  ctx.reset();
  sig.emit(asio::cancellation_type::terminal);
  BOOST_TEST(o.calls == 0);
  BOOST_TEST(f.counters().cancelled == 0u);
}

// A handler that owns its cancellation signal (a coroutine frame does): destroying the unrun
// waiter must clear the slot before the handler frees the signal. ASan catches the order.
BOOST_AUTO_TEST_CASE(a_handler_owning_its_signal_is_destroyed_unrun_safely) {
  std::optional<asio::io_context> ctx(std::in_place);
  flight f(ctx->get_executor());
  auto sig = std::make_shared<asio::cancellation_signal>();
  const auto slot = sig->slot();
  f.join(asio::bind_cancellation_slot(slot, [sig](error_code, std::string) {}));
  sig.reset();  // the handler holds the only reference now
  f.take_all().complete({}, "tok");
  ctx.reset();  // the posted completion never runs: the waiter is destroyed with it
  BOOST_TEST(f.counters().cancelled == 0u);
}

BOOST_AUTO_TEST_CASE(each_waiter_completes_on_its_own_executor) {
  asio::io_context flight_ctx, other_ctx;
  flight f(flight_ctx.get_executor());
  auto strand_a = asio::make_strand(flight_ctx);
  bool on_a = false, on_other = false;
  f.join(asio::bind_executor(
      strand_a, [&](error_code, std::string) { on_a = strand_a.running_in_this_thread(); }));
  f.join(asio::bind_executor(other_ctx, [&](error_code, std::string) {
    on_other = other_ctx.get_executor().running_in_this_thread();
  }));
  f.take_all().complete({}, "tok");
  flight_ctx.run();
  BOOST_TEST(on_a);
  BOOST_TEST(!on_other);  // not run by the flight's context
  // The waiter kept other_ctx from running out of work while it waited.
  other_ctx.run();
  BOOST_TEST(on_other);
}

BOOST_AUTO_TEST_CASE(a_call_policy_sees_the_result_before_the_handler) {
  asio::io_context ctx;
  flight f(ctx.get_executor());
  std::string seen_by_call, seen_by_handler;
  struct prefixing_call {
    std::string* seen;
    void operator()(std::function<void(error_code, std::string)> h, error_code ec,
                    const std::string& v) const {
      *seen = v;
      h(ec, "via-call:" + v);
    }
  };
  f.join([&](error_code, std::string v) { seen_by_handler = v; }, prefixing_call{&seen_by_call});
  f.take_all().complete({}, "tok");
  ctx.run();
  BOOST_TEST(seen_by_call == "tok");
  BOOST_TEST(seen_by_handler == "via-call:tok");
}

BOOST_AUTO_TEST_CASE(each_chunk_of_waiters_gets_its_own_replica) {
  asio::io_context ctx;
  flight f(ctx.get_executor());
  const std::size_t n = 3 * flight::chunk_size + 1;  // four chunks
  std::vector<outcome> out(n);
  for (auto& o : out) f.join(record(o));
  int replicas = 0;
  f.take_all().complete({}, "tok", [&](const std::string& v) {
    ++replicas;
    return v + "#" + std::to_string(replicas);
  });
  ctx.run();
  BOOST_TEST(replicas == 4);
  for (std::size_t i = 0; i < n; ++i) {
    BOOST_TEST(out[i].calls == 1);
    BOOST_TEST(out[i].value == "tok#" + std::to_string(i / flight::chunk_size + 1));
  }
}

BOOST_AUTO_TEST_CASE(waiters_on_the_io_executor_keep_its_context_running) {
  // One work count per flight, not per waiter: run() must not return while they wait.
  asio::io_context ctx;
  flight f(ctx.get_executor());
  outcome o;
  f.join(record(o));
  std::thread completer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    f.take_all().complete({}, "late");
  });
  ctx.run();  // would return at once, before the completion, without the flight's work
  completer.join();
  BOOST_TEST(o.calls == 1);
  BOOST_TEST(o.value == "late");
}

// The Asio idiom: a waiter's node comes from its handler's associated allocator, and is freed
// before the handler runs.
BOOST_AUTO_TEST_CASE(a_waiter_node_comes_from_the_handlers_allocator) {
  asio::io_context ctx;
  flight f(ctx.get_executor());
  allocation_counts counts;
  int freed_before_the_handler_ran = -1;
  f.join(asio::bind_allocator(counting_allocator<void>(&counts), [&](error_code, std::string) {
    freed_before_the_handler_ran = counts.freed;
  }));
  BOOST_TEST(counts.allocated == 1);
  f.take_all().complete({}, "tok");
  ctx.run();
  BOOST_TEST(freed_before_the_handler_ran == 1);
  BOOST_TEST(counts.allocated == 1);
  BOOST_TEST(counts.freed == 1);
}

// A node placed in storage that the handler itself owns (as a coroutine's frame holds the node
// and is owned by the handler that resumes it): completing, cancelling or destroying the
// waiter must end the node before the handler frees the storage. ASan catches the order.
BOOST_AUTO_TEST_CASE(a_node_in_storage_owned_by_its_handler_ends_before_the_storage) {
  using room = nxsys::auth::detail::waiter_storage<256>;
  auto owning = [](std::shared_ptr<room>& r, outcome& o) {
    return [keep = r, &o](error_code ec, std::string v) {
      ++o.calls;
      o.ec = ec;
      o.value = std::move(v);
    };
  };
  outcome completed, cancelled, dropped;
  std::optional<asio::io_context> ctx(std::in_place);
  flight f(ctx->get_executor());
  asio::cancellation_signal sig;
  {
    auto r1 = std::make_shared<room>(), r2 = std::make_shared<room>();
    f.join(f.make_waiter_in(*r1, owning(r1, completed)));
    f.join(f.make_waiter_in(*r2, asio::bind_cancellation_slot(sig.slot(), owning(r2, cancelled))));
  }  // each handler now owns its node's storage alone
  sig.emit(asio::cancellation_type::terminal);
  f.take_all().complete({}, "tok");
  ctx->run();
  BOOST_TEST(completed.calls == 1);
  BOOST_TEST(completed.value == "tok");
  BOOST_TEST(cancelled.calls == 1);
  BOOST_TEST(cancelled.ec == asio::error::operation_aborted);
  {
    auto r3 = std::make_shared<room>();
    f.join(f.make_waiter_in(*r3, owning(r3, dropped)));
  }
  f.take_all().complete({}, "tok-2");
  ctx.reset();  // never run: the waiter is destroyed with the posted completion
  BOOST_TEST(dropped.calls == 0);
  // And a waiter never joined is destroyed by its owner alone.
  asio::io_context other;
  flight g(other.get_executor());
  auto r4 = std::make_shared<room>();
  auto w = g.make_waiter_in(*r4, owning(r4, dropped));
  r4.reset();
  w.reset();
  BOOST_TEST(dropped.calls == 0);
}

BOOST_AUTO_TEST_SUITE_END()
