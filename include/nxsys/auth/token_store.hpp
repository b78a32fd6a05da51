// SPDX-License-Identifier: BSL-1.0
// Where a client keeps its tokens between refreshes and across restarts, and how clients that
// share one refresh-token chain (threads, processes, hosts) agree on who refreshes.
#ifndef NXSYS_AUTH_TOKEN_STORE_HPP
#define NXSYS_AUTH_TOKEN_STORE_HPP

#include <nxsys/auth/error.hpp>
#include <nxsys/auth/stored_tokens.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>

namespace nxsys::auth {

/// The right to refresh, granted by token_store::async_acquire. Dropping the last copy releases
/// it (an flock closed, a Redis lease deleted): hold it across request and save.
class refresh_lease {
 public:
  refresh_lease() = default;
  explicit refresh_lease(std::shared_ptr<void> hold) noexcept : hold_(std::move(hold)) {}
  void release() noexcept { hold_.reset(); }

 private:
  std::shared_ptr<void> hold_;
};

/// The interface a client uses for its tokens. Designed for stores shared by many clients:
///  1. async_acquire: the right to refresh. While one holder refreshes, others wait here;
///  2. async_load: after acquiring, a holder reads the state — another holder may have
///     refreshed meanwhile, and then no request is needed;
///  3. async_save: a compare-and-set keyed on the refresh token the refresh used, so that a
///     holder that lost its lease can never overwrite a newer chain (fencing).
/// Handlers complete on their associated executor, never inline. Operations may be called
/// concurrently from any thread. Implementations must not block the caller's thread.
///
/// Every handler's last argument is a diagnostics: on failure, what the store saw, in words a
/// person can act on ("cannot fsync directory /var/lib/app: No space left on device"). The
/// client folds it into the refresh's error, its log and on_refresh. Never a token in it.
/// Every operation must complete its handler exactly once: a store that drops a handler (or
/// throws from an operation) makes the client's refresh end with errc::internal.
class token_store {
 public:
  using load_signature = void(boost::system::error_code, std::optional<stored_tokens>, diagnostics);
  using acquire_signature = void(boost::system::error_code, refresh_lease, diagnostics);
  using save_signature = void(boost::system::error_code, diagnostics);

  virtual ~token_store() = default;

  /// The stored state; nullopt when nothing was stored yet. Errors: errc::store_corrupt for
  /// an unreadable state (never silently ignored), errc::store_failed for I/O failures.
  template <class CompletionToken>
  auto async_load(CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, load_signature>(
        [this](auto h) { do_load(std::move(h)); }, token);
  }

  /// Waits until this caller may refresh, at most until `deadline` (errc::store_busy then).
  /// Cancellation (the handler's slot, any type): a waiting acquire ends with
  /// operation_aborted.
  template <class CompletionToken>
  auto async_acquire(std::chrono::steady_clock::time_point deadline, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, acquire_signature>(
        [this, deadline](auto h) { do_acquire(deadline, std::move(h)); }, token);
  }

  /// Stores `next` if the stored refresh token is still `expected` (or nothing is stored):
  /// errc::store_conflict otherwise, and the stored state is left alone.
  template <class CompletionToken>
  auto async_save(stored_tokens next, std::string expected, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, save_signature>(
        [this](auto h, stored_tokens n, std::string e) {
          do_save(std::move(n), std::move(e), std::move(h));
        },
        token, std::move(next), std::move(expected));
  }

 protected:
  virtual void do_load(boost::asio::any_completion_handler<load_signature> h) = 0;
  virtual void do_acquire(std::chrono::steady_clock::time_point deadline,
                          boost::asio::any_completion_handler<acquire_signature> h) = 0;
  virtual void do_save(stored_tokens next, std::string expected,
                       boost::asio::any_completion_handler<save_signature> h) = 0;
};

/// Keeps the state in memory (the default store). Shared by several clients of one process, it
/// also makes them take turns: its lease is an asynchronous mutex, and `ex` runs the timers of
/// acquirers waiting for it (and handlers that have no associated executor).
class memory_store final : public token_store {
 public:
  explicit memory_store(boost::asio::any_io_executor ex);
  ~memory_store() override;

 protected:
  void do_load(boost::asio::any_completion_handler<load_signature> h) override;
  void do_acquire(std::chrono::steady_clock::time_point deadline,
                  boost::asio::any_completion_handler<acquire_signature> h) override;
  void do_save(stored_tokens next, std::string expected,
               boost::asio::any_completion_handler<save_signature> h) override;

 private:
  struct state;
  std::shared_ptr<state> s_;
};

/// Options of file_store.
struct file_store_options {
  /// How often a waiting acquirer retries the lock while another process holds it.
  std::chrono::milliseconds lock_poll_max{20};
};

/// Keeps the state in a JSON file (mode 0600), replaced atomically: a temporary file is
/// written and fsync'ed, renamed over the old one, and the directory fsync'ed, so a crash at
/// any point leaves the old state or the new one, whole. Processes sharing the file take turns
/// through an advisory lock (flock on "<path>.lock"): one refreshes, the others read its
/// answer. File I/O runs on a private thread, never on the caller's.
class file_store final : public token_store {
 public:
  /// Reads the file if it exists: throws error_with_diagnostics(errc::store_corrupt) when it
  /// cannot be parsed, so a damaged store stops the program at start rather than falling back
  /// to a configured refresh token that was consumed long ago.
  explicit file_store(std::string path, file_store_options opts = {});
  ~file_store() override;

  const std::string& path() const noexcept;

 protected:
  void do_load(boost::asio::any_completion_handler<load_signature> h) override;
  void do_acquire(std::chrono::steady_clock::time_point deadline,
                  boost::asio::any_completion_handler<acquire_signature> h) override;
  void do_save(stored_tokens next, std::string expected,
               boost::asio::any_completion_handler<save_signature> h) override;

 private:
  struct state;
  std::shared_ptr<state> s_;
};

}  // namespace nxsys::auth

#endif
