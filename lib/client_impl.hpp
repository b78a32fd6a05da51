// The client's state, shared by the cache and slow path (client.cpp) and the refresh procedure
// (refresh.cpp). Internal.
#ifndef NXSYS_AUTH_LIB_CLIENT_IMPL_HPP
#define NXSYS_AUTH_LIB_CLIENT_IMPL_HPP

#include <nxsys/auth/client.hpp>
#include <nxsys/auth/protocol.hpp>
#include <nxsys/auth/token_store.hpp>

#include <nxsys/auth/detail/single_flight.hpp>

#include "transport.hpp"

#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>

namespace nxsys::auth::detail {

struct replica;
using clock_type = std::chrono::steady_clock;

/// What token()'s waiters receive: one value, so that awaiting a deferred operation stores it
/// straight into the waiting frame (Boost 1.81's awaitable cannot do that for an
/// (exception_ptr, T) signature: its resume() does not compile).
struct token_outcome {
  boost::system::error_code ec;
  flight_result result;
};

/// A token ready to publish: from an answer, or from the store.
struct new_token {
  std::string value;
  std::string type;
  clock_type::time_point issued{};  ///< lifetime counts from here (the request's sending)
  clock_type::duration lifetime{};
  std::string scope;
  std::shared_ptr<const boost::json::object> extra;
};

/// What one run of the refresh procedure ends with.
struct refresh_outcome {
  boost::system::error_code ec;
  diagnostics diag;
  std::optional<new_token> token;  ///< set on success (and kept, unpublished, under strict
                                   ///< durability when the save failed)
  bool rotated = false;
  bool from_store = false;
  unsigned attempts = 0;
  boost::system::error_code store_ec;
  clock_type::duration took{};
};

class client_impl : public std::enable_shared_from_this<client_impl> {
 public:
  client_impl(boost::asio::any_io_executor ex, client_config cfg, protocol::endpoint ep);
  ~client_impl();

  const boost::asio::any_io_executor& executor() const noexcept { return ex_; }
  token_flight& flight() noexcept { return flight_; }

  /// The fast path: no lock, no shared write when this thread's replica is current.
  const access_token* fresh_token();
  /// The slow path of every caller whose thread cache had no fresh token.
  void wait(std::unique_ptr<token_flight::waiter> w);
  bool invalidate(const access_token* rejected);  // nullptr: whatever is current
  void shutdown();
  client_stats stats() const;

 private:
  clock_type::time_point now() const noexcept {
    return cfg_.clock ? cfg_.clock() : clock_type::now();
  }
  bool before(clock_type::time_point deadline) const noexcept;
  void log(log_level level, std::string_view message) const noexcept;

  // -- cache and slow path (client.cpp)
  replica* renew_replica(replica* r);
  void maybe_refresh_ahead(std::uint64_t version);
  bool answer_without_refresh(boost::system::error_code& ec, flight_result& r, bool& background);
  bool serve_while_failing(clock_type::time_point t, flight_result& r);
  void start_refresh(bool ahead);
  void finish(refresh_outcome out, bool ahead);
  void record(const refresh_event& e);

  // -- the refresh procedure (refresh.cpp), on strand_
  static boost::asio::awaitable<void> run_refresh(std::shared_ptr<client_impl> self, bool ahead);
  boost::asio::awaitable<refresh_outcome> refresh(bool ahead);
  boost::asio::awaitable<std::tuple<boost::system::error_code, std::optional<stored_tokens>>>
  load_store();
  boost::asio::awaitable<bool> reconcile(std::optional<stored_tokens> loaded, bool ahead,
                                         std::string& expected, refresh_outcome& out);
  boost::asio::awaitable<void> request_with_retries(bool ahead, clock_type::time_point deadline,
                                                    std::string& expected, refresh_outcome& out);
  boost::asio::awaitable<boost::system::error_code> request_once(
      const std::string& refresh_token, clock_type::time_point deadline,
      protocol::token_response& tr, diagnostics& diag, std::optional<std::chrono::seconds>& wait);
  std::optional<new_token> adopt_stored(const stored_tokens& stored, bool ahead);
  boost::asio::awaitable<boost::system::error_code> save(stored_tokens next, std::string expected,
                                                         refresh_outcome& out);
  stored_tokens to_stored(const new_token& t, const std::string& refresh_token) const;
  void start_save_retries();
  static boost::asio::awaitable<void> retry_saves(std::shared_ptr<client_impl> self);

  boost::asio::any_io_executor ex_;
  boost::asio::strand<boost::asio::any_io_executor> strand_;
  client_config cfg_;           // immutable after construction (its refresh_token is moved out)
  std::string secret_encoded_;  // as it appears in the request body, for redaction
  const std::uint64_t uid_;
  std::shared_ptr<token_store> store_;

  // Written only under mu_; read without it by the fast path.
  std::atomic<std::uint64_t> version_{1};
  // The version whose refresh-ahead was started (0: none), and when a failed one may retry.
  std::atomic<std::uint64_t> ahead_started_{0};
  std::atomic<clock_type::rep> ahead_retry_at_{0};
  std::atomic<std::uint64_t> stale_served_{0};

  mutable std::mutex mu_;  // the slow path only: never taken by a reader of a fresh token
  access_token current_;
  clock_type::time_point current_refresh_at_{};
  clock_type::time_point current_ahead_at_ = clock_type::time_point::max();
  clock_type::time_point current_valid_until_{};  // served after a failure until then
  std::string
      last_issued_;  // value of the last token published: a store holding it has nothing new
  std::string refresh_token_;
  std::uint64_t serial_ = 0;
  std::uint64_t invalidations_ = 0;
  bool shut_down_ = false;
  bool refreshing_ = false;  // from the first waiter of a flight until finish()
  // The last refresh's failure, served to callers within min_retry_spacing of it.
  boost::system::error_code last_failure_;
  std::shared_ptr<const diagnostics> last_failure_diag_;
  clock_type::time_point last_failure_at_{};
  client_stats stats_;

  // On strand_ only: new tokens not saved yet, with the refresh token the store held then.
  struct unsaved {
    stored_tokens tokens;
    std::string expected;
  };
  std::optional<unsaved> unsaved_;
  bool save_retries_running_ = false;
  boost::asio::steady_timer backoff_timer_;        // between attempts of a refresh
  boost::asio::steady_timer save_timer_;           // between retries of a failed save
  boost::asio::cancellation_signal lease_cancel_;  // ends a refresh's wait for the store's lease

  token_flight flight_;
  http_transport transport_;  // used on strand_ only
};

}  // namespace nxsys::auth::detail

#endif
