// SPDX-License-Identifier: BSL-1.0
// The refresh machine: every decision about the refresh-token chain and the access token, in
// one place, without I/O. No Asio, no clock reads (time is an input), no sockets, no files:
// the client (client.cpp) locks, feeds it what happened, and carries out the action it
// returns. Its tests (tests/unit/test_refresh_machine.cpp) drive it step by step.
//
// Invariants. The machine keeps them whatever the order of its inputs; each has tests.
//
//  I1  A refresh token the server has answered for is never presented again by this machine:
//      one it rotated away (consumed) or refused with invalid_grant (dead). A token whose
//      request went out but whose answer was lost may be presented again (it is the only one
//      we have, and a server grace period accepts it); if the server then refuses it, the error
//      says that an answer was lost.
//  I2  The newest known refresh token wins. A pending (unsaved) state is never replaced by an
//      older stored one; a stored refresh token is adopted only when it is not one this
//      machine knows to be consumed or dead and its generation is not behind ours. A store
//      found holding an older state is written over with ours.
//  I3  A rotated refresh token is saved before any waiter sees the new access token. A failed
//      save keeps it pending and retried (in the background, then at every refresh), never
//      dropped. With strict_durability the waiters get store_failed and the token is handed out
//      only once saved. Destruction makes one last bounded save attempt.
//  I4  An answer the server may have sent is never discarded: after destruction a request
//      already written finishes (within its timeouts) and its tokens are saved.
//  I5  Retry-After and failure spacing hold across refreshes: no request before the time the
//      server asked for or min_retry_spacing after a failure, however many callers loop. After
//      invalid_grant no request goes out until the refresh token changes (the store holds
//      another, or set_refresh_token).
//  I6  Every value that goes into a header passes the header-safety check, whether it came
//      from the server (protocol.cpp) or from a store (here: a bad one is store_corrupt).
//  I7  Every step of a refresh is inside refresh_deadline, and a refresh always ends with a
//      result: an exception or a dropped handler is errc::internal, never a hang.
//  I8  Without the lease nothing is written, to the server or to the store. A state read
//      without it (the store said store_updated) is only adopted, and only if reconcile would
//      adopt it under the lease; otherwise the lease is taken. A request is written only while
//      the lease holds (the client checks refresh_lease::lost() right before the write); one
//      whose lease ran out first is not sent, and the lease is taken again.
//
// With the client_credentials grant there is no chain: I1, I2 and the dead grant of I5 do not
// apply (invalid_grant or invalid_client is a definite failure under the spacing), a stored
// state holding a refresh token belongs to another grant and is refused (invalid_config).
#ifndef NXSYS_AUTH_LIB_REFRESH_MACHINE_HPP
#define NXSYS_AUTH_LIB_REFRESH_MACHINE_HPP

#include <nxsys/auth/access_token.hpp>
#include <nxsys/auth/config.hpp>
#include <nxsys/auth/error.hpp>
#include <nxsys/auth/protocol.hpp>
#include <nxsys/auth/stats.hpp>
#include <nxsys/auth/stored_tokens.hpp>

#include "secret_string.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace nxsys::auth::detail {

using clock_type = std::chrono::steady_clock;

// -- Time arithmetic of the policy, as plain functions.

/// The leeway actually applied to a token of `lifetime`: the configured leeway, but at most
/// `max_fraction` of the lifetime, so a short-lived token is still used for most of its life.
constexpr clock_type::duration effective_leeway(clock_type::duration lifetime,
                                                clock_type::duration leeway,
                                                double max_fraction) noexcept {
  const double f = std::clamp(max_fraction, 0.0, 1.0);
  const auto cap = std::chrono::duration_cast<clock_type::duration>(
      std::chrono::duration<double, clock_type::period>(static_cast<double>(lifetime.count()) * f));
  return std::clamp(leeway, clock_type::duration::zero(), cap);
}

/// From when on a token obtained by a request sent at `sent` is refreshed. Its lifetime counts
/// from the moment the request was sent, so network latency only makes us refresh earlier.
constexpr clock_type::time_point refresh_deadline(clock_type::time_point sent,
                                                  clock_type::duration lifetime,
                                                  clock_type::duration leeway,
                                                  double max_fraction) noexcept {
  return sent + lifetime - effective_leeway(lifetime, leeway, max_fraction);
}

