// SPDX-License-Identifier: BSL-1.0
// Authorized requests to the Nxsys API: the client's token, a pool of keep-alive connections,
// one forced refresh and one retry after a 401.
#include <nxsys/auth/session.hpp>
#include <nxsys/auth/version.hpp>

#include "client_impl.hpp"
#include "completion_tokens.hpp"
#include "connection.hpp"
#include "secret_string.hpp"
#include "text.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/version.hpp>

#include <algorithm>
#include <atomic>
#include <deque>
#include <mutex>
#include <string_view>
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

// Sets "Authorization: Bearer <token>". RFC 6750 schemes are case-insensitive, but some APIs
// compare them exactly: a server's "bearer" token type is sent as the canonical "Bearer". The
// value is put together in a buffer of the thread's, wiped after use, rather than a string
// allocated per request.
void set_authorization(request_type& req, const access_token& t) {
  const std::string_view type = iequals(t.type(), "bearer") ? "Bearer" : t.type();
  thread_local std::string value;
  value.assign(type).append(1, ' ').append(t.value());
  req.set(http::field::authorization, value);
  wipe_bytes(value.data(), value.size());
  value.clear();
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

// A strand of `ex` whose copies and prefer() never allocate when `ex` is an io_context's
// executor: strand<io_context::executor_type> fits in any_io_executor's inline storage, while a
// strand<any_io_executor> (a type-erased executor inside a type-erased executor) is copied to
// the heap by every prefer() and query, which every handler hop makes.
asio::any_io_executor make_request_strand(const asio::any_io_executor& ex) {
  if (const auto* io = ex.target<asio::io_context::executor_type>()) return asio::make_strand(*io);
  return asio::make_strand(ex);
}

// Requests are spread over this many strands, made with the session. A strand made per request
// cost two allocations; two requests sharing one only take turns between their steps.
constexpr std::size_t request_strands = 64;

}  // namespace

struct request_op;

// One of the session's strands, and the requests running on it, which shutdown() cancels.
struct request_strand {
  asio::any_io_executor ex;
  request_op* ops = nullptr;  // a list through request_op::next; touched on `ex` only
};

// A request waiting for a free connection.
struct pool_waiter {
  explicit pool_waiter(const asio::any_io_executor& ex)
      : wake(ex, std::chrono::steady_clock::time_point::max()) {}
  asio::steady_timer wake;  // cancelled, on the waiter's strand, when `conn` is handed over
  std::unique_ptr<http_connection> conn;  // under the pool's mutex until `granted`
  bool granted = false;
};

// One request in progress, in its coroutine's frame. Touched on its strand only.
struct request_op {
  explicit request_op(request_strand& s) : strand(s) {}

  // Abandons the request: ends the wait or the I/O it is in; each step checks `cancelled`.
  void cancel_here(asio::cancellation_type type) {
    // Total cancellation promises no side effects, which a request on the wire cannot keep.
    constexpr auto supported = asio::cancellation_type::terminal | asio::cancellation_type::partial;
    if (cancelled || (type & supported) == asio::cancellation_type::none) return;
    cancelled = true;
    if (conn != nullptr) conn->cancel();
    if (waiter) waiter->wake.cancel();
    if (waiting_for_token) token_cancel.emit(type);
  }

  request_strand& strand;
  request_op* prev = nullptr;  // in strand.ops
  request_op* next = nullptr;
  // Bound to the token wait alone (the slow path): the rest of the request needs no slot.
  asio::cancellation_signal token_cancel;
  bool waiting_for_token = false;
  bool cancelled = false;
  http_connection* conn = nullptr;  // the connection in use, if any
  std::shared_ptr<pool_waiter> waiter;
};

// What the caller's cancellation slot reaches: made only when the slot is connected. The slot's
// handler may run after the request ended, so it holds this, never the request.
struct cancel_link {
  explicit cancel_link(asio::any_io_executor s) : strand(std::move(s)) {}
  // On `strand`.
  void cancel(asio::cancellation_type type) {
    if (op != nullptr) {
      op->cancel_here(type);
    } else if (!finished) {
      pending = pending | type;  // emitted before the request started
    }
  }
  asio::any_io_executor strand;
  asio::cancellation_slot slot;  // the caller's, cleared on the caller's executor at completion
  request_op* op = nullptr;      // while the request runs; on `strand` only
  asio::cancellation_type pending = asio::cancellation_type::none;
  bool finished = false;
};

