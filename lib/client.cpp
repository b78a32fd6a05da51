// The token cache, the single flight of refreshes, and the fast path.
#include <nxsys/auth/client.hpp>
#include <nxsys/auth/protocol.hpp>

#include <nxsys/auth/detail/single_flight.hpp>
#include <nxsys/auth/detail/token_policy.hpp>

#include "text.hpp"
#include "transport.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <mutex>
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
  return access_token(std::make_shared<const token_data>(
      token_data{std::string(t.value()), std::string(t.type()), t.expires_at(), t.serial()}));
}

// Each thread keeps its own copy of the current token of the clients it reads. Handing out a
// copy then touches only this thread's reference count: one shared count written by every
// reader costs several times the whole fast path on two cores.
struct replica {
  std::uint64_t uid = 0;      // which client
  std::uint64_t version = 0;  // which publication of that client
  access_token token;
  clock_type::time_point refresh_at{};
};
constexpr std::size_t replicas_per_thread = 4;
thread_local std::array<replica, replicas_per_thread> tls_replicas;
thread_local std::size_t tls_next_victim = 0;

client_config validated(client_config cfg, protocol::endpoint& ep) {
  diagnostics diag;
  auto bad = [&](const char* what) {
    diag.client_message = what;
    throw error_with_diagnostics(make_error_code(errc::invalid_config), diag);
  };
  if (auto ec = protocol::parse_token_url(cfg.token_url, cfg.allow_insecure_http, ep, diag))
    throw error_with_diagnostics(ec, diag);
  if (cfg.client_id.empty()) bad("client_id is empty");
  if (cfg.refresh_token.empty()) bad("refresh_token is empty");
  if (cfg.refresh_leeway.count() < 0) bad("refresh_leeway is negative");
  if (!(cfg.leeway_max_fraction >= 0.0 && cfg.leeway_max_fraction < 1.0))
    bad("leeway_max_fraction must be in [0, 1)");
  if (cfg.default_lifetime.count() <= 0) bad("default_lifetime must be positive");
  if (cfg.connect_timeout.count() <= 0 || cfg.request_timeout.count() <= 0)
    bad("timeouts must be positive");
  if (cfg.max_response_bytes < 256) bad("max_response_bytes is below 256");
  if (cfg.min_retry_spacing.count() < 0) bad("min_retry_spacing is negative");
  return cfg;
}

}  // namespace

// What token()'s waiters receive: one value, so that awaiting a deferred operation stores it
// straight into the waiting frame (Boost 1.81's awaitable cannot do that for an
// (exception_ptr, T) signature: its resume() does not compile).
struct token_outcome {
  error_code ec;
  flight_result result;
};

// Out of line: keeps the exception's construction out of token()'s coroutine body.
[[noreturn, gnu::noinline]] void throw_outcome(const token_outcome& out) {
  throw error_with_diagnostics(out.ec, out.result.diag ? *out.result.diag : diagnostics{});
}

struct outcome_call {
  template <class Handler>
  void operator()(Handler&& h, error_code ec, const flight_result& r) const {
    std::forward<Handler>(h)(token_outcome{ec, r});
  }
};

class client_impl : public std::enable_shared_from_this<client_impl> {
 public:
  client_impl(asio::any_io_executor ex, client_config cfg, protocol::endpoint ep)
      : ex_(std::move(ex)),
        strand_(asio::make_strand(ex_)),
        cfg_(std::move(cfg)),
        uid_(next_client_uid.fetch_add(1, std::memory_order_relaxed)),
        flight_(ex_),
        transport_(strand_, std::move(ep), cfg_) {
    refresh_token_ = std::move(cfg_.refresh_token);
    wipe(cfg_.refresh_token);
    secret_encoded_ = protocol::form_urlencode(cfg_.client_secret);
  }

  ~client_impl() {
    wipe(refresh_token_);
    wipe(cfg_.client_secret);
    wipe(secret_encoded_);
  }

  const asio::any_io_executor& executor() const noexcept { return ex_; }

  clock_type::time_point now() const noexcept {
    return cfg_.clock ? cfg_.clock() : clock_type::now();
  }

  // A logger that throws must not break a refresh.
  void log(log_level level, std::string_view message) const noexcept {
    if (!cfg_.log) return;
    try {
      cfg_.log(level, message);
    } catch (...) {
    }
  }

