// SPDX-License-Identifier: BSL-1.0
// Boost.Test entry point of the integration tests.
#define BOOST_TEST_MODULE nxsys_auth_integration
#include <boost/test/unit_test.hpp>
