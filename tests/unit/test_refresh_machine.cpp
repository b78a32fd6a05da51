// SPDX-License-Identifier: BSL-1.0
// The refresh machine alone (lib/refresh_machine.hpp): no sockets, no clock, no Asio. Each test
// is a script: inputs in, the action or decision out, checked step by step. They are grouped by
// the invariant they hold the machine to (I1–I7 at the top of refresh_machine.hpp).
#include "refresh_machine.hpp"

#include <boost/test/unit_test.hpp>

#include <optional>
#include <string>

namespace na = nxsys::auth;
using namespace nxsys::auth::detail;
using namespace std::chrono_literals;
using kind = action::kind;
using call = call_decision::kind;

namespace {

// The machine with a clock the script moves.
struct script {
  machine_policy policy;
  std::optional<refresh_machine> m;
  instant now{clock_type::time_point(1000h), std::chrono::system_clock::time_point(1000h)};

  explicit script(machine_policy p = defaults(), std::string rt = "rt-0") : policy(p) {
    m.emplace(policy, std::move(rt), 42);
  }
  static machine_policy defaults() {
    machine_policy p;
    p.max_attempts = 1;
    p.refresh_ahead_fraction = 0;
    return p;
  }
  void advance(clock_type::duration d) {
    now.steady += d;
    now.wall += std::chrono::duration_cast<std::chrono::system_clock::duration>(d);
  }
  // A caller that finds no token: its decision.
  call_decision caller() { return m->on_call(now.steady); }
  // The driver's first step, after a decision asked for one.
  action start() { return m->start(now); }
  action acquired() { return m->on_acquired({}, {}, now); }
  action loaded(std::optional<na::stored_tokens> s) {
    return m->on_loaded({}, {}, std::move(s), now);
  }
  action answer(std::string access, std::string rt = {}, std::chrono::seconds life = 3600s) {
    na::protocol::token_response r;
    r.access_token = std::move(access);
    r.token_type = "Bearer";
    r.refresh_token = std::move(rt);
    r.expires_in = life;
    return m->on_answer(std::move(r), now.steady, now);
  }
  action failed(na::errc e, bool written = false,
                std::optional<std::chrono::seconds> retry_after = std::nullopt) {
    na::diagnostics d;
    d.server_error = "server words";
    return m->on_failure(make_error_code(e), d, retry_after, written, now);
  }
  action saved(boost::system::error_code ec = {}) { return m->on_saved(ec, {}, now); }
  action waited() { return m->on_waited(now); }