  // Built from counts, durations and the redacted diagnostics only: never a token or secret.
  static std::string describe_refresh(const error_code& ec, const protocol::token_response& tr,
                                      const diagnostics& diag, clock_type::duration took,
                                      std::uint64_t waiting) {
    const auto ms = std::chrono::duration_cast<std::chrono::microseconds>(took).count() / 1000.0;
    char timing[96];
    std::snprintf(timing, sizeof timing, " in %.1f ms, %llu waiting call(s)", ms,
                  static_cast<unsigned long long>(waiting));
    if (ec) return "access token refresh failed" + std::string(timing) + ": " + describe(ec, diag);
    std::string m = "access token refreshed" + std::string(timing) + "; lifetime ";
    m += tr.expires_in ? std::to_string(tr.expires_in->count()) + " s" : "not given (default)";
    m += tr.refresh_token.empty() ? "; refresh token kept" : "; refresh token rotated";
    return m;
  }

  // now() < deadline, read cheaply: the coarse clock settles it unless the deadline is within
  // coarse_margin (it can only lag, so a deadline it has passed is passed).
  bool before(clock_type::time_point deadline) const noexcept {
    if (cfg_.clock) return cfg_.clock() < deadline;
    if (coarse_clock_usable) {
      const auto coarse = coarse_now();
      if (coarse + coarse_margin < deadline) return true;
      if (coarse >= deadline) return false;
    }
    return clock_type::now() < deadline;
  }

  // The fast path: no lock, no shared write when this thread's replica is current.
  const access_token* fresh_token() {
    const auto v = version_.load(std::memory_order_acquire);
    replica* r = nullptr;
    for (auto& c : tls_replicas)
      if (c.uid == uid_) r = &c;
    if (r == nullptr || r->version != v) r = renew_replica(r);
    if (r == nullptr || !before(r->refresh_at)) return nullptr;
    return &r->token;
  }

  // The slow path of every caller whose thread cache had no fresh token.
  void wait(std::unique_ptr<token_flight::waiter> w) {
    std::unique_lock lk(mu_);
    ++stats_.slow_path_calls;
    error_code ec;
    flight_result r;
    if (shut_down_) {
      ec = asio::error::operation_aborted;
    } else if (refreshing_ || !answer_without_refresh(ec, r)) {
      // While a refresh runs nothing else can answer: it started because the token was
      // unusable, and only its end publishes another (no clock read for a burst's waiters).
      const bool start = flight_.join(std::move(w));
      if (start) refreshing_ = true;
      lk.unlock();
      if (start) start_refresh();
      return;
    }
    lk.unlock();
    token_flight::complete_one(ex_, w.release(), ec, std::move(r));
  }

  // Under mu_, with no refresh running. True when the caller is answered now: with the token
  // published since it looked, or, within min_retry_spacing of a failed refresh, with that
  // failure, so that callers looping on a down server cannot turn into a request storm.
  bool answer_without_refresh(error_code& ec, flight_result& r) {
    const auto t = now();
    if (current_ && t < current_refresh_at_) {
      r.token = current_;
      return true;
    }
    if (last_failure_ && t < last_failure_at_ + cfg_.min_retry_spacing) {
      ++stats_.calls_failed_fast;
      ec = last_failure_;
      r.diag = last_failure_diag_;
      return true;
    }
    return false;
  }

  token_flight& flight() noexcept { return flight_; }

  void invalidate() {
    std::lock_guard lk(mu_);
    if (!current_) return;
    current_ = access_token{};
    version_.fetch_add(1, std::memory_order_release);
    ++invalidations_;
  }

  void shutdown() {
    token_flight::batch waiters;
    std::uint64_t aborted = 0;
    {
      std::lock_guard lk(mu_);
      shut_down_ = true;
      current_ = access_token{};
      version_.fetch_add(1, std::memory_order_release);
      aborted = flight_.waiting();
      waiters = flight_.take_all();
    }
    if (aborted != 0)
      log(log_level::info, "client destroyed: " + std::to_string(aborted) +
                               " waiting call(s) completed with operation_aborted");
    waiters.complete(asio::error::operation_aborted, {});
    asio::post(strand_, [self = shared_from_this()] { self->transport_.close(); });
  }

