// redis_store: lease, state and events of a token chain in Redis, driven by coroutines on one
// strand per store.
#include <nxsys/auth/redis_store.hpp>

#include "connection.hpp"
#include "state_codec.hpp"
#include "text.hpp"

#include <boost/asio/append.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <openssl/rand.h>

#include <list>
#include <unistd.h>

namespace nxsys::auth {
namespace asio = boost::asio;
using boost::system::error_code;
using steady = std::chrono::steady_clock;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// Takes the lease if it is free, or confirms it to its owner: sent again after a lost reply, it
// does not lock its own sender out for lease_ttl as a second SET NX would.
constexpr const char* acquire_script = R"lua(
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0)lua";

// Extends the lease only for its owner.
constexpr const char* renew_script = R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0)lua";

// Deletes the lease only for its owner, and tells the waiters.
constexpr const char* release_script = R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], 'released')
  return 1
end
return 0)lua";

// Compare-and-set on the stored refresh token (nothing stored counts as a match), then tells
// the waiters. Finding the new token already stored means a retry of a save whose reply was
// lost: done.
constexpr const char* save_script = R"lua(
local current = redis.call('HGET', KEYS[1], 'refresh_token')
if current and current ~= ARGV[1] then
  if current == ARGV[2] then return 1 end
  return 0
end
redis.call('HSET', KEYS[1], 'refresh_token', ARGV[2], 'state', ARGV[3])
redis.call('PUBLISH', ARGV[4], 'saved')
return 1)lua";

// "<pid>-<random>": unique, and tells an operator which process holds the lease.
std::string random_owner() {
  unsigned char bytes[12];
  if (RAND_bytes(bytes, sizeof bytes) != 1) throw std::runtime_error("RAND_bytes failed");
  static constexpr char hex[] = "0123456789abcdef";
  std::string s = std::to_string(::getpid()) + "-";
  for (unsigned char b : bytes) {
    s += hex[b >> 4];
    s += hex[b & 0xf];
  }
  return s;
}

}  // namespace

struct redis_store::state : std::enable_shared_from_this<state> {
  state(asio::any_io_executor e, redis_store_options o)
      : ex(std::move(e)),
        strand(asio::make_strand(ex)),
        opts(std::move(o)),
        address{opts.host,     std::to_string(opts.port), opts.username, opts.password,
                opts.database, opts.connect_timeout},
        state_key(opts.key_prefix + "{" + opts.name + "}"),
        lease_key(state_key + ":lease"),
        channel(state_key + ":events"),
        commands(strand, address),
        events(strand, address) {}

  ~state() {
    detail::wipe(address.password);
    if (last_known) detail::wipe(*last_known);
  }

  void remember(const stored_tokens& t) {
    if (!opts.local_fallback) return;
    if (last_known) detail::wipe(*last_known);
    last_known = t;
  }

  // What a failed operation tells the client: which server, which step.
  diagnostics failure(std::string_view step, const error_code& ec) const {
    diagnostics d;
    if (!ec || ec == asio::error::operation_aborted) return d;
    d.client_message = "redis " + address.host + ":" + address.port + ": " + std::string(step) +
                       ": " + ec.message();
    return d;
  }

  steady::time_point command_deadline(steady::time_point limit = steady::time_point::max()) const {
    return std::min(limit, steady::now() + opts.command_timeout);
  }

  // One command, bounded by command_timeout (and `deadline`). A connection that fails is
  // reopened and the command sent again, every retry_pause, until that bound: a Redis restart
  // shorter than command_timeout costs latency, not errors. Every script is written to be
  // sent twice safely (a reply may be lost after the command ran).
  asio::awaitable<error_code> exec(std::vector<std::string> args, redis::reply& out,
                                   steady::time_point deadline) {
    const auto until = command_deadline(deadline);
    for (;;) {
      diagnostics diag;
      out = {};
      auto ec = co_await commands.exec(args, out, until, diag);
      if (!ec) {
        for (auto& a : args) detail::wipe(a);
        co_return out.is_error() ? make_error_code(errc::store_failed) : error_code{};
      }
      if (closed || ec == asio::error::operation_aborted || steady::now() + retry_pause >= until) {
        for (auto& a : args) detail::wipe(a);
        co_return ec == asio::error::operation_aborted ? ec : make_error_code(errc::store_failed);
      }
      asio::steady_timer pause(strand, retry_pause);
      co_await pause.async_wait(use_tuple);
    }
  }

  static constexpr std::chrono::milliseconds retry_pause{50};

  // Wakes every waiting acquirer (on the strand).
  void wake_all() {
    for (auto* t : waiting) t->cancel();
  }

  // Keeps a SUBSCRIBE open while acquirers wait; ends when none do or the connection fails.
  static asio::awaitable<void> listen(std::shared_ptr<state> self) {
    diagnostics diag;
    redis::reply r;
    auto ec = co_await self->events.exec(redis::command("SUBSCRIBE", self->channel), r,
                                         self->command_deadline(), diag);
    while (!ec && !self->closed) {
      r = {};
      ec = co_await self->events.receive(r, steady::time_point::max(), diag);
      if (!ec) self->wake_all();  // a "saved" or "released": try the lease again
      if (self->waiting.empty()) break;
    }
    self->events.close();
    self->listening = false;
    // A waiter that came while this ended would otherwise be left to the poll alone.
    if (!self->waiting.empty() && ec == asio::error::operation_aborted) self->ensure_listening();
  }

