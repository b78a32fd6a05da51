// SPDX-License-Identifier: BSL-1.0
// A randomized model test of the refresh machine: random interleavings of callers, time, answers,
// transient failures, Retry-After, lost answers, lost leases, hand-offs without the lease,
// failing saves and loads, conflicts, invalidation and destruction (followed by a new client on
// the same store), against a model server that rotates the refresh token on every refresh and
// revokes the chain when a rotated-away token comes back. No sockets, no clock: 100,000 steps
// per seed in well under a second.
//
// Checked at every step:
//  I1  no refresh token this client got an answer for is presented again, and the position in
//      the chain of what it presents never goes back;
//  I2  the store's position in the chain never goes back;
//  I3  a new access token is handed out only once its refresh token is stored (or, without
//      strict durability, once a save was tried, failed and is pending);
//  I8  nothing is sent to the server or written to the store without the lease (a store's
//      store_updated, answered without one, and a lease lost before the write included);
//  the server revokes the chain only after something no client can close alone happened: an
//  answer lost after the server rotated (with no grace period), or a client destroyed with a
//  token whose last save failed;
//  no caller waits while no driver runs (callers never hang);
// and at the end of each seed, with the faults gone: the store holds the server's current
// refresh token and the client serves.
#include "refresh_machine.hpp"

#include <boost/test/unit_test.hpp>

#include <cerrno>
#include <cstdint>
#include <deque>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace na = nxsys::auth;
using namespace nxsys::auth::detail;
using namespace std::chrono_literals;
using boost::system::error_code;
using kind = action::kind;

namespace {

struct model_server {
  std::vector<std::string> chain{"rt-0"};  // every refresh token issued, in order
  std::size_t current = 0;                 // index of the one accepted now
  std::set<std::string> retired;
  bool revoked = false;
  bool grace = false;  // the token just replaced is still accepted (answered with the current)
  unsigned reuse = 0;
  unsigned issued = 0;
  unsigned names = 0;

  struct result {
    bool ok = false;
    std::string access, refresh;
  };
  result handle(const std::string& rt) {
    result r;
    if (revoked) return r;
    if (rt == chain[current]) {
      retired.insert(rt);
      chain.push_back("rt-" + std::to_string(++names));  // never a name twice, across chains
      ++current;
      r.ok = true;
      r.access = "at-" + std::to_string(++issued);
      r.refresh = chain[current];
      return r;
    }
    if (grace && current > 0 && rt == chain[current - 1]) {
      r.ok = true;
      r.access = "at-" + std::to_string(++issued);
      r.refresh = chain[current];
      return r;
    }
    if (retired.count(rt) != 0) {
      revoked = true;
      ++reuse;
    }
    return r;
  }
  long index_of(const std::string& rt) const {
    for (std::size_t i = 0; i < chain.size(); ++i)
      if (chain[i] == rt) return static_cast<long>(i);
    return -1;
  }
};

struct model_store {
  std::optional<na::stored_tokens> value;
  bool fail_saves = false;
  bool fail_loads = false;
};

struct options {
  bool strict = false;
  bool lost_answers = false;  // answers lost after the server acted
  bool grace = false;
  bool destruction = true;
};

class simulation {
 public:
  simulation(std::uint64_t seed, options o) : rng_(seed), opts_(o) {
    policy_.max_attempts = 3;
    policy_.initial_backoff = 100ms;
    policy_.max_backoff = 2s;
    policy_.min_retry_spacing = 1s;
    policy_.refresh_deadline = 20s;
    policy_.strict_durability = o.strict;
    policy_.store_retry_interval = 500ms;
    policy_.refresh_ahead_fraction = 0.2;
    server_.grace = o.grace;
    new_client();
  }

  void run(int steps) {
    for (int i = 0; i < steps; ++i) {
      step();
      check_liveness();
      if (failed_) return;
    }
    settle();
  }

  bool failed() const { return failed_; }
  std::string report() const {
    std::ostringstream os;
    os << failure_ << "\nlast events:\n";
    for (const auto& e : events_) os << "  " << e << "\n";
    return os.str();
  }
  unsigned refreshes() const { return server_.issued; }
  unsigned incarnations() const { return incarnations_; }
  unsigned reauthorizations() const { return reauthorizations_; }

 private:
  // -- plumbing
  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  void note(std::string e) {
    events_.push_back(std::move(e));
    if (events_.size() > 60) events_.pop_front();
  }
  void fail(const std::string& why) {
    if (!failed_) failure_ = why;
    failed_ = true;
  }
  void advance(clock_type::duration d) {
    now_.steady += d;
    now_.wall += std::chrono::duration_cast<std::chrono::system_clock::duration>(d);
  }

