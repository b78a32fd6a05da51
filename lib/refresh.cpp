// The refresh procedure, run on the client's strand: take the store's lease, read what others
// stored meanwhile, send the request (retrying transient failures), and save the answer
// before anyone sees it.
#include <nxsys/auth/detail/token_policy.hpp>

#include "client_impl.hpp"
#include "text.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <random>
#include <tuple>

// GCC 12 pairs the aligned_alloc inside Asio's coroutine-frame operator new with the frame's
// sized operator delete and reports a mismatch that is not there (GCC bug 109224): the frame
// is allocated and freed by Asio's matching pair. Which coroutine trips it depends on inlining.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace nxsys::auth::detail {
namespace asio = boost::asio;
using boost::system::error_code;

namespace {

// deferred rather than use_awaitable: no coroutine frame per operation.
constexpr auto use_tuple = asio::as_tuple(asio::deferred);

// Failures that another attempt may not repeat. A definite answer (invalid_grant,
// invalid_client, a malformed 200, a TLS certificate problem) would come back the same.
bool transient(const error_code& ec) {
  return ec == errc::connection || ec == errc::timeout || ec == errc::server_error ||
         ec == errc::temporarily_unavailable;
}

// Full jitter: a uniform wait in [0, cap], so callers that failed together retry apart.
std::chrono::milliseconds full_jitter(std::chrono::milliseconds cap) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_int_distribution<std::chrono::milliseconds::rep> pick(0, cap.count());
  return std::chrono::milliseconds(pick(rng));
}

std::string ms_text(std::chrono::milliseconds d) {
  return std::to_string(d.count()) + " ms";
}

void wipe(stored_tokens& t) noexcept {
  detail::wipe(t.refresh_token);
  detail::wipe(t.access_token);
}

constexpr std::chrono::milliseconds longest_save_retry_interval{60'000};

}  // namespace

asio::awaitable<void> client_impl::run_refresh(std::shared_ptr<client_impl> self, bool ahead) {
  const auto started = clock_type::now();
  refresh_outcome out = co_await self->refresh(ahead);
  out.took = clock_type::now() - started;
  self->finish(std::move(out), ahead);
}

asio::awaitable<refresh_outcome> client_impl::refresh(bool ahead) {
  refresh_outcome out;
  const auto deadline = clock_type::now() + cfg_.refresh_deadline;
  // Cancellable: a destroyed client must not wait out another holder's refresh.
  auto [lease_ec, lease] = co_await store_->async_acquire(
      deadline,
      asio::bind_cancellation_slot(lease_cancel_.slot(), asio::as_tuple(asio::use_awaitable)));
  if (lease_ec == asio::error::operation_aborted) {
    out.ec = lease_ec;
    co_return out;
  }
  if (lease_ec) {
    {
      std::lock_guard lk(mu_);
      ++stats_.store_load_failures;
    }
    out.ec = lease_ec;
    out.diag.client_message =
        lease_ec == errc::store_busy
            ? "the token store did not grant the right to refresh before the refresh deadline "
              "(another holder kept it)"
            : "the token store's lock could not be taken: " + lease_ec.message();
    co_return out;
  }
  auto [load_ec, loaded] = co_await load_store();
  if (load_ec) {
    out.ec = load_ec;
    out.diag.client_message =
        load_ec == errc::store_corrupt
            ? "the token store holds an unreadable state: repair or remove it (the configured "
              "refresh token is not used instead: it may have been consumed long ago)"
            : "the token store could not be read: " + load_ec.message();
    co_return out;
  }
  // The refresh token the store holds: the key of the compare-and-set that saves our answer.
  std::string expected = loaded ? loaded->refresh_token : std::string();
  if (!co_await reconcile(std::move(loaded), ahead, expected, out))
    co_await request_with_retries(ahead, deadline, expected, out);
  wipe(expected);
  co_return out;
}

// Reads the store, counted in the stats.
asio::awaitable<std::tuple<error_code, std::optional<stored_tokens>>> client_impl::load_store() {
  auto r = co_await store_->async_load(use_tuple);
  std::lock_guard lk(mu_);
  ++stats_.store_loads;
  if (std::get<0>(r)) ++stats_.store_load_failures;
  co_return r;
}