  // acquire → load (nothing stored) → the request: what a first refresh does.
  action to_request(std::optional<na::stored_tokens> stored = std::nullopt) {
    auto a = start();
    BOOST_REQUIRE(a.what == kind::acquire);
    a = acquired();
    BOOST_REQUIRE(a.what == kind::load);
    return loaded(std::move(stored));
  }
  // A whole first refresh that rotates rt-0 into `rt` and saves it.
  action refresh_to(const std::string& rt, const std::string& access) {
    auto d = caller();
    BOOST_REQUIRE(d.what == call::join);
    auto a = to_request();
    BOOST_REQUIRE(a.what == kind::request);
    a = answer(access, rt);
    BOOST_REQUIRE(a.what == kind::save);
    return saved();
  }
};

na::stored_tokens stored(std::string rt, std::uint64_t gen, std::string access = {},
                         std::chrono::system_clock::time_point expires = {}) {
  na::stored_tokens s;
  s.refresh_token = std::move(rt);
  s.access_token = std::move(access);
  s.token_type = "Bearer";
  s.expires_at = expires;
  s.lifetime = 3600s;
  s.generation = gen;
  return s;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(refresh_machine_script)

BOOST_AUTO_TEST_CASE(the_first_caller_starts_the_one_run_and_the_others_join) {
  script s;
  auto first = s.caller();
  BOOST_TEST((first.what == call::join));
  BOOST_TEST(first.open_flight);
  BOOST_TEST(first.start_driver);
  auto second = s.caller();
  BOOST_TEST((second.what == call::join));
  BOOST_TEST(!second.open_flight);
  BOOST_TEST(!second.start_driver);
}

BOOST_AUTO_TEST_CASE(a_refresh_presents_the_token_saves_the_rotation_then_completes) {
  script s;
  s.caller();
  auto a = s.to_request();
  BOOST_REQUIRE((a.what == kind::request));
  BOOST_TEST(a.refresh_token.view() == "rt-0");
  a = s.answer("at-1", "rt-1");
  // I3: the save comes first; nobody is completed yet.
  BOOST_REQUIRE((a.what == kind::save));
  BOOST_TEST(!a.complete.has_value());
  BOOST_TEST(a.next.refresh_token == "rt-1");
  BOOST_TEST(a.next.access_token == "at-1");
  BOOST_TEST(a.next.generation == 1u);
  BOOST_TEST(a.expected.view() == "");  // nothing was stored
  a = s.saved();
  BOOST_REQUIRE(a.complete.has_value());
  BOOST_TEST(!a.complete->ec);
  BOOST_TEST(a.complete->published);
  BOOST_TEST(a.complete->token.value() == "at-1");
  BOOST_TEST(a.complete->event.refresh_token_rotated);
  BOOST_TEST((a.what == kind::done));
  // Served from now on, without a run.
  auto d = s.caller();
  BOOST_TEST((d.what == call::serve));
  BOOST_TEST(d.token.value() == "at-1");
}

BOOST_AUTO_TEST_CASE(a_token_past_its_refresh_point_starts_a_run_presenting_the_newest) {
  script s;
  s.refresh_to("rt-1", "at-1");
  s.advance(3600s - 1s);  // leeway 30 s: past the refresh point
  auto d = s.caller();
  BOOST_TEST((d.what == call::join));
  BOOST_TEST(d.start_driver);
  auto a = s.to_request(stored("rt-1", 1));
  BOOST_REQUIRE((a.what == kind::request));
  BOOST_TEST(a.refresh_token.view() == "rt-1");
}

// -- I1

BOOST_AUTO_TEST_CASE(i1_a_consumed_token_in_the_store_is_never_adopted_whatever_its_generation) {
  script s;
  s.refresh_to("rt-1", "at-1");
  s.m->invalidate(nullptr);
  s.caller();
  // A damaged or tampered store claims the consumed rt-0 is far ahead.
  auto a = s.to_request(stored("rt-0", 99));
  // Written over with ours, never presented.
  BOOST_REQUIRE((a.what == kind::save));
  BOOST_TEST(a.next.refresh_token == "rt-1");
  BOOST_TEST(a.expected.view() == "rt-0");
  a = s.saved();
  BOOST_REQUIRE((a.what == kind::request));
  BOOST_TEST(a.refresh_token.view() == "rt-1");
}

BOOST_AUTO_TEST_CASE(i1_a_lost_answer_may_be_retried_and_its_refusal_says_an_answer_was_lost) {
  auto p = script::defaults();
  p.max_attempts = 2;
  p.initial_backoff = 0ms;
  script s(p);
  s.caller();
  auto a = s.to_request();
  BOOST_REQUIRE((a.what == kind::request));
  a = s.failed(na::errc::timeout, /*written=*/true);
  BOOST_REQUIRE((a.what == kind::wait));
  s.advance(1ms);
  a = s.waited();
  BOOST_REQUIRE((a.what == kind::request));
  BOOST_TEST(a.refresh_token.view() == "rt-0");  // the only token there is
  a = s.failed(na::errc::invalid_grant);
  BOOST_REQUIRE((a.what == kind::load));  // once more from the store: a rotation race?
  a = s.loaded(std::nullopt);
  BOOST_REQUIRE(a.complete.has_value());
  BOOST_TEST((a.complete->ec == na::errc::invalid_grant));
  BOOST_TEST(a.complete->diag->client_message.find("answer was lost") != std::string::npos);
  BOOST_TEST(a.complete->diag->client_message.find("grace period") != std::string::npos);
  BOOST_TEST(a.complete->diag->server_error == "server words");
}

// -- I2

BOOST_AUTO_TEST_CASE(i2_a_pending_token_is_saved_over_an_older_stored_one_never_replaced) {
  script s;
  s.caller();
  auto a = s.to_request(stored("rt-0", 0));
  a = s.answer("at-1", "rt-1");
  BOOST_REQUIRE((a.what == kind::save));
  a = s.saved(make_error_code(na::errc::store_failed));
  BOOST_REQUIRE(a.complete.has_value());  // not strict: served, and the failure reported
  BOOST_TEST(!a.complete->ec);
  BOOST_TEST((a.complete->event.store_ec == na::errc::store_failed));
  BOOST_REQUIRE((a.what == kind::wait));  // the save is retried in the background
  BOOST_TEST(a.release_lease);
  BOOST_TEST(s.m->save_pending());
  // Before the retry, another refresh: rt-1 rotates into rt-2 with saves still failing.
  s.m->invalidate(nullptr);
  auto d = s.caller();
  BOOST_TEST(d.wake_driver);
  BOOST_TEST(!d.start_driver);
  a = s.waited();
  BOOST_REQUIRE((a.what == kind::acquire));
  a = s.acquired();
  a = s.loaded(stored("rt-0", 0));  // the store is behind: it holds the consumed rt-0
  BOOST_REQUIRE((a.what == kind::save));
  BOOST_TEST(a.next.refresh_token == "rt-1");
  a = s.saved(make_error_code(na::errc::store_failed));
  BOOST_REQUIRE((a.what == kind::request));
  BOOST_TEST(a.refresh_token.view() == "rt-1");  // never rt-0
  a = s.answer("at-2", "rt-2");
  BOOST_TEST(a.next.generation == 2u);
  BOOST_TEST(a.expected.view() == "rt-0");
  a = s.saved(make_error_code(na::errc::store_failed));
  // Saves work again: the store, still at rt-0, gets rt-2.
  s.advance(10s);
  a = s.waited();
  BOOST_REQUIRE((a.what == kind::acquire));
  s.acquired();
  a = s.loaded(stored("rt-0", 0));
  BOOST_REQUIRE((a.what == kind::save));
  BOOST_TEST(a.next.refresh_token == "rt-2");
  BOOST_TEST(a.next.generation == 2u);
  a = s.saved();
  BOOST_TEST((a.what == kind::done));
  BOOST_TEST(!s.m->save_pending());
}

BOOST_AUTO_TEST_CASE(i2_a_newer_stored_chain_is_adopted_and_its_valid_token_used) {
  script s;
  s.refresh_to("rt-1", "at-1");
  s.advance(3590s);
  s.caller();
  auto a = s.to_request(stored("rt-5", 5, "at-other", s.now.wall + 1800s));
  BOOST_REQUIRE(a.complete.has_value());
  BOOST_TEST(a.complete->event.from_store);
  BOOST_TEST(a.complete->token.value() == "at-other");
  BOOST_TEST(s.m->refresh_token().view() == "rt-5");
  BOOST_TEST(s.m->stats().refresh_tokens_adopted == 1u);
  BOOST_TEST((a.what == kind::done));
}

BOOST_AUTO_TEST_CASE(i2_a_newer_stored_chain_wins_over_our_unsaved_older_one) {
  script s;
  s.caller();
  s.to_request();
  s.answer("at-1", "rt-1");
  s.saved(make_error_code(na::errc::store_failed));
  s.m->invalidate(nullptr);
  s.caller();
  s.advance(2s);
  auto a = s.waited();
  s.acquired();
  a = s.loaded(stored("rt-9", 9));  // re-authorized elsewhere, far ahead of our generation 1
  BOOST_REQUIRE((a.what == kind::request));
  BOOST_TEST(a.refresh_token.view() == "rt-9");
  BOOST_TEST(!s.m->save_pending());
  BOOST_TEST(s.m->stats().store_conflicts == 1u);
}

// -- I3

BOOST_AUTO_TEST_CASE(i3_strict_durability_fails_the_waiters_keeps_the_token_and_serves_once_saved) {
  auto p = script::defaults();
  p.strict_durability = true;
  script s(p);
  s.caller();
  s.to_request();
  s.answer("at-1", "rt-1");
  auto a = s.saved(make_error_code(na::errc::store_failed));
  BOOST_REQUIRE(a.complete.has_value());
  BOOST_TEST((a.complete->ec == na::errc::store_failed));
  BOOST_TEST(!a.complete->token);
  BOOST_TEST(!s.m->current());            // not handed out
  BOOST_REQUIRE((a.what == kind::wait));  // still retried in the background
  // A caller after the failure spacing: the pending save goes first, and once saved its token
  // is the answer.
  BOOST_TEST((s.caller().what == call::fail));  // within the spacing
  s.advance(1s);
  auto d = s.caller();
  BOOST_TEST(d.wake_driver);
  a = s.waited();
  s.acquired();
  a = s.loaded(stored("rt-0", 0));
  BOOST_REQUIRE((a.what == kind::save));
  a = s.saved();
  BOOST_REQUIRE(a.complete.has_value());
  BOOST_TEST(!a.complete->ec);
  BOOST_TEST(a.complete->token.value() == "at-1");
}

BOOST_AUTO_TEST_CASE(i3_destruction_makes_one_last_bounded_save_attempt) {
  script s;
  s.caller();
  s.to_request();
  s.answer("at-1", "rt-1");
  auto a = s.saved(make_error_code(na::errc::store_failed));
  BOOST_REQUIRE((a.what == kind::wait));
  const auto d = s.m->on_destroy();
  BOOST_TEST(d.cancel_wait);
  a = s.waited();
  BOOST_REQUIRE((a.what == kind::acquire));
  s.acquired();
  a = s.loaded(std::nullopt);
  BOOST_REQUIRE((a.what == kind::save));
  BOOST_TEST(a.next.refresh_token == "rt-1");
  a = s.saved(make_error_code(na::errc::store_failed));
  BOOST_TEST((a.what == kind::done));  // one attempt, not a loop
  BOOST_TEST(!a.complete.has_value());
}

// -- I4

BOOST_AUTO_TEST_CASE(i4_after_destruction_a_written_request_is_saved_not_dropped) {
  script s;
  s.caller();
  auto a = s.to_request();
  BOOST_REQUIRE((a.what == kind::request));
  const auto d = s.m->on_destroy();
  BOOST_TEST(d.cancel_unwritten_request);  // the transport keeps a written one
  a = s.answer("at-1", "rt-1");
  BOOST_REQUIRE((a.what == kind::save));
  BOOST_TEST(a.next.refresh_token == "rt-1");
  a = s.saved();
  BOOST_TEST((a.what == kind::done));
  BOOST_TEST(!a.complete.has_value());  // the waiters were aborted at destruction
}

BOOST_AUTO_TEST_CASE(i4_a_request_aborted_before_its_write_ends_the_run) {
  script s;
  s.caller();
  s.to_request();
  s.m->on_destroy();
  auto a = s.m->on_failure(boost::system::error_code(ECANCELED, boost::system::system_category()),
                           {}, std::nullopt, false, s.now);
  BOOST_TEST((a.what == kind::done));
  BOOST_TEST((s.caller().what == call::fail));
}

// -- I5

BOOST_AUTO_TEST_CASE(i5_retry_after_holds_across_refreshes) {
  script s;
  s.caller();
  s.to_request();
  auto a = s.failed(na::errc::temporarily_unavailable, false, 5s);
  BOOST_REQUIRE(a.complete.has_value());
  BOOST_TEST((a.complete->ec == na::errc::temporarily_unavailable));
  for (auto t : {0s, 1s, 2s, 4s}) {
    (void)t;
    auto d = s.caller();
    BOOST_TEST((d.what == call::fail));
    BOOST_TEST(!d.start_driver);
    BOOST_TEST(d.diag->server_error == "server words");
    s.advance(1s);
  }
  s.advance(1s);  // 5 s after the answer
  auto d = s.caller();
  BOOST_TEST((d.what == call::join));
  BOOST_TEST(d.start_driver);
  BOOST_TEST(s.m->stats().calls_failed_fast == 4u);
}

BOOST_AUTO_TEST_CASE(i5_a_retry_inside_a_run_waits_for_retry_after_or_gives_up_at_the_deadline) {
  auto p = script::defaults();
  p.max_attempts = 3;
  p.refresh_deadline = 10s;
  script s(p);
  s.caller();
  s.to_request();
  auto a = s.failed(na::errc::temporarily_unavailable, false, 4s);
  BOOST_REQUIRE((a.what == kind::wait));
  BOOST_TEST((a.until == s.now.steady + 4s));
  s.advance(1s);
  a = s.waited();  // woken early (say, by a caller): the wait stands
  BOOST_REQUIRE((a.what == kind::wait));
  s.advance(3s);
  a = s.waited();
  BOOST_REQUIRE((a.what == kind::request));
  a = s.failed(na::errc::temporarily_unavailable, false, 30s);
  BOOST_REQUIRE(a.complete.has_value());
  BOOST_TEST(a.complete->diag->client_message.find("refresh deadline") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(i5_after_invalid_grant_no_request_until_the_token_changes) {
  script s;
  s.caller();
  s.to_request();
  auto a = s.failed(na::errc::invalid_grant);
  BOOST_REQUIRE((a.what == kind::load));
  a = s.loaded(stored("rt-0", 0));  // the store has nothing newer
  BOOST_REQUIRE(a.complete.has_value());
  BOOST_TEST((a.complete->ec == na::errc::invalid_grant));
  // Later runs read the store, but send nothing.
  for (int i = 0; i < 3; ++i) {
    s.advance(2s);
    auto d = s.caller();
    BOOST_REQUIRE(d.start_driver);
    a = s.to_request(stored("rt-0", 0));
    BOOST_REQUIRE(a.complete.has_value());
    BOOST_TEST((a.complete->ec == na::errc::invalid_grant));
    BOOST_TEST(a.complete->diag->server_error == "server words");
    BOOST_TEST((a.what == kind::done));
  }
  // Re-authorization: the new token is saved (written over the store) and presented.
  auto d = s.m->set_refresh_token("rt-new");
  BOOST_TEST(d.start_driver);
  a = s.start();
  s.acquired();
  a = s.loaded(stored("rt-0", 7));
  BOOST_REQUIRE((a.what == kind::save));
  BOOST_TEST(a.next.refresh_token == "rt-new");
  BOOST_TEST(a.next.generation == 8u);
  BOOST_TEST(a.expected.view() == "rt-0");
  a = s.saved();
  BOOST_TEST((a.what == kind::done));
  d = s.caller();
  BOOST_REQUIRE(d.start_driver);
  a = s.to_request(stored("rt-new", 8));
  BOOST_REQUIRE((a.what == kind::request));
  BOOST_TEST(a.refresh_token.view() == "rt-new");
}

BOOST_AUTO_TEST_CASE(i5_invalid_grant_then_a_newer_token_in_the_store_is_tried_once) {
  script s;
  s.caller();
  s.to_request();
  auto a = s.failed(na::errc::invalid_grant);
  a = s.loaded(stored("rt-other", 1));
  BOOST_REQUIRE((a.what == kind::request));
  BOOST_TEST(a.refresh_token.view() == "rt-other");
  BOOST_TEST(s.m->stats().invalid_grant_retries == 1u);
  a = s.failed(na::errc::invalid_grant);  // no second re-read
  BOOST_REQUIRE(a.complete.has_value());
  BOOST_TEST((a.complete->ec == na::errc::invalid_grant));
}

BOOST_AUTO_TEST_CASE(a_still_valid_token_is_served_after_a_failure_and_retried_in_the_background) {
  script s;
  s.refresh_to("rt-1", "at-1");
  s.advance(3600s - 20s);  // past the refresh point (30 s leeway), still valid
  s.caller();
  auto a = s.to_request(stored("rt-1", 1));
  a = s.failed(na::errc::temporarily_unavailable);
  BOOST_REQUIRE(a.complete.has_value());
  BOOST_TEST(a.complete->stale);
  BOOST_TEST(a.complete->token.value() == "at-1");
  auto d = s.caller();  // within the spacing: served
  BOOST_TEST((d.what == call::serve));
  BOOST_TEST(!d.open_flight);
  s.advance(1s);
  d = s.caller();  // served, and a background run starts
  BOOST_TEST((d.what == call::serve));
  BOOST_TEST(d.open_flight);
  BOOST_TEST(d.start_driver);
}

// -- I6

BOOST_AUTO_TEST_CASE(i6_a_stored_value_that_would_inject_a_header_is_store_corrupt) {
  for (const std::string& bad : {std::string("at\r\nX-Injected: 1"), std::string("at with space"),
                                 std::string("at\0x", 4)}) {
    script s;
    s.caller();
    auto a = s.to_request(stored("rt-0", 0, bad, s.now.wall + 1h));
    BOOST_REQUIRE(a.complete.has_value());
    BOOST_TEST((a.complete->ec == na::errc::store_corrupt));
    BOOST_TEST((a.what == kind::done));  // nothing sent
  }
}

// -- I7

BOOST_AUTO_TEST_CASE(i3_destruction_without_a_driver_still_saves_what_is_pending) {
  script s;
  s.caller();
  s.to_request();
  s.answer("at-1", "rt-1");
  s.saved(make_error_code(na::errc::store_failed));
  s.m->on_internal_error("a step threw: boom", s.now);  // the driver is gone, rt-1 unsaved
  BOOST_TEST(!s.m->driver_alive());
  const auto d = s.m->on_destroy();
  BOOST_TEST(d.start_driver);
  auto a = s.start();
  BOOST_REQUIRE((a.what == kind::acquire));
  s.acquired();
  a = s.loaded(std::nullopt);
  BOOST_REQUIRE((a.what == kind::save));
  BOOST_TEST(a.next.refresh_token == "rt-1");
  BOOST_TEST((s.saved().what == kind::done));
}

BOOST_AUTO_TEST_CASE(i7_an_internal_error_ends_the_flight_with_errc_internal) {
  script s;
  s.caller();
  s.start();
  auto a = s.m->on_internal_error("a step threw: boom", s.now);
  BOOST_REQUIRE(a.complete.has_value());
  BOOST_TEST((a.complete->ec == na::errc::internal));
  BOOST_TEST(a.complete->diag->client_message.find("boom") != std::string::npos);
  BOOST_TEST((a.what == kind::done));
  BOOST_TEST(!s.m->driver_alive());
  s.advance(1s);
  auto d = s.caller();  // a later call, after the failure spacing, starts over
  BOOST_TEST(d.start_driver);
}

BOOST_AUTO_TEST_CASE(store_errors_carry_the_stores_own_words) {
  script s;
  s.caller();
  s.start();
  s.acquired();
  na::diagnostics inner;
  inner.client_message = "cannot fsync directory /var/lib/app: No space left on device";
  auto a = s.m->on_loaded(make_error_code(na::errc::store_failed), inner, std::nullopt, s.now);
  BOOST_REQUIRE(a.complete.has_value());
  BOOST_TEST(a.complete->diag->client_message.find("No space left on device") != std::string::npos);
}

// -- Refresh-ahead

BOOST_AUTO_TEST_CASE(refresh_ahead_runs_in_the_background_while_the_token_is_served) {
  auto p = script::defaults();
  p.refresh_ahead_fraction = 0.2;
  script s(p);
  s.refresh_to("rt-1", "at-1");
  s.advance(3000s);  // inside the window, before the refresh point
  BOOST_TEST((s.now.steady >= s.m->ahead_at()));
  auto d = s.m->on_ahead(s.m->current().serial(), s.now.steady);
  BOOST_TEST(d.open_flight);
  BOOST_TEST(d.start_driver);
  BOOST_TEST(!s.m->on_ahead(s.m->current().serial(), s.now.steady).open_flight);  // only once
  auto c = s.caller();  // a caller whose cache was stale: still served
  BOOST_TEST((c.what == call::serve));
  auto a = s.to_request(stored("rt-1", 1));
  BOOST_REQUIRE((a.what == kind::request));
  a = s.answer("at-2", "rt-2");
  a = s.saved();
  BOOST_REQUIRE(a.complete.has_value());
  BOOST_TEST(a.complete->event.ahead);
  BOOST_TEST(s.m->current().value() == "at-2");
}

BOOST_AUTO_TEST_SUITE_END()

// The client_credentials grant: no chain, the same single run, saves and spacing.
BOOST_AUTO_TEST_SUITE(refresh_machine_client_credentials)

namespace {
machine_policy cc_policy() {
  auto p = script::defaults();
  p.client_credentials = true;
  return p;
}
}  // namespace

BOOST_AUTO_TEST_CASE(a_request_presents_no_refresh_token_and_the_state_saved_has_none) {
  script s(cc_policy(), "");
  auto d = s.caller();
  BOOST_REQUIRE((d.what == call::join));
  auto a = s.to_request();
  BOOST_REQUIRE((a.what == kind::request));
  BOOST_TEST(a.refresh_token.empty());
  // A refresh token in the answer (RFC 6749 §4.4.3 says there is none) is not adopted.
  a = s.answer("at-1", "rt-unexpected");
  BOOST_REQUIRE((a.what == kind::save));
  BOOST_TEST(a.next.refresh_token.empty());
  BOOST_TEST(a.next.access_token == "at-1");
  a = s.saved();
  BOOST_REQUIRE(a.complete.has_value());
  BOOST_TEST(!a.complete->ec);
  BOOST_TEST(!a.complete->event.refresh_token_rotated);
  BOOST_TEST(s.m->refresh_token().empty());
  // The next token's request presents nothing either.
  s.advance(3600s);
  d = s.caller();
  BOOST_REQUIRE((d.what == call::join));
  a = s.to_request();
  BOOST_REQUIRE((a.what == kind::request));
  BOOST_TEST(a.refresh_token.empty());
}

BOOST_AUTO_TEST_CASE(a_valid_stored_access_token_is_taken_without_a_request) {
  script s(cc_policy(), "");
  s.caller();
  auto a = s.to_request(stored("", 0, "at-shared", s.now.wall + 3000s));
  BOOST_REQUIRE(a.complete.has_value());
  BOOST_TEST(!a.complete->ec);
  BOOST_TEST(a.complete->token.value() == "at-shared");
  BOOST_TEST(a.complete->event.from_store);
  BOOST_TEST((a.what == kind::done));
}

BOOST_AUTO_TEST_CASE(a_stored_refresh_token_chain_is_refused) {
  script s(cc_policy(), "");
  s.caller();
  auto a = s.to_request(stored("rt-of-another-client", 3, "at", s.now.wall + 3000s));
  BOOST_REQUIRE(a.complete.has_value());
  BOOST_TEST(a.complete->ec == na::errc::invalid_config);
  BOOST_TEST(a.complete->diag->client_message.find("client_credentials") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(invalid_client_is_spaced_not_a_dead_chain) {
  auto p = cc_policy();
  p.min_retry_spacing = 1s;
  script s(p, "");
  s.caller();
  auto a = s.to_request();
  BOOST_REQUIRE((a.what == kind::request));
  a = s.failed(na::errc::invalid_grant, true);
  // No re-read of the store for a rotation race: there is no chain to race on.
  BOOST_REQUIRE(a.complete.has_value());
  BOOST_TEST(a.complete->ec == na::errc::invalid_grant);
  // Within the spacing the failure is the answer; after it, a new request goes out.
  auto d = s.caller();
  BOOST_TEST((d.what == call::fail));
  s.advance(1100ms);
  d = s.caller();
  BOOST_REQUIRE((d.what == call::join));
  a = s.to_request();
  BOOST_TEST((a.what == kind::request));
}

BOOST_AUTO_TEST_SUITE_END()

// I8: the hand-off without the lease (a store's store_updated), and a lease lost before the
// request was written.
BOOST_AUTO_TEST_SUITE(refresh_machine_lease)

namespace {
action updated(script& s) {
  return s.m->on_acquired(make_error_code(na::errc::store_updated), {}, s.now);
}
}  // namespace

BOOST_AUTO_TEST_CASE(a_state_saved_by_another_holder_is_adopted_without_the_lease) {
  script s;
  s.caller();
  auto a = s.start();
  BOOST_REQUIRE((a.what == kind::acquire));
  a = updated(s);
  BOOST_REQUIRE((a.what == kind::load));
  a = s.loaded(stored("rt-1", 1, "at-1", s.now.wall + 3600s));
  BOOST_REQUIRE(a.complete.has_value());
  BOOST_TEST(!a.complete->ec);
  BOOST_TEST(a.complete->token.value() == "at-1");
  BOOST_TEST(a.complete->event.from_store);
  BOOST_TEST((a.what == kind::done));
  BOOST_TEST(s.m->refresh_token().view() == "rt-1");
  BOOST_TEST(s.m->stats().store_handoffs == 1u);
}

BOOST_AUTO_TEST_CASE(a_state_read_without_the_lease_that_does_not_serve_sends_the_run_back_to_it) {
  script s;
  s.refresh_to("rt-1", "at-1");  // generation 1; rt-0 is spent
  s.advance(3600s);
  BOOST_REQUIRE((s.caller().what == call::join));
  BOOST_REQUIRE((s.start().what == kind::acquire));
  // Ours again without an access token, a spent token, one generation behind ours, and an
  // access token about to expire: none is handed out, and none may lead to a request or a
  // save without the lease.
  for (auto st : {stored("rt-1", 1), stored("rt-0", 0, "at-0", s.now.wall + 3600s),
                  stored("rt-7", 0, "at-7", s.now.wall + 3600s),
                  stored("rt-2", 2, "at-2", s.now.wall + 1s)}) {
    auto a = updated(s);
    BOOST_REQUIRE((a.what == kind::load));
    a = s.loaded(st);
    BOOST_TEST((a.what == kind::acquire));
    BOOST_TEST(!a.complete.has_value());
  }
  BOOST_TEST(s.m->stats().store_handoffs == 0u);
  BOOST_TEST(s.m->refresh_token().view() == "rt-1");
  // With the lease, the run goes on as always.
  auto a = s.acquired();
  BOOST_REQUIRE((a.what == kind::load));
  a = s.loaded(std::nullopt);
  BOOST_TEST((a.what == kind::request));
  BOOST_TEST(a.refresh_token.view() == "rt-1");
}

BOOST_AUTO_TEST_CASE(a_store_that_keeps_reporting_new_states_ends_the_run_with_store_failed) {
  script s;
  s.caller();
  s.start();
  action a;
  for (int i = 0; i < 100 && !a.complete; ++i) {
    a = updated(s);
    if (a.what == kind::load) a = s.loaded(stored("rt-0", 0));
  }
  BOOST_REQUIRE(a.complete.has_value());
  BOOST_TEST(a.complete->ec == na::errc::store_failed);
  BOOST_TEST(a.complete->diag->client_message.find("without granting the lease") !=
             std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_lease_lost_before_the_write_takes_it_again_and_is_no_attempt) {
  auto p = script::defaults();
  p.max_attempts = 2;
  script s(p);
  s.caller();
  auto a = s.to_request();
  BOOST_REQUIRE((a.what == kind::request));
  a = s.failed(na::errc::lease_lost, false);
  BOOST_TEST((a.what == kind::acquire));
  BOOST_TEST(a.release_lease);
  BOOST_TEST(!a.complete.has_value());
  BOOST_TEST(s.m->stats().leases_lost == 1u);
  BOOST_TEST(s.m->stats().retries == 0u);
  a = s.acquired();
  BOOST_REQUIRE((a.what == kind::load));
  a = s.loaded(std::nullopt);
  BOOST_REQUIRE((a.what == kind::request));
  BOOST_TEST(a.refresh_token.view() == "rt-0");
  // The lost one was not counted: a timeout now still has its retry of max_attempts = 2.
  a = s.failed(na::errc::timeout, true);
  BOOST_TEST((a.what == kind::wait));
}

BOOST_AUTO_TEST_CASE(after_a_lost_lease_the_other_holders_rotation_is_adopted_not_raced) {
  script s;
  s.caller();
  auto a = s.to_request();
  BOOST_REQUIRE((a.what == kind::request));
  a = s.failed(na::errc::lease_lost, false);
  BOOST_REQUIRE((a.what == kind::acquire));
  // The holder that took over rotated rt-0 and saved: rt-0 is never presented.
  a = updated(s);
  BOOST_REQUIRE((a.what == kind::load));
  a = s.loaded(stored("rt-1", 1, "at-1", s.now.wall + 3600s));
  BOOST_REQUIRE(a.complete.has_value());
  BOOST_TEST(!a.complete->ec);
  BOOST_TEST(a.complete->token.value() == "at-1");
  BOOST_TEST((a.what == kind::done));
}

BOOST_AUTO_TEST_SUITE_END()
