// SPDX-License-Identifier: BSL-1.0
/// @file
/// Where a client keeps its tokens between refreshes and across restarts, and how clients that
/// share one refresh-token chain (threads, processes, hosts) agree on who refreshes.
#ifndef NXSYS_AUTH_TOKEN_STORE_HPP
#define NXSYS_AUTH_TOKEN_STORE_HPP

#include <nxsys/auth/error.hpp>
#include <nxsys/auth/stored_tokens.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/system/error_code.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>

namespace nxsys::auth {

/// The right to refresh, granted by token_store::async_acquire. Dropping the last copy releases
/// it (an flock closed, a Redis lease deleted): hold it across request and save.
class refresh_lease {
 public:
  /// A lease that holds nothing (what a failed acquire hands over).
  refresh_lease() = default;
  /// For token_store implementations: a lease released when the last copy of `hold` goes.
  /// @param hold owns the right; its deleter releases it (closes the lock file, deletes the
  ///   Redis key)
  explicit refresh_lease(std::shared_ptr<void> hold) noexcept : hold_(std::move(hold)) {}
  /// For stores whose lease can run out while it is held (a Redis lease whose holder was paused
  /// past its lifetime, or lost in a failover).
  /// @param hold as above
  /// @param held_until until when the right certainly holds, in `steady_clock` ticks since its
  ///   epoch: moved on by each renewal, set to 0 when the store finds the lease gone. The
  ///   client reads it right before it writes a token request (lost()).
  refresh_lease(
      std::shared_ptr<void> hold,
      std::shared_ptr<const std::atomic<std::chrono::steady_clock::rep>> held_until) noexcept
      : hold_(std::move(hold)), held_until_(std::move(held_until)) {}
  /// Lets go of this copy's share of the right: it is released when no other copy holds it.
  /// Idempotent.
  void release() noexcept {
    hold_.reset();
    held_until_.reset();
  }
  /// Whether the store says the right has run out by `now`. Never for a lease that cannot run
  /// out (memory_store, file_store, an empty lease). Any thread.
  /// @param now the time to judge at
  /// @return true when a request written now could overlap another holder's
  bool lost(
      std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now()) const noexcept {
    return held_until_ &&
           now.time_since_epoch().count() >= held_until_->load(std::memory_order_acquire);
  }

 private:
  std::shared_ptr<void> hold_;
  std::shared_ptr<const std::atomic<std::chrono::steady_clock::rep>> held_until_;
};

/// The interface a client uses for its tokens. Designed for stores shared by many clients:
///  1. async_acquire: the right to refresh. While one holder refreshes, others wait here;
///  2. async_load: after acquiring, a holder reads the state — another holder may have
///     refreshed meanwhile, and then no request is needed;
///  3. async_save: a compare-and-set keyed on the refresh token the refresh used, so that a
///     holder that lost its lease can never overwrite a newer chain (fencing).
///
/// Handlers complete on their associated executor, never inline. Operations may be called
/// concurrently from any thread. Implementations must not block the caller's thread.
///
/// Every handler's last argument is a diagnostics: on failure, what the store saw, in words a
/// person can act on ("cannot fsync directory /var/lib/app: No space left on device"). The
/// client folds it into the refresh's error, its log and on_refresh. Never a token in it.
/// Every operation must complete its handler exactly once: a store that drops a handler (or
/// throws from an operation) makes the client's refresh end with errc::internal.
///
/// To write a store, derive from this class and implement do_load(), do_acquire() and
/// do_save(); the async_* templates only forward to them.
class token_store {
 public:
  /// Handler signature of async_load() and do_load(): the error, the stored state (nullopt when
  /// nothing was stored yet) and what the store saw.
  using load_signature = void(boost::system::error_code, std::optional<stored_tokens>, diagnostics);
  /// Handler signature of async_acquire() and do_acquire(): the error, the lease (empty on
  /// failure) and what the store saw.
  using acquire_signature = void(boost::system::error_code, refresh_lease, diagnostics);
  /// Handler signature of async_save() and do_save(): the error and what the store saw.
  using save_signature = void(boost::system::error_code, diagnostics);