  void ensure_listening() {
    if (listening || closed) return;
    listening = true;
    asio::co_spawn(strand, listen(shared_from_this()), asio::detached);
  }

  // The lease, held by the client; its last copy releases it.
  struct hold {
    std::shared_ptr<state> s;
    std::string owner;
    std::shared_ptr<asio::steady_timer> renew_timer;  // shared with renew(), which it ends
    hold(std::shared_ptr<state> st, std::string o)
        : s(std::move(st)),
          owner(std::move(o)),
          renew_timer(std::make_shared<asio::steady_timer>(s->strand)) {}
    ~hold() {
      asio::post(s->strand, [s = s, owner = std::move(owner), t = renew_timer]() mutable {
        t->cancel();
        asio::co_spawn(s->strand, release(s, std::move(owner)), asio::detached);
      });
    }
  };

  static asio::awaitable<void> release(std::shared_ptr<state> self, std::string owner) {
    redis::reply r;
    co_await self->exec(
        redis::command("EVAL", release_script, "1", self->lease_key, owner, self->channel), r,
        steady::time_point::max());
    // A failure leaves the lease to expire after lease_ttl.
  }

  // Extends the lease every third of its lifetime until the hold goes.
  static asio::awaitable<void> renew(std::shared_ptr<state> self,
                                     std::shared_ptr<asio::steady_timer> timer, std::string owner) {
    for (;;) {
      timer->expires_after(self->opts.lease_ttl / 3);
      auto [ec] = co_await timer->async_wait(use_tuple);
      if (ec || self->closed) co_return;  // cancelled: released
      redis::reply r;
      co_await self->exec(redis::command("EVAL", renew_script, "1", self->lease_key, owner,
                                         std::to_string(self->opts.lease_ttl.count())),
                          r, steady::time_point::max());
    }
  }

  static asio::awaitable<std::tuple<error_code, refresh_lease>> acquire(
      std::shared_ptr<state> self, steady::time_point deadline, std::shared_ptr<bool> cancelled,
      std::shared_ptr<asio::steady_timer*> current_wait) {
    const std::string owner = random_owner();
    for (;;) {
      if (self->closed || *cancelled)
        co_return std::tuple{asio::error::operation_aborted, refresh_lease{}};
      redis::reply r;
      auto ec =
          co_await self->exec(redis::command("EVAL", acquire_script, "1", self->lease_key, owner,
                                             std::to_string(self->opts.lease_ttl.count())),
                              r, steady::time_point::max());  // bounded by command_timeout
      if (self->closed || *cancelled)
        co_return std::tuple{error_code(asio::error::operation_aborted), refresh_lease{}};
      if (ec == errc::store_failed && self->opts.local_fallback && !self->local_held) {
        // Redis unreachable, and this process may refresh alone: the lease is local.
        self->local_held = true;
        auto local = std::shared_ptr<void>(nullptr, [self](void*) {
          asio::post(self->strand, [self] { self->local_held = false; });
        });
        co_return std::tuple{error_code{}, refresh_lease(std::move(local))};
      }
      if (ec && !(ec == errc::store_failed && self->opts.local_fallback))
        co_return std::tuple{ec, refresh_lease{}};
      if (!ec && r.type == redis::reply::kind::integer && r.integer == 1) {
        auto h = std::make_shared<hold>(self, owner);
        asio::co_spawn(self->strand, renew(self, h->renew_timer, owner), asio::detached);
        co_return std::tuple{error_code{}, refresh_lease(h)};
      }
      if (steady::now() >= deadline)
        co_return std::tuple{make_error_code(errc::store_busy), refresh_lease{}};
      // Held by another replica: wait for its publication, or poll.
      asio::steady_timer t(self->strand,
                           std::min(deadline, steady::now() + self->opts.poll_interval));
      self->waiting.push_back(&t);
      *current_wait = &t;
      self->ensure_listening();
      co_await t.async_wait(use_tuple);
      *current_wait = nullptr;
      self->waiting.remove(&t);
      // Nobody waits: stop listening, so that an idle store keeps no work on the executor.
      if (self->waiting.empty()) self->events.close();
    }
  }

  asio::any_io_executor ex;
  asio::strand<asio::any_io_executor> strand;
  redis_store_options opts;
  redis::server_address address;
  std::string state_key, lease_key, channel;
  redis::connection commands;  // on strand
  redis::connection events;    // on strand: SUBSCRIBE
  std::list<asio::steady_timer*> waiting;
  // With local_fallback: the state last read or written, served while Redis is unreachable,
  // and whether the local lease is held.
  std::optional<stored_tokens> last_known;
  bool local_held = false;
  bool listening = false;
  bool closed = false;
};

