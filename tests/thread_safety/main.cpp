// SPDX-License-Identifier: BSL-1.0
// Boost.Test entry point of the thread_safety tests.
#define BOOST_TEST_MODULE nxsys_auth_thread_safety
#include <boost/test/unit_test.hpp>