  virtual ~token_store() = default;

  /// The stored state; nullopt when nothing was stored yet.
  ///
  /// @par Handler signature
  /// `void(boost::system::error_code, std::optional<stored_tokens>, diagnostics)`
  /// (load_signature)
  ///
  /// @par Executor
  /// The handler runs on its associated executor, never inline inside this call; each store
  /// says where a handler with none runs.
  ///
  /// @par Cancellation
  /// None: the client never cancels a load, and the stores of this library ignore a
  /// cancellation slot here (a load ends by itself: file I/O, or one Redis command within its
  /// command_timeout).
  ///
  /// @par Errors
  /// errc::store_corrupt for an unreadable state (never silently ignored),
  /// errc::store_failed for I/O failures.
  ///
  /// @par Thread safety
  /// May be called from any thread, concurrently with the other operations.
  ///
  /// @param token an Asio completion token
  /// @return what `token` makes of the operation
  template <class CompletionToken>
  auto async_load(CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, load_signature>(
        [this](auto h) { do_load(std::move(h)); }, token);
  }

  /// Waits until this caller may refresh, at most until `deadline` (errc::store_busy then).
  ///
  /// @par Handler signature
  /// `void(boost::system::error_code, refresh_lease, diagnostics)` (acquire_signature). Hold
  /// the lease across request and save; dropping its last copy releases it.
  ///
  /// @par Executor
  /// The handler runs on its associated executor, never inline inside this call; each store
  /// says where a handler with none runs.
  ///
  /// @par Cancellation
  /// The handler's slot, any type: a waiting acquire ends with
  /// operation_aborted. (The client cancels its acquire when it is destroyed.)
  ///
  /// @par Errors
  /// errc::store_busy when `deadline` passes while another holder keeps the right;
  /// errc::store_failed when the store cannot be reached or locked; operation_aborted on
  /// cancellation or when the store is destroyed. errc::store_updated (no lease) when another
  /// holder saved a state newer than any this store handed out while this caller waited
  /// (redis_store: its hand-off without the lease); the caller loads it, and acquires again
  /// only if it does not serve. A store may never use it: the stores of memory and file do not.
  /// Never errc::lease_lost: a lease that runs out after it was granted shows in
  /// refresh_lease::lost(), which the client reads before it writes a request.
  ///
  /// @par Thread safety
  /// May be called from any thread, concurrently with the other operations.
  ///
  /// @param deadline when to give up waiting, on steady_clock
  /// @param token an Asio completion token
  /// @return what `token` makes of the operation
  template <class CompletionToken>
  auto async_acquire(std::chrono::steady_clock::time_point deadline, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, acquire_signature>(
        [this, deadline](auto h) { do_acquire(deadline, std::move(h)); }, token);
  }

  /// Stores `next` if the stored refresh token is still `expected` (or nothing is stored):
  /// errc::store_conflict otherwise, and the stored state is left alone.
  ///
  /// @par Handler signature
  /// `void(boost::system::error_code, diagnostics)` (save_signature)
  ///
  /// @par Executor
  /// The handler runs on its associated executor, never inline inside this call; each store
  /// says where a handler with none runs.
  ///
  /// @par Cancellation
  /// None: the client never cancels a save, and the stores of this library ignore a
  /// cancellation slot here.
  ///
  /// @par Errors
  /// errc::store_conflict when another refresh token is stored; errc::store_failed for I/O
  /// failures (a state written but not made durable included); errc::invalid_argument, with
  /// the stores of this library, when `next` holds neither a refresh token nor an access token
  /// (nothing is written). A client_credentials state has an empty refresh token: the
  /// compare-and-set then compares empty tokens, and the lease alone orders the savers.
  ///
  /// @par Thread safety
  /// May be called from any thread, concurrently with the other operations.
  ///
  /// @param next the state to store; its tokens are wiped when the store lets go of them
  /// @param expected the refresh token the refresh used (what the store should still hold)
  /// @param token an Asio completion token
  /// @return what `token` makes of the operation
  template <class CompletionToken>
  auto async_save(stored_tokens next, std::string expected, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, save_signature>(
        [this](auto h, stored_tokens n, std::string e) {
          do_save(std::move(n), std::move(e), std::move(h));
        },
        token, std::move(next), std::move(expected));
  }