  void new_client() {
    ++incarnations_;
    // A restarted process: the configured token is the chain's first one; the store knows more.
    machine_.emplace(policy_, first_token_, rng_());
    act_.reset();
    leased_ = false;
    waiters_ = 0;
    answered_.clear();
    last_presented_ = -1;
    retry_after_until_ = {};  // a new process does not know what the server told the old one
    note("new client");
  }

  // -- one random step
  void step() {
    const int r = pick(0, 999);
    if (r < 300) {
      caller();
    } else if (r < 360) {
      advance(std::chrono::milliseconds(pick(0, 3000)));
    } else if (r < 365) {
      advance(std::chrono::seconds(pick(60, 4000)));  // past expiry
    } else if (r < 385) {
      if (machine_->invalidate(nullptr)) note("invalidate");
    } else if (r < 390) {
      toggle_faults();
    } else if (r < 391 && opts_.destruction) {
      destroy();
    } else if (act_) {
      drive();
    }
  }

  void toggle_faults() {
    switch (pick(0, 2)) {
      case 0:
        store_.fail_saves = !store_.fail_saves;
        note(std::string("saves ") + (store_.fail_saves ? "fail" : "work"));
        break;
      case 1:
        store_.fail_loads = !store_.fail_loads;
        note(std::string("loads ") + (store_.fail_loads ? "fail" : "work"));
        break;
      default:
        lost_ = opts_.lost_answers && !lost_;
        note(std::string("answers ") + (lost_ ? "may be lost" : "arrive"));
    }
  }

  void caller() {
    auto d = machine_->on_call(now_.steady);
    if (d.what == call_decision::kind::join) ++waiters_;
    if (d.what == call_decision::kind::serve && !d.token) fail("served an empty token");
    if (d.start_driver) {
      if (act_) fail("a second driver was asked for");
      take(machine_->start(now_));
    } else if (d.wake_driver) {
      if (!act_ || act_->what != kind::wait) fail("woke a driver that does not wait");
      if (act_ && chance(0.5)) take(machine_->on_waited(now_));  // the wake-up may lag
    }
  }

  void destroy() {
    note("destroy");
    const auto d = machine_->on_destroy();
    waiters_ = 0;  // aborted by the client
    if (d.start_driver) {
      if (act_) fail("a second driver was asked for at destruction");
      take(machine_->start(now_));
    }
    for (int guard = 0; act_ && guard < 200; ++guard) {
      if (d.cancel_acquire && act_->what == kind::acquire) {
        leased_ = false;
        take(machine_->on_acquired(error_code(ECANCELED, boost::system::system_category()), {},
                                   now_));
      } else if (d.cancel_unwritten_request && act_->what == kind::request && chance(0.5)) {
        take(machine_->on_failure(error_code(ECANCELED, boost::system::system_category()), {},
                                  std::nullopt, false, now_));
      } else {
        drive();
      }
    }
    if (act_) fail("a destroyed client's driver did not end");
    // Its last save failed: the chain may be lost, which no client can prevent alone.
    if (machine_->save_pending()) at_risk_ = true;
    new_client();
  }

  // Carries out the driver's action with a random outcome.
  void drive() {
    action a = std::move(*act_);
    act_.reset();
    switch (a.what) {
      case kind::acquire:
        if (!calm_ && chance(0.03)) {
          note("acquire: busy");
          leased_ = false;
          take(machine_->on_acquired(make_error_code(na::errc::store_busy), {}, now_));
        } else if (!calm_ && chance(0.05)) {
          // A store's hand-off: read the state without the lease (I8).
          note("acquire: store updated, no lease");
          leased_ = false;
          take(machine_->on_acquired(make_error_code(na::errc::store_updated), {}, now_));
        } else {
          leased_ = true;
          take(machine_->on_acquired({}, {}, now_));
        }
        break;
      case kind::load:
        if (store_.fail_loads) {
          note("load: failed");
          take(
              machine_->on_loaded(make_error_code(na::errc::store_failed), {}, std::nullopt, now_));
        } else {
          note("load: " + (store_.value ? store_.value->refresh_token : std::string("nothing")));
          take(machine_->on_loaded({}, {}, store_.value, now_));
        }
        break;
      case kind::request:
        request(std::string(a.refresh_token.view()));
        break;
      case kind::wait:
        if (now_.steady < a.until && chance(0.7)) advance(a.until - now_.steady);
        take(machine_->on_waited(now_));
        break;
      case kind::save:
        save(std::move(a.next), std::string(a.expected.view()));
        break;
      case kind::done:
        break;
    }
  }

