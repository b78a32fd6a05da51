// SPDX-License-Identifier: BSL-1.0
// The token cache, the single flight of refreshes, and the fast path.
#include <nxsys/auth/client.hpp>
#include <nxsys/auth/protocol.hpp>
#include <nxsys/auth/token_store.hpp>

#include <nxsys/auth/detail/single_flight.hpp>

#include "client_impl.hpp"
#include "text.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <mutex>
#include <random>
#include <time.h>

namespace nxsys::auth {
namespace detail {
namespace asio = boost::asio;
using boost::system::error_code;
using clock_type = std::chrono::steady_clock;

namespace {

std::atomic<std::uint64_t> next_client_uid{1};

// CLOCK_MONOTONIC_COARSE is steady_clock's timeline (CLOCK_MONOTONIC, on Linux) as of the last
// timekeeping update, so never ahead of it, and several times cheaper to read (about 6 ns
// against 25 ns on the development VM), which matters on the fast path. How far behind it is
// has no hard bound: nominally one tick (4 ms here), 4.9 ms measured on an idle VM, more on a
// loaded one. So it only settles "fresh" when the deadline is at least coarse_margin away, a
// margin hundreds of times the lag seen; nearer the deadline the precise clock decides.
static_assert(std::is_same_v<clock_type, std::chrono::steady_clock>);
clock_type::duration coarse_resolution_now() noexcept {
  timespec ts{};
  if (clock_getres(CLOCK_MONOTONIC_COARSE, &ts) != 0) return clock_type::duration::max();
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}
const clock_type::duration coarse_resolution = coarse_resolution_now();
// A kernel without a usable coarse clock reports 0 or a huge resolution.
const bool coarse_clock_usable = coarse_resolution > clock_type::duration::zero() &&
                                 coarse_resolution <= std::chrono::milliseconds(50);
constexpr clock_type::duration coarse_margin = std::chrono::seconds(1);

clock_type::time_point coarse_now() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return clock_type::time_point(std::chrono::duration_cast<clock_type::duration>(
      std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec)));
}

// A private copy of a token: same contents, its own reference count.
access_token replicate(const access_token& t) {
  if (!t) return {};
  return access_token(t.block()->data);
}

// The token URL's parts, once validate() accepted the configuration.
protocol::endpoint checked_endpoint(const client_config& cfg) {
  diagnostics diag;
  if (auto ec = cfg.validate(&diag)) throw error_with_diagnostics(ec, std::move(diag));
  protocol::endpoint ep;
  if (auto ec = protocol::parse_token_url(cfg.token_url, cfg.http.allow_insecure_http, ep, diag))
    throw error_with_diagnostics(ec, std::move(diag));
  return ep;
}

}  // namespace

// Out of line: keeps the exception's construction out of token()'s coroutine body.
[[noreturn, gnu::noinline]] void throw_outcome(const token_outcome& out) {
  throw error_with_diagnostics(out.ec, out.result.diag ? *out.result.diag : diagnostics{});
}

// Room in token()'s frame for its waiter node (make_waiter_in checks that it fits).
constexpr std::size_t token_waiter_size = 96;

struct outcome_call {
  template <class Handler>
  void operator()(Handler&& h, error_code ec, const flight_result& r) const {
    std::forward<Handler>(h)(token_outcome{ec, r});
  }
};

client_impl::client_impl(asio::any_io_executor ex, client_config cfg, protocol::endpoint ep)
    : ex_(std::move(ex)),
      strand_(asio::make_strand(ex_)),
      cfg_(std::move(cfg)),
      uid_(next_client_uid.fetch_add(1, std::memory_order_relaxed)),
      clock_(cfg_.clock.get()),
      store_(cfg_.storage.store ? cfg_.storage.store : std::make_shared<memory_store>(ex_)),
      machine_(machine_policy::from(cfg_), std::string(cfg_.refresh_token.view()),
               std::random_device{}() ^ uid_),
      wait_timer_(strand_),
      watchdog_(strand_),
      flight_(ex_),
      transport_(strand_, std::move(ep), cfg_.http) {
  cfg_.refresh_token.wipe();  // the machine holds it now
  secret_encoded_ = secret_string(protocol::form_urlencode(cfg_.client_secret.view()));
}

client_impl::~client_impl() = default;