// Lists a request on its strand for the request's lifetime (the coroutine's frame, also when an
// exception or the io_context's destruction ends it).
class request_listing {
 public:
  request_listing(request_op& op, cancel_link* link) : op_(op), link_(link) {
    auto& head = op.strand.ops;
    op.next = head;
    if (head != nullptr) head->prev = &op;
    head = &op;
    if (link_ != nullptr) link_->op = &op;
  }
  ~request_listing() { end(); }
  request_listing(const request_listing&) = delete;
  request_listing& operator=(const request_listing&) = delete;
  void end() noexcept {
    if (done_) return;
    done_ = true;
    (op_.prev != nullptr ? op_.prev->next : op_.strand.ops) = op_.next;
    if (op_.next != nullptr) op_.next->prev = op_.prev;
    if (link_ != nullptr) {
      link_->op = nullptr;
      link_->finished = true;
    }
  }

 private:
  request_op& op_;
  cancel_link* link_;
  bool done_ = false;
};

// A request's completion, posted to the handler's executor. A slot of the caller's it was
// connected to is cleared there, where the caller emits, so that a late emission never races
// the clear.
struct api_completion {
  api_handler handler;
  asio::cancellation_slot slot;
  error_code ec;
  response_type res;

  void operator()() {
    if (slot.is_connected()) slot.clear();
    std::move(handler)(ec, std::move(res));
  }
};

// Runs `c` on its handler's associated executor (`fallback` when it has none), never inline.
// `handler_ex` is that executor as the public template resolved it; empty: it is asked of the
// handler.
void post_completion(const asio::any_io_executor& handler_ex, const asio::any_io_executor& fallback,
                     api_completion&& c) {
  if (handler_ex) {
    asio::post(handler_ex, std::move(c));  // `c` has no executor of its own: it runs there
  } else {
    // Through `fallback`, then dispatched to the handler's executor, as Asio's post(ex, h) does.
    auto ex = asio::get_associated_executor(c.handler, fallback);
    asio::post(fallback, asio::bind_executor(std::move(ex), std::move(c)));
  }
}

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
    strands_.reserve(request_strands);
    for (std::size_t i = 0; i < request_strands; ++i)
      strands_.push_back(request_strand{make_request_strand(ex_)});
  }

  const asio::any_io_executor& executor() const noexcept { return ex_; }
  void start(request_type req, diagnostics* diag, asio::any_io_executor handler_ex,
             api_handler handler);
  void shutdown();
  session_stats stats() const;

 private:
  // The whole request in one coroutine frame; only waits for a token or a connection and new
  // connections' setup await frames of their own.
  static asio::awaitable<void> run(std::shared_ptr<session_impl> self, request_strand& strand,
                                   request_type req, diagnostics* caller_diag,
                                   asio::any_io_executor handler_ex, api_handler handler,
                                   std::shared_ptr<cancel_link> link);
  error_code prepare(request_type& req, diagnostics& diag) const;
  // The token when the thread's cache has no fresh one: the refresh's waiter, which
  // op.token_cancel reaches. A frame of its own, so that run()'s stays small.
  asio::awaitable<std::tuple<error_code, access_token>> wait_for_token(request_op& op,
                                                                       diagnostics& diag);
  // An idle connection (the most recently used) or a new slot into `conn`; else, when all
  // max_connections are busy, a place in line into `w`.
  error_code try_acquire(request_op& op, std::unique_ptr<http_connection>& conn,
                         std::shared_ptr<pool_waiter>& w);
  // The first connection released while `w` waits in line.
  asio::awaitable<std::tuple<error_code, std::unique_ptr<http_connection>>> wait_for_connection(
      request_op& op, std::shared_ptr<pool_waiter> w);
  void release(std::unique_ptr<http_connection> conn);

  asio::any_io_executor ex_;
  std::shared_ptr<client_impl> client_;
  session_config cfg_;
  origin origin_;
  std::string prefix_;                   // the base URL's path, without a trailing '/'
  std::vector<request_strand> strands_;  // made once; the lists on them touched on each only

  std::mutex mu_;                    // the pool
  std::atomic<bool> closed_{false};  // written under mu_; read without it to refuse requests
  std::vector<std::unique_ptr<http_connection>> idle_;  // the most recently used last
  std::size_t slots_ = 0;  // connections handed out or idle (at most max_connections)
  std::deque<std::shared_ptr<pool_waiter>> waiters_;

  std::atomic<std::uint64_t> requests_{0}, responses_{0}, failures_{0}, unauthorized_retries_{0},
      tokens_invalidated_{0}, connections_reused_{0}, stale_retries_{0}, waited_{0};
};

