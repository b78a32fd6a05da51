// SPDX-License-Identifier: BSL-1.0
// Authorized requests to the Nxsys API: the client's token, a pool of keep-alive connections,
// one forced refresh and one retry after a 401.
#include <nxsys/auth/session.hpp>
#include <nxsys/auth/version.hpp>

#include "client_impl.hpp"
#include "completion_tokens.hpp"
#include "connection.hpp"
#include "text.hpp"

#include <boost/asio/append.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/version.hpp>

#include <algorithm>
#include <atomic>
#include <deque>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace nxsys::auth {
namespace detail {
namespace asio = boost::asio;
namespace http = boost::beast::http;
using boost::system::error_code;
using request_type = session::request_type;
using response_type = session::response_type;

namespace {

// RFC 9110 §9.2.2: sending these twice has the effect of sending them once.
bool idempotent(http::verb v) noexcept {
  switch (v) {
    case http::verb::get:
    case http::verb::head:
    case http::verb::put:
    case http::verb::delete_:
    case http::verb::options:
    case http::verb::trace:
      return true;
    default:
      return false;
  }
}

// What a connection closed by the server while idle looks like when a request is sent on it.
bool dropped(const error_code& ec) noexcept {
  return ec == http::error::end_of_stream || ec == http::error::partial_message ||
         ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe || ec == asio::error::connection_aborted;
}

// "Bearer <token>". RFC 6750 schemes are case-insensitive, but some APIs compare them exactly:
// a server's "bearer" token type is sent as the canonical "Bearer".
std::string authorization_of(const access_token& t) {
  const std::string_view type = iequals(t.type(), "bearer") ? "Bearer" : t.type();
  std::string h;
  h.reserve(type.size() + 1 + t.value().size());
  h.append(type).append(1, ' ').append(t.value());
  return h;
}

session_config checked(session_config cfg) {
  diagnostics diag;
  if (auto ec = cfg.validate(&diag)) throw error_with_diagnostics(ec, std::move(diag));
  return cfg;
}

// The base URL's parts (validate() has checked it).
protocol::endpoint endpoint_of(const session_config& cfg) {
  protocol::endpoint ep;
  diagnostics diag;
  if (auto ec = protocol::parse_url(cfg.base_url, "base_url", "bearer token",
                                    cfg.http.allow_insecure_http, ep, diag))
    throw error_with_diagnostics(ec, std::move(diag));
  return ep;
}

}  // namespace

// A request waiting for a free connection.
struct pool_waiter {
  explicit pool_waiter(const asio::any_io_executor& ex)
      : wake(ex, std::chrono::steady_clock::time_point::max()) {}
  asio::steady_timer wake;  // cancelled, on the waiter's strand, when `conn` is handed over
  std::unique_ptr<http_connection> conn;  // under the pool's mutex until `granted`
  bool granted = false;
};

// One request in progress. Everything but `handler`'s hand-off runs on `strand`.
struct request_op : std::enable_shared_from_this<request_op> {
  explicit request_op(const asio::any_io_executor& ex) : strand(asio::make_strand(ex)) {}

  // From the caller's cancellation slot (any thread): abandon the request on the strand.
  void cancel(asio::cancellation_type type) {
    asio::post(strand, [self = shared_from_this(), type] { self->cancel_here(type); });
  }
  void cancel_here(asio::cancellation_type type) {
    // Total cancellation promises no side effects, which a request on the wire cannot keep.
    constexpr auto supported = asio::cancellation_type::terminal | asio::cancellation_type::partial;
    if (done || (type & supported) == asio::cancellation_type::none) return;
    cancelled = true;
    if (conn != nullptr) conn->cancel();
    if (waiter) waiter->wake.cancel();
    // Only once the coroutine runs: co_spawn connects its handler to `signal` before that.
    if (started) signal.emit(type);
  }

  asio::any_io_executor strand;
  asio::cancellation_signal signal;  // into the coroutine (the token wait); emitted on strand
  asio::cancellation_slot caller_slot;
  diagnostics* diag = nullptr;
  bool started = false;
  bool cancelled = false;
  bool done = false;
  http_connection* conn = nullptr;  // the connection in use, if any
  std::shared_ptr<pool_waiter> waiter;
};

struct api_outcome {
  error_code ec;
  response_type res;
};

class session_impl : public std::enable_shared_from_this<session_impl> {
 public:
  session_impl(asio::any_io_executor ex, std::shared_ptr<client_impl> c, session_config cfg)
      : ex_(std::move(ex)),
        client_(std::move(c)),
        cfg_(checked(std::move(cfg))),
        origin_(endpoint_of(cfg_), cfg_.http, default_api_response_bytes) {
    const auto& target = origin_.endpoint().target;
    prefix_ = target == "/" ? std::string() : target;
    if (!prefix_.empty() && prefix_.back() == '/') prefix_.pop_back();
  }