redis_store::redis_store(asio::any_io_executor ex, redis_store_options opts)
    : s_(std::make_shared<state>(std::move(ex), std::move(opts))) {
  if (s_->opts.lease_ttl.count() < 3 || s_->opts.poll_interval.count() <= 0 ||
      s_->opts.command_timeout.count() <= 0 || s_->opts.connect_timeout.count() <= 0) {
    diagnostics d;
    d.client_message = "redis_store: lease_ttl must be at least 3 ms and the intervals positive";
    throw error_with_diagnostics(make_error_code(errc::invalid_config), std::move(d));
  }
}

redis_store::~redis_store() {
  asio::post(s_->strand, [s = s_] {
    s->closed = true;
    s->wake_all();
    s->commands.close();
    s->events.close();
  });
}

void redis_store::do_load(asio::any_completion_handler<load_signature> h) {
  asio::co_spawn(
      s_->strand,
      [](std::shared_ptr<state> s)
          -> asio::awaitable<std::tuple<error_code, std::optional<stored_tokens>, diagnostics>> {
        redis::reply r;
        auto ec = co_await s->exec(redis::command("HGET", s->state_key, "state"), r,
                                   steady::time_point::max());
        if (ec == errc::store_failed && s->opts.local_fallback && s->last_known)
          co_return std::tuple{error_code{}, s->last_known, diagnostics{}};
        if (ec) co_return std::tuple{ec, std::nullopt, s->failure("HGET", ec)};
        if (r.type == redis::reply::kind::nil)
          co_return std::tuple{error_code{}, std::nullopt, diagnostics{}};
        stored_tokens t;
        diagnostics diag;
        ec = detail::parse_stored_tokens(r.str, "redis key " + s->state_key, t, diag);
        detail::wipe(r.str);
        if (ec) co_return std::tuple{ec, std::nullopt, std::move(diag)};
        s->remember(t);
        co_return std::tuple{error_code{}, std::optional<stored_tokens>(std::move(t)),
                             diagnostics{}};
      }(s_),
      [ex = s_->ex, h = std::move(h)](std::exception_ptr e, auto result) mutable {
        if (e) std::rethrow_exception(e);
        auto& [ec, value, diag] = result;
        asio::post(ex, asio::append(std::move(h), ec, std::move(value), std::move(diag)));
      });
}

void redis_store::do_acquire(steady::time_point deadline,
                             asio::any_completion_handler<acquire_signature> h) {
  auto cancelled = std::make_shared<bool>(false);
  auto current_wait = std::make_shared<asio::steady_timer*>(nullptr);
  auto slot = asio::get_associated_cancellation_slot(h);
  if (slot.is_connected()) {
    slot.assign([s = s_, cancelled, current_wait](asio::cancellation_type) {
      asio::post(s->strand, [cancelled, current_wait] {
        *cancelled = true;
        if (*current_wait != nullptr) (*current_wait)->cancel();
      });
    });
  }
  asio::co_spawn(s_->strand, state::acquire(s_, deadline, cancelled, current_wait),
                 [s = s_, ex = s_->ex, h = std::move(h), slot](std::exception_ptr e,
                                                               auto result) mutable {
                   if (e) std::rethrow_exception(e);
                   if (slot.is_connected()) slot.clear();
                   auto& [ec, lease] = result;
                   asio::post(ex, asio::append(std::move(h), ec, std::move(lease),
                                               s->failure("the lease script", ec)));
                 });
}

void redis_store::do_save(stored_tokens next, std::string expected,
                          asio::any_completion_handler<save_signature> h) {
  asio::co_spawn(
      s_->strand,
      [](std::shared_ptr<state> s, stored_tokens next,
         std::string expected) -> asio::awaitable<error_code> {
        if (next.refresh_token.empty()) co_return make_error_code(errc::invalid_argument);
        std::string text = detail::serialize_stored_tokens(next);
        redis::reply r;
        auto ec = co_await s->exec(redis::command("EVAL", save_script, "1", s->state_key, expected,
                                                  next.refresh_token, text, s->channel),
                                   r, steady::time_point::max());
        detail::wipe(text);
        detail::wipe(expected);
        // Saved, or (local_fallback) kept here while Redis is unreachable: the failure still
        // goes to the client, which retries the save until Redis takes it.
        const bool saved = !ec && r.type == redis::reply::kind::integer && r.integer == 1;
        if (saved || ec == errc::store_failed) s->remember(next);
        detail::wipe(next);
        if (ec) co_return ec;
        if (r.type != redis::reply::kind::integer) co_return make_error_code(errc::store_failed);
        co_return saved ? error_code{} : make_error_code(errc::store_conflict);
      }(s_, std::move(next), std::move(expected)),
      [s = s_, ex = s_->ex, h = std::move(h)](std::exception_ptr e, error_code ec) mutable {
        if (e) std::rethrow_exception(e);
        asio::post(ex, asio::append(std::move(h), ec, s->failure("the save script", ec)));
      });
}

}  // namespace nxsys::auth