  client_stats stats() const {
    client_stats s;
    {
      std::lock_guard lk(mu_);
      s = stats_;
      s.invalidations = invalidations_;
    }
    const auto c = flight_.counters();
    s.refreshes_started = c.flights;
    s.waiters_coalesced = c.coalesced;
    s.waiters_cancelled = c.cancelled;
    s.max_waiters_per_refresh = c.max_waiters;
    s.connections_opened = transport_.connections_opened();
    return s;
  }

 private:
  replica* renew_replica(replica* r) {
    access_token current;
    clock_type::time_point refresh_at;
    std::uint64_t version;
    {
      std::lock_guard lk(mu_);
      current = current_;
      refresh_at = current_refresh_at_;
      version = version_.load(std::memory_order_relaxed);
    }
    if (r == nullptr) {
      r = &tls_replicas[tls_next_victim];
      tls_next_victim = (tls_next_victim + 1) % replicas_per_thread;
    }
    r->uid = uid_;
    r->version = version;
    r->refresh_at = refresh_at;
    if (current) {
      r->token = replicate(current);
    } else {
      r->token = access_token{};
      r->refresh_at = clock_type::time_point::min();
    }
    return r;
  }

  void start_refresh() {
    asio::co_spawn(strand_, run_refresh(shared_from_this()),
                   [self = shared_from_this()](std::exception_ptr e) {
                     if (!e) return;
                     diagnostics d;
                     try {
                       std::rethrow_exception(e);
                     } catch (const std::exception& x) {
                       d.client_message = std::string("internal error: ") + x.what();
                     } catch (...) {
                       d.client_message = "internal error";
                     }
                     self->finish(make_error_code(errc::connection), {}, {}, std::move(d), {});
                   });
  }

  static asio::awaitable<void> run_refresh(std::shared_ptr<client_impl> self) {
    std::string refresh_token;
    {
      std::lock_guard lk(self->mu_);
      refresh_token = self->refresh_token_;
    }
    const auto sent = self->now();
    const auto started = clock_type::now();
    const auto connections_before = self->transport_.connections_opened();
    self->log(log_level::debug, "refreshing the access token");
    diagnostics diag;
    http_answer answer;
    auto ec = co_await self->transport_.post_form(
        protocol::build_refresh_body(refresh_token, self->cfg_.client_id, self->cfg_.client_secret),
        answer, diag);
    protocol::token_response tr;
    if (!ec) {
      // A server may echo what it was sent, raw or form-encoded: none of it may reach a message.
      std::string rt_encoded = protocol::form_urlencode(refresh_token);
      ec = protocol::parse_token_response(
          answer.status, answer.body, tr, diag,
          {refresh_token, rt_encoded, self->cfg_.client_secret, self->secret_encoded_});
      wipe(rt_encoded);
    }
    wipe(answer.body);
    wipe(refresh_token);
    if (self->transport_.connections_opened() != connections_before)
      self->log(log_level::debug, "opened a connection to the token endpoint");
    self->finish(ec, std::move(tr), sent, std::move(diag), clock_type::now() - started);
  }