 protected:
  /// Implements async_load(): reads the stored state.
  ///
  /// @par Handler signature
  /// load_signature: `void(boost::system::error_code, std::optional<stored_tokens>,
  /// diagnostics)`, with nullopt when nothing was stored yet.
  ///
  /// @par Executor
  /// Complete `h` exactly once, never inline: post it (to its associated executor, or one of
  /// the store's for a handler with none). Never block the calling thread.
  ///
  /// @par Cancellation
  /// Optional: the client never cancels a load.
  ///
  /// @par Errors
  /// errc::store_corrupt for a state that cannot be parsed, errc::store_failed for an I/O
  /// failure, with what the store saw in the diagnostics. Throwing, or dropping `h`, ends the
  /// client's refresh with errc::internal.
  ///
  /// @par Thread safety
  /// Called from any thread, concurrently with the other operations.
  ///
  /// @param h the caller's handler, type-erased: its associated executor and cancellation
  ///   slot are the caller's
  virtual void do_load(boost::asio::any_completion_handler<load_signature> h) = 0;
  /// Implements async_acquire(): grants the right to refresh to one holder at a time.
  ///
  /// @par Handler signature
  /// acquire_signature: `void(boost::system::error_code, refresh_lease, diagnostics)`; the
  /// lease releases the right when its last copy goes.
  ///
  /// @par Executor
  /// Complete `h` exactly once, never inline: post it (to its associated executor, or one of
  /// the store's for a handler with none). Never block the calling thread while waiting.
  ///
  /// @par Cancellation
  /// Honour `h`'s cancellation slot (the client emits terminal when it is destroyed): a
  /// waiting acquire ends with operation_aborted.
  ///
  /// @par Errors
  /// errc::store_busy when `deadline` passes first, errc::store_failed when the store cannot
  /// be reached or locked, operation_aborted when cancelled. Optionally errc::store_updated,
  /// with an empty lease, when another holder saved a newer state while this caller waited:
  /// the client then loads without the lease, and acquires again only if that state does not
  /// serve (see async_acquire()). Never errc::lease_lost, which the client would report as
  /// the refresh's failure: a lease that runs out after it was granted is told through the
  /// `held_until` of refresh_lease. Throwing, or dropping `h`, ends the client's refresh with
  /// errc::internal.
  ///
  /// @par Thread safety
  /// Called from any thread, concurrently with the other operations.
  ///
  /// @param deadline when to give up waiting, on steady_clock
  /// @param h the caller's handler, type-erased: its associated executor and cancellation
  ///   slot are the caller's
  virtual void do_acquire(std::chrono::steady_clock::time_point deadline,
                          boost::asio::any_completion_handler<acquire_signature> h) = 0;
  /// Implements async_save(): a compare-and-set on the stored refresh token.
  ///
  /// @par Handler signature
  /// save_signature: `void(boost::system::error_code, diagnostics)`.
  ///
  /// @par Executor
  /// Complete `h` exactly once, never inline: post it (to its associated executor, or one of
  /// the store's for a handler with none). Never block the calling thread.
  ///
  /// @par Cancellation
  /// Optional: the client never cancels a save.
  ///
  /// @par Errors
  /// errc::store_conflict, leaving the stored state alone, when another refresh token is
  /// stored; errc::store_failed for an I/O failure. Throwing, or dropping `h`, ends the
  /// client's refresh with errc::internal.
  ///
  /// @par Thread safety
  /// Called from any thread, concurrently with the other operations.
  ///
  /// @param next the state to store
  /// @param expected the refresh token that must still be stored (or nothing stored at all)
  /// @param h the caller's handler, type-erased: its associated executor and cancellation
  ///   slot are the caller's
  virtual void do_save(stored_tokens next, std::string expected,
                       boost::asio::any_completion_handler<save_signature> h) = 0;
};

/// Keeps the state in memory (the default store). Shared by several clients of one process, it
/// also makes them take turns: its lease is an asynchronous mutex, and `ex` runs the timers of
/// acquirers waiting for it (and handlers that have no associated executor).
///
/// Every operation completes through a post, never inline; a load or save never fails but for
/// store_conflict. Thread safety: distinct and shared objects alike may be used from any thread.
class memory_store final : public token_store {
 public:
  /// @param ex runs the timers of waiting acquirers and the handlers that have no associated
  ///   executor
  explicit memory_store(boost::asio::any_io_executor ex);
  ~memory_store() override;

