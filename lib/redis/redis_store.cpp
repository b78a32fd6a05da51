// SPDX-License-Identifier: BSL-1.0
// redis_store: lease, state and events of a token chain in Redis, driven by coroutines on one
// strand per store.
#include <nxsys/auth/redis_store.hpp>

#include "completion_tokens.hpp"
#include "connection.hpp"
#include "sentinel.hpp"
#include "state_codec.hpp"
#include "text.hpp"
#include "tls.hpp"

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

#include <algorithm>
#include <atomic>
#include <list>
#include <optional>
#include <unistd.h>
#include <utility>

namespace nxsys::auth {
namespace asio = boost::asio;
using boost::system::error_code;
using detail::use_tuple;
using steady = std::chrono::steady_clock;

namespace {

// Takes the lease if it is free, or confirms it to its owner: sent again after a lost reply, it
// does not lock its own sender out for lease_ttl as a second SET NX would. Answers {taken,
// version}: the state's save count. A version newer than the one the replica last read
// (ARGV[3]) is answered without taking the lease: the replica reads it first, so that replicas
// arriving after a save do not queue for the lease one by one only to read it.
constexpr const char* acquire_script = R"lua(
local version = tonumber(redis.call('HGET', KEYS[2], 'version') or '0')
if version > tonumber(ARGV[3]) then return {0, version} end
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, version}
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, version}
end
return {0, version})lua";

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
// the waiters which version it wrote ("saved <version>"), so that they read it without the
// lease. Finding the new token already stored means a retry of a save whose reply was lost:
// done. Answers {saved, version}.
constexpr const char* save_script = R"lua(
local current = redis.call('HGET', KEYS[1], 'refresh_token')
if current and current ~= ARGV[1] then
  if current == ARGV[2] then
    return {1, tonumber(redis.call('HGET', KEYS[1], 'version') or '0')}
  end
  return {0, 0}
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'refresh_token', ARGV[2], 'state', ARGV[3])
redis.call('PUBLISH', ARGV[4], 'saved ' .. version)
return {1, version})lua";

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

// The code of an error reply: its first word ("READONLY You can't write ..." -> READONLY).
// Redis 7 keeps the code of an error raised inside a script; Redis 6 wraps it ("ERR Error
// running script (call to f_...): @user_script:4: @user_script: 4: -READONLY You can't ..."),
// and there the inner code counts.
std::string_view error_code_of(std::string_view text) {
  if (text.starts_with("ERR Error running script")) {
    if (const auto at = text.rfind(": -"); at != std::string_view::npos) text.remove_prefix(at + 3);
  }
  return text.substr(0, text.find(' '));
}

// Error replies that describe a passing state of the server, not our command: a replica after
// a failover (READONLY), a restart reading its data (LOADING), a replica cut off from its
// master (MASTERDOWN), a long script (BUSY), a cluster moving slots or electing (TRYAGAIN,
// CLUSTERDOWN), memory full (OOM), too few replicas for min-replicas-to-write (NOREPLICAS). The
// same command, sent again a little later, may go through. Redis answered, so none of them
// means "unreachable": they never turn on local_fallback.
bool passing_state(std::string_view code) {
  for (std::string_view c : {"READONLY", "LOADING", "MASTERDOWN", "BUSY", "TRYAGAIN", "CLUSTERDOWN",
                             "OOM", "NOREPLICAS"})
    if (code == c) return true;
  return false;
}