  void request(const std::string& rt) {
    // I1
    if (answered_.count(rt) != 0) fail("I1: presented " + rt + ", which the server answered for");
    const long idx = server_.index_of(rt);
    if (idx < last_presented_) fail("I1: presented " + rt + " after a newer token");
    last_presented_ = std::max(last_presented_, idx);
    // I8: nothing goes to the server without the lease.
    if (!leased_) fail("I8: a request without the lease");
    const int r = calm_ ? 99 : pick(0, 99);
    if (r < 3) {
      note("request " + rt + ": the lease ran out before the write");
      take(machine_->on_failure(make_error_code(na::errc::lease_lost), {}, std::nullopt, false,
                                now_));
      return;
    }
    if (r < 8) {
      note("request " + rt + ": connection failed before the write");
      take(machine_->on_failure(make_error_code(na::errc::connection), {}, std::nullopt, false,
                                now_));
      return;
    }
    if (r < 14) {
      const auto after = std::chrono::seconds(pick(0, 5));
      note("request " + rt + ": 503, Retry-After " + std::to_string(after.count()));
      retry_after_until_ = std::max(retry_after_until_, now_.steady + after);
      take(machine_->on_failure(make_error_code(na::errc::temporarily_unavailable), {}, after,
                                false, now_));
      return;
    }
    // I5: nothing before the time the server asked for.
    if (now_.steady < retry_after_until_) fail("I5: a request before Retry-After ended");
    const bool was_revoked = server_.revoked;
    auto res = server_.handle(rt);
    if (server_.revoked && !was_revoked) {
      note("request " + rt + ": REUSE, chain revoked");
      if (!at_risk_) fail("the server revoked the chain, and nothing excuses it");
    }
    if (r < 20 && lost_) {
      // The server acted; the answer never arrives.
      note("request " + rt + ": answer lost (" + (res.ok ? "rotated" : "refused") + ")");
      if (res.ok && !server_.grace) at_risk_ = true;
      take(machine_->on_failure(make_error_code(na::errc::timeout), {}, std::nullopt, true, now_));
      return;
    }
    if (!res.ok) {
      note("request " + rt + ": invalid_grant");
      answered_.insert(rt);
      take(machine_->on_failure(make_error_code(na::errc::invalid_grant), {}, std::nullopt, false,
                                now_));
      if (server_.revoked) reauthorize();
      return;
    }
    note("request " + rt + ": " + res.access + ", " + res.refresh);
    if (res.refresh != rt) answered_.insert(rt);
    na::protocol::token_response tr;
    tr.access_token = res.access;
    tr.token_type = "Bearer";
    tr.refresh_token = res.refresh;
    tr.expires_in = std::chrono::seconds(pick(2, 3600));
    take(machine_->on_answer(std::move(tr), now_.steady, now_));
  }

  void save(na::stored_tokens next, const std::string& expected) {
    // I8: nothing goes to the store without the lease.
    if (!leased_) fail("I8: a save without the lease");
    if (store_.fail_saves) {
      note("save " + next.refresh_token + ": failed");
      failed_save_ = next.refresh_token;
      take(machine_->on_saved(make_error_code(na::errc::store_failed), {}, now_));
      return;
    }
    if ((!calm_ && chance(0.02)) || (store_.value && store_.value->refresh_token != expected)) {
      note("save " + next.refresh_token + ": conflict");
      failed_save_ = next.refresh_token;
      take(machine_->on_saved(make_error_code(na::errc::store_conflict), {}, now_));
      return;
    }
    // I2: the store never goes back in the chain (a re-authorization starts a new one).
    const long before = store_.value ? server_.index_of(store_.value->refresh_token) : -1;
    const long after = server_.index_of(next.refresh_token);
    if (after < before) fail("I2: the store went back from " + store_.value->refresh_token);
    note("save " + next.refresh_token + " (generation " + std::to_string(next.generation) + ")");
    // The store holds the server's chain again: whatever put it at risk is over, and a later
    // revocation would need a new excuse.
    if (next.refresh_token == server_.chain[server_.current]) at_risk_ = false;
    store_.value = std::move(next);
    take(machine_->on_saved({}, {}, now_));
  }

  // The chain was revoked for an excused reason: the user authorizes again.
  void reauthorize() {
    ++reauthorizations_;
    server_.chain = {"rt-" + std::to_string(++server_.names)};
    server_.current = 0;
    server_.revoked = false;
    first_token_ = server_.chain[0];
    at_risk_ = false;
    store_.value.reset();  // the operator clears the old state with the new authorization
    last_presented_ = -1;
    note("re-authorized");
    auto d = machine_->set_refresh_token(first_token_);
    if (d.start_driver) {
      if (act_) fail("a second driver was asked for");
      take(machine_->start(now_));
    } else if (d.wake_driver && act_ && act_->what == kind::wait) {
      take(machine_->on_waited(now_));
    }
  }

