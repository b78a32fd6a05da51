// SPDX-License-Identifier: BSL-1.0
// Stores that break the token_store contract (I7): one that never answers, one that drops its
// handler, one that throws. Callers never hang: the refresh ends by refresh_deadline or with
// errc::internal, and the chain is kept for the next refresh.
#include "helpers.hpp"

#include <boost/asio/append.hpp>
#include <boost/asio/post.hpp>

#include <algorithm>
#include <mutex>
#include <stdexcept>
#include <vector>

namespace asio = boost::asio;
namespace na = nxsys::auth;
using namespace nxsys::auth::testing;
using namespace std::chrono_literals;
using boost::system::error_code;

namespace {

enum class fault { none, hang, drop, throw_ };

// A memory_store whose loads or saves misbehave as the test says.
class broken_store final : public forwarding_store {
 public:
  explicit broken_store(asio::any_io_executor ex) : forwarding_store(std::move(ex)) {}

  fault on_load = fault::none;
  fault on_save = fault::none;
  std::optional<asio::any_completion_handler<load_signature>> held;  // a load never answered

 protected:
  void do_load(asio::any_completion_handler<load_signature> h) override {
    switch (on_load) {
      case fault::hang:
        held.emplace(std::move(h));
        return;
      case fault::drop:
        return;  // h is destroyed here, never called
      case fault::throw_:
        throw std::runtime_error("the load threw");
      case fault::none:
        break;
    }
    inner_.async_load(std::move(h));
  }
  void do_save(na::stored_tokens next, std::string expected,
               asio::any_completion_handler<save_signature> h) override {
    if (on_save == fault::throw_) throw std::runtime_error("the disk is on fire");
    if (on_save == fault::drop) return;
    inner_.async_save(std::move(next), std::move(expected), std::move(h));
  }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(broken_stores)

BOOST_AUTO_TEST_CASE(a_store_that_never_answers_ends_the_refresh_at_its_deadline) {
  asio::io_context ctx;  // first: destroyed last, after the store that holds a handler
  mock_server server(rotating());
  auto store = std::make_shared<broken_store>(ctx.get_executor());
  store->on_load = fault::hang;
  auto cfg = config_for(server, rotating());
  cfg.storage.store = store;
  cfg.refresh.deadline = 300ms;
  na::client c(ctx.get_executor(), cfg);
  const auto a = token_until_done(ctx, c);
  BOOST_TEST(a.ec == na::errc::timeout);
  BOOST_TEST(a.what.find("token store's load") != std::string::npos, a.what);
  BOOST_TEST(server.stats().requests == 0u);
  // The load answers at last: the refresh goes on and its result is kept.
  store->on_load = fault::none;
  BOOST_REQUIRE(store->held);
  asio::post(ctx, asio::append(std::move(*store->held), error_code{},
                               std::optional<na::stored_tokens>{}, na::diagnostics{}));
  store->held.reset();
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 1));
  const auto b = token_until_done(ctx, c);
  BOOST_TEST(!b.ec, b.what);
  BOOST_TEST(server.stats().reuse_detected == 0u);
}

BOOST_AUTO_TEST_CASE(a_store_that_drops_its_handler_fails_the_refresh_with_internal) {
  asio::io_context ctx;
  mock_server server(rotating());
  auto store = std::make_shared<broken_store>(ctx.get_executor());
  store->on_load = fault::drop;
  auto cfg = config_for(server, rotating());
  cfg.storage.store = store;
  na::client c(ctx.get_executor(), cfg);
  const auto a = token_until_done(ctx, c);
  BOOST_TEST(a.ec == na::errc::internal);
  BOOST_TEST(a.what.find("dropped its completion handler") != std::string::npos, a.what);
  BOOST_TEST(server.stats().requests == 0u);
  store->on_load = fault::none;
  const auto b = token_until_done(ctx, c);
  BOOST_TEST(!b.ec, b.what);
}

BOOST_AUTO_TEST_CASE(a_store_whose_save_throws_keeps_the_tokens_pending_and_says_why) {
  asio::io_context ctx;
  mock_server server(rotating());
  auto store = std::make_shared<broken_store>(ctx.get_executor());
  store->on_save = fault::throw_;
  auto cfg = config_for(server, rotating());
  cfg.storage.store = store;
  cfg.storage.retry_interval = 50ms;
  std::mutex mu;
  std::vector<std::string> logs;
  std::vector<na::refresh_event> events;
  cfg.observers.log = [&](na::log_level, std::string_view m) {
    std::lock_guard lk(mu);
    logs.emplace_back(m);
  };
  cfg.observers.on_refresh = [&](const na::refresh_event& e) {
    std::lock_guard lk(mu);
    events.push_back(e);
  };
  na::client c(ctx.get_executor(), cfg);
  // The server rotated and the save threw: a failed save like any other (I3): the token is
  // served, the failure reported as errc::internal with the store's words, the save retried.
  const auto a = token_until_done(ctx, c);
  BOOST_TEST(!a.ec, a.what);
  {
    std::lock_guard lk(mu);
    BOOST_REQUIRE(!events.empty());
    BOOST_TEST(events[0].store_ec == na::errc::internal);
    BOOST_TEST(std::any_of(logs.begin(), logs.end(), [](const std::string& l) {
      return l.find("the disk is on fire") != std::string::npos;
    }));
  }
  BOOST_TEST(c.stats().store_save_failures >= 1u);
  store->on_save = fault::none;
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 1));  // the background retry saves, then the driver ends
  BOOST_TEST(c.stats().store_saves >= 1u);
  c.invalidate();
  const auto d = token_until_done(ctx, c);
  BOOST_TEST(!d.ec, d.what);
  BOOST_TEST(server.stats().reuse_detected == 0u);
  std::optional<na::stored_tokens> stored;
  store->async_load([&](error_code, std::optional<na::stored_tokens> s, na::diagnostics) {
    stored = std::move(s);
  });
  ctx.restart();
  BOOST_REQUIRE(run_bounded(ctx, 1));
  BOOST_REQUIRE(stored);
  BOOST_TEST(stored->refresh_token == server.current_refresh_token());
}

BOOST_AUTO_TEST_CASE(a_store_whose_load_throws_fails_the_refresh_with_internal) {
  asio::io_context ctx;
  mock_server server(rotating());
  auto store = std::make_shared<broken_store>(ctx.get_executor());
  store->on_load = fault::throw_;
  auto cfg = config_for(server, rotating());
  cfg.storage.store = store;
  na::client c(ctx.get_executor(), cfg);
  const auto a = token_until_done(ctx, c);
  BOOST_TEST(a.ec == na::errc::internal);
  BOOST_TEST(a.what.find("the load threw") != std::string::npos, a.what);
  BOOST_TEST(server.stats().requests == 0u);
}

BOOST_AUTO_TEST_SUITE_END()
