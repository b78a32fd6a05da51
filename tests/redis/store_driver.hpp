// SPDX-License-Identifier: BSL-1.0
// What the redis_store tests share: a stored state to save, and a driver that runs one store
// operation at a time on the test's thread until it completes (bounded; not until the
// io_context runs out of work, since a held lease keeps its renewal timer pending).
#ifndef NXSYS_AUTH_TESTS_REDIS_STORE_DRIVER_HPP
#define NXSYS_AUTH_TESTS_REDIS_STORE_DRIVER_HPP

#include <nxsys/auth/token_store.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <exception>
#include <optional>
#include <string>
#include <tuple>

namespace nxsys::auth::testing {

inline constexpr auto use_tuple = boost::asio::as_tuple(boost::asio::use_awaitable);

/// A state holding `refresh` and `access`, valid for an hour.
inline stored_tokens tokens(std::string refresh, std::string access = "at") {
  using namespace std::chrono_literals;
  stored_tokens t;
  t.refresh_token = std::move(refresh);
  t.access_token = std::move(access);
  t.token_type = "Bearer";
  t.expires_at = std::chrono::system_clock::now() + 1h;
  t.lifetime = 3600s;
  return t;
}

/// Runs the coroutine `f` on `ctx`, on this thread, until it ends (at most 30 s: then the test
/// fails), and rethrows what it threw.
template <class F>
void run_to_end(boost::asio::io_context& ctx, F f) {
  using namespace std::chrono_literals;
  bool done = false;
  std::exception_ptr failure;
  boost::asio::co_spawn(ctx, std::move(f), [&](std::exception_ptr e) {
    failure = e;
    done = true;
  });
  ctx.restart();
  const auto end = std::chrono::steady_clock::now() + 30s;
  while (!done && std::chrono::steady_clock::now() < end) ctx.run_one_for(10ms);
  BOOST_REQUIRE(done);
  if (failure) std::rethrow_exception(failure);
}

/// A load's whole answer.
struct loaded {
  boost::system::error_code ec;
  std::optional<stored_tokens> state;
  diagnostics diag;
};

/// One store operation at a time, each run to its end.
struct driver {
  boost::asio::io_context ctx;

  template <class F>
  void run(F f) {
    run_to_end(ctx, std::move(f));
  }
  boost::system::error_code save(token_store& s, stored_tokens t, std::string expected) {
    boost::system::error_code out;
    run([&]() -> boost::asio::awaitable<void> {
      std::tie(out, std::ignore) =
          co_await s.async_save(std::move(t), std::move(expected), use_tuple);
    });
    return out;
  }
  std::tuple<boost::system::error_code, std::optional<stored_tokens>> load(token_store& s) {
    const auto l = load_with_diag(s);
    return {l.ec, l.state};
  }
  loaded load_with_diag(token_store& s) {
    loaded out;
    run([&]() -> boost::asio::awaitable<void> {
      std::tie(out.ec, out.state, out.diag) = co_await s.async_load(use_tuple);
    });
    return out;
  }
  std::tuple<boost::system::error_code, refresh_lease> acquire(token_store& s,
                                                               std::chrono::milliseconds wait) {
    std::tuple<boost::system::error_code, refresh_lease> out;
    run([&]() -> boost::asio::awaitable<void> {
      std::tie(std::get<0>(out), std::get<1>(out), std::ignore) =
          co_await s.async_acquire(std::chrono::steady_clock::now() + wait, use_tuple);
    });
    return out;
  }
};

}  // namespace nxsys::auth::testing

#endif