  void take(action a) {
    if (a.release_lease || a.what == kind::done) leased_ = false;
    if (a.complete) {
      const auto& c = *a.complete;
      if (!c.silent) waiters_ = 0;
      if (c.published && !c.event.from_store && !c.ec) {
        // I3
        const bool stored =
            store_.value && store_.value->refresh_token == machine_->refresh_token().view();
        // Without strict durability, a save of this very state was tried and failed.
        const bool tried = !policy_.strict_durability && machine_->save_pending() &&
                           failed_save_ == machine_->refresh_token().view();
        if (!stored && !tried) fail("I3: a new token was handed out before its save");
      }
    }
    if (a.what == kind::done) {
      act_.reset();
    } else {
      act_ = std::move(a);
    }
  }

  void check_liveness() {
    if (!act_ && (waiters_ != 0 || machine_->flight_open()))
      fail("callers wait while no driver runs");
    if (!act_ && machine_->driver_alive()) fail("the machine thinks a driver runs, none does");
  }

  // Faults off: the store ends holding the server's chain and the client serves.
  void settle() {
    store_.fail_saves = store_.fail_loads = lost_ = false;
    calm_ = true;  // no random failure either
    note("settle");
    if (server_.revoked) reauthorize();
    for (int round = 0; round < 3 && !failed_; ++round) {
      advance(70s);
      for (int guard = 0; act_ && guard < 1000; ++guard) drive();
      machine_->invalidate(nullptr);
      caller();
      for (int guard = 0; act_ && guard < 1000; ++guard) {
        if (act_->what == kind::wait) advance(5s);
        drive();
      }
      if (server_.revoked) reauthorize();
    }
    if (failed_) return;
    if (act_) fail("the driver did not end once the faults were gone");
    if (!store_.value || store_.value->refresh_token != server_.chain[server_.current])
      fail("the store does not hold the server's current refresh token");
    if (machine_->on_call(now_.steady).what != call_decision::kind::serve)
      fail("the client does not serve once the faults are gone");
  }

  std::mt19937_64 rng_;
  options opts_;
  machine_policy policy_;
  model_server server_;
  model_store store_;
  std::optional<refresh_machine> machine_;
  std::optional<action> act_;
  instant now_{clock_type::time_point(100000h), std::chrono::system_clock::time_point(100000h)};
  std::string first_token_ = "rt-0";
  std::set<std::string> answered_;
  std::string failed_save_;  // the refresh token of the last save that failed
  long last_presented_ = -1;
  clock_type::time_point retry_after_until_{};
  std::uint64_t waiters_ = 0;
  bool lost_ = false;
  bool calm_ = false;
  bool leased_ = false;  // the driver holds the store's lease (I8)
  bool at_risk_ = false;
  unsigned incarnations_ = 0;
  unsigned reauthorizations_ = 0;
  bool failed_ = false;
  std::string failure_;
  std::deque<std::string> events_;
};

// NXSYS_MODEL_SEEDS / NXSYS_MODEL_STEPS widen a run by hand (say, a million steps on 50 seeds).
int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::atoi(v) : fallback;
}

void run_seeds(options o) {
  const int seeds = env_int("NXSYS_MODEL_SEEDS", 6);
  const int steps = env_int("NXSYS_MODEL_STEPS", 100'000);
  for (int seed = 1; seed <= seeds; ++seed) {
    simulation sim(static_cast<std::uint64_t>(seed) * 7919u, o);
    sim.run(steps);
    BOOST_TEST_MESSAGE("seed " << seed << ": " << steps << " steps, " << sim.refreshes()
                               << " refreshes, " << sim.incarnations() << " clients, "
                               << sim.reauthorizations() << " re-authorizations");
    BOOST_TEST_REQUIRE(!sim.failed(), "seed " << seed << ": " << sim.report());
    BOOST_TEST(sim.refreshes() > 100u);  // the run really exercised the chain
  }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(refresh_model)

BOOST_AUTO_TEST_CASE(the_chain_survives_failing_saves_conflicts_and_destruction) {
  run_seeds({});
}

BOOST_AUTO_TEST_CASE(with_strict_durability_too) {
  options o;
  o.strict = true;
  run_seeds(o);
}

BOOST_AUTO_TEST_CASE(lost_answers_are_recovered_by_a_server_grace_period) {
  options o;
  o.lost_answers = true;
  o.grace = true;
  run_seeds(o);
}

BOOST_AUTO_TEST_CASE(lost_answers_without_grace_revoke_only_where_nothing_else_could_help) {
  options o;
  o.lost_answers = true;
  run_seeds(o);
}

BOOST_AUTO_TEST_SUITE_END()