void session_impl::start(request_type req, diagnostics* diag, asio::any_io_executor handler_ex,
                         api_handler handler) {
  // Sequentially consistent with shutdown()'s store and reads: either it counts this request
  // as in flight, or this sees it closed.
  requests_.fetch_add(1, std::memory_order_seq_cst);
  if (closed_.load(std::memory_order_seq_cst)) {
    failures_.fetch_add(1, std::memory_order_relaxed);
    post_completion(handler_ex, ex_,
                    api_completion{std::move(handler), {}, asio::error::operation_aborted, {}});
    return;
  }
  // Round robin per thread: no cache line shared by the threads that start requests.
  thread_local std::size_t next = 0;
  request_strand& strand = strands_[next++ % strands_.size()];
  std::shared_ptr<cancel_link> link;
  auto slot = asio::get_associated_cancellation_slot(handler);
  if (slot.is_connected()) {
    link = std::make_shared<cancel_link>(strand.ex);
    link->slot = slot;
    slot.assign([link](asio::cancellation_type type) {
      asio::post(link->strand, [link, type] { link->cancel(type); });
    });
  }
  asio::co_spawn(strand.ex,
                 run(shared_from_this(), strand, std::move(req), diag, std::move(handler_ex),
                     std::move(handler), std::move(link)),
                 // A bug or bad_alloc leaves run(), as it does Asio's own operations.
                 [](std::exception_ptr e) {
                   if (e) std::rethrow_exception(e);
                 });
}

error_code session_impl::prepare(request_type& req, diagnostics& diag) const {
  if (req.target().empty() || req.target().front() != '/') {
    diag.client_message = "the request target must start with '/'";
    return make_error_code(errc::invalid_argument);
  }
  if (!prefix_.empty()) req.target(prefix_ + std::string(req.target()));
  req.set(http::field::host, origin_.host_header());
  if (req.find(http::field::user_agent) == req.end())
    req.set(http::field::user_agent,
            "nxsys-auth/" NXSYS_AUTH_VERSION_STRING " " BOOST_BEAST_VERSION_STRING);
  req.keep_alive(true);
  req.prepare_payload();
  return {};
}

asio::awaitable<void> session_impl::run(std::shared_ptr<session_impl> self, request_strand& strand,
                                        request_type req, diagnostics* caller_diag,
                                        asio::any_io_executor handler_ex, api_handler handler,
                                        std::shared_ptr<cancel_link> link) {
  request_op op(strand);
  request_listing listed(op, link.get());
  if (link && link->pending != asio::cancellation_type::none) op.cancel_here(link->pending);
  // shutdown() set this before it went through the strands' lists: a request listed after
  // that pass sees it here.
  if (self->closed_.load(std::memory_order_acquire))
    op.cancel_here(asio::cancellation_type::terminal);

  diagnostics diag;
  response_type res;
  error_code ec =
      op.cancelled ? error_code(asio::error::operation_aborted) : self->prepare(req, diag);
  for (bool retried = false; !ec; retried = true) {
    access_token token;
    if (try_fresh(*self->client_, token)) {
      diag.clear();  // the fast path: no suspension, no post
    } else {
      std::tie(ec, token) = co_await self->wait_for_token(op, diag);
      if (op.cancelled) ec = asio::error::operation_aborted;
      if (ec) break;
      diag.clear();
    }
    if (op.cancelled) {
      ec = asio::error::operation_aborted;
      break;
    }
    wipe_authorization(req);  // Beast frees a replaced value unwiped
    set_authorization(req, token);

    for (bool stale_retry = false;; stale_retry = true) {
      std::unique_ptr<http_connection> conn;
      std::shared_ptr<pool_waiter> w;
      ec = self->try_acquire(op, conn, w);
      if (!ec && w) std::tie(ec, conn) = co_await self->wait_for_connection(op, std::move(w));
      if (ec) break;
      const bool reused = conn->reusable();
      op.conn = conn.get();
      if (reused) {
        self->connections_reused_.fetch_add(1, std::memory_order_relaxed);
      } else {
        ec = co_await conn->connect(steady_time::max(), diag);
      }
      exchange_result r{ec};
      if (!ec && !op.cancelled)
        std::tie(r.ec, r.answer_started) =
            co_await conn->async_exchange(req, res, steady_time::max(), deferred_tuple);
      op.conn = nullptr;
      if (op.cancelled) {
        conn->close();
        self->release(std::move(conn));
        ec = asio::error::operation_aborted;
        break;
      }
      if (!ec && r.ec) {
        ec = conn->classify(r.ec, "request to", diag);
        conn->close();
      }
      self->release(std::move(conn));
      // A kept-alive connection the server closed just as the request went out: the server
      // never read it, but it cannot be told apart from a lost answer, so only idempotent
      // requests are sent again.
      if (r.ec && reused && !r.answer_started && dropped(r.ec) && idempotent(req.method()) &&
          !stale_retry) {
        self->stale_retries_.fetch_add(1, std::memory_order_relaxed);
        diag.clear();
        ec = {};
        continue;
      }
      break;
    }
    if (ec || res.result() != http::status::unauthorized || retried) break;
    // Compare-and-invalidate: a token another request got a 401 for was replaced already.
    self->unauthorized_retries_.fetch_add(1, std::memory_order_relaxed);
    if (self->client_->invalidate(&token))
      self->tokens_invalidated_.fetch_add(1, std::memory_order_relaxed);
    res = {};
  }

  if (ec) res = {};
  wipe_authorization(req);
  if (caller_diag != nullptr) *caller_diag = std::move(diag);
  (ec ? self->failures_ : self->responses_).fetch_add(1, std::memory_order_relaxed);
  // No cancellation reaches the request from here on.
  listed.end();
  post_completion(handler_ex, self->ex_,
                  api_completion{std::move(handler), link ? link->slot : asio::cancellation_slot(),
                                 ec, std::move(res)});
}