bool all_digits(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The {flag, version} answer of the acquire and save scripts; nullopt for any other shape.
std::optional<std::pair<bool, std::uint64_t>> flag_and_version(const redis::reply& r) {
  using kind = redis::reply::kind;
  if (r.type != kind::array || r.elements.size() != 2 || r.elements[0].type != kind::integer ||
      r.elements[1].type != kind::integer || r.elements[1].integer < 0)
    return std::nullopt;
  return std::pair{r.elements[0].integer == 1, static_cast<std::uint64_t>(r.elements[1].integer)};
}

// The version a "saved <version>" publication carries; 0 for anything else ("released", or a
// "saved" of a replica from before versions, which then only wakes the waiters).
std::uint64_t published_version(const redis::reply& r) {
  using kind = redis::reply::kind;
  if (r.type != kind::array || r.elements.size() != 3 || r.elements[0].str != "message") return 0;
  std::string_view text = r.elements[2].str;
  if (!text.starts_with("saved ")) return 0;
  text.remove_prefix(6);
  if (text.empty() || text.size() > 19 || !all_digits(text)) return 0;
  return std::stoull(std::string(text));
}

// An error reply made fit for diagnostics: every argument we sent cut out (the error replies
// Redis gives here do not echo arguments, but a script error or a future Redis might, and the
// arguments hold tokens), then control bytes replaced and the length capped. The numbers we
// send (key counts, TTLs) are no secret and would mangle the text. Longest first, so that a
// secret containing another goes whole.
std::string reply_text(std::string text, const std::vector<std::string>& args,
                       const std::vector<std::string>& secrets) {
  std::vector<std::string_view> cut;
  for (std::size_t i = 1; i < args.size(); ++i)
    if (!args[i].empty() && !all_digits(args[i])) cut.emplace_back(args[i]);
  for (const auto& x : secrets)
    if (!x.empty()) cut.emplace_back(x);
  std::sort(cut.begin(), cut.end(),
            [](std::string_view a, std::string_view b) { return a.size() > b.size(); });
  for (auto c : cut) detail::redact(text, {c});
  return detail::printable(text, 300);
}

}  // namespace

struct redis_store::state : std::enable_shared_from_this<state> {
  state(asio::any_io_executor e, redis_store_options o)
      : ex(std::move(e)),
        strand(asio::make_strand(ex)),
        opts(std::move(o)),
        // The password lives only here from now on, overwritten when it goes.
        address{opts.host, std::to_string(opts.port), opts.username,
                detail::secret_string(opts.password.view()), opts.database, opts.connect_timeout,
                // TLS: the SSL context, read from the files of opts.tls (throws invalid_config)
                redis::make_tls_settings(opts)},
        state_key(opts.key_prefix + "{" + opts.name + "}"),
        lease_key(state_key + ":lease"),
        channel(state_key + ":events"),
        commands(strand, address),
        events(strand, address),
        sync_channel(state_key + ":sync"),
        sync(strand, address),
        min_acks(opts.min_replicas_acked.value_or(opts.sentinels.empty() ? 0 : 1)) {
    opts.password.wipe();  // the address's copy is the only one kept
    // Read before the keys below go: with sentinel_use_tls and no sentinel_tls, from opts.tls.
    auto sentinel_tls = redis::make_sentinel_tls_settings(opts, address.tls);
    // The key given in memory is in the SSL context now, as that of a file would be.
    for (tls_options* t : {&opts.tls, opts.sentinel_tls ? &*opts.sentinel_tls : nullptr}) {
      if (t == nullptr) continue;
      t->private_key_pem.wipe();
      t->private_key_password.wipe();
    }
    if (!opts.sentinels.empty()) {
      redis::sentinel::options so;
      so.tls = std::move(sentinel_tls);
      so.sentinels = opts.sentinels;
      so.master_name = opts.sentinel_master;
      so.username = opts.sentinel_username;
      so.password = detail::secret_string(opts.sentinel_password.view());
      so.connect_timeout = opts.connect_timeout;
      so.idle = 2 * std::max(opts.lease_ttl, opts.command_timeout);
      so.log = opts.log;
      so.allow_plaintext = opts.allow_plaintext;
      // The sentinel lives in this state and calls back on the strand only.
      sentinel = std::make_unique<redis::sentinel>(strand, std::move(so), address, [this] {
        // The master moved: every connection to the old one goes; the next command connects
        // to the new one, and a SUBSCRIBE for waiters is reopened by listen().
        commands.close();
        events.close();
        sync.close();
        ++sync_resets;
      });
    }
    opts.sentinel_password.wipe();
  }

  void remember(const stored_tokens& t) {
    if (!opts.local_fallback) return;
    last_known = t;
  }

  // How one command ended, after its retries.
  struct outcome {
    error_code ec;  // none, errc::store_failed or operation_aborted
    // Redis could not be reached (connect or I/O failure, or no reply in time): the only
    // failure local_fallback covers. An error reply, however it reads, is not one.
    bool unreachable = false;
    std::string cause;          // what happened, in words, for the diagnostics (no secrets)
    bool names_server = false;  // `cause` came from the connection, which names the server