// What the store holds, against what we hold. True when that settles the refresh: a token
// stored by another holder is good, or (strict durability) a pending save failed again.
asio::awaitable<bool> client_impl::reconcile(std::optional<stored_tokens> loaded, bool ahead,
                                             std::string& expected, refresh_outcome& out) {
  // Tokens whose save failed earlier go first: their refresh token is the newest of the chain.
  if (unsaved_) {
    if (loaded && loaded->refresh_token != unsaved_->expected) {
      // Someone else stored a chain meanwhile; theirs wins (fencing), ours is dropped.
      {
        std::lock_guard lk(mu_);
        ++stats_.store_conflicts;
      }
      log(log_level::error,
          "the token store was changed by another holder while our save was pending: "
          "continuing with the stored refresh token");
      wipe(unsaved_->tokens);
      wipe(unsaved_->expected);
      unsaved_.reset();
    } else {
      auto u = std::move(*unsaved_);
      unsaved_.reset();
      stored_tokens now_stored = u.tokens;
      if (auto sec = co_await save(std::move(u.tokens), std::move(u.expected), out)) {
        wipe(now_stored);
        if (cfg_.strict_durability) {
          // Still not durable: no new request either, it would only add an unsaved token.
          out.ec = sec;
          out.diag.client_message = "new tokens are still not saved (strict_durability)";
          co_return true;
        }
      } else {
        wipe(expected);
        expected = now_stored.refresh_token;
        out.store_ec = {};
        loaded = std::move(now_stored);
      }
    }
  }

  if (loaded) {
    if (auto t = adopt_stored(*loaded, ahead)) {
      wipe(*loaded);
      out.token = std::move(t);
      out.from_store = true;
      co_return true;
    }
    wipe(*loaded);
  }
  co_return false;
}

// The request, retried after transient failures with back-off, within the deadline.
asio::awaitable<void> client_impl::request_with_retries(bool ahead, clock_type::time_point deadline,
                                                        std::string& expected,
                                                        refresh_outcome& out) {
  bool reread = false;
  for (;;) {
    std::string rt;
    bool stopping = false;
    {
      std::lock_guard lk(mu_);
      rt = refresh_token_;
      stopping = shut_down_;
    }
    if (stopping) {
      out.ec = asio::error::operation_aborted;
      break;
    }
    if (rt.empty()) {
      out.ec = make_error_code(errc::invalid_config);
      out.diag.client_message = "no refresh token: none configured and none in the token store";
      break;
    }
    ++out.attempts;
    protocol::token_response tr;
    diagnostics diag;
    std::optional<std::chrono::seconds> retry_after;
    const auto sent = now();
    const auto ec = co_await request_once(rt, deadline, tr, diag, retry_after);
    if (!ec) {
      out.ec = {};
      out.diag.clear();
      out.rotated = !tr.refresh_token.empty() && tr.refresh_token != rt;
      new_token t{std::move(tr.access_token),
                  std::move(tr.token_type),
                  sent,
                  tr.expires_in.value_or(cfg_.default_lifetime),
                  std::move(tr.scope),
                  std::move(tr.extra)};
      if (out.rotated) {
        // In memory at once: the old refresh token is consumed, this is the only valid one.
        std::lock_guard lk(mu_);
        wipe(refresh_token_);
        refresh_token_ = tr.refresh_token;
      }
      auto next = to_stored(t, out.rotated ? tr.refresh_token : rt);
      wipe(tr.refresh_token);
      const auto sec = co_await save(std::move(next), std::move(expected), out);
      out.token = std::move(t);
      if (sec && cfg_.strict_durability) {
        out.ec = sec;
        out.diag.client_message =
            "the new tokens could not be saved (strict_durability): kept in memory, and served "
            "once a later save succeeds";
      }
      wipe(rt);
      break;
    }
    out.ec = ec;
    out.diag = std::move(diag);
    if (ec == errc::invalid_grant && !reread) {
      // A rotation race: another process may have refreshed (consuming `rt`) and stored the
      // chain's next token. Read the store once before declaring the grant dead.
      reread = true;
      auto [again_ec, again] = co_await load_store();
      if (!again_ec && again && again->refresh_token != rt) {
        {
          std::lock_guard lk(mu_);
          ++stats_.invalid_grant_retries;
        }
        log(log_level::info,
            "invalid_grant, but the token store holds a newer refresh token (rotated by another "
            "holder): trying once more with it");
        wipe(expected);
        expected = again->refresh_token;
        if (auto t = adopt_stored(*again, ahead)) {
          wipe(*again);
          wipe(rt);
          out.ec = {};
          out.diag.clear();
          out.token = std::move(t);
          out.from_store = true;
          co_return;
        }
        wipe(*again);
        wipe(rt);
        continue;
      }
      if (again) wipe(*again);
    }
    wipe(rt);
    if (!transient(ec) || out.attempts >= cfg_.retry.max_attempts) break;
    auto delay =
        full_jitter(backoff_cap(out.attempts, cfg_.retry.initial_backoff, cfg_.retry.max_backoff));
    if (retry_after && *retry_after > delay)
      delay = std::chrono::duration_cast<std::chrono::milliseconds>(*retry_after);
    if (clock_type::now() + delay >= deadline) {
      out.diag.client_message += out.diag.client_message.empty() ? "" : "; ";
      out.diag.client_message += "no retry: the next would start after the refresh deadline";
      break;
    }
    {
      std::lock_guard lk(mu_);
      ++stats_.retries;
    }
    log(log_level::info, "token request failed (" + describe(ec, out.diag) + "); attempt " +
                             std::to_string(out.attempts + 1) + " of " +
                             std::to_string(cfg_.retry.max_attempts) + " in " + ms_text(delay) +
                             (retry_after ? " (Retry-After)" : ""));
    backoff_timer_.expires_after(delay);
    auto [wait_ec] = co_await backoff_timer_.async_wait(use_tuple);
    if (wait_ec) break;  // the client is being destroyed
  }
}

