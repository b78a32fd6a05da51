// SPDX-License-Identifier: BSL-1.0
// Unit tests of <nxsys/auth/version.hpp>: the string, the number and the constants all say the
// version the three macros say (tests/tools/version.sh checks what the programs print).
#include <nxsys/auth/version.hpp>

#include <boost/test/unit_test.hpp>

#include <string>
#include <string_view>

namespace auth = nxsys::auth;

BOOST_AUTO_TEST_SUITE(version)

BOOST_AUTO_TEST_CASE(the_constants_are_the_macros) {
  BOOST_TEST(auth::version_major == NXSYS_AUTH_VERSION_MAJOR);
  BOOST_TEST(auth::version_minor == NXSYS_AUTH_VERSION_MINOR);
  BOOST_TEST(auth::version_patch == NXSYS_AUTH_VERSION_PATCH);
  BOOST_TEST(auth::version_string == std::string_view(NXSYS_AUTH_VERSION_STRING));
}

BOOST_AUTO_TEST_CASE(the_string_is_major_dot_minor_dot_patch) {
  const std::string expected = std::to_string(auth::version_major) + "." +
                               std::to_string(auth::version_minor) + "." +
                               std::to_string(auth::version_patch);
  BOOST_TEST(auth::version_string == expected);
}

BOOST_AUTO_TEST_CASE(the_number_decodes_like_boost_version) {
  // major * 100000 + minor * 100 + patch: unambiguous while minor < 1000 and patch < 100.
  BOOST_TEST(NXSYS_AUTH_VERSION / 100000 == auth::version_major);
  BOOST_TEST(NXSYS_AUTH_VERSION / 100 % 1000 == auth::version_minor);
  BOOST_TEST(NXSYS_AUTH_VERSION % 100 == auth::version_patch);
}

// A literal, so that it can be pasted into others (the User-Agent is built this way).
BOOST_AUTO_TEST_CASE(the_string_macro_is_a_literal) {
  constexpr std::string_view user_agent = "nxsys-auth/" NXSYS_AUTH_VERSION_STRING " x";
  BOOST_TEST(user_agent == "nxsys-auth/" + std::string(auth::version_string) + " x");
}

BOOST_AUTO_TEST_SUITE_END()