  void finish(error_code ec, protocol::token_response tr, clock_type::time_point sent,
              diagnostics diag, clock_type::duration took) {
    token_flight::batch waiters;
    access_token token;
    std::string message;  // logged once the lock is released
    std::shared_ptr<const diagnostics> failure_diag;
    refresh_event event{ec, took, 0, !ec && !tr.refresh_token.empty(), {}};
    {
      std::lock_guard lk(mu_);
      event.waiters = flight_.waiting();
      message = describe_refresh(ec, tr, diag, took, event.waiters);
      record(event, ec ? reason_of(ec) : std::string());
      if (!ec) {
        // The rotated refresh token replaces the old one before any waiter sees the new access
        // token: the old one is consumed, losing the new one would lock the user out.
        if (!tr.refresh_token.empty()) {
          wipe(refresh_token_);
          refresh_token_ = std::move(tr.refresh_token);
          ++stats_.refresh_tokens_rotated;
        }
        const clock_type::duration lifetime = tr.expires_in.value_or(cfg_.default_lifetime);
        event.lifetime = std::chrono::duration_cast<std::chrono::seconds>(lifetime);
        token = access_token(std::make_shared<const token_data>(token_data{
            std::move(tr.access_token), std::move(tr.token_type), sent + lifetime, ++serial_}));
        ++stats_.refreshes_succeeded;
        if (!shut_down_) {
          current_ = token;
          current_refresh_at_ =
              refresh_deadline(sent, lifetime, cfg_.refresh_leeway, cfg_.leeway_max_fraction);
          version_.fetch_add(1, std::memory_order_release);
        }
        last_failure_ = {};
        last_failure_diag_.reset();
      } else {
        ++stats_.refreshes_failed;
        failure_diag = std::make_shared<const diagnostics>(std::move(diag));
        last_failure_ = ec;
        last_failure_diag_ = failure_diag;
        last_failure_at_ = now();
      }
      waiters = flight_.take_all();
      refreshing_ = false;
    }
    log(ec ? log_level::warning : log_level::info, message);
    wipe(tr.access_token);
    if (!ec) {
      // One copy of the token per chunk of waiters: waiters resumed on different threads then
      // do not all write one reference count.
      waiters.complete(ec, flight_result{token, nullptr}, [](const flight_result& r) {
        return flight_result{replicate(r.token), nullptr};
      });
    } else {
      waiters.complete(ec, flight_result{{}, failure_diag});
    }
    if (cfg_.on_refresh) {
      try {
        cfg_.on_refresh(event);
      } catch (...) {
      }
    }
  }

  static std::string reason_of(const error_code& ec) {
    return ec.category() == asio::error::get_system_category() ? "system: " + ec.message()
                                                               : ec.message();
  }

  // Under mu_.
  void record(const refresh_event& e, std::string failure_reason) {
    if (e.ec) ++stats_.refreshes_failed_by_reason[std::move(failure_reason)];
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

  asio::any_io_executor ex_;
  asio::strand<asio::any_io_executor> strand_;
  client_config cfg_;           // immutable after construction (its refresh_token is moved out)
  std::string secret_encoded_;  // as it appears in the request body, for redaction
  const std::uint64_t uid_;

  // Written only under mu_; read without it by the fast path.
  std::atomic<std::uint64_t> version_{1};

  mutable std::mutex mu_;  // the slow path only: never taken by a reader of a fresh token
  access_token current_;
  clock_type::time_point current_refresh_at_{};
  std::string refresh_token_;
  std::uint64_t serial_ = 0;
  std::uint64_t invalidations_ = 0;
  bool shut_down_ = false;
  bool refreshing_ = false;  // from the first waiter of a flight until finish()
  // The last refresh's failure, served to callers within min_retry_spacing of it.
  error_code last_failure_;
  std::shared_ptr<const diagnostics> last_failure_diag_;
  clock_type::time_point last_failure_at_{};
  client_stats stats_;

  token_flight flight_;
  http_transport transport_;  // used on strand_ only
};

token_flight& flight_of(client_impl& impl) noexcept {
  return impl.flight();
}

const asio::any_io_executor& executor_of(const client_impl& impl) noexcept {
  return impl.executor();
}

bool try_fresh(client_impl& impl, access_token& out) {
  const auto* t = impl.fresh_token();
  if (t == nullptr) return false;
  out = *t;
  return true;
}

void wait_for_token(client_impl& impl, std::unique_ptr<token_flight::waiter> w) {
  impl.wait(std::move(w));
}

}  // namespace detail

client::client(boost::asio::any_io_executor ex, client_config cfg) {
  protocol::endpoint ep;
  cfg = detail::validated(std::move(cfg), ep);
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
  if (const auto* t = impl_->fresh_token()) co_return *t;
  // Awaiting a deferred operation (rather than use_awaitable) runs the initiation from this
  // frame with no second coroutine frame, and the result lands in this frame: a waiter costs
  // its node and nothing else.
  detail::token_outcome out = co_await boost::asio::async_initiate<const boost::asio::deferred_t&,
                                                                   void(detail::token_outcome)>(
      [](auto handler, detail::client_impl* impl) {
        impl->wait(impl->flight().make_waiter(std::move(handler), detail::outcome_call{}));
      },
      boost::asio::deferred, impl_.get());
  if (out.ec) detail::throw_outcome(out);
  co_return std::move(out.result.token);
}

void client::invalidate() {
  impl_->invalidate();
}

client_stats client::stats() const {
  return impl_->stats();
}

}  // namespace nxsys::auth
