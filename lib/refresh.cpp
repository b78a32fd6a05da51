// SPDX-License-Identifier: BSL-1.0
// The refresh driver: carries out what the refresh machine (refresh_machine.hpp) decides, on the
// client's strand. It takes the store's lease, loads, sends requests, waits and saves, and feeds
// each result back; it decides nothing itself.
#include "client_impl.hpp"
#include "completion_tokens.hpp"
#include "text.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <exception>
#include <tuple>

// GCC 12 pairs the aligned_alloc inside Asio's coroutine-frame operator new with the frame's
// sized operator delete and reports a mismatch that is not there (GCC bug 109224): the frame
// is allocated and freed by Asio's matching pair. Which coroutine trips it depends on inlining.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace nxsys::auth::detail {
namespace asio = boost::asio;
using boost::system::error_code;

namespace {
// I7: a store is user code. An operation that throws, or drops its handler without calling
// it, ends as a typed error of that step (errc::internal, with what happened) instead of an
// exception escaping Asio's coroutine machinery or a refresh that never ends. The store gets a
// forwarder; our own handler stays here until the forwarder is called.
template <class Handler, class... Values>
struct store_step {
  store_step(Handler h, const char* s, asio::strand<asio::any_io_executor> st)
      : handler(std::move(h)), step(s), strand(std::move(st)) {}
  store_step(const store_step&) = delete;
  store_step& operator=(const store_step&) = delete;

  Handler handler;
  std::string step;
  asio::strand<asio::any_io_executor> strand;
  bool done = false;

  void fail(std::string what) {
    if (done) return;
    done = true;
    diagnostics d;
    d.client_message = "the token store's " + step + " " + what;
    asio::post(strand, [h = std::move(handler), d = std::move(d)]() mutable {
      std::move(h)(make_error_code(errc::internal), Values{}..., std::move(d));
    });
  }
  ~store_step() { fail("dropped its completion handler"); }
};

template <class Handler, class... Values>
struct forwarder {
  std::shared_ptr<store_step<Handler, Values...>> s;
  using executor_type = asio::strand<asio::any_io_executor>;
  executor_type get_executor() const noexcept { return s->strand; }
  void operator()(error_code ec, Values... v, diagnostics d) {
    if (s->done) return;
    s->done = true;
    std::move(s->handler)(ec, std::move(v)..., std::move(d));
  }
};

template <class... Values, class Call>
auto guarded(asio::strand<asio::any_io_executor> strand, const char* step, Call call) {
  return asio::async_initiate<decltype(deferred_tuple), void(error_code, Values..., diagnostics)>(
      [strand, step](auto handler, Call call) {
        using step_type = store_step<decltype(handler), Values...>;
        auto s = std::make_shared<step_type>(std::move(handler), step, strand);
        try {
          call(forwarder<decltype(handler), Values...>{s});
        } catch (const std::exception& e) {
          s->fail(std::string("threw: ") + e.what());
        } catch (...) {
          s->fail("threw an exception of unknown type");
        }
      },
      deferred_tuple, std::move(call));
}
}  // namespace

template <class Input>
action client_impl::advance(Input&& input) {
  token_flight::batch waiters;
  std::optional<completion> done;
  std::uint64_t done_serial = 0;
  action a;
  {
    std::lock_guard lk(mu_);
    a = std::forward<Input>(input)(machine_);
    if (a.complete) {
      done_serial = machine_.flight_serial();
      done = std::move(a.complete);
      a.complete.reset();
      if (done->published) version_.fetch_add(1, std::memory_order_release);
      if (!done->silent) {
        done->event.waiters = flight_.waiting();
        done->event.latency = clock_type::now() - run_started_;
        waiters = flight_.take_all();
        record(done->event);
        if (done->stale) stats_.valid_tokens_served_after_failure += done->event.waiters;
        if (done->ahead_retry_at != clock_type::time_point{}) {
          ahead_retry_at_.store(done->ahead_retry_at.time_since_epoch().count(),
                                std::memory_order_relaxed);
          ahead_started_.store(0, std::memory_order_relaxed);
        }
      }
    }
  }
  if (done) {
    if (!done->silent)
      asio::post(strand_, [self = shared_from_this(), done_serial] {
        if (self->watchdog_serial_ == done_serial) self->watchdog_.cancel();
      });
    deliver(std::move(*done), std::move(waiters), a.logs);
  } else {
    for (const auto& l : a.logs) log(l.level, l.text);
  }
  a.logs.clear();
  return a;
}

void client_impl::arm_watchdog(std::uint64_t serial) {
  asio::post(strand_, [self = shared_from_this(), serial] {
    {
      std::lock_guard lk(self->mu_);
      // Already completed (its cancel ran first): nothing to watch, nothing to keep alive.
      if (!self->machine_.flight_open() || self->machine_.flight_serial() != serial) return;
    }
    self->watchdog_serial_ = serial;
    // A little past the deadline, so that a step bounded by it reports its own error first.
    self->watchdog_.expires_after(self->cfg_.refresh.deadline + std::chrono::milliseconds(500));
    self->watchdog_.async_wait([self, serial](error_code ec) {
      if (ec) return;  // cancelled: the flight completed, or the client is gone
      self->advance(
          [&](refresh_machine& m) { return m.on_flight_overdue(serial, self->now_instant()); });
    });
  });
}