  const asio::any_io_executor& executor() const noexcept { return ex_; }
  void start(request_type req, diagnostics* diag, api_handler handler);
  void shutdown();
  session_stats stats() const;

 private:
  static asio::awaitable<api_outcome> run(std::shared_ptr<session_impl> self,
                                          std::shared_ptr<request_op> op, request_type req);
  asio::awaitable<error_code> send(request_op& op, request_type& req, response_type& res,
                                   diagnostics& diag);
  asio::awaitable<error_code> exchange(request_op& op, const request_type& req, response_type& res,
                                       diagnostics& diag);
  asio::awaitable<std::tuple<error_code, std::unique_ptr<http_connection>>> acquire(request_op& op);
  void release(std::unique_ptr<http_connection> conn);
  void complete(request_op& op, api_handler h, std::exception_ptr e, api_outcome out);

  asio::any_io_executor ex_;
  std::shared_ptr<client_impl> client_;
  session_config cfg_;
  origin origin_;
  std::string prefix_;  // the base URL's path, without a trailing '/'

  std::mutex mu_;  // the pool and the registry of requests
  bool closed_ = false;
  std::vector<std::unique_ptr<http_connection>> idle_;  // the most recently used last
  std::size_t slots_ = 0;  // connections handed out or idle (at most max_connections)
  std::deque<std::shared_ptr<pool_waiter>> waiters_;
  std::unordered_map<const request_op*, std::weak_ptr<request_op>> ops_;

