// SPDX-License-Identifier: BSL-1.0
// Boost.Test entry point of the unit tests.
#define BOOST_TEST_MODULE nxsys_auth_unit
#include <boost/test/unit_test.hpp>