asio::awaitable<error_code> client_impl::request_once(const std::string& refresh_token,
                                                      clock_type::time_point deadline,
                                                      protocol::token_response& tr,
                                                      diagnostics& diag,
                                                      std::optional<std::chrono::seconds>& wait) {
  const auto connections_before = transport_.connections_opened();
  log(log_level::debug, "refreshing the access token");
  http_answer answer;
  auto request = protocol::build_refresh_request(cfg_.dialect, cfg_.authentication, refresh_token,
                                                 cfg_.client_id, cfg_.client_secret, cfg_.scope);
  auto ec = co_await transport_.post_form(std::move(request.body), answer, diag, deadline,
                                          std::move(request.authorization));
  if (!ec) {
    // A server may echo what it was sent, raw or form-encoded: none of it may reach a message.
    std::string rt_encoded = protocol::form_urlencode(refresh_token);
    ec = protocol::parse_token_response(
        answer.status, answer.body, tr, diag,
        {refresh_token, rt_encoded, cfg_.client_secret, secret_encoded_});
    wipe(rt_encoded);
    if (ec)
      wait = protocol::parse_retry_after(answer.retry_after, std::chrono::system_clock::now());
  }
  wipe(answer.body);
  if (transport_.connections_opened() != connections_before)
    log(log_level::debug, "opened a connection to the token endpoint");
  co_return ec;
}

// A stored state that another holder wrote: its refresh token replaces ours (the chain moved
// on without us), and its access token is used when it is new to us and still good.
std::optional<new_token> client_impl::adopt_stored(const stored_tokens& stored, bool ahead) {
  const auto t = now();
  std::lock_guard lk(mu_);
  if (stored.refresh_token != refresh_token_) {
    wipe(refresh_token_);
    refresh_token_ = stored.refresh_token;
    ++stats_.refresh_tokens_adopted;
  }
  if (stored.access_token.empty() || stored.access_token == last_issued_) return std::nullopt;
  const auto left = stored.expires_at - std::chrono::system_clock::now();
  const clock_type::duration lifetime = stored.lifetime.count() > 0
                                            ? clock_type::duration(stored.lifetime)
                                            : clock_type::duration(cfg_.default_lifetime);
  const auto expires = t + std::chrono::duration_cast<clock_type::duration>(left);
  new_token n{stored.access_token,
              stored.token_type.empty() ? "Bearer" : stored.token_type,
              expires - lifetime,
              lifetime,
              {},
              {}};
  const auto refresh_at =
      refresh_deadline(n.issued, n.lifetime, cfg_.refresh_leeway, cfg_.leeway_max_fraction);
  const auto usable_until =
      ahead ? refresh_ahead_point(n.issued, n.lifetime, refresh_at, cfg_.refresh_ahead_fraction)
            : refresh_at;
  if (t >= usable_until) {
    wipe(n.value);
    return std::nullopt;
  }
  return n;
}

