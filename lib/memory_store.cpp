// SPDX-License-Identifier: BSL-1.0
// memory_store: the state in memory, and a lease that is an asynchronous mutex.
#include <nxsys/auth/error.hpp>
#include <nxsys/auth/token_store.hpp>

#include "secret_string.hpp"
#include "state_codec.hpp"

#include <boost/asio/append.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <algorithm>
#include <list>
#include <mutex>

namespace nxsys::auth {
namespace asio = boost::asio;
using boost::system::error_code;

namespace {
// post(default, h): runs h on its associated executor (default when it has none), never inline.
template <class Handler, class... Args>
void complete_later(const asio::any_io_executor& ex, Handler h, Args&&... args) {
  asio::post(ex, asio::append(std::move(h), std::forward<Args>(args)...));
}
}  // namespace

struct memory_store::state : std::enable_shared_from_this<state> {
  explicit state(asio::any_io_executor e) : ex(std::move(e)), timers(asio::make_strand(ex)) {}

  struct pending {
    asio::any_completion_handler<acquire_signature> handler;
    asio::steady_timer timer;
  };

  refresh_lease make_lease() {
    return refresh_lease(
        std::shared_ptr<void>(nullptr, [s = shared_from_this()](void*) { s->release(); }));
  }

  // The holder is done: the lease passes to the longest waiter, or the mutex opens.
  void release() {
    std::shared_ptr<pending> next;
    {
      std::lock_guard lk(mu);
      if (queue.empty()) {
        held = false;
        return;
      }
      next = std::move(queue.front());
      queue.pop_front();
    }
    complete_later(ex, std::move(next->handler), error_code{}, make_lease(), diagnostics{});
    // A timer is touched on its strand only (its wait handler runs there too).
    asio::post(timers, [next = std::move(next)] { next->timer.cancel(); });
  }

  // A waiter's deadline passed (store_busy) or it was cancelled (operation_aborted): it leaves
  // the queue unless the lease reached it first.
  void expire(std::shared_ptr<pending> p, error_code ec) {
    {
      std::lock_guard lk(mu);
      auto it = std::find(queue.begin(), queue.end(), p);
      if (it == queue.end()) return;
      queue.erase(it);
    }
    diagnostics diag;
    if (ec == errc::store_busy)
      diag.client_message =
          "the memory store's lease was held by another client until the deadline";
    complete_later(ex, std::move(p->handler), ec, refresh_lease(), std::move(diag));
    asio::post(timers, [p = std::move(p)] { p->timer.cancel(); });
  }

  asio::any_io_executor ex;
  asio::strand<asio::any_io_executor> timers;  // where waiters' deadline timers live
  std::mutex mu;
  std::optional<stored_tokens> value;
  bool held = false;
  std::list<std::shared_ptr<pending>> queue;
};

memory_store::memory_store(asio::any_io_executor ex) : s_(std::make_shared<state>(std::move(ex))) {}

memory_store::~memory_store() = default;

void memory_store::do_load(asio::any_completion_handler<load_signature> h) {
  std::optional<stored_tokens> copy;
  {
    std::lock_guard lk(s_->mu);
    copy = s_->value;
  }
  complete_later(s_->ex, std::move(h), error_code{}, std::move(copy), diagnostics{});
}

void memory_store::do_acquire(std::chrono::steady_clock::time_point deadline,
                              asio::any_completion_handler<acquire_signature> h) {
  auto slot =
      asio::get_associated_cancellation_slot(h);  // before h moves to another thread's reach
  std::shared_ptr<state::pending> p;
  {
    std::lock_guard lk(s_->mu);
    if (!s_->held) {
      s_->held = true;
    } else {
      p = std::make_shared<state::pending>(
          state::pending{std::move(h), asio::steady_timer(s_->timers)});
      s_->queue.push_back(p);
    }
  }
  if (!p) {
    complete_later(s_->ex, std::move(h), error_code{}, s_->make_lease(), diagnostics{});
    return;
  }
  if (slot.is_connected())
    slot.assign([s = s_, w = std::weak_ptr<state::pending>(p)](asio::cancellation_type_t) {
      if (auto p = w.lock()) s->expire(std::move(p), asio::error::operation_aborted);
    });
  asio::post(s_->timers, [s = s_, p, deadline] {
    p->timer.expires_at(deadline);
    p->timer.async_wait([s, w = std::weak_ptr<state::pending>(p)](error_code ec) {
      if (ec) return;  // cancelled: the lease reached it
      if (auto p = w.lock()) s->expire(std::move(p), make_error_code(errc::store_busy));
    });
  });
}

void memory_store::do_save(stored_tokens next, std::string expected,
                           asio::any_completion_handler<save_signature> h) {
  const detail::secret_string want(std::move(expected));
  diagnostics diag;
  error_code ec = detail::check_savable(next, diag);
  if (!ec) {
    std::lock_guard lk(s_->mu);
    if (s_->value && s_->value->refresh_token != want.view()) {
      ec = make_error_code(errc::store_conflict);
    } else {
      s_->value = std::move(next);
    }
  }
  if (ec == errc::store_conflict)
    diag.client_message = "the memory store holds another refresh token than expected";
  complete_later(s_->ex, std::move(h), ec, std::move(diag));
}

}  // namespace nxsys::auth