    static outcome failed(std::string cause = {}) {
      outcome o;
      o.ec = make_error_code(errc::store_failed);
      o.cause = std::move(cause);
      return o;
    }
  };

  // What a failed operation tells the client: which server, which step, and the cause, as
  // "redis 127.0.0.1:6379: the save script: READONLY You can't write against a read only
  // replica." An unreachable server's cause names the server itself ("redis: the lease script:
  // cannot connect to 127.0.0.1:6379: Connection refused").
  diagnostics failure(std::string_view step, const outcome& o) const {
    diagnostics d;
    if (!o.ec || o.ec == asio::error::operation_aborted) return d;
    d.client_message = o.names_server ? "redis: " + std::string(step) + ": " + o.cause
                                      : "redis " + address.host + ":" + address.port + ": " +
                                            std::string(step) + ": " + o.cause;
    return d;
  }

  steady::time_point command_deadline(steady::time_point limit = steady::time_point::max()) const {
    return std::min(limit, steady::now() + opts.command_timeout);
  }

  // One command, bounded by command_timeout (and `deadline`). Sent again, every retry_pause
  // until that bound, after a failed connection (reopened) and after an error reply naming a
  // passing state (READONLY after a failover, LOADING, OOM, ...): a Redis restart or failover
  // shorter than command_timeout costs latency, not errors. Any other error reply fails at once.
  // Every script is written to be sent twice safely (a reply may be lost after the command
  // ran). `secrets`: more values to keep out of the diagnostics besides the arguments.
  // With Sentinel, the master is found before the first command, and found again before the
  // command is sent again after READONLY / MASTERDOWN, an unreachable master, or a write too
  // few replicas acknowledged; a command cut off by a master change (+switch-master) is sent
  // to the new master at once. With min_replicas_acked, a write (a script answering 1) counts
  // only once replicated (see replicated()).
  asio::awaitable<outcome> exec(redis::arguments args, redis::reply& out,
                                steady::time_point deadline, redis::arguments secrets = {}) {
    const auto until = command_deadline(deadline);
    if (sentinel) sentinel->touch(shared_from_this());
    bool find_master = sentinel && !sentinel->known();
    std::string find_reason = "the first command";
    std::string shortfall;  // why the last WAIT fell short
    const auto aborted = [] {
      outcome a;
      a.ec = asio::error::operation_aborted;
      return a;
    };
    for (unsigned attempt = 1;; ++attempt) {
      diagnostics diag;
      out = {};
      auto o = outcome::failed();
      bool again = false;
      if (find_master) {
        find_master = false;
        const auto found = co_await sentinel->discover(until, find_reason, diag);
        if (closed || found.ec == asio::error::operation_aborted) co_return aborted();
        if (found.ec) {
          o.cause = std::move(diag.client_message);
          o.names_server = true;  // names the sentinels and what each answered
          o.unreachable = found.unreachable;
          again = found.retry;
          find_master = true;
        }
      }
      if (!find_master) {
        const auto epoch = sentinel ? sentinel->epoch() : 0;
        const auto moved = [&] { return sentinel && sentinel->epoch() != epoch; };
        const auto ec = co_await commands.exec(args, out, until, diag);
        if (!ec && !out.is_error()) {
          if (min_acks == 0 || !is_write(args, out)) co_return outcome{};
          auto acked = co_await replicated(until, shortfall);
          if (closed || acked.ec == asio::error::operation_aborted) co_return aborted();
          if (!acked.ec && !moved()) co_return outcome{};
          if (moved()) continue;  // acknowledged by another master's replicas: write again
          o = std::move(acked);
          again = true;
          find_master = sentinel != nullptr;
          find_reason = "a write too few replicas acknowledged";
        } else if (ec == asio::error::operation_aborted && !closed && moved()) {
          continue;  // cut off by a master change: to the new master, at once
        } else if (ec == asio::error::operation_aborted || closed) {
          co_return aborted();
        } else if (!ec) {
          o.cause = reply_text(out.str, args.items(), secrets.items());
          const auto code = error_code_of(out.str);
          again = passing_state(code);
          if (sentinel && (code == "READONLY" || code == "MASTERDOWN") && !moved()) {
            find_master = true;  // a replica now: where is the master?
            find_reason = std::string(code);
          }
        } else if (ec == errc::connection || ec == errc::timeout) {
          o.unreachable = true;
          o.names_server = true;
          o.cause = std::move(diag.client_message);
          again = true;
          if (sentinel && !moved()) {
            find_master = true;
            find_reason = "the master could not be reached";
          }
        } else {
          o.cause = std::move(diag.client_message);  // AUTH or SELECT refused
          o.names_server = true;
        }
      }
      if (!again || steady::now() + retry_pause >= until) {
        // A WAIT that fell short explains more than what ended the last attempt.
        if (!shortfall.empty() && o.cause.find(shortfall) == std::string::npos)
          o.cause += " (before that: " + shortfall + ")";
        if (again && attempt > 1)
          o.cause += " (tried " + std::to_string(attempt) +
                     " times within the command timeout of " +
                     std::to_string(opts.command_timeout.count()) + " ms)";
        co_return o;
      }
      asio::steady_timer pause(strand, retry_pause);
      co_await pause.async_wait(use_tuple);
    }
  }