 protected:
  /// async_load(): a copy of the state held.
  ///
  /// @par Handler signature
  /// load_signature; nullopt until the first save.
  /// @par Executor
  /// Posted to `ex`: the handler runs on its associated executor, or on `ex`.
  /// @par Cancellation
  /// Not supported (a load completes at once).
  /// @par Errors
  /// None: a load never fails.
  /// @par Thread safety
  /// Any thread, concurrently.
  ///
  /// @param h the caller's handler
  void do_load(boost::asio::any_completion_handler<load_signature> h) override;
  /// async_acquire(): granted at once when no lease is out, else in arrival order as leases
  /// are released.
  ///
  /// @par Handler signature
  /// acquire_signature.
  /// @par Executor
  /// Posted to `ex`: the handler runs on its associated executor, or on `ex`. The deadline
  /// timer of a waiting acquire runs on `ex`.
  /// @par Cancellation
  /// Any type, while it waits: it leaves the queue and completes with operation_aborted.
  /// @par Errors
  /// errc::store_busy (with the reason in the diagnostics) when `deadline` passes first;
  /// operation_aborted when cancelled.
  /// @par Thread safety
  /// Any thread, concurrently.
  ///
  /// @param deadline when to give up waiting
  /// @param h the caller's handler
  void do_acquire(std::chrono::steady_clock::time_point deadline,
                  boost::asio::any_completion_handler<acquire_signature> h) override;
  /// async_save(): compare-and-set under the store's mutex.
  ///
  /// @par Handler signature
  /// save_signature.
  /// @par Executor
  /// Posted to `ex`: the handler runs on its associated executor, or on `ex`.
  /// @par Cancellation
  /// Not supported (a save completes at once).
  /// @par Errors
  /// errc::store_conflict when another refresh token is held; errc::invalid_argument for a state
  /// with neither token.
  /// @par Thread safety
  /// Any thread, concurrently.
  ///
  /// @param next the state to keep
  /// @param expected the refresh token that must still be held (or nothing held)
  /// @param h the caller's handler
  void do_save(stored_tokens next, std::string expected,
               boost::asio::any_completion_handler<save_signature> h) override;

