// SPDX-License-Identifier: BSL-1.0
// Boost.Test entry point of the Redis store tests (need redis-server; see scripts/setup.sh).
#define BOOST_TEST_MODULE nxsys_auth_redis
#include <boost/test/unit_test.hpp>