asio::awaitable<void> client_impl::drive(std::shared_ptr<client_impl> self) {
  // I7: a store or transport that drops its handler destroys this frame without resuming it;
  // the flight must still end.
  struct dropped_guard {
    client_impl* c;
    bool armed = true;
    ~dropped_guard() {
      if (!armed) return;
      c->advance([&](refresh_machine& m) {
        return m.on_internal_error("a token store or transport dropped its completion handler",
                                   c->now_instant());
      });
    }
  } guard{self.get()};

  refresh_lease lease;
  action a = self->advance([&](refresh_machine& m) { return m.start(self->now_instant()); });
  while (a.what != action::kind::done) {
    if (a.release_lease) lease.release();
    std::string failure;
    try {
      a = co_await self->perform(std::move(a), lease);
    } catch (const std::exception& e) {
      failure = e.what();
    } catch (...) {
      failure = "an exception of unknown type";
    }
    if (!failure.empty()) {
      lease.release();
      a = self->advance([&](refresh_machine& m) {
        return m.on_internal_error("a step threw: " + failure, self->now_instant());
      });
    }
  }
  lease.release();
  guard.armed = false;
}

// Results are tied into plain variables, not structured bindings: clang 14 cannot capture a
// binding in the lambdas below.
asio::awaitable<action> client_impl::perform(action a, refresh_lease& lease) {
  error_code ec;
  diagnostics diag;
  switch (a.what) {
    case action::kind::acquire: {
      // Cancellable: a destroyed client must not wait out another holder's refresh.
      std::tie(ec, lease, diag) = co_await guarded<refresh_lease>(strand_, "lease", [&](auto h) {
        store_->async_acquire(to_steady(a.deadline),
                              asio::bind_cancellation_slot(lease_cancel_.slot(), std::move(h)));
      });
      co_return advance([&](refresh_machine& m) { return m.on_acquired(ec, diag, now_instant()); });
    }
    case action::kind::load: {
      std::optional<stored_tokens> stored;
      std::tie(ec, stored, diag) = co_await guarded<std::optional<stored_tokens>>(
          strand_, "load", [&](auto h) { store_->async_load(std::move(h)); });
      co_return advance([&](refresh_machine& m) {
        return m.on_loaded(ec, diag, std::move(stored), now_instant());
      });
    }
    case action::kind::request:
      co_return co_await request(std::move(a), lease);
    case action::kind::wait: {
      wait_timer_.expires_after(std::max(clock_type::duration::zero(), a.until - now()));
      co_await wait_timer_.async_wait(deferred_tuple);  // cancelled: woken early
      co_return advance([&](refresh_machine& m) { return m.on_waited(now_instant()); });
    }
    case action::kind::save: {
      std::tie(ec, diag) = co_await guarded<>(strand_, "save", [&](auto h) {
        store_->async_save(std::move(a.next), std::string(a.expected.view()), std::move(h));
      });
      co_return advance([&](refresh_machine& m) { return m.on_saved(ec, diag, now_instant()); });
    }
    case action::kind::done:
      break;
  }
  co_return a;
}

asio::awaitable<action> client_impl::request(action a, const refresh_lease& lease) {
  const auto connections_before = transport_.connections_opened();
  log(log_level::debug, "refreshing the access token");
  auto req = cfg_.grant == grant_type::client_credentials
                 ? protocol::build_client_credentials_request(cfg_.dialect, cfg_.authentication,
                                                              cfg_.client_id,
                                                              cfg_.client_secret.view(), cfg_.scope)
                 : protocol::build_refresh_request(cfg_.dialect, cfg_.authentication,
                                                   a.refresh_token.view(), cfg_.client_id,
                                                   cfg_.client_secret.view(), cfg_.scope);
  // I6: the Basic credential is a secret too: a server echoing the header must not leak it.
  const std::string_view basic = req.authorization;
  const auto sent = now();
  http_answer answer;
  diagnostics diag;
  auto ec = co_await transport_.post_form(req, answer, diag, to_steady(a.deadline), &lease);
  protocol::token_response tr;
  std::optional<std::chrono::seconds> retry_after;
  if (!ec) {
    // A server may echo what it was sent, raw or form-encoded: none of it may reach a message.
    const secret_string rt_encoded(protocol::form_urlencode(a.refresh_token.view()));
    const auto basic_credentials =
        basic.substr(std::min<std::size_t>(basic.find(' ') + 1, basic.size()));
    ec = protocol::parse_token_response(
        answer.status, answer.body.view(), tr, diag,
        {a.refresh_token.view(), rt_encoded.view(), cfg_.client_secret.view(),
         secret_encoded_.view(), basic, basic_credentials});
    if (ec)
      retry_after =
          protocol::parse_retry_after(answer.retry_after, std::chrono::system_clock::now());
  }
  if (transport_.connections_opened() != connections_before)
    log(log_level::debug, "opened a connection to the token endpoint");
  if (!ec)
    co_return advance(
        [&](refresh_machine& m) { return m.on_answer(std::move(tr), sent, now_instant()); });
  co_return advance([&](refresh_machine& m) {
    return m.on_failure(ec, std::move(diag), retry_after, answer.written, now_instant());
  });
}

}  // namespace nxsys::auth::detail