// A logger that throws must not break a refresh.
void client_impl::log(log_level level, std::string_view message) const noexcept {
  if (!cfg_.observers.log) return;
  try {
    cfg_.observers.log(level, message);
  } catch (...) {
  }
}

// now() < deadline, read cheaply: the coarse clock settles it unless the deadline is within
// coarse_margin (it can only lag, so a deadline it has passed is passed).
bool client_impl::before(clock_type::time_point deadline) const noexcept {
  if (clock_ != nullptr) return clock_->now() < deadline;
  if (coarse_clock_usable) {
    const auto coarse = coarse_now();
    if (coarse + coarse_margin < deadline) return true;
    if (coarse >= deadline) return false;
  }
  return clock_type::now() < deadline;
}

const token_block* client_impl::fresh_token() {
  const auto v = version_.load(std::memory_order_acquire);
  replica* r = replicas_.local();
  if (r == nullptr) return nullptr;  // a thread without a slot: the slow path serves it
  if (r->version != v) renew_replica(*r);
  // One clock read settles the common case: neither the window nor the refresh point is near.
  if (before(r->first_deadline)) return r->take();
  const auto t = now();
  if (t >= r->refresh_at) return nullptr;
  if (t >= r->ahead_at) maybe_refresh_ahead(v, r->token.serial());
  return r->take();
}

// Inside the refresh-ahead window: the token is served, and the first caller to get here for
// this token asks the machine for the background refresh.
void client_impl::maybe_refresh_ahead(std::uint64_t version, std::uint64_t serial) {
  stale_served_.fetch_add(1, std::memory_order_relaxed);
  if (ahead_started_.load(std::memory_order_relaxed) == version) return;
  if (now().time_since_epoch().count() < ahead_retry_at_.load(std::memory_order_relaxed)) return;
  auto expected = ahead_started_.load(std::memory_order_relaxed);
  if (expected == version ||
      !ahead_started_.compare_exchange_strong(expected, version, std::memory_order_relaxed))
    return;
  call_decision d;
  std::uint64_t flight = 0;
  {
    std::lock_guard lk(mu_);
    if (version_.load(std::memory_order_relaxed) != version) return;
    d = machine_.on_ahead(serial, now());
    if (!d.open_flight) return;
    flight_.begin();
    run_started_ = clock_type::now();
    flight = machine_.flight_serial();
  }
  carry_out(d, flight);
}

void client_impl::wait(token_flight::waiter_ptr w) {
  std::unique_lock lk(mu_);
  auto d = machine_.on_call(now());
  const auto flight = machine_.flight_serial();
  if (d.open_flight) run_started_ = clock_type::now();
  if (d.what == call_decision::kind::join) {
    flight_.join(std::move(w));
    lk.unlock();
    carry_out(d, flight);
    return;
  }
  // Served (perhaps with a background refresh started) or failed fast.
  if (d.open_flight) flight_.begin();
  lk.unlock();
  token_flight::complete_one(ex_, w.release(), d.ec, flight_result{std::move(d.token), d.diag});
  carry_out(d, flight);
}

// What a decision asks of the Asio side: a driver spawned, or a waiting one woken, and the
// watchdog of a flight it opened.
void client_impl::carry_out(const call_decision& d, std::uint64_t flight_serial) {
  if (d.open_flight) arm_watchdog(flight_serial);
  if (d.start_driver) spawn_driver();
  if (d.wake_driver)
    asio::post(strand_, [self = shared_from_this()] { self->wait_timer_.cancel(); });
}

void client_impl::spawn_driver() {
  auto self = shared_from_this();
  asio::co_spawn(strand_, drive(self), [self](std::exception_ptr e) {
    // drive() catches what its steps throw; this is the driver's own frame failing.
    if (e) self->log(log_level::error, "the refresh driver ended with an exception");
  });
}

bool client_impl::invalidate(const access_token* rejected) {
  std::lock_guard lk(mu_);
  if (!machine_.invalidate(rejected)) return false;
  version_.fetch_add(1, std::memory_order_release);
  return true;
}

void client_impl::set_refresh_token(std::string_view refresh_token) {
  call_decision d;
  {
    std::lock_guard lk(mu_);
    d = machine_.set_refresh_token(refresh_token);
  }
  log(log_level::info, "refresh token replaced by the application (re-authorization): saving it");
  carry_out(d, 0);
}