  std::atomic<std::uint64_t> requests_{0}, responses_{0}, failures_{0}, unauthorized_retries_{0},
      tokens_invalidated_{0}, connections_reused_{0}, stale_retries_{0}, waited_{0};
};

void session_impl::start(request_type req, diagnostics* diag, api_handler handler) {
  requests_.fetch_add(1, std::memory_order_relaxed);
  auto op = std::make_shared<request_op>(ex_);
  op->diag = diag;
  bool closed;
  {
    std::lock_guard lk(mu_);
    closed = closed_;
    if (!closed) ops_.emplace(op.get(), op);
  }
  if (closed) {
    failures_.fetch_add(1, std::memory_order_relaxed);
    // post(default, h) runs h on its associated executor.
    asio::post(ex_, asio::append(std::move(handler), error_code(asio::error::operation_aborted),
                                 response_type{}));
    return;
  }
  auto slot = asio::get_associated_cancellation_slot(handler);
  if (slot.is_connected()) {
    op->caller_slot = slot;
    slot.assign([w = std::weak_ptr<request_op>(op)](asio::cancellation_type type) {
      if (auto o = w.lock()) o->cancel(type);
    });
  }
  auto strand = op->strand;
  auto* raw = op.get();
  asio::co_spawn(
      strand, run(shared_from_this(), op, std::move(req)),
      asio::bind_cancellation_slot(
          raw->signal.slot(),
          asio::bind_executor(strand, [self = shared_from_this(), op, h = std::move(handler)](
                                          std::exception_ptr e, api_outcome out) mutable {
            self->complete(*op, std::move(h), e, std::move(out));
          })));
}

// On the request's strand.
void session_impl::complete(request_op& op, api_handler h, std::exception_ptr e, api_outcome out) {
  op.done = true;
  if (op.caller_slot.is_connected()) op.caller_slot.clear();
  {
    std::lock_guard lk(mu_);
    ops_.erase(&op);
  }
  if (e) std::rethrow_exception(e);  // a bug or bad_alloc: out of run(), as Asio does
  (out.ec ? failures_ : responses_).fetch_add(1, std::memory_order_relaxed);
  asio::post(ex_, asio::append(std::move(h), out.ec, std::move(out.res)));
}

asio::awaitable<api_outcome> session_impl::run(std::shared_ptr<session_impl> self,
                                               std::shared_ptr<request_op> op, request_type req) {
  co_await asio::this_coro::throw_if_cancelled(false);
  co_await asio::this_coro::reset_cancellation_state(asio::enable_partial_cancellation());
  op->started = true;
  api_outcome out;
  diagnostics diag;
  if (op->cancelled) {
    out.ec = asio::error::operation_aborted;
  } else {
    out.ec = co_await self->send(*op, req, out.res, diag);
  }
  if (out.ec) out.res = {};
  wipe_authorization(req);
  if (op->diag != nullptr) *op->diag = std::move(diag);
  co_return out;
}

asio::awaitable<error_code> session_impl::send(request_op& op, request_type& req,
                                               response_type& res, diagnostics& diag) {
  if (req.target().empty() || req.target().front() != '/') {
    diag.client_message = "the request target must start with '/'";
    co_return make_error_code(errc::invalid_argument);
  }
  if (!prefix_.empty()) req.target(prefix_ + std::string(req.target()));
  req.set(http::field::host, origin_.host_header());
  if (req.find(http::field::user_agent) == req.end())
    req.set(http::field::user_agent,
            "nxsys-auth/" NXSYS_AUTH_VERSION_STRING " " BOOST_BEAST_VERSION_STRING);
  req.keep_alive(true);
  req.prepare_payload();

  for (bool retried = false;; retried = true) {
    auto [ec, token] = co_await async_token(client_, &diag, use_tuple);
    if (op.cancelled) co_return asio::error::operation_aborted;
    if (ec) co_return ec;
    diag.clear();
    wipe_authorization(req);  // Beast frees a replaced value unwiped
    req.set(http::field::authorization, authorization_of(token));
    if (auto e = co_await exchange(op, req, res, diag)) co_return e;
    if (res.result() != http::status::unauthorized || retried) co_return error_code{};
    // Compare-and-invalidate: a token another request got a 401 for was replaced already.
    unauthorized_retries_.fetch_add(1, std::memory_order_relaxed);
    if (client_->invalidate(&token)) tokens_invalidated_.fetch_add(1, std::memory_order_relaxed);
    res = {};
  }
}

asio::awaitable<error_code> session_impl::exchange(request_op& op, const request_type& req,
                                                   response_type& res, diagnostics& diag) {
  for (bool stale_retry = false;; stale_retry = true) {
    auto [ec, conn] = co_await acquire(op);
    if (ec) co_return ec;
    const bool reused = conn->reusable();
    op.conn = conn.get();
    if (reused) {
      connections_reused_.fetch_add(1, std::memory_order_relaxed);
    } else {
      ec = co_await conn->connect(steady_time::max(), diag);
    }
    exchange_result r{ec};
    if (!ec && !op.cancelled) r = co_await conn->exchange(req, res, steady_time::max());
    op.conn = nullptr;
    if (op.cancelled) {
      conn->close();
      release(std::move(conn));
      co_return asio::error::operation_aborted;
    }
    if (!ec && r.ec) {
      ec = conn->classify(r.ec, "request to", diag);
      conn->close();
    }
    release(std::move(conn));
    // A kept-alive connection the server closed just as the request went out: the server
    // never read it, but it cannot be told apart from a lost answer, so only idempotent
    // requests are sent again.
    if (r.ec && reused && !r.answer_started && dropped(r.ec) && idempotent(req.method()) &&
        !stale_retry) {
      stale_retries_.fetch_add(1, std::memory_order_relaxed);
      diag.clear();
      continue;
    }
    co_return ec;
  }
}

// A connection of the pool: an idle one (the most recently used), a new slot, or the first
// one released while this request waits in line.
asio::awaitable<std::tuple<error_code, std::unique_ptr<http_connection>>> session_impl::acquire(
    request_op& op) {
  std::shared_ptr<pool_waiter> w;
  {
    std::lock_guard lk(mu_);
    if (closed_) co_return std::tuple{error_code(asio::error::operation_aborted), nullptr};
    // Idle connections past max_idle would be reopened anyway: close them (the oldest first).
    const auto now = std::chrono::steady_clock::now();
    auto stale = std::find_if(idle_.begin(), idle_.end(), [&](const auto& c) {
      return now - c->last_used() <= cfg_.http.max_idle_connection;
    });
    slots_ -= static_cast<std::size_t>(stale - idle_.begin());
    idle_.erase(idle_.begin(), stale);
    if (!idle_.empty()) {
      auto c = std::move(idle_.back());
      idle_.pop_back();
      co_return std::tuple{error_code{}, std::move(c)};
    }
    if (slots_ < cfg_.max_connections) {
      ++slots_;
      co_return std::tuple{error_code{}, std::make_unique<http_connection>(ex_, origin_)};
    }
    w = std::make_shared<pool_waiter>(op.strand);
    waiters_.push_back(w);
  }
  waited_.fetch_add(1, std::memory_order_relaxed);
  op.waiter = w;
  for (;;) {
    co_await w->wake.async_wait(use_tuple);
    std::unique_ptr<http_connection> got;
    bool granted = false;
    {
      std::lock_guard lk(mu_);
      granted = w->granted;
      if (granted) {
        got = std::move(w->conn);
      } else if (op.cancelled || closed_) {
        waiters_.erase(std::find(waiters_.begin(), waiters_.end(), w));
      } else {
        continue;  // woken by nothing we know of: keep waiting
      }
    }
    op.waiter = nullptr;
    if (granted && !op.cancelled) co_return std::tuple{error_code{}, std::move(got)};
    if (granted) release(std::move(got));  // cancelled as it arrived: pass it on
    co_return std::tuple{error_code(asio::error::operation_aborted), nullptr};
  }
}

void session_impl::release(std::unique_ptr<http_connection> conn) {
  std::shared_ptr<pool_waiter> w;
  {
    std::lock_guard lk(mu_);
    if (!closed_ && !waiters_.empty()) {
      // Open or not, the slot goes to the first in line (it reconnects if need be).
      w = std::move(waiters_.front());
      waiters_.pop_front();
      w->conn = std::move(conn);
      w->granted = true;
    } else if (!closed_ && conn->is_open()) {
      idle_.push_back(std::move(conn));
      return;
    } else {
      --slots_;
    }
  }
  if (w) asio::post(w->wake.get_executor(), [w] { w->wake.cancel(); });
  // `conn`, when still held, is closed by its destructor outside the lock.
}

void session_impl::shutdown() {
  std::vector<std::shared_ptr<request_op>> ops;
  std::vector<std::unique_ptr<http_connection>> idle;
  {
    std::lock_guard lk(mu_);
    closed_ = true;
    for (auto& [raw, weak] : ops_)
      if (auto op = weak.lock()) ops.push_back(std::move(op));
    slots_ -= idle_.size();
    idle.swap(idle_);
  }
  for (auto& op : ops) op->cancel(asio::cancellation_type::terminal);
}

session_stats session_impl::stats() const {
  auto get = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  session_stats s;
  s.requests = get(requests_);
  s.responses = get(responses_);
  s.failures = get(failures_);
  s.unauthorized_retries = get(unauthorized_retries_);
  s.tokens_invalidated = get(tokens_invalidated_);
  s.connections_opened = origin_.connections_opened();
  s.connections_reused = get(connections_reused_);
  s.stale_connection_retries = get(stale_retries_);
  s.waited_for_connection = get(waited_);
  return s;
}

void start_request(const std::shared_ptr<session_impl>& impl, request_type req, diagnostics* diag,
                   api_handler handler) {
  impl->start(std::move(req), diag, std::move(handler));
}

}  // namespace detail

session::session(boost::asio::any_io_executor ex, client& c, session_config cfg)
    : impl_(std::make_shared<detail::session_impl>(std::move(ex), c.impl_, std::move(cfg))) {}

session::session(client& c, session_config cfg) : session(c.get_executor(), c, std::move(cfg)) {}

session::~session() {
  if (impl_) impl_->shutdown();
}

session::session(session&&) noexcept = default;

session& session::operator=(session&& other) noexcept {
  if (this != &other) {
    if (impl_) impl_->shutdown();
    impl_ = std::move(other.impl_);
  }
  return *this;
}

boost::asio::awaitable<session::response_type> session::request(request_type req) {
  diagnostics diag;
  auto [ec, res] = co_await async_request(std::move(req), diag,
                                          boost::asio::as_tuple(boost::asio::use_awaitable));
  if (ec) throw error_with_diagnostics(ec, std::move(diag));
  co_return std::move(res);
}

session_stats session::stats() const {
  return impl_->stats();
}

boost::asio::any_io_executor session::get_executor() const noexcept {
  return impl_->executor();
}

}  // namespace nxsys::auth