error_code session_impl::try_acquire(request_op& op, std::unique_ptr<http_connection>& conn,
                                     std::shared_ptr<pool_waiter>& w) {
  std::lock_guard lk(mu_);
  if (closed_.load(std::memory_order_relaxed)) return asio::error::operation_aborted;
  // Idle connections past max_idle would be reopened anyway: close them (the oldest first).
  if (!idle_.empty()) {
    const auto now = std::chrono::steady_clock::now();
    auto stale = std::find_if(idle_.begin(), idle_.end(), [&](const auto& c) {
      return now - c->last_used() <= cfg_.http.max_idle_connection;
    });
    slots_ -= static_cast<std::size_t>(stale - idle_.begin());
    idle_.erase(idle_.begin(), stale);
  }
  if (!idle_.empty()) {
    conn = std::move(idle_.back());
    idle_.pop_back();
    return {};
  }
  if (slots_ < cfg_.max_connections) {
    ++slots_;
    conn = std::make_unique<http_connection>(ex_, origin_);
    return {};
  }
  w = std::make_shared<pool_waiter>(op.strand.ex);
  waiters_.push_back(w);
  return {};
}

asio::awaitable<std::tuple<error_code, access_token>> session_impl::wait_for_token(
    request_op& op, diagnostics& diag) {
  op.waiting_for_token = true;
  auto r = co_await async_token(client_, &diag,
                                asio::bind_cancellation_slot(op.token_cancel.slot(), use_tuple));
  op.waiting_for_token = false;
  co_return r;
}

asio::awaitable<std::tuple<error_code, std::unique_ptr<http_connection>>>
session_impl::wait_for_connection(request_op& op, std::shared_ptr<pool_waiter> w) {
  waited_.fetch_add(1, std::memory_order_relaxed);
  op.waiter = w;
  for (;;) {
    // A cancellation before the wait began has cancelled no timer: it is seen here.
    if (!op.cancelled) co_await w->wake.async_wait(use_tuple);
    std::unique_ptr<http_connection> got;
    bool granted = false;
    {
      std::lock_guard lk(mu_);
      granted = w->granted;
      if (granted) {
        got = std::move(w->conn);
      } else if (op.cancelled || closed_.load(std::memory_order_relaxed)) {
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
    if (!closed_.load(std::memory_order_relaxed) && !waiters_.empty()) {
      // Open or not, the slot goes to the first in line (it reconnects if need be).
      w = std::move(waiters_.front());
      waiters_.pop_front();
      w->conn = std::move(conn);
      w->granted = true;
    } else if (!closed_.load(std::memory_order_relaxed) && conn->is_open()) {
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
  std::vector<std::unique_ptr<http_connection>> idle;
  {
    std::lock_guard lk(mu_);
    closed_.store(true, std::memory_order_seq_cst);
    slots_ -= idle_.size();
    idle.swap(idle_);
  }
  // None in flight (each request counts its end before it leaves its strand's list): no
  // strand to visit, and nothing keeps this alive in the executor's queue.
  const auto ended =
      responses_.load(std::memory_order_seq_cst) + failures_.load(std::memory_order_seq_cst);
  if (requests_.load(std::memory_order_seq_cst) == ended) return;
  // Each strand's requests are cancelled on it; one listed later sees closed_ first.
  for (auto& s : strands_)
    asio::post(s.ex, [self = shared_from_this(), &s] {
      for (request_op* op = s.ops; op != nullptr; op = op->next)
        op->cancel_here(asio::cancellation_type::terminal);
    });
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

const asio::any_io_executor& executor_of(const session_impl& impl) noexcept {
  return impl.executor();
}

void start_request(const std::shared_ptr<session_impl>& impl, request_type req, diagnostics* diag,
                   asio::any_io_executor handler_ex, api_handler handler) {
  impl->start(std::move(req), diag, std::move(handler_ex), std::move(handler));
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