void client_impl::shutdown() {
  token_flight::batch waiters;
  std::uint64_t aborted = 0;
  destroy_decision d;
  {
    std::lock_guard lk(mu_);
    d = machine_.on_destroy();
    version_.fetch_add(1, std::memory_order_release);
    aborted = flight_.waiting();
    waiters = flight_.take_all();
  }
  if (aborted != 0)
    log(log_level::info, "client destroyed: " + std::to_string(aborted) +
                             " waiting call(s) completed with operation_aborted");
  waiters.complete(asio::error::operation_aborted, {});
  // I3: tokens still unsaved and no driver (the last one ended in an internal error).
  if (d.start_driver) spawn_driver();
  // I4: a request already written is left to finish, and a pending save gets its last try;
  // only what has not reached anyone is stopped.
  asio::post(strand_, [self = shared_from_this(), d] {
    if (d.cancel_unwritten_request) self->transport_.abort_unless_written();
    if (d.cancel_wait) self->wait_timer_.cancel();
    if (d.cancel_acquire) self->lease_cancel_.emit(asio::cancellation_type::terminal);
    self->watchdog_.cancel();
  });
}

client_stats client_impl::stats() const {
  client_stats s;
  {
    std::lock_guard lk(mu_);
    s = machine_.stats();
    s.valid_tokens_served_after_failure += stats_.valid_tokens_served_after_failure;
    s.waiters_per_refresh_histogram = stats_.waiters_per_refresh_histogram;
    s.refresh_latency_last = stats_.refresh_latency_last;
    s.refresh_latency_max = stats_.refresh_latency_max;
    s.refresh_latency_total = stats_.refresh_latency_total;
  }
  const auto c = flight_.counters();
  s.refreshes_started = c.flights;
  s.waiters_coalesced = c.coalesced;
  s.waiters_cancelled = c.cancelled;
  s.max_waiters_per_refresh = c.max_waiters;
  s.connections_opened = transport_.connections_opened();
  s.stale_tokens_served = stale_served_.load(std::memory_order_relaxed);
  return s;
}

void client_impl::renew_replica(replica& r) {
  access_token current;
  clock_type::time_point refresh_at, ahead_at;
  std::uint64_t version;
  {
    std::lock_guard lk(mu_);
    current = machine_.current();
    refresh_at = machine_.refresh_at();
    ahead_at = machine_.ahead_at();
    version = version_.load(std::memory_order_relaxed);
  }
  r.return_budget();
  r.version = version;
  r.refresh_at = refresh_at;
  r.ahead_at = ahead_at;
  if (current) {
    r.token = replicate(current);
  } else {
    r.token = access_token{};
    r.refresh_at = clock_type::time_point::min();
  }
  r.first_deadline = std::min(r.refresh_at, r.ahead_at);
}

namespace {
// Built from counts, durations and the redacted diagnostics only: never a token or secret.
std::string describe_refresh(const completion& c) {
  const auto& e = c.event;
  const auto ms = std::chrono::duration_cast<std::chrono::microseconds>(e.latency).count() / 1000.0;
  char timing[128];
  std::snprintf(timing, sizeof timing, " in %.1f ms (%u request(s)), %llu waiting call(s)", ms,
                e.attempts, static_cast<unsigned long long>(e.waiters));
  if (e.ec) {
    std::string m = "access token refresh failed" + std::string(timing) + ": " +
                    describe(e.ec, c.diag ? *c.diag : diagnostics{});
    if (c.stale) m += "; the still-valid token was served instead";
    return m;
  }
  std::string m = e.from_store ? "access token taken from the token store (refreshed elsewhere)"
                               : "access token refreshed";
  m += timing;
  m += "; lifetime " + std::to_string(e.lifetime.count()) + " s";
  if (!e.from_store)
    m += e.refresh_token_rotated ? "; refresh token rotated" : "; refresh token kept";
  if (e.store_ec) m += "; NOT SAVED (" + e.store_ec.message() + "), save will be retried";
  return m;
}
}  // namespace