  // A script's reply 1 (renew, release) or {1, version} (acquire, save) means it wrote (the
  // lease taken, renewed or released; a save stored or found stored): with min_replicas_acked,
  // such a write counts once replicated.
  static bool is_write(const redis::arguments& args, const redis::reply& out) {
    using kind = redis::reply::kind;
    const auto& a = args.items();
    if (a.empty() || (a[0] != "EVAL" && a[0] != "EVALSHA")) return false;
    const auto& flag = out.type == kind::array && !out.elements.empty() ? out.elements[0] : out;
    return flag.type == kind::integer && flag.integer == 1;
  }

  // min_replicas_acked: waits until that many replicas hold everything the master holds now.
  // A PUBLISH (replicated, no key) first, then WAIT on the same connection: WAIT covers the
  // writes of its own connection, and the PUBLISH makes that "everything up to now", the
  // write just made on `commands` included, or a repeated save that found its token stored
  // and wrote nothing. A connection reset between the two (sync_resets) voids the answer.
  // Redis times out a blocked WAIT on its cron (10 times a second by default): the answer may
  // come this much late, and the WAIT's own timeout leaves room for it.
  static constexpr std::chrono::milliseconds wait_lateness{150};

  // `last`: why the previous WAIT of this command fell short, kept when no time is left for
  // another.
  asio::awaitable<outcome> replicated(steady::time_point until, std::string& last) {
    const auto resets = sync_resets;
    diagnostics diag;
    redis::reply r;
    auto ec = co_await sync.exec(redis::command("PUBLISH", sync_channel, "w"), r, until, diag);
    long long acked = -1;
    std::chrono::milliseconds wait{0};
    if (!ec && !r.is_error()) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(until - steady::now());
      wait = std::min(left - wait_lateness, opts.command_timeout / 4);
      if (wait.count() < 1) {
        co_return outcome::failed(
            !last.empty() ? last
                          : "no time left in the command timeout to WAIT for " +
                                std::to_string(min_acks) + " replica(s) after the write");
      }
      if (resets != sync_resets) co_return outcome::failed("the connection was reset");
      r = {};
      ec = co_await sync.exec(
          redis::command("WAIT", std::to_string(min_acks), std::to_string(wait.count())), r, until,
          diag);
      if (!ec && r.type == redis::reply::kind::integer) acked = r.integer;
    }
    if (ec) {
      ++sync_resets;
      if (ec == asio::error::operation_aborted) {
        // Closed (the store, or a master change: exec() writes again).
        outcome a;
        a.ec = ec;
        if (!closed) a = outcome::failed("the connection was reset");
        co_return a;
      }
      auto o = outcome::failed(std::move(diag.client_message));
      o.names_server = true;
      o.unreachable = ec == errc::connection || ec == errc::timeout;
      co_return o;
    }
    if (r.is_error()) co_return outcome::failed(reply_text(r.str, {}, {}));
    if (resets != sync_resets) co_return outcome::failed("the connection was reset");
    if (acked >= min_acks) co_return outcome{};
    last = "the write was acknowledged by " + std::to_string(std::max(acked, 0LL)) + " of the " +
           std::to_string(min_acks) + " replica(s) min_replicas_acked asks for, within " +
           std::to_string(wait.count()) + " ms";
    co_return outcome::failed(last);
  }

  static constexpr std::chrono::milliseconds retry_pause{50};

  // Wakes every waiting acquirer (on the strand).
  void wake_all() {
    for (auto* t : waiting) t->cancel();
  }

  // Keeps a SUBSCRIBE open while acquires run: from before their first lease attempt, so that
  // no publication they need can fall between the attempt and the subscription. Ends when
  // none runs (the last one closes the connection) or the connection fails.
  static asio::awaitable<void> listen(std::shared_ptr<state> self) {
    diagnostics diag;
    redis::reply r;
    auto ec = co_await self->events.exec(redis::command("SUBSCRIBE", self->channel), r,
                                         self->command_deadline(), diag);
    if (!ec && !r.is_error() && !self->closed) {
      self->subscribed = true;
      self->wake_all();  // the acquires waiting for the subscription
    }
    while (!ec && !r.is_error() && !self->closed && self->acquires != 0) {
      r = {};
      ec = co_await self->events.receive(r, steady::time_point::max(), diag);
      if (ec) break;
      // A "saved <version>" lets the waiters read that version; "released" sends them back to
      // the lease.
      self->published = std::max(self->published, published_version(r));
      self->wake_all();
    }
    self->subscribed = false;
    self->events.close();
    self->listening = false;
    self->wake_all();  // acquires still waiting for the subscription go on without it (polling)
    // An acquire that came while this ended would otherwise be left to the poll alone.
    if (self->acquires != 0 && ec == asio::error::operation_aborted) self->ensure_listening();
  }

  void ensure_listening() {
    if (listening || closed) return;
    listening = true;
    asio::co_spawn(strand, listen(shared_from_this()), asio::detached);
  }

  // Sleeps on `t` until it expires or wake_all() (a publication, the subscription made or
  // lost, the store closing, a cancellation through `current_wait`).
  asio::awaitable<void> wait_on(asio::steady_timer& t,
                                const std::shared_ptr<asio::steady_timer*>& current_wait) {
    waiting.push_back(&t);
    *current_wait = &t;
    co_await t.async_wait(use_tuple);
    *current_wait = nullptr;
    waiting.remove(&t);
  }

  // One acquire in progress: the subscription lives while any does.
  struct acquire_scope {
    std::shared_ptr<state> s;
    explicit acquire_scope(std::shared_ptr<state> st) : s(std::move(st)) { ++s->acquires; }
    ~acquire_scope() {
      // The last one: stop listening, so that an idle store keeps no work on the executor.
      if (--s->acquires == 0) s->events.close();
    }
    acquire_scope(const acquire_scope&) = delete;
    acquire_scope& operator=(const acquire_scope&) = delete;
  };

  // One lease as its holder's renewal and the client see it.
  struct lease_state {
    // Until when the lease certainly holds (steady ticks; 0: lost or released). The client
    // reads it from its own strand right before writing a request: atomic.
    std::atomic<steady::rep> held_until{0};
    // Set on the store's strand when the lease's last copy goes. The renewal reads it after
    // every wait and every command: a flag cannot be missed as a cancellation can (one posted
    // while the renewal's command runs would be lost, and the renewal would go on for ever).
    bool released = false;
  };

  // The lease certainly holds until lease_ttl after the command that set it was sent, less a
  // tenth: clock rates differ a little, and the write that checks it takes a moment.
  steady::rep certain_until(steady::time_point sent) const {
    return (sent + opts.lease_ttl - opts.lease_ttl / 10).time_since_epoch().count();
  }

  // The lease, held by the client; its last copy releases it.
  struct hold {
    std::shared_ptr<state> s;
    std::string owner;
    std::shared_ptr<lease_state> ls;                  // shared with renew()
    std::shared_ptr<asio::steady_timer> renew_timer;  // shared with renew(), woken to end it
    hold(std::shared_ptr<state> st, std::string o, std::shared_ptr<lease_state> l)
        : s(std::move(st)),
          owner(std::move(o)),
          ls(std::move(l)),
          renew_timer(std::make_shared<asio::steady_timer>(s->strand)) {}
    ~hold() {
      asio::post(s->strand, [s = s, owner = std::move(owner), ls = ls, t = renew_timer]() mutable {
        ls->released = true;
        ls->held_until.store(0, std::memory_order_release);
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

  // Extends the lease every third of its lifetime until the hold goes, or until a renewal
  // finds it gone (expired during a pause, or a failover lost it): then it is marked lost, for
  // the client's check before its write.
  static asio::awaitable<void> renew(std::shared_ptr<state> self,
                                     std::shared_ptr<asio::steady_timer> timer,
                                     std::shared_ptr<lease_state> ls, std::string owner) {
    for (;;) {
      timer->expires_after(self->opts.lease_ttl / 3);
      co_await timer->async_wait(use_tuple);
      if (ls->released || self->closed) co_return;
      redis::reply r;
      const auto sent = steady::now();
      const auto o =
          co_await self->exec(redis::command("EVAL", renew_script, "1", self->lease_key, owner,
                                             std::to_string(self->opts.lease_ttl.count())),
                              r, steady::time_point::max());
      if (ls->released || self->closed) co_return;
      if (o.ec) continue;  // no answer: the lease runs out by itself unless a renewal gets through
      if (r.type == redis::reply::kind::integer && r.integer == 1) {
        ls->held_until.store(self->certain_until(sent), std::memory_order_release);
      } else {
        ls->held_until.store(0, std::memory_order_release);
        co_return;
      }
    }
  }

  static asio::awaitable<std::tuple<error_code, refresh_lease, diagnostics>> acquire(
      std::shared_ptr<state> self, steady::time_point deadline, std::shared_ptr<bool> cancelled,
      std::shared_ptr<asio::steady_timer*> current_wait) {
    const std::string owner = random_owner();
    const auto aborted = [] {
      return std::tuple{error_code(asio::error::operation_aborted), refresh_lease{}, diagnostics{}};
    };
    const auto updated = [] {
      return std::tuple{make_error_code(errc::store_updated), refresh_lease{}, diagnostics{}};
    };
    acquire_scope scope(self);
    // Subscribed before the first attempt: a save after it is heard, one before it is seen in
    // the version the attempt answers. Bounded: without a subscription the poll still works.
    if (!self->subscribed) {
      self->ensure_listening();
      asio::steady_timer t(self->strand, self->command_deadline(deadline));
      if (!self->subscribed && self->listening) co_await self->wait_on(t, current_wait);
    }
    for (;;) {
      if (self->closed || *cancelled) co_return aborted();
      // A save this store has not handed out was heard: read it, no lease needed.
      if (self->published > self->seen) co_return updated();
      redis::reply r;
      const auto sent = steady::now();
      auto o = co_await self->exec(
          redis::command("EVAL", acquire_script, "2", self->lease_key, self->state_key, owner,
                         std::to_string(self->opts.lease_ttl.count()), std::to_string(self->seen)),
          r, steady::time_point::max());  // bounded by command_timeout
      if (self->closed || *cancelled) co_return aborted();
      const auto answer = o.ec ? std::nullopt : flag_and_version(r);
      if (!o.ec && !answer)
        o = outcome::failed("the lease script gave an unexpected reply (type " +
                            std::to_string(static_cast<int>(r.type)) + ")");
      if (o.unreachable && self->opts.local_fallback) {
        if (!self->local_held) {
          // Redis unreachable, and this process may refresh alone: the lease is local.
          self->local_held = true;
          auto local = std::shared_ptr<void>(nullptr, [self](void*) {
            asio::post(self->strand, [self] { self->local_held = false; });
          });
          co_return std::tuple{error_code{}, refresh_lease(std::move(local)), diagnostics{}};
        }
        // Another refresh of this process holds the local lease: wait for it as for Redis's.
      } else if (o.ec) {
        // Redis answered (READONLY after a failover, OOM, a script error, ...) or is out of
        // reach without local_fallback: the refresh fails, and no replica refreshes on its own.
        auto diag = self->failure("the lease script", o);
        co_return std::tuple{o.ec, refresh_lease{}, std::move(diag)};
      } else if (answer->first) {
        auto ls = std::make_shared<lease_state>();
        ls->held_until.store(self->certain_until(sent), std::memory_order_release);
        auto h = std::make_shared<hold>(self, owner, ls);
        asio::co_spawn(self->strand, renew(self, h->renew_timer, ls, owner), asio::detached);
        auto until = std::shared_ptr<const std::atomic<steady::rep>>(ls, &ls->held_until);
        co_return std::tuple{error_code{}, refresh_lease(std::move(h), std::move(until)),
                             diagnostics{}};
      } else if (answer->second > self->seen) {
        // A version this store has not handed out is stored (the lease was not taken).
        co_return updated();
      }
      if (steady::now() >= deadline)
        co_return std::tuple{make_error_code(errc::store_busy), refresh_lease{}, diagnostics{}};
      // Held by another replica: wait for its publication, or poll.
      asio::steady_timer t(self->strand,
                           std::min(deadline, steady::now() + self->opts.poll_interval));
      self->ensure_listening();
      if (self->published <= self->seen) co_await self->wait_on(t, current_wait);
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
  // The newest version (the state's save count) this store handed out (loaded or saved), and
  // the newest a "saved" publication announced: a waiter reads the state when the second is
  // ahead (errc::store_updated). Acquires in progress, and whether the subscription is made.
  std::uint64_t seen = 0;
  std::uint64_t published = 0;
  unsigned acquires = 0;
  bool subscribed = false;
  // With local_fallback: the state last read or written, served while Redis is unreachable,
  // and whether the local lease is held.
  std::optional<stored_tokens> last_known;
  bool local_held = false;
  bool listening = false;
  bool closed = false;
  // Sentinel and durability (issue 15).
  std::string sync_channel;                   // PUBLISHed before WAIT (see replicated())
  redis::connection sync;                     // on strand: PUBLISH + WAIT
  std::uint64_t sync_resets = 0;              // the sync connection closed or failed
  int min_acks = 0;                           // min_replicas_acked, its default applied
  std::unique_ptr<redis::sentinel> sentinel;  // with sentinels: finds and follows the master
};

error_code redis_store_options::validate(diagnostics* diag) const {
  const char* problem = nullptr;
  if (host.empty())
    problem = "host is empty";
  else if (lease_ttl.count() < 3)
    problem = "lease_ttl must be at least 3 ms";
  else if (poll_interval.count() <= 0)
    problem = "poll_interval must be positive";
  else if (command_timeout.count() <= 0)
    problem = "command_timeout must be positive";
  else if (connect_timeout.count() <= 0)
    problem = "connect_timeout must be positive";
  else if (database < 0)
    problem = "database is negative";
  // Sentinel and durability (issue 15).
  else if (!std::all_of(sentinels.begin(), sentinels.end(), redis::is_host_port))
    problem = "sentinels: an entry is not \"host:port\" (\"[v6]:port\", port in [1, 65535])";
  else if (!sentinels.empty() && sentinel_master.empty())
    problem = "sentinel_master is empty (required with sentinels)";
  else if (sentinels.empty() && !sentinel_master.empty())
    problem = "sentinel_master is set but sentinels is empty";
  else if (min_replicas_acked && *min_replicas_acked < 0)
    problem = "min_replicas_acked is negative";
  // TLS and allow_plaintext, the master's and the sentinels'.
  if (problem == nullptr) return redis::check_transport(*this, diag);
  if (diag != nullptr) diag->client_message = std::string("redis_store: ") + problem;
  return make_error_code(errc::invalid_config);
}

namespace {
redis_store_options checked(redis_store_options opts) {
  diagnostics d;
  if (auto ec = opts.validate(&d)) throw error_with_diagnostics(ec, std::move(d));
  return opts;
}
}  // namespace

redis_store::redis_store(asio::any_io_executor ex, redis_store_options opts)
    : s_(std::make_shared<state>(std::move(ex), checked(std::move(opts)))) {}

redis_store::~redis_store() {
  asio::post(s_->strand, [s = s_] {
    s->closed = true;
    s->wake_all();
    s->commands.close();
    s->events.close();
    s->sync.close();
    if (s->sentinel) s->sentinel->close();
  });
}

void redis_store::do_load(asio::any_completion_handler<load_signature> h) {
  asio::co_spawn(
      s_->strand,
      [](std::shared_ptr<state> s)
          -> asio::awaitable<std::tuple<error_code, std::optional<stored_tokens>, diagnostics>> {
        redis::reply r;
        auto o = co_await s->exec(redis::command("HMGET", s->state_key, "state", "version"), r,
                                  steady::time_point::max());
        if (!o.ec && (r.type != redis::reply::kind::array || r.elements.size() != 2))
          o = state::outcome::failed("an unexpected reply to HMGET (type " +
                                     std::to_string(static_cast<int>(r.type)) + ")");
        // Only an unreachable Redis is answered from memory: one that answers an error may
        // hold a newer state than ours.
        if (o.unreachable && s->opts.local_fallback && s->last_known)
          co_return std::tuple{error_code{}, s->last_known, diagnostics{}};
        if (o.ec) co_return std::tuple{o.ec, std::nullopt, s->failure("reading the state", o)};
        const auto& text = r.elements[0];
        const auto& version = r.elements[1];
        if (version.type == redis::reply::kind::string && !version.str.empty() &&
            version.str.size() <= 19 && all_digits(version.str))
          s->seen = std::max<std::uint64_t>(s->seen, std::stoull(version.str));
        if (text.type == redis::reply::kind::nil)
          co_return std::tuple{error_code{}, std::nullopt, diagnostics{}};
        stored_tokens t;
        diagnostics diag;
        const auto ec = detail::parse_stored_tokens(text.str, "redis key " + s->state_key, t, diag);
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
                 [ex = s_->ex, h = std::move(h), slot](std::exception_ptr e, auto result) mutable {
                   if (e) std::rethrow_exception(e);
                   if (slot.is_connected()) slot.clear();
                   auto& [ec, lease, diag] = result;
                   asio::post(ex,
                              asio::append(std::move(h), ec, std::move(lease), std::move(diag)));
                 });
}

void redis_store::do_save(stored_tokens next, std::string expected,
                          asio::any_completion_handler<save_signature> h) {
  asio::co_spawn(
      s_->strand,
      [](std::shared_ptr<state> s, stored_tokens next,
         detail::secret_string expected) -> asio::awaitable<std::tuple<error_code, diagnostics>> {
        if (diagnostics d; auto ec = detail::check_savable(next, d))
          co_return std::tuple{ec, std::move(d)};
        const auto text = detail::serialize_stored_tokens(next);
        redis::reply r;
        // The access token also stands inside the (JSON-escaped) state: kept out of messages
        // on its own as well.
        auto o =
            co_await s->exec(redis::command("EVAL", save_script, "1", s->state_key, expected.str(),
                                            next.refresh_token, text.str(), s->channel),
                             r, steady::time_point::max(), redis::command(next.access_token));
        // Saved, or not saved for want of Redis (out of reach, or answering READONLY, OOM, ...):
        // kept as the newest state known here, which local_fallback serves while Redis is out
        // of reach. The failure still goes to the client, which retries until Redis takes it.
        const auto answer = o.ec ? std::nullopt : flag_and_version(r);
        const bool saved = answer && answer->first;
        if (saved) s->seen = std::max(s->seen, answer->second);
        if (saved || o.ec == errc::store_failed) s->remember(next);
        if (!o.ec && !answer) {
          o = state::outcome::failed("an unexpected reply (type " +
                                     std::to_string(static_cast<int>(r.type)) + ")");
        }
        if (o.ec) co_return std::tuple{o.ec, s->failure("the save script", o)};
        co_return std::tuple{saved ? error_code{} : make_error_code(errc::store_conflict),
                             diagnostics{}};
      }(s_, std::move(next), detail::secret_string(std::move(expected))),
      [ex = s_->ex, h = std::move(h)](std::exception_ptr e, auto result) mutable {
        if (e) std::rethrow_exception(e);
        auto& [ec, diag] = result;
        asio::post(ex, asio::append(std::move(h), ec, std::move(diag)));
      });
}

}  // namespace nxsys::auth