stored_tokens client_impl::to_stored(const new_token& t, const std::string& refresh_token) const {
  const auto left = t.issued + t.lifetime - now();
  return stored_tokens{refresh_token, t.value, t.type,
                       std::chrono::system_clock::now() +
                           std::chrono::duration_cast<std::chrono::system_clock::duration>(left),
                       std::chrono::duration_cast<std::chrono::seconds>(t.lifetime)};
}

// Saves with the store's compare-and-set. On failure the tokens wait in unsaved_ for the next
// refresh or the background retries, and `out` reports it.
asio::awaitable<error_code> client_impl::save(stored_tokens next, std::string expected,
                                              refresh_outcome& out) {
  auto [sec] = co_await store_->async_save(next, expected, use_tuple);
  {
    std::lock_guard lk(mu_);
    if (!sec) {
      ++stats_.store_saves;
    } else {
      ++stats_.store_save_failures;
      if (sec == errc::store_conflict) ++stats_.store_conflicts;
    }
  }
  if (!sec && unsaved_) {
    // Saved tokens are newer than any pending ones (those were saved first, or superseded).
    wipe(unsaved_->tokens);
    wipe(unsaved_->expected);
    unsaved_.reset();
  }
  if (!sec || sec == errc::store_conflict) {
    if (sec)
      log(log_level::error,
          "the token store holds another refresh token than the one this refresh used: another "
          "holder refreshed concurrently; its chain is kept (ours is not written over it)");
    wipe(next);
    wipe(expected);
    out.store_ec = sec;
    co_return sec;
  }
  out.store_ec = sec;
  log(log_level::error, "saving the new tokens failed (" + sec.message() +
                            "): they are kept in memory and the save will be retried");
  unsaved_ = unsaved{std::move(next), std::move(expected)};
  if (!cfg_.strict_durability) start_save_retries();
  co_return sec;
}

void client_impl::start_save_retries() {
  if (save_retries_running_) return;
  save_retries_running_ = true;
  asio::co_spawn(strand_, retry_saves(shared_from_this()), asio::detached);
}

// Background retries of a failed save, with doubling intervals. When the client is destroyed
// the wait ends and one last attempt is made: it may hold the only copy of the chain.
asio::awaitable<void> client_impl::retry_saves(std::shared_ptr<client_impl> self) {
  auto interval = self->cfg_.store_retry_interval;
  bool last = false;
  while (self->unsaved_ && !last) {
    const auto stopping = [&] {
      std::lock_guard lk(self->mu_);
      return self->shut_down_;
    };
    last = stopping();
    if (!last) {
      self->save_timer_.expires_after(interval);
      co_await self->save_timer_.async_wait(use_tuple);  // cancelled only by shutdown()
      last = stopping();
    }
    interval = std::min(interval * 2, longest_save_retry_interval);
    if (!self->unsaved_) break;
    auto [lease_ec, lease] = co_await self->store_->async_acquire(
        clock_type::now() + self->cfg_.refresh_deadline, use_tuple);
    if (lease_ec || !self->unsaved_) continue;
    auto [load_ec, loaded] = co_await self->store_->async_load(use_tuple);
    if (load_ec || !self->unsaved_) continue;
    // The store holding our own pending state (a store that keeps it while its backend is
    // unreachable, as redis_store's local_fallback does) is no conflict: save it for real.
    if (loaded && loaded->refresh_token != self->unsaved_->expected &&
        loaded->refresh_token != self->unsaved_->tokens.refresh_token) {
      {
        std::lock_guard lk(self->mu_);
        ++self->stats_.store_conflicts;
      }
      self->log(log_level::error,
                "the token store was changed by another holder while our save was pending: "
                "its chain is kept");
      wipe(self->unsaved_->tokens);
      wipe(self->unsaved_->expected);
      self->unsaved_.reset();
      wipe(*loaded);
      break;
    }
    if (loaded) wipe(*loaded);
    auto u = std::move(*self->unsaved_);
    self->unsaved_.reset();
    refresh_outcome ignored;
    if (!co_await self->save(std::move(u.tokens), std::move(u.expected), ignored))
      self->log(log_level::info, "the new tokens are saved now (after a failed save)");
  }
  if (self->unsaved_ && last)
    self->log(log_level::error,
              "client destroyed with new tokens still not saved: the refresh token in the store "
              "may have been consumed");
  self->save_retries_running_ = false;
}

}  // namespace nxsys::auth::detail