/// From when on a background refresh starts while the token is still served: the last
/// `fraction` of the lifetime before `refresh_at` (never before `sent`). fraction 0: never.
constexpr clock_type::time_point refresh_ahead_point(clock_type::time_point sent,
                                                     clock_type::duration lifetime,
                                                     clock_type::time_point refresh_at,
                                                     double fraction) noexcept {
  if (!(fraction > 0.0)) return clock_type::time_point::max();
  const auto window = std::chrono::duration_cast<clock_type::duration>(
      std::chrono::duration<double, clock_type::period>(static_cast<double>(lifetime.count()) *
                                                        std::min(fraction, 1.0)));
  return std::max(sent, refresh_at - window);
}

/// The longest back-off before attempt `attempt` + 1 (attempt counts from 1):
/// min(max, initial · 2^(attempt − 1)). Full jitter then waits a random time in [0, this].
constexpr std::chrono::milliseconds backoff_cap(unsigned attempt, std::chrono::milliseconds initial,
                                                std::chrono::milliseconds max) noexcept {
  auto cap = initial;
  for (unsigned i = 1; i < attempt && cap < max; ++i) cap *= 2;
  return std::min(cap, max);
}

// -- Inputs and outputs.

/// client_config::refresh and the durability of client_config::storage, as the machine uses them.
struct machine_policy {
  clock_type::duration refresh_leeway{std::chrono::seconds(30)};
  double leeway_max_fraction = 0.25;
  clock_type::duration default_lifetime{std::chrono::seconds(3600)};
  clock_type::duration min_retry_spacing{std::chrono::seconds(1)};
  bool serve_valid_token_on_failure = true;
  double refresh_ahead_fraction = 0.2;
  unsigned max_attempts = 4;
  std::chrono::milliseconds initial_backoff{100};
  std::chrono::milliseconds max_backoff{5'000};
  clock_type::duration refresh_deadline{std::chrono::seconds(60)};
  bool strict_durability = false;
  std::chrono::milliseconds store_retry_interval{1'000};
  /// No chain: requests present no refresh token, answers rotate nothing, and stored states
  /// hold an empty refresh token (I1, I2 and I5's dead grant are about the chain, so they
  /// have nothing to hold here; I3, I4, I5's Retry-After and spacing, I6, I7 and I8 hold as
  /// for refresh tokens).
  bool client_credentials = false;

  static machine_policy from(const client_config& cfg);
};

/// Now, on both clocks: steady for expiry and waits, wall for what a store keeps.
struct instant {
  clock_type::time_point steady{};
  std::chrono::system_clock::time_point wall{};
};

/// A log line the client writes once its lock is released. Never holds a secret.
struct log_line {
  log_level level = log_level::info;
  std::string text;
};

/// What the waiters of the flight get (the client completes them, then publishes).
struct completion {
  boost::system::error_code ec;
  std::shared_ptr<const diagnostics> diag;  ///< on failure
  access_token token;      ///< the new token, or after a failure the still-valid current one
  bool published = false;  ///< `token` is new: the fast path's snapshot must change
  refresh_event event;     ///< latency left to the client (it owns the clock of the run)
  /// After a failed refresh-ahead: the fast path starts no other before this.
  clock_type::time_point ahead_retry_at{};
  bool stale = false;   ///< a failure, answered with the still-valid `token`
  bool silent = false;  ///< no flight: only publish `token` (a held-back token became durable)
};

/// What a call that found no fresh token in its thread's cache gets.
struct call_decision {
  enum class kind { serve, join, fail } what = kind::join;
  access_token token;                       ///< serve
  boost::system::error_code ec;             ///< fail
  std::shared_ptr<const diagnostics> diag;  ///< fail
  bool open_flight = false;   ///< the client opens the flight (its single_flight) for a run
  bool start_driver = false;  ///< no driver runs: the client spawns one (starting with start())
  bool wake_driver = false;   ///< the driver waits between save retries: end its wait now
};

/// The next thing the driver does, and before it, a flight to complete.
struct action {
  enum class kind {
    acquire,  ///< take the store's lease, by `deadline`          -> on_acquired
    load,     ///< read the store                                 -> on_loaded
    request,  ///< POST presenting `refresh_token`, by `deadline` -> on_answer / on_failure
    wait,     ///< sleep until `until` (woken early by a call)     -> on_waited
    save,     ///< store `next` if it still holds `expected`      -> on_saved
    done,     ///< the driver ends (and drops any lease)
  } what = kind::done;
  clock_type::time_point deadline{};   ///< acquire, request
  clock_type::time_point until{};      ///< wait
  bool release_lease = false;          ///< drop the lease before this action
  secret_string refresh_token;         ///< request
  stored_tokens next;                  ///< save
  secret_string expected;              ///< save ("" : nothing stored)
  std::optional<completion> complete;  ///< complete the flight before this action
  std::vector<log_line> logs;
};

/// What destruction asks the client to stop now.
struct destroy_decision {
  bool cancel_acquire = false;  ///< a lease wait: nothing was sent
  bool cancel_wait = false;     ///< a back-off or a wait between save retries
  /// A request in progress is cancelled only if it was not written yet (I4).
  bool cancel_unwritten_request = false;
  /// No driver runs, but tokens wait for their save: the client spawns one for the last
  /// attempt (I3).
  bool start_driver = false;
};

class refresh_machine {
 public:
  /// `seed` drives the back-off jitter (a pure function of the inputs, for tests).
  refresh_machine(machine_policy policy, std::string initial_refresh_token, std::uint64_t seed);
  ~refresh_machine();
  refresh_machine(const refresh_machine&) = delete;
  refresh_machine& operator=(const refresh_machine&) = delete;

  // -- Callers (the slow path).

  /// A call found no fresh token: serve one, join the flight, or fail fast.
  call_decision on_call(clock_type::time_point now);
  /// The fast path saw the refresh-ahead point of `serial`: start a background refresh?
  call_decision on_ahead(std::uint64_t serial, clock_type::time_point now);
  /// Drops the current token (nullptr: whatever it is; else only if it is still `rejected`).
  bool invalidate(const access_token* rejected);
  /// Re-authorization: `refresh_token` starts a new chain, replaces any other (stored or
  /// dead), and is saved to the store. Returns how to get a driver to save it.
  call_decision set_refresh_token(std::string_view refresh_token);
  /// The client is being destroyed: waiters are aborted by the client; the machine finishes
  /// what must be finished (I3, I4).
  destroy_decision on_destroy();

  // -- The driver: start() when a driver is spawned, then one input per finished action.

  action start(instant now);
  action on_acquired(boost::system::error_code ec, const diagnostics& diag, instant now);
  action on_loaded(boost::system::error_code ec, const diagnostics& diag,
                   std::optional<stored_tokens> stored, instant now);
  action on_answer(protocol::token_response answer, clock_type::time_point sent, instant now);
  /// A request failed. `written`: the request may have reached the server (its answer, if any,
  /// is lost). `retry_after`: the server's Retry-After.
  action on_failure(boost::system::error_code ec, diagnostics diag,
                    std::optional<std::chrono::seconds> retry_after, bool written, instant now);
  action on_saved(boost::system::error_code ec, const diagnostics& diag, instant now);
  action on_waited(instant now);
  /// A step threw, or a store or transport dropped its handler: the run ends with
  /// errc::internal (I7). The driver is gone after this.
  action on_internal_error(std::string what, instant now);
  /// The flight `serial` is still open refresh_deadline after it opened: a step that never
  /// completes (a store that does not answer). Its waiters get errc::timeout now (I7); the
  /// driver goes on whenever the step completes. Only the returned action's `complete` counts.
  action on_flight_overdue(std::uint64_t serial, instant now);

  // -- What the fast path publishes (read under the client's lock).

  const access_token& current() const noexcept { return current_; }
  clock_type::time_point refresh_at() const noexcept { return refresh_at_; }
  clock_type::time_point ahead_at() const noexcept { return ahead_at_; }
  bool destroyed() const noexcept { return destroyed_; }
  bool driver_alive() const noexcept { return phase_ != phase::none; }
  bool flight_open() const noexcept { return flight_open_; }
  /// Which flight is (or was last) open: a new number each time one opens.
  std::uint64_t flight_serial() const noexcept { return flight_serial_; }
  /// Counters the machine keeps (the client adds its own).
  const client_stats& stats() const noexcept { return stats_; }

  /// For tests: the refresh token the next request would present, the pending save.
  const secret_string& refresh_token() const noexcept { return rt_; }
  std::uint64_t generation() const noexcept { return gen_; }
  bool save_pending() const noexcept { return pending_.has_value(); }

 private:
  enum class phase { none, acquiring, loading, requesting, backoff, saving, save_wait };

  // A new token not yet published (strict durability) or not yet saved.
  struct new_token {
    secret_string value;
    std::string type;
    clock_type::time_point issued{};
    clock_type::duration lifetime{};
    std::string scope;
    std::shared_ptr<const boost::json::object> extra;
  };
  struct pending_state {
    stored_tokens state;                   // what to save (refresh token, generation, ...)
    std::optional<new_token> unpublished;  // strict durability: handed out once saved
    bool forced = false;                   // set_refresh_token: written over whatever is stored
  };

  static action act(action::kind k);
  action reconcile(std::optional<stored_tokens> stored, instant now);
  action proceed(instant now, action a);
  action begin_request(instant now, action a);
  action finish_success(new_token t, bool from_store, instant now, action a);
  action finish_failure(boost::system::error_code ec, diagnostics diag, instant now, action a);
  completion fail_flight(boost::system::error_code ec, diagnostics diag, instant now);
  void open_flight(bool ahead);
  action after_flight(instant now, action a);
  action end_run(action a);
  action save_pending(action a);
  void publish(new_token t);
  stored_tokens to_stored(const new_token& t, instant now) const;
  std::optional<new_token> usable_stored(const stored_tokens& s, instant now) const;
  bool adoptable_without_lease(const stored_tokens& s, instant now) const;
  bool known_spent(std::string_view rt) const;
  void mark_spent(std::string_view rt);
  bool token_valid_for_failure(clock_type::time_point now) const;
  std::chrono::milliseconds jitter(std::chrono::milliseconds cap);
  void count_failure(const boost::system::error_code& ec);

  machine_policy policy_;
  std::mt19937_64 rng_;

  // -- The chain.
  secret_string rt_;       // the refresh token the next request presents
  std::uint64_t gen_ = 0;  // its generation
  bool rt_dead_ = false;   // the server answered invalid_grant for rt_ (I5)
  std::shared_ptr<const diagnostics> dead_diag_;
  bool rt_answer_lost_ = false;      // a request presenting rt_ was written, its answer lost (I1)
  std::deque<secret_string> spent_;  // consumed or dead refresh tokens, newest last (I1, I2)
  std::optional<pending_state> pending_;   // newest state, not saved yet (I3)
  std::optional<new_token> answer_;        // this run's answer, published once its save ends
  std::optional<secret_string> store_rt_;  // the store's refresh token as last loaded
  bool store_loaded_ = false;              // loaded under the lease held now

  // -- The access token.
  access_token current_;
  clock_type::time_point refresh_at_{};
  clock_type::time_point ahead_at_ = clock_type::time_point::max();
  clock_type::time_point valid_until_{};  // served after a failure until then
  clock_type::duration lifetime_{};       // of current_, as issued
  secret_string last_issued_;             // value of the last token published or stored
  std::uint64_t serial_ = 0;

  // -- Failures (I5).
  boost::system::error_code last_failure_;
  std::shared_ptr<const diagnostics> last_failure_diag_;
  clock_type::time_point spacing_until_{};         // min_retry_spacing after a failed refresh
  clock_type::time_point retry_after_until_{};     // what the server's Retry-After asked for
  boost::system::error_code retry_after_failure_;  // the answer that carried it
  std::shared_ptr<const diagnostics> retry_after_diag_;
  clock_type::time_point not_before() const noexcept {
    return std::max(spacing_until_, retry_after_until_);
  }

  // -- The run.
  phase phase_ = phase::none;
  bool flight_open_ = false;  // callers are (or may be) waiting for this run's result
  std::uint64_t flight_serial_ = 0;
  bool ahead_ = false;  // the open flight is a refresh-ahead
  bool destroyed_ = false;
  bool final_attempt_ = false;  // destroyed: the last save attempt was started
  bool lease_held_ = false;
  clock_type::time_point run_deadline_{};
  clock_type::time_point wait_until_{};
  unsigned attempts_ = 0;
  unsigned conflicts_ = 0;
  bool reread_done_ = false;     // invalid_grant: the store was read once more
  unsigned unleased_loads_ = 0;  // store_updated answers in this run (I8)
  static constexpr unsigned max_unleased_loads = 16;
  bool rotated_ = false;                // this run's answer rotated the refresh token
  boost::system::error_code store_ec_;  // this run's failed save
  diagnostics store_diag_;
  std::chrono::milliseconds save_interval_{0};

  client_stats stats_;
};

}  // namespace nxsys::auth::detail

#endif
