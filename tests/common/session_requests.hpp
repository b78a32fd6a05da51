// SPDX-License-Identifier: BSL-1.0
// One API request through a session, run to completion: what the session tests share.
#ifndef NXSYS_AUTH_TESTS_SESSION_REQUESTS_HPP
#define NXSYS_AUTH_TESTS_SESSION_REQUESTS_HPP

#include "helpers.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <string>
#include <tuple>

namespace nxsys::auth::testing {

inline session::request_type get(std::string target) {
  return session::request_type{boost::beast::http::verb::get, target, 11};
}

struct request_result {
  boost::system::error_code ec;
  diagnostics diag;
  session::response_type res;
};

/// `req` through `s` on `ctx` (one thread, bounded by run_coro).
inline request_result send(boost::asio::io_context& ctx, session& s, session::request_type req) {
  request_result r;
  run_coro(ctx, [&]() -> boost::asio::awaitable<void> {
    std::tie(r.ec, r.res) = co_await s.async_request(
        std::move(req), r.diag, boost::asio::as_tuple(boost::asio::use_awaitable));
  });
  return r;
}

}  // namespace nxsys::auth::testing

#endif