 private:
  struct state;
  std::shared_ptr<state> s_;
};

/// Options of file_store.
struct file_store_options {
  /// How often a waiting acquirer retries the lock while another process holds it: the first
  /// retry after 1 ms, each next one twice as late, at most this (1 ms or more).
  std::chrono::milliseconds lock_poll_max{20};
};

/// Keeps the state in a JSON file (mode 0600), replaced atomically: a temporary file is
/// written and fsync'ed, renamed over the old one, and the directory fsync'ed, so a crash at
/// any point leaves the old state or the new one, whole. Processes sharing the file take turns
/// through an advisory lock (flock on "<path>.lock"): one refreshes, the others read its
/// answer. File I/O runs on a private thread, never on the caller's.
///
/// Handlers that have no associated executor run on that private thread. A handler's own
/// executor is kept busy (outstanding work) until the handler has run.
class file_store final : public token_store {
 public:
  /// Reads the file if it exists: throws error_with_diagnostics(errc::store_corrupt) when it
  /// cannot be parsed, so a damaged store stops the program at start rather than falling back
  /// to a configured refresh token that was consumed long ago.
  /// @param path the file; its directory must exist and be writable ("<path>.lock" and
  ///   temporary files "<path>.tmp.*" go next to it)
  /// @param opts see file_store_options
  /// @throws error_with_diagnostics errc::store_corrupt as above; errc::store_failed when the
  ///   file exists but cannot be read (or is not a regular file); errc::invalid_config when
  ///   `path` is empty
  explicit file_store(std::string path, file_store_options opts = {});
  /// Loads and saves already started finish first; waiting acquires complete with
  /// operation_aborted within one poll interval. Blocks until then (the private thread is
  /// joined), unless called on that thread, from a handler with no associated executor.
  ~file_store() override;

  /// @return the path given to the constructor
  const std::string& path() const noexcept;

 protected:
  /// async_load(): reads and parses the file on the private thread; nullopt when there is no
  /// file.
  ///
  /// @par Handler signature
  /// load_signature.
  /// @par Executor
  /// The handler runs on its associated executor, or on the private thread when it has none.
  /// @par Cancellation
  /// Not supported.
  /// @par Errors
  /// errc::store_failed when the file cannot be opened or read, or is not a regular file;
  /// errc::store_corrupt when it cannot be parsed or is larger than 1 MiB.
  /// @par Thread safety
  /// Any thread, concurrently.
  ///
  /// @param h the caller's handler
  void do_load(boost::asio::any_completion_handler<load_signature> h) override;
  /// async_acquire(): an exclusive flock on "<path>.lock", tried without blocking and polled
  /// (see file_store_options) until `deadline`. Two acquires of one process exclude each
  /// other too. A new holder removes temporary files a writer killed mid-save left behind.
  ///
  /// @par Handler signature
  /// acquire_signature; dropping the lease's last copy closes the lock.
  /// @par Executor
  /// The handler runs on its associated executor, or on the private thread when it has none.
  /// @par Cancellation
  /// Any type, while it waits: noticed at the next poll, then operation_aborted.
  /// @par Errors
  /// errc::store_busy when `deadline` passes while another holder keeps the lock;
  /// errc::store_failed when the lock file cannot be opened or locked; operation_aborted when
  /// cancelled or when the store is destroyed.
  /// @par Thread safety
  /// Any thread, concurrently.
  ///
  /// @param deadline when to give up waiting
  /// @param h the caller's handler
  void do_acquire(std::chrono::steady_clock::time_point deadline,
                  boost::asio::any_completion_handler<acquire_signature> h) override;
  /// async_save(): compare-and-set, then the atomic replacement described above, on the
  /// private thread.
  ///
  /// @par Handler signature
  /// save_signature.
  /// @par Executor
  /// The handler runs on its associated executor, or on the private thread when it has none.
  /// @par Cancellation
  /// Not supported.
  /// @par Errors
  /// errc::invalid_argument when `next` holds neither token (nothing is written);
  /// errc::store_conflict when the file holds another refresh token; errc::store_corrupt when
  /// the file cannot be parsed; errc::store_failed for an I/O failure, a directory that could
  /// not be fsync'ed after the rename included (the new state is in place, but not durable).
  /// @par Thread safety
  /// Any thread, concurrently. The saves of one process are serialized on the private thread;
  /// across processes, the check and the rename are atomic only among holders of the lease
  /// (as the client saves).
  ///
  /// @param next the state to write
  /// @param expected the refresh token the file must still hold (or no file)
  /// @param h the caller's handler
  void do_save(stored_tokens next, std::string expected,
               boost::asio::any_completion_handler<save_signature> h) override;

 private:
  struct state;
  std::shared_ptr<state> s_;
};

}  // namespace nxsys::auth

#endif
