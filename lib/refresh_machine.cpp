// SPDX-License-Identifier: BSL-1.0
// The refresh machine's decisions. Read refresh_machine.hpp first: the invariants I1–I7 named
// in the comments here are stated there.
#include "refresh_machine.hpp"

#include "text.hpp"

#include <cerrno>

namespace nxsys::auth::detail {
using boost::system::error_code;

namespace {

// asio::error::operation_aborted on POSIX, without including Asio here.
const error_code aborted_ec(ECANCELED, boost::system::system_category());

// Consumed and dead refresh tokens remembered (I1, I2). A chain moves one step per refresh, so
// a store can only be a few generations behind; the generation covers what falls out of this.
constexpr std::size_t spent_kept = 32;
constexpr std::chrono::milliseconds longest_save_retry_interval{60'000};

// Failures that another attempt may not repeat. A definite answer (invalid_grant,
// invalid_client, a malformed 200, a TLS certificate problem) would come back the same.
bool transient(const error_code& ec) {
  return ec == errc::connection || ec == errc::timeout || ec == errc::server_error ||
         ec == errc::temporarily_unavailable;
}

std::string ms_text(clock_type::duration d) {
  return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()) + " ms";
}

// The message of an inner step, folded into ours: "…: cannot fsync directory X: …".
std::string with_cause(std::string outer, const error_code& ec, const diagnostics& inner) {
  outer += ": ";
  outer += inner.client_message.empty() ? ec.message() : inner.client_message;
  return outer;
}

void append(std::string& s, std::string_view more) {
  if (!s.empty()) s += "; ";
  s += more;
}

std::string reason_of(const error_code& ec) {
  return ec.category() == boost::system::system_category() ? "system: " + ec.message()
                                                           : ec.message();
}

}  // namespace

machine_policy machine_policy::from(const client_config& cfg) {
  machine_policy p;
  p.refresh_leeway = cfg.refresh.leeway;
  p.leeway_max_fraction = cfg.refresh.leeway_max_fraction;
  p.default_lifetime = cfg.refresh.default_lifetime;
  p.min_retry_spacing = cfg.refresh.min_retry_spacing;
  p.serve_valid_token_on_failure = cfg.refresh.serve_valid_token_on_failure;
  p.refresh_ahead_fraction = cfg.refresh.ahead_fraction;
  p.max_attempts = cfg.refresh.retry.max_attempts;
  p.initial_backoff = cfg.refresh.retry.initial_backoff;
  p.max_backoff = cfg.refresh.retry.max_backoff;
  p.refresh_deadline = cfg.refresh.deadline;
  p.strict_durability = cfg.storage.strict_durability;
  p.store_retry_interval = cfg.storage.retry_interval;
  p.client_credentials = cfg.grant == grant_type::client_credentials;
  return p;
}

refresh_machine::refresh_machine(machine_policy policy, std::string initial_refresh_token,
                                 std::uint64_t seed)
    : policy_(policy),
      rng_(seed),
      rt_(std::move(initial_refresh_token)),
      save_interval_(policy.store_retry_interval) {}

refresh_machine::~refresh_machine() = default;

// ---------------------------------------------------------------------------------------------
// Callers

bool refresh_machine::token_valid_for_failure(clock_type::time_point now) const {
  return policy_.serve_valid_token_on_failure && last_failure_ && current_ && now < valid_until_;
}

call_decision refresh_machine::on_call(clock_type::time_point now) {
  ++stats_.slow_path_calls;
  call_decision d;
  using k = call_decision::kind;
  if (destroyed_) {
    d.what = k::fail;
    d.ec = aborted_ec;
    return d;
  }
  if (current_ && now < refresh_at_) {
    d.what = k::serve;
    d.token = current_;
    return d;
  }
  const bool serve_valid = token_valid_for_failure(now);
  if (flight_open_) {
    // A retry after a failure runs in the background while the token is still valid.
    if (serve_valid) {
      ++stats_.valid_tokens_served_after_failure;
      d.what = k::serve;
      d.token = current_;
    }
    return d;  // join
  }
  // I5: no run before the spacing after a failure, or the time the server asked for, is over.
  if (now < not_before()) {
    if (serve_valid) {
      ++stats_.valid_tokens_served_after_failure;
      d.what = k::serve;
      d.token = current_;
    } else {
      ++stats_.calls_failed_fast;
      d.what = k::fail;
      const bool server_asked = now < retry_after_until_ && retry_after_failure_;
      d.ec = server_asked ? retry_after_failure_ : last_failure_;
      d.diag = server_asked ? retry_after_diag_ : last_failure_diag_;
    }
    return d;
  }
  if (serve_valid) {
    // The next attempt runs without making anyone wait.
    ++stats_.valid_tokens_served_after_failure;
    d.what = k::serve;
    d.token = current_;
  }
  open_flight(false);
  d.open_flight = true;
  d.start_driver = phase_ == phase::none;
  d.wake_driver = phase_ == phase::save_wait;
  if (d.start_driver) phase_ = phase::acquiring;  // the driver's start() follows
  return d;
}

call_decision refresh_machine::on_ahead(std::uint64_t serial, clock_type::time_point now) {
  call_decision d;
  d.what = call_decision::kind::serve;
  if (destroyed_ || flight_open_ || !current_ || current_.serial() != serial || now < not_before())
    return d;
  open_flight(true);
  ++stats_.refreshes_ahead;
  d.open_flight = true;
  d.start_driver = phase_ == phase::none;
  d.wake_driver = phase_ == phase::save_wait;
  if (d.start_driver) phase_ = phase::acquiring;
  return d;
}

void refresh_machine::open_flight(bool ahead) {
  flight_open_ = true;
  ahead_ = ahead;
  ++flight_serial_;
}

bool refresh_machine::invalidate(const access_token* rejected) {
  if (!current_) return false;
  // Serials are per client and never reused: equal serial, same token.
  if (rejected != nullptr && rejected->serial() != current_.serial()) return false;
  current_ = access_token{};
  ++stats_.invalidations;
  return true;
}

call_decision refresh_machine::set_refresh_token(std::string_view refresh_token) {
  call_decision d;
  d.what = call_decision::kind::serve;
  if (destroyed_) return d;
  // The user says this token is good: it is no longer spent, whatever we saw before.
  std::erase_if(spent_, [&](const secret_string& s) { return s == refresh_token; });
  rt_ = secret_string(refresh_token);
  ++gen_;
  rt_dead_ = false;
  dead_diag_.reset();
  rt_answer_lost_ = false;
  // A new chain ends the failure spacing, but not the wait the server asked for (I5).
  last_failure_ = {};
  last_failure_diag_.reset();
  spacing_until_ = {};
  pending_.reset();
  // Saved without an access token: other holders refresh with the new chain on their own.
  pending_ = pending_state{};
  pending_->state.refresh_token = rt_.str();
  pending_->state.generation = gen_;
  pending_->forced = true;
  save_interval_ = policy_.store_retry_interval;
  d.start_driver = phase_ == phase::none;
  d.wake_driver = phase_ == phase::save_wait;
  if (d.start_driver) phase_ = phase::acquiring;
  return d;
}

destroy_decision refresh_machine::on_destroy() {
  destroy_decision d;
  destroyed_ = true;
  flight_open_ = false;  // the client aborts the waiters
  ahead_ = false;
  current_ = access_token{};
  d.cancel_acquire = phase_ == phase::acquiring;
  d.cancel_wait = phase_ == phase::backoff || phase_ == phase::save_wait;
  d.cancel_unwritten_request = phase_ == phase::requesting;
  d.start_driver = phase_ == phase::none && pending_.has_value();
  if (d.start_driver) phase_ = phase::acquiring;  // the driver's start() follows
  return d;
}

// ---------------------------------------------------------------------------------------------
// The driver

action refresh_machine::act(action::kind k) {
  action a;
  a.what = k;
  return a;
}

action refresh_machine::start(instant now) {
  run_deadline_ = now.steady + policy_.refresh_deadline;
  attempts_ = 0;
  conflicts_ = 0;
  reread_done_ = false;
  unleased_loads_ = 0;
  rotated_ = false;
  store_ec_ = {};
  store_diag_.clear();
  store_loaded_ = false;
  answer_.reset();
  if (destroyed_) {
    // I3: one last bounded attempt to save what is pending; nothing else after destruction.
    if (!pending_ || final_attempt_) return end_run(act(action::kind::done));
    final_attempt_ = true;
  }
  phase_ = phase::acquiring;
  auto a = act(action::kind::acquire);
  a.deadline = run_deadline_;
  return a;
}

action refresh_machine::on_acquired(error_code ec, const diagnostics& diag, instant now) {
  if (ec == errc::store_updated) {
    // I8: another holder saved while we waited. Read it without the lease: adopted if it
    // serves, else the lease is asked for again. Bounded, should a store keep saying so.
    lease_held_ = false;
    if (++unleased_loads_ > max_unleased_loads) {
      diagnostics d;
      d.client_message = "the token store reported " + std::to_string(max_unleased_loads) +
                         " newer states in one refresh without granting the lease";
      if (destroyed_) return end_run(act(action::kind::done));
      ++stats_.store_load_failures;
      return finish_failure(make_error_code(errc::store_failed), std::move(d), now,
                            act(action::kind::done));
    }
    phase_ = phase::loading;
    return act(action::kind::load);
  }
  if (ec) {
    lease_held_ = false;
    if (destroyed_) {
      if (ec == aborted_ec && pending_ && !final_attempt_)
        return start(now);  // the lease wait was for a refresh; the last save still gets one
      return end_run(act(action::kind::done));
    }
    ++stats_.store_load_failures;
    diagnostics d;
    d.client_message =
        ec == errc::store_busy
            ? "the token store did not grant the right to refresh before the refresh deadline "
              "(another holder kept it)"
            : with_cause("the token store's lock could not be taken", ec, diag);
    return finish_failure(ec, std::move(d), now, act(action::kind::done));
  }
  lease_held_ = true;
  phase_ = phase::loading;
  return act(action::kind::load);
}

action refresh_machine::on_loaded(error_code ec, const diagnostics& diag,
                                  std::optional<stored_tokens> stored, instant now) {
  ++stats_.store_loads;
  if (ec) {
    ++stats_.store_load_failures;
    if (destroyed_) return end_run(act(action::kind::done));
    diagnostics d;
    d.client_message =
        ec == errc::store_corrupt
            ? with_cause(
                  "the token store holds an unreadable state: repair or remove it (the "
                  "configured refresh token is not used instead: it may have been "
                  "consumed long ago)",
                  ec, diag)
            : with_cause("the token store could not be read", ec, diag);
    return finish_failure(ec, std::move(d), now, act(action::kind::done));
  }
  if (!lease_held_) {
    // I8: read without the lease (store_updated): only an adoption may come of it.
    if (stored && adoptable_without_lease(*stored, now)) {
      ++stats_.store_handoffs;
      return reconcile(std::move(stored), now);
    }
    phase_ = phase::acquiring;
    auto a = act(action::kind::acquire);
    a.deadline = run_deadline_;
    return a;
  }
  store_loaded_ = true;
  return reconcile(std::move(stored), now);
}

// I8: what reconcile() would settle by handing out the stored token, and nothing else: no
// request, no save (those need the lease), and every check reconcile makes first.
bool refresh_machine::adoptable_without_lease(const stored_tokens& s, instant now) const {
  if (pending_ || !flight_open_ || destroyed_) return false;
  if (policy_.client_credentials != s.refresh_token.empty()) return false;
  if (!is_header_token(s.access_token) || (!s.token_type.empty() && !is_header_token(s.token_type)))
    return false;
  const bool ours = s.refresh_token == rt_.view();
  if (!ours && (known_spent(s.refresh_token) || s.generation < gen_)) return false;
  return usable_stored(s, now).has_value();
}

bool refresh_machine::known_spent(std::string_view rt) const {
  return std::any_of(spent_.begin(), spent_.end(), [&](const secret_string& s) { return s == rt; });
}

void refresh_machine::mark_spent(std::string_view rt) {
  if (rt.empty() || known_spent(rt)) return;
  spent_.emplace_back(rt);
  if (spent_.size() > spent_kept) spent_.pop_front();
}

// What the store holds, against what we hold (I2, I6).
action refresh_machine::reconcile(std::optional<stored_tokens> stored, instant now) {
  if (stored) {
    const auto& s = *stored;
    if (policy_.client_credentials && !s.refresh_token.empty()) {
      ++stats_.store_load_failures;
      if (destroyed_) return end_run(act(action::kind::done));
      diagnostics d;
      d.client_message =
          "the token store holds a refresh-token chain, but this client uses the "
          "client_credentials grant: give it a store (or key) of its own";
      return finish_failure(make_error_code(errc::invalid_config), std::move(d), now,
                            act(action::kind::done));
    }
    // I6: what a store hands us goes into headers (the access token) or the request body.
    if ((s.refresh_token.empty() && !policy_.client_credentials) ||
        (!s.access_token.empty() && !is_header_token(s.access_token)) ||
        (!s.token_type.empty() && !is_header_token(s.token_type))) {
      ++stats_.store_load_failures;
      if (destroyed_) return end_run(act(action::kind::done));
      diagnostics d;
      d.client_message =
          "the token store holds a state that cannot be used (an empty refresh token, or an "
          "access token or type with bytes not allowed in an HTTP header): repair or remove it";
      return finish_failure(make_error_code(errc::store_corrupt), std::move(d), now,
                            act(action::kind::done));
    }
    store_rt_ = secret_string(std::string_view(s.refresh_token));
  } else {
    store_rt_.reset();
  }

  action a;
  if (!stored) {
    // Nothing stored: ours is the newest there is.
    if (pending_) return save_pending(std::move(a));
    return proceed(now, std::move(a));
  }
  const auto& s = *stored;
  const bool ours = s.refresh_token == rt_.view();
  const std::uint64_t our_gen = pending_ ? std::max(gen_, pending_->state.generation) : gen_;
  if (pending_ && pending_->forced) {
    // Re-authorization: the user's token replaces whatever is stored, one generation ahead.
    gen_ = std::max(gen_, s.generation + 1);
    pending_->state.generation = gen_;
    return save_pending(std::move(a));
  }
  if (ours) {
    gen_ = std::max(gen_, s.generation);
    // Our pending state already there (a store that keeps it while its backend is down, or a
    // save whose reply was lost): saved again, for real.
    if (pending_) return save_pending(std::move(a));
    if (flight_open_)
      if (auto t = usable_stored(s, now))
        return finish_success(std::move(*t), true, now, std::move(a));
    return proceed(now, std::move(a));
  }
  if (known_spent(s.refresh_token) || s.generation < our_gen) {
    // I2: the store is behind us (saves failed, or it was restored from an old copy). Never
    // adopt it: write ours over it.
    a.logs.push_back({log_level::warning,
                      "the token store holds an older refresh token than this client (generation " +
                          std::to_string(s.generation) + ", ours " + std::to_string(our_gen) +
                          "): writing ours over it"});
    if (!pending_) {
      pending_ = pending_state{};
      pending_->state.refresh_token = rt_.str();
      pending_->state.generation = gen_;
      if (current_) {
        pending_->state.access_token = std::string(current_.value());
        pending_->state.token_type = std::string(current_.type());
        const auto left = current_.expires_at() - now.steady;
        pending_->state.expires_at =
            now.wall + std::chrono::duration_cast<std::chrono::system_clock::duration>(left);
        pending_->state.lifetime = std::chrono::duration_cast<std::chrono::seconds>(lifetime_);
      }
    }
    return save_pending(std::move(a));
  }
  // Newer: another holder moved the chain on. Adopt it (I2).
  if (pending_) {
    ++stats_.store_conflicts;
    a.logs.push_back({log_level::error,
                      "the token store holds a newer refresh token (generation " +
                          std::to_string(s.generation) + ") than our unsaved one (generation " +
                          std::to_string(our_gen) + "): continuing with the stored chain"});
    pending_.reset();
    answer_.reset();
  }
  rt_ = secret_string(std::string_view(s.refresh_token));
  gen_ = s.generation;
  rt_dead_ = false;
  dead_diag_.reset();
  rt_answer_lost_ = false;
  ++stats_.refresh_tokens_adopted;
  if (reread_done_ && attempts_ > 0) {
    ++stats_.invalid_grant_retries;
    a.logs.push_back({log_level::info,
                      "invalid_grant, but the token store holds a newer refresh token (rotated by "
                      "another holder): trying once more with it"});
  }
  if (flight_open_)
    if (auto t = usable_stored(s, now))
      return finish_success(std::move(*t), true, now, std::move(a));
  return proceed(now, std::move(a));
}

// A stored access token that is new to us and still good enough to hand out.
std::optional<refresh_machine::new_token> refresh_machine::usable_stored(const stored_tokens& s,
                                                                         instant now) const {
  if (s.access_token.empty() || s.access_token == last_issued_.view()) return std::nullopt;
  const auto left = std::chrono::duration_cast<clock_type::duration>(s.expires_at - now.wall);
  const clock_type::duration lifetime =
      s.lifetime.count() > 0 ? clock_type::duration(s.lifetime) : policy_.default_lifetime;
  new_token n;
  n.issued = now.steady + left - lifetime;
  n.lifetime = lifetime;
  const auto refresh_at =
      refresh_deadline(n.issued, n.lifetime, policy_.refresh_leeway, policy_.leeway_max_fraction);
  const auto usable_until =
      ahead_ ? refresh_ahead_point(n.issued, n.lifetime, refresh_at, policy_.refresh_ahead_fraction)
             : refresh_at;
  if (now.steady >= usable_until) return std::nullopt;
  n.value = secret_string(std::string_view(s.access_token));
  n.type = s.token_type.empty() ? "Bearer" : s.token_type;
  return n;
}

// The store is settled: on with the flight (a request), or the run ends.
action refresh_machine::proceed(instant now, action a) {
  if (destroyed_) return end_run(std::move(a));
  if (!flight_open_) return after_flight(now, std::move(a));
  return begin_request(now, std::move(a));
}

action refresh_machine::begin_request(instant now, action a) {
  if (policy_.client_credentials) {
    // No chain to check (I1, I5's dead grant): only the waits below.
  } else if (rt_.empty()) {
    diagnostics d;
    d.client_message = "no refresh token: none configured and none in the token store";
    return finish_failure(make_error_code(errc::invalid_config), std::move(d), now, std::move(a));
  } else if (rt_dead_) {
    // I5: the server refused this token; it is not sent again until it changes.
    diagnostics d = dead_diag_ ? *dead_diag_ : diagnostics{};
    return finish_failure(make_error_code(errc::invalid_grant), std::move(d), now, std::move(a));
  } else if (known_spent(rt_.view())) {
    // I1 by construction; should a path ever break it, fail rather than revoke the chain.
    return on_internal_error("the refresh token to present is one the server already consumed",
                             now);
  }
  if (now.steady < not_before()) {
    if (not_before() >= run_deadline_) {
      diagnostics d = last_failure_diag_ ? *last_failure_diag_ : diagnostics{};
      append(d.client_message, "no retry: the next would start after the refresh deadline");
      return finish_failure(last_failure_ ? last_failure_ : make_error_code(errc::timeout),
                            std::move(d), now, std::move(a));
    }
    phase_ = phase::backoff;
    wait_until_ = not_before();
    a.what = action::kind::wait;
    a.until = wait_until_;
    return a;
  }
  phase_ = phase::requesting;
  ++attempts_;
  a.what = action::kind::request;
  a.refresh_token = rt_.copy();
  a.deadline = run_deadline_;
  return a;
}

stored_tokens refresh_machine::to_stored(const new_token& t, instant now) const {
  const auto left = t.issued + t.lifetime - now.steady;
  stored_tokens s;
  s.refresh_token = rt_.str();
  s.access_token = t.value.str();
  s.token_type = t.type;
  s.expires_at = now.wall + std::chrono::duration_cast<std::chrono::system_clock::duration>(left);
  s.lifetime = std::chrono::duration_cast<std::chrono::seconds>(t.lifetime);
  s.generation = gen_;
  return s;
}

action refresh_machine::on_answer(protocol::token_response answer, clock_type::time_point sent,
                                  instant now) {
  // client_credentials: a refresh token in the answer (RFC 6749 §4.4.3 says there is none) is
  // dropped; this client never presents one.
  if (policy_.client_credentials) wipe_all(answer.refresh_token);
  const bool rotated = !answer.refresh_token.empty() && answer.refresh_token != rt_.view();
  rt_answer_lost_ = false;
  if (rotated) {
    // I1: the presented token is consumed; the new one is the only valid one, in memory at once.
    mark_spent(rt_.view());
    rt_ = secret_string(std::move(answer.refresh_token));
    ++gen_;
    rotated_ = true;
  }
  new_token t;
  t.value = secret_string(std::move(answer.access_token));
  t.type = std::move(answer.token_type);
  t.issued = sent;
  t.lifetime =
      answer.expires_in ? clock_type::duration(*answer.expires_in) : policy_.default_lifetime;
  t.scope = std::move(answer.scope);
  t.extra = std::move(answer.extra);
  // The new state supersedes any older pending one: it carries the newest refresh token.
  pending_.reset();
  pending_ = pending_state{to_stored(t, now), std::nullopt, false};
  answer_ = std::move(t);
  if (destroyed_) final_attempt_ = true;  // I4: saved with the lease this run holds
  return save_pending(act(action::kind::save));
}

action refresh_machine::save_pending(action a) {
  phase_ = phase::saving;
  a.what = action::kind::save;
  a.next = pending_->state;
  a.expected = store_rt_ ? store_rt_->copy() : secret_string();
  return a;
}

action refresh_machine::on_saved(error_code ec, const diagnostics& diag, instant now) {
  action a;
  if (!ec) {
    ++stats_.store_saves;
    store_rt_ = secret_string(std::string_view(pending_->state.refresh_token));
    auto unpublished = std::move(pending_->unpublished);
    pending_.reset();
    save_interval_ = policy_.store_retry_interval;
    if (store_ec_ || unpublished)
      a.logs.push_back({log_level::info, "the new tokens are saved now (after a failed save)"});
    store_ec_ = {};
    store_diag_.clear();
    if (destroyed_) return end_run(std::move(a));
    if (answer_) {
      auto t = std::move(*answer_);
      answer_.reset();
      return finish_success(std::move(t), false, now, std::move(a));
    }
    // I3: a token held back under strict durability is handed out now that it is saved.
    if (unpublished &&
        now.steady < refresh_deadline(unpublished->issued, unpublished->lifetime,
                                      policy_.refresh_leeway, policy_.leeway_max_fraction)) {
      if (flight_open_) return finish_success(std::move(*unpublished), false, now, std::move(a));
      publish(std::move(*unpublished));
      completion c;
      c.token = current_;
      c.published = true;
      c.silent = true;
      a.complete = std::move(c);
    }
    return proceed(now, std::move(a));
  }

  ++stats_.store_save_failures;
  if (ec == errc::store_conflict) {
    ++stats_.store_conflicts;
    // Another holder wrote between our load and our save. Read again and decide by I2.
    if (!destroyed_ && conflicts_ < 3 && now.steady < run_deadline_) {
      ++conflicts_;
      a.logs.push_back({log_level::warning,
                        "the token store changed between our load and our save: reading it again"});
      phase_ = phase::loading;
      a.what = action::kind::load;
      return a;
    }
  }
  store_ec_ = ec;
  store_diag_ = diag;
  a.logs.push_back(
      {log_level::error,
       with_cause("saving the new tokens failed", ec, diag) +
           (destroyed_ ? std::string(": client destroyed with new tokens still not saved; the "
                                     "refresh token in the store may have been consumed")
                       : std::string(": they are kept in memory and the save will be retried"))});
  if (destroyed_) return end_run(std::move(a));
  if (answer_) {
    auto t = std::move(*answer_);
    answer_.reset();
    if (!policy_.strict_durability) return finish_success(std::move(t), false, now, std::move(a));
    pending_->unpublished = std::move(t);
    diagnostics d;
    d.client_message = with_cause(
        "the new tokens could not be saved (storage.strict_durability): kept in memory, and "
        "served once a later save succeeds",
        ec, diag);
    return finish_failure(make_error_code(errc::store_failed), std::move(d), now, std::move(a));
  }
  if (policy_.strict_durability && flight_open_) {
    // Still not durable: no new request either, it would only add an unsaved token.
    diagnostics d;
    d.client_message =
        with_cause("new tokens are still not saved (storage.strict_durability)", ec, diag);
    return finish_failure(make_error_code(errc::store_failed), std::move(d), now, std::move(a));
  }
  return proceed(now, std::move(a));
}

action refresh_machine::on_failure(error_code ec, diagnostics diag,
                                   std::optional<std::chrono::seconds> retry_after, bool written,
                                   instant now) {
  action a;
  if (ec == aborted_ec || destroyed_) {
    // Destroyed: a request not written yet was dropped; one that was is over now.
    if (pending_ && !final_attempt_ && lease_held_) {
      final_attempt_ = true;
      return save_pending(std::move(a));
    }
    return end_run(std::move(a));
  }
  if (ec == errc::lease_lost && !written) {
    // The lease ran out before the request went (a pause, a failover): another holder may be
    // refreshing with this very token. Not an attempt; the lease is taken again, and the store
    // read again under it.
    if (attempts_ > 0) --attempts_;
    ++stats_.leases_lost;
    lease_held_ = false;
    store_loaded_ = false;
    phase_ = phase::acquiring;
    a.logs.push_back({log_level::warning,
                      "the token store's lease ran out before the token request was written (" +
                          describe(ec, diag) + "): not sent; taking the lease again"});
    a.what = action::kind::acquire;
    a.deadline = run_deadline_;
    a.release_lease = true;
    return a;
  }
  if (written && (ec == errc::timeout || ec == errc::connection)) rt_answer_lost_ = true;
  if (retry_after && now.steady + clock_type::duration(*retry_after) > retry_after_until_) {
    retry_after_until_ = now.steady + clock_type::duration(*retry_after);
    retry_after_failure_ = ec;
    retry_after_diag_ = std::make_shared<const diagnostics>(diag);
  }
  if (ec == errc::invalid_grant && !policy_.client_credentials) {
    if (rt_answer_lost_)
      append(diag.client_message,
             "an earlier request presenting this refresh token was sent but its answer was lost "
             "(a timeout or a dropped connection): the server most likely rotated the token then, "
             "and only a server-side grace period for replaced tokens could have recovered it");
    // I1, I5: this token is not presented again.
    mark_spent(rt_.view());
    rt_dead_ = true;
    dead_diag_ = std::make_shared<const diagnostics>(diag);
    if (!reread_done_) {
      // A rotation race: another holder may have consumed our token and stored the next one.
      reread_done_ = true;
      phase_ = phase::loading;
      a.what = action::kind::load;
      return a;
    }
    return finish_failure(ec, std::move(diag), now, std::move(a));
  }
  if (!transient(ec) || attempts_ >= policy_.max_attempts)
    return finish_failure(ec, std::move(diag), now, std::move(a));
  auto delay = clock_type::duration(
      jitter(backoff_cap(attempts_, policy_.initial_backoff, policy_.max_backoff)));
  if (retry_after && clock_type::duration(*retry_after) > delay)
    delay = clock_type::duration(*retry_after);
  const auto next = std::max(now.steady + delay, not_before());
  if (next >= run_deadline_) {
    append(diag.client_message, "no retry: the next would start after the refresh deadline");
    return finish_failure(ec, std::move(diag), now, std::move(a));
  }
  ++stats_.retries;
  a.logs.push_back({log_level::info, "token request failed (" + describe(ec, diag) + "); attempt " +
                                         std::to_string(attempts_ + 1) + " of " +
                                         std::to_string(policy_.max_attempts) + " in " +
                                         ms_text(next - now.steady) +
                                         (retry_after ? " (Retry-After)" : "")});
  phase_ = phase::backoff;
  wait_until_ = next;
  a.what = action::kind::wait;
  a.until = next;
  return a;
}

action refresh_machine::on_waited(instant now) {
  if (phase_ == phase::backoff) {
    if (destroyed_) {
      if (pending_ && !final_attempt_ && lease_held_) {
        final_attempt_ = true;
        return save_pending(act(action::kind::save));
      }
      return end_run(act(action::kind::done));
    }
    if (now.steady < wait_until_) {  // woken early: the wait stands (I5)
      auto a = act(action::kind::wait);
      a.until = wait_until_;
      return a;
    }
    return begin_request(now, action{});
  }
  // Between save retries: a caller (or destruction) ends the wait early.
  if (destroyed_ || flight_open_ || now.steady >= wait_until_) return start(now);
  auto a = act(action::kind::wait);
  a.until = wait_until_;
  return a;
}

action refresh_machine::on_internal_error(std::string what, instant now) {
  diagnostics d;
  d.client_message = "internal error in the refresh (" + std::move(what) +
                     "); the refresh ended, pending tokens are kept";
  lease_held_ = false;
  auto a = finish_failure(make_error_code(errc::internal), std::move(d), now, action{});
  // The driver is gone: a later call starts another (which also retries a pending save).
  a.release_lease = true;
  return end_run(std::move(a));
}

// ---------------------------------------------------------------------------------------------
// Ends of a flight

void refresh_machine::publish(new_token t) {
  last_issued_ = t.value.copy();
  const auto expires = t.issued + t.lifetime;
  current_ = access_token(token_data{t.value.str(), std::move(t.type), expires, ++serial_,
                                     std::move(t.scope), std::move(t.extra)});
  lifetime_ = t.lifetime;
  refresh_at_ =
      refresh_deadline(t.issued, t.lifetime, policy_.refresh_leeway, policy_.leeway_max_fraction);
  ahead_at_ =
      refresh_ahead_point(t.issued, t.lifetime, refresh_at_, policy_.refresh_ahead_fraction);
  // Valid "enough" to hand out after a failure: not in its last half-second (or the last half
  // of its leeway, for short tokens).
  valid_until_ = expires - std::min<clock_type::duration>(std::chrono::milliseconds(500),
                                                          (expires - refresh_at_) / 2);
}

action refresh_machine::finish_success(new_token t, bool from_store, instant now, action a) {
  const auto lifetime = t.lifetime;
  if (!destroyed_) publish(std::move(t));
  last_failure_ = {};
  last_failure_diag_.reset();
  spacing_until_ = {};
  retry_after_until_ = {};
  retry_after_failure_ = {};
  retry_after_diag_.reset();
  ++stats_.refreshes_succeeded;
  if (rotated_) ++stats_.refresh_tokens_rotated;
  if (from_store) ++stats_.tokens_from_store;
  if (!destroyed_) {
    completion c;
    c.token = current_;
    c.published = true;
    c.event.refresh_token_rotated = rotated_;
    c.event.lifetime = std::chrono::duration_cast<std::chrono::seconds>(lifetime);
    c.event.attempts = attempts_;
    c.event.from_store = from_store;
    c.event.ahead = ahead_;
    c.event.store_ec = store_ec_;
    c.silent = !flight_open_;
    a.complete = std::move(c);
    flight_open_ = false;
    ahead_ = false;
  }
  rotated_ = false;
  return after_flight(now, std::move(a));
}

void refresh_machine::count_failure(const error_code& ec) {
  ++stats_.refreshes_failed;
  ++stats_.refreshes_failed_by_reason[reason_of(ec)];
}

action refresh_machine::finish_failure(error_code ec, diagnostics diag, instant now, action a) {
  if (destroyed_) return end_run(std::move(a));
  if (!flight_open_) {
    // A run nobody waits for (background save retries): nothing to report but the log.
    a.logs.push_back({log_level::warning,
                      std::string(pending_ ? "background save of pending tokens failed (kept, "
                                             "tried again later): "
                                           : "background run failed: ") +
                          describe(ec, diag)});
    return after_flight(now, std::move(a));
  }
  a.complete = fail_flight(ec, std::move(diag), now);
  return after_flight(now, std::move(a));
}

completion refresh_machine::fail_flight(error_code ec, diagnostics diag, instant now) {
  count_failure(ec);
  auto d = std::make_shared<const diagnostics>(std::move(diag));
  // I5: a failing server sees at most one attempt per spacing, however many callers loop.
  last_failure_ = ec;
  last_failure_diag_ = d;
  spacing_until_ = now.steady + policy_.min_retry_spacing;
  completion c;
  c.ec = ec;
  c.diag = d;
  c.event.ec = ec;
  c.event.attempts = attempts_;
  c.event.ahead = ahead_;
  c.event.store_ec = store_ec_;
  if (ec != aborted_ec && token_valid_for_failure(now.steady)) {
    c.token = current_;  // the still-valid token, not the failure
    c.stale = true;
  }
  if (ahead_)
    c.ahead_retry_at = now.steady + std::max<clock_type::duration>(policy_.min_retry_spacing,
                                                                   policy_.initial_backoff);
  flight_open_ = false;
  ahead_ = false;
  rotated_ = false;
  return c;
}

action refresh_machine::on_flight_overdue(std::uint64_t serial, instant now) {
  action a;
  if (destroyed_ || !flight_open_ || serial != flight_serial_) return a;
  const char* step = "the refresh";
  switch (phase_) {
    case phase::acquiring:
      step = "the token store's lease";
      break;
    case phase::loading:
      step = "the token store's load";
      break;
    case phase::saving:
      step = "the token store's save";
      break;
    case phase::requesting:
      step = "the token request";
      break;
    default:
      break;
  }
  diagnostics d;
  d.client_message = std::string("the refresh did not end by refresh.deadline: ") + step +
                     " has not completed (it goes on in the background; its result is kept)";
  a.logs.push_back({log_level::error, d.client_message});
  a.complete = fail_flight(make_error_code(errc::timeout), std::move(d), now);
  return a;
}

// After a flight completed (or a run nobody waits for settled the store): retry a pending save
// later, or go on with a flight that opened meanwhile, or end.
action refresh_machine::after_flight(instant now, action a) {
  if (destroyed_) return end_run(std::move(a));
  if (pending_) {
    phase_ = phase::save_wait;
    wait_until_ = now.steady + save_interval_;
    save_interval_ = std::min(save_interval_ * 2, longest_save_retry_interval);
    lease_held_ = false;
    store_loaded_ = false;
    a.release_lease = true;
    a.what = action::kind::wait;
    a.until = wait_until_;
    return a;
  }
  return end_run(std::move(a));
}

action refresh_machine::end_run(action a) {
  phase_ = phase::none;
  lease_held_ = false;
  store_loaded_ = false;
  a.what = action::kind::done;
  return a;
}

std::chrono::milliseconds refresh_machine::jitter(std::chrono::milliseconds cap) {
  // Full jitter: a uniform wait in [0, cap], so callers that failed together retry apart.
  std::uniform_int_distribution<std::chrono::milliseconds::rep> pick(0, cap.count());
  return std::chrono::milliseconds(pick(rng_));
}

}  // namespace nxsys::auth::detail
