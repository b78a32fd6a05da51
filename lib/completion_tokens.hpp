// SPDX-License-Identifier: BSL-1.0
// The completion tokens the library's coroutines use, under one name each (not installed).
#ifndef NXSYS_AUTH_LIB_COMPLETION_TOKENS_HPP
#define NXSYS_AUTH_LIB_COMPLETION_TOKENS_HPP

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace nxsys::auth::detail {

/// co_await an operation inside an awaitable, getting (error_code, ...) as a tuple instead of
/// an exception.
constexpr auto use_tuple = boost::asio::as_tuple(boost::asio::use_awaitable);

/// The same through deferred: the operation is initiated from the awaiting frame and no
/// coroutine frame is made for it (the refresh driver's steps).
constexpr auto deferred_tuple = boost::asio::as_tuple(boost::asio::deferred);

}  // namespace nxsys::auth::detail

#endif