void client_impl::deliver(completion c, token_flight::batch waiters,
                          const std::vector<log_line>& logs) {
  for (const auto& l : logs) log(l.level, l.text);
  if (c.silent) return;
  const auto& e = c.event;
  log(e.ec ? log_level::warning : (e.store_ec ? log_level::error : log_level::info),
      describe_refresh(c));
  // One copy of the token per chunk of waiters: waiters resumed on different threads then do
  // not all write one reference count.
  const auto replicated = [](const flight_result& r) {
    return flight_result{replicate(r.token), nullptr};
  };
  if (!c.ec || c.stale) {
    waiters.complete({}, flight_result{std::move(c.token), nullptr}, replicated);
  } else {
    waiters.complete(c.ec, flight_result{{}, c.diag});
  }
  if (cfg_.observers.on_refresh) {
    try {
      cfg_.observers.on_refresh(e);
    } catch (...) {
    }
  }
}

// Under mu_.
void client_impl::record(const refresh_event& e) {
  std::size_t bucket = 0;  // 0-1, then one bucket per decade from 2-9
  if (e.waiters >= 2) {
    bucket = 1;
    for (auto n = e.waiters; n >= 10 && bucket + 1 < stats_.waiters_per_refresh_histogram.size();
         n /= 10)
      ++bucket;
  }
  ++stats_.waiters_per_refresh_histogram[bucket];
  stats_.refresh_latency_last = e.latency;
  stats_.refresh_latency_max = std::max(stats_.refresh_latency_max, e.latency);
  stats_.refresh_latency_total += e.latency;
}

token_flight& flight_of(client_impl& impl) noexcept {
  return impl.flight();
}

const asio::any_io_executor& executor_of(const client_impl& impl) noexcept {
  return impl.executor();
}

bool try_fresh(client_impl& impl, access_token& out) {
  const auto* b = impl.fresh_token();
  if (b == nullptr) return false;
  out = access_token(b, adopt_reference);
  return true;
}

void wait_for_token(client_impl& impl, token_flight::waiter_ptr w) {
  impl.wait(std::move(w));
}

}  // namespace detail

client::client(boost::asio::any_io_executor ex, client_config cfg) {
  auto ep = detail::checked_endpoint(cfg);
  impl_ = std::make_shared<detail::client_impl>(std::move(ex), std::move(cfg), std::move(ep));
}

client::~client() {
  if (impl_) impl_->shutdown();
}

client::client(client&&) noexcept = default;

client& client::operator=(client&& other) noexcept {
  if (this != &other) {
    if (impl_) impl_->shutdown();
    impl_ = std::move(other.impl_);
  }
  return *this;
}

client::executor_type client::get_executor() const noexcept {
  return impl_->executor();
}

boost::asio::awaitable<access_token> client::token() {
  if (const auto* b = impl_->fresh_token()) co_return access_token(b, detail::adopt_reference);
  // Awaiting a deferred operation (rather than use_awaitable) runs the initiation from this
  // frame with no second coroutine frame, and the result lands in this frame. The waiter's
  // node lives in this frame too, which stays suspended until the node is gone: a waiter
  // costs no allocation beyond the frame.
  detail::waiter_storage<detail::token_waiter_size> room;
  detail::token_outcome out = co_await boost::asio::async_initiate<const boost::asio::deferred_t&,
                                                                   void(detail::token_outcome)>(
      [](auto handler, detail::client_impl* impl,
         detail::waiter_storage<detail::token_waiter_size>* room) {
        impl->wait(
            impl->flight().make_waiter_in(*room, std::move(handler), detail::outcome_call{}));
      },
      boost::asio::deferred, impl_.get(), &room);
  if (out.ec) detail::throw_outcome(out);
  co_return std::move(out.result.token);
}

void client::set_refresh_token(secret refresh_token) {
  if (refresh_token.empty()) {
    diagnostics diag;
    diag.client_message = "set_refresh_token: the refresh token is empty";
    throw error_with_diagnostics(make_error_code(errc::invalid_argument), diag);
  }
  if (impl_->grant() == grant_type::client_credentials) {
    diagnostics diag;
    diag.client_message = "set_refresh_token: this client uses the client_credentials grant";
    throw error_with_diagnostics(make_error_code(errc::invalid_argument), diag);
  }
  impl_->set_refresh_token(refresh_token.view());
}

bool client::invalidate(const access_token& rejected) {
  return impl_->invalidate(&rejected);
}

void client::invalidate() {
  impl_->invalidate(nullptr);
}

client_stats client::stats() const {
  return impl_->stats();
}

}  // namespace nxsys::auth
