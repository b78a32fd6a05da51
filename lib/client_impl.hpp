// SPDX-License-Identifier: BSL-1.0
// The client's state, shared by the cache and slow path (client.cpp) and the refresh procedure
// (refresh.cpp). Internal.
#ifndef NXSYS_AUTH_LIB_CLIENT_IMPL_HPP
#define NXSYS_AUTH_LIB_CLIENT_IMPL_HPP

#include <nxsys/auth/client.hpp>
#include <nxsys/auth/protocol.hpp>
#include <nxsys/auth/token_store.hpp>

#include <nxsys/auth/detail/single_flight.hpp>

#include "per_thread.hpp"
#include "refresh_machine.hpp"
#include "transport.hpp"

#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace nxsys::auth::detail {

using clock_type = std::chrono::steady_clock;

/// A thread's copy of the client's current token. Handing out a copy of it touches only this
/// thread's reference count: one shared count written by every reader costs several times the
/// whole fast path on two cores. And it hands out copies from a budget of references taken
/// ahead in one batch: the fast path's copy is a plain decrement, not a locked
/// read-modify-write (the copy's release, on whatever thread, stays atomic).
/// Touched by its thread only (the thread that holds its slot's number), and by the client's
/// destructor, which no fast path may race.
struct replica {
  static constexpr std::uint64_t batch = std::uint64_t{1} << 20;

  replica() = default;
  replica(const replica&) = delete;
  replica& operator=(const replica&) = delete;
  ~replica() { return_budget(); }

  /// One counted reference on `token`'s block, for a new handle; `token` must not be empty.
  const detail::token_block* take() noexcept {
    const auto* b = token.block();
    if (budget == 0) {
      b->refs.fetch_add(batch, std::memory_order_relaxed);
      budget = batch;
    }
    --budget;
    return b;
  }
  /// Gives back the references not handed out; `token` still holds one, so the block lives.
  void return_budget() noexcept {
    if (budget == 0) return;
    token.block()->refs.fetch_sub(budget, std::memory_order_release);
    budget = 0;
  }

  std::uint64_t version = 0;  // which publication of the client (0: none yet)
  access_token token;
  std::uint64_t budget = 0;  // references on token's block taken, not yet handed out
  clock_type::time_point refresh_at{};
  clock_type::time_point ahead_at{};
  clock_type::time_point first_deadline{};  // the earlier of the two
};

/// What token()'s waiters receive: one value, so that awaiting a deferred operation stores it
/// straight into the waiting frame (Boost 1.81's awaitable cannot do that for an
/// (exception_ptr, T) signature: its resume() does not compile).
struct token_outcome {
  boost::system::error_code ec;
  flight_result result;
};

class client_impl : public std::enable_shared_from_this<client_impl> {
 public:
  client_impl(boost::asio::any_io_executor ex, client_config cfg, protocol::endpoint ep);
  ~client_impl();

  const boost::asio::any_io_executor& executor() const noexcept { return ex_; }
  token_flight& flight() noexcept { return flight_; }
  grant_type grant() const noexcept { return cfg_.grant; }

  /// The fast path: no lock, no shared write when this thread's replica is current.
  /// @return a counted reference to the fresh token's block (adopt it), or nullptr: no fresh
  ///   token, take the slow path
  const token_block* fresh_token();
  /// The slow path of every caller whose thread cache had no fresh token.
  void wait(token_flight::waiter_ptr w);
  bool invalidate(const access_token* rejected);  // nullptr: whatever is current
  void set_refresh_token(std::string_view refresh_token);
  void shutdown();
  client_stats stats() const;

 private:
  clock_type::time_point now() const noexcept {
    return clock_ != nullptr ? clock_->now() : clock_type::now();
  }
  instant now_instant() const noexcept { return {now(), std::chrono::system_clock::now()}; }
  bool before(clock_type::time_point deadline) const noexcept;
  void log(log_level level, std::string_view message) const noexcept;

  // -- cache and slow path (client.cpp)
  void renew_replica(replica& r);
  void maybe_refresh_ahead(std::uint64_t version, std::uint64_t serial);
  void carry_out(const call_decision& d, std::uint64_t flight_serial);
  void spawn_driver();

  // -- the driver (refresh.cpp), on strand_: carries out the machine's actions
  static boost::asio::awaitable<void> drive(std::shared_ptr<client_impl> self);
  boost::asio::awaitable<action> perform(action a, refresh_lease& lease);
  boost::asio::awaitable<action> request(action a, const refresh_lease& lease);
  /// Runs `input` on the machine under the lock; completes the flight it ends, writes its logs.
  template <class Input>
  action advance(Input&& input);
  void deliver(completion c, token_flight::batch waiters, const std::vector<log_line>& logs);
  /// I7: the flight `serial` fails with timeout if it is still open after refresh_deadline.
  void arm_watchdog(std::uint64_t serial);
  void record(const refresh_event& e);
  /// A machine time point as a steady_clock one (they differ when cfg_.clock is set).
  clock_type::time_point to_steady(clock_type::time_point t) const noexcept {
    return clock_type::now() + (t - now());
  }

  boost::asio::any_io_executor ex_;
  boost::asio::strand<boost::asio::any_io_executor> strand_;
  client_config cfg_;  // immutable after construction (its refresh_token is wiped: the machine's)
  secret_string secret_encoded_;  // as it appears in the request body, for redaction
  const std::uint64_t uid_;
  const clock_source* clock_;  // cfg_.clock's, or nullptr: steady_clock
  std::shared_ptr<token_store> store_;

  // Written only under mu_; read without it by the fast path.
  std::atomic<std::uint64_t> version_{1};
  per_thread<replica> replicas_;  // each thread's copy of the current token
  // The token serial whose refresh-ahead was started (0: none), and when a failed one may retry.
  std::atomic<std::uint64_t> ahead_started_{0};
  std::atomic<clock_type::rep> ahead_retry_at_{0};
  std::atomic<std::uint64_t> stale_served_{0};

  mutable std::mutex mu_;  // the slow path and the driver's steps: never taken by a fresh read
  refresh_machine machine_;
  client_stats stats_;                    // what the client counts itself (histogram, latency)
  clock_type::time_point run_started_{};  // on steady_clock, for the refresh latency

  // On strand_ only.
  boost::asio::steady_timer wait_timer_;           // back-off and waits between save retries
  boost::asio::steady_timer watchdog_;             // the open flight's refresh_deadline
  std::uint64_t watchdog_serial_ = 0;              // the flight it watches
  boost::asio::cancellation_signal lease_cancel_;  // ends a refresh's wait for the store's lease

  token_flight flight_;
  http_transport transport_;  // used on strand_ only
};

}  // namespace nxsys::auth::detail

#endif
