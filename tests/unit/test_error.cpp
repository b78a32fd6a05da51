// SPDX-License-Identifier: BSL-1.0
// Unit tests of nxsys::auth errors: the errc enum and its two categories, describe(), the
// diagnostics struct and error_with_diagnostics.
#include <nxsys/auth/error.hpp>
#include <nxsys/auth/protocol.hpp>

#include <boost/system/system_error.hpp>
#include <boost/test/unit_test.hpp>

#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

using boost::system::error_code;
using nxsys::auth::diagnostics;
using nxsys::auth::errc;

// Every enumerator with whether it is an OAuth (server) error; keep in step with error.hpp.
const std::vector<std::pair<errc, bool>> all_errc = {
    {errc::invalid_request, true},
    {errc::invalid_client, true},
    {errc::invalid_grant, true},
    {errc::unauthorized_client, true},
    {errc::unsupported_grant_type, true},
    {errc::invalid_scope, true},
    {errc::server_error, true},
    {errc::temporarily_unavailable, true},
    {errc::unrecognized_error, true},
    {errc::malformed_response, false},
    {errc::timeout, false},
    {errc::tls, false},
    {errc::connection, false},
    {errc::response_too_large, false},
    {errc::unexpected_status, false},
    {errc::invalid_config, false},
    {errc::store_failed, false},
    {errc::store_corrupt, false},
    {errc::store_conflict, false},
    {errc::store_busy, false},
    {errc::invalid_argument, false},
    {errc::internal, false},
    {errc::proxy_authentication, false},
    {errc::store_updated, false},
    {errc::lease_lost, false},
};

std::string_view category_name(const error_code& ec) {
  return ec.category().name();
}

error_code parse_error(unsigned status, std::string_view body, diagnostics& diag) {
  nxsys::auth::protocol::token_response out;
  return nxsys::auth::protocol::parse_token_response(status, body, out, diag);
}

static_assert(boost::system::is_error_code_enum<errc>::value);
static_assert(std::is_base_of_v<boost::system::system_error, nxsys::auth::error_with_diagnostics>);
static_assert(std::is_base_of_v<std::runtime_error, nxsys::auth::error_with_diagnostics>);

}  // namespace

BOOST_AUTO_TEST_SUITE(errors)

BOOST_AUTO_TEST_CASE(codes_from_parse_compare_with_errc) {
  diagnostics diag;
  const error_code ec = parse_error(401, R"({"error":"invalid_client"})", diag);
  // The documented way to test for a failure.
  BOOST_TEST((ec == nxsys::auth::errc::invalid_client));
  BOOST_TEST((nxsys::auth::errc::invalid_client == ec));
  BOOST_TEST(!(ec != nxsys::auth::errc::invalid_client));
  BOOST_TEST((ec != nxsys::auth::errc::invalid_grant));
  BOOST_TEST((ec == nxsys::auth::make_error_code(errc::invalid_client)));
  BOOST_TEST(ec.value() == static_cast<int>(errc::invalid_client));
  BOOST_TEST(category_name(ec) == "nxsys.auth.oauth");

  diagnostics diag2;
  const error_code ec2 = parse_error(200, "not json", diag2);
  BOOST_TEST((ec2 == nxsys::auth::errc::malformed_response));
  BOOST_TEST((ec2 != nxsys::auth::errc::invalid_client));
  BOOST_TEST(category_name(ec2) == "nxsys.auth.client");

  // An error_code converts implicitly from errc, as with any error code enum.
  const error_code direct = errc::timeout;
  BOOST_TEST((direct == errc::timeout));
  BOOST_TEST(category_name(direct) == "nxsys.auth.client");
}

BOOST_AUTO_TEST_CASE(each_errc_lives_in_its_category) {
  for (const auto& [e, is_oauth] : all_errc) {
    const error_code ec = nxsys::auth::make_error_code(e);
    BOOST_TEST_CONTEXT("errc " << static_cast<int>(e) << " (" << ec.message() << ")") {
      BOOST_TEST(static_cast<bool>(ec));  // never "success"
      BOOST_TEST(ec.value() == static_cast<int>(e));
      BOOST_TEST(category_name(ec) == (is_oauth ? "nxsys.auth.oauth" : "nxsys.auth.client"));
      BOOST_TEST((&ec.category() ==
                  (is_oauth ? &nxsys::auth::oauth_category() : &nxsys::auth::client_category())));
      BOOST_TEST((ec == e));
    }
  }
  BOOST_TEST(std::string_view(nxsys::auth::oauth_category().name()) == "nxsys.auth.oauth");
  BOOST_TEST(std::string_view(nxsys::auth::client_category().name()) == "nxsys.auth.client");
  BOOST_TEST((nxsys::auth::oauth_category() != nxsys::auth::client_category()));
}

// No two errc values may compare equal, or `ec == errc::x` would mistake one failure for another.
BOOST_AUTO_TEST_CASE(errc_values_are_distinct_codes) {
  for (const auto& [a, a_oauth] : all_errc) {
    for (const auto& [b, b_oauth] : all_errc) {
      if (a == b) continue;
      BOOST_TEST((nxsys::auth::make_error_code(a) != b), static_cast<int>(a)
                                                             << " vs " << static_cast<int>(b));
    }
  }
  // Nor with generic error conditions of the same numeric value.
  BOOST_TEST((nxsys::auth::make_error_code(errc::invalid_request) !=
              boost::system::error_code(1, boost::system::generic_category())));
  BOOST_TEST((nxsys::auth::make_error_code(errc::timeout) != boost::system::errc::timed_out));
}

BOOST_AUTO_TEST_CASE(every_errc_has_a_distinct_message) {
  std::set<std::string> messages;
  for (const auto& [e, is_oauth] : all_errc) {
    const std::string m = nxsys::auth::make_error_code(e).message();
    BOOST_TEST_CONTEXT("errc " << static_cast<int>(e)) {
      BOOST_TEST(!m.empty());
      BOOST_TEST(messages.insert(m).second, "duplicate message '" << m << "'");
    }
  }
  BOOST_TEST(messages.size() == all_errc.size());
  // The OAuth errors read as the RFC 6749 names a user will search for.
  BOOST_TEST(nxsys::auth::make_error_code(errc::invalid_grant).message() == "invalid_grant");
  BOOST_TEST(nxsys::auth::make_error_code(errc::invalid_client).message() == "invalid_client");
  BOOST_TEST(nxsys::auth::make_error_code(errc::temporarily_unavailable).message() ==
             "temporarily_unavailable");
  // A value outside the enum still gets some text rather than crashing.
  BOOST_TEST(!nxsys::auth::oauth_category().message(9999).empty());
  BOOST_TEST(!nxsys::auth::client_category().message(-1).empty());
}

BOOST_AUTO_TEST_CASE(diagnostics_empty_and_clear) {
  diagnostics d;
  BOOST_TEST(d.empty());
  BOOST_TEST(d.http_status == 0);

  d.http_status = 500;
  BOOST_TEST(!d.empty());
  d.clear();
  BOOST_TEST(d.empty());

  d.server_error = "e";
  BOOST_TEST(!d.empty());
  d.clear();
  d.server_description = "d";
  BOOST_TEST(!d.empty());
  d.clear();
  d.client_message = "m";
  BOOST_TEST(!d.empty());

  d = diagnostics{401, "invalid_client", "bad secret", "observed"};
  d.clear();
  BOOST_TEST(d.empty());
  BOOST_TEST(d.http_status == 0);
  BOOST_TEST(d.server_error.empty());
  BOOST_TEST(d.server_description.empty());
  BOOST_TEST(d.client_message.empty());
}

BOOST_AUTO_TEST_CASE(describe_formats) {
  using nxsys::auth::describe;
  using nxsys::auth::make_error_code;
  BOOST_TEST(describe(make_error_code(errc::timeout), {}) == "timed out");
  BOOST_TEST(describe(make_error_code(errc::malformed_response),
                      {200, "", "", "the answer is not valid JSON"}) ==
             "malformed token response (HTTP 200): the answer is not valid JSON");
  BOOST_TEST(
      describe(make_error_code(errc::invalid_grant), {400, "invalid_grant", "token expired", ""}) ==
      "invalid_grant (HTTP 400); server says: invalid_grant: token expired");
  BOOST_TEST(describe(make_error_code(errc::invalid_grant), {400, "invalid_grant", "", ""}) ==
             "invalid_grant (HTTP 400); server says: invalid_grant");
  BOOST_TEST(describe(make_error_code(errc::server_error), {503, "", "maintenance", ""}) ==
             "server_error (HTTP 503); server says: maintenance");
  BOOST_TEST(describe(make_error_code(errc::connection), {0, "", "", "connection refused"}) ==
             "connection failure: connection refused");
  BOOST_TEST(
      describe(make_error_code(errc::server_error),
               {500, "db", "down", "the server failed without an OAuth error"}) ==
      "server_error (HTTP 500): the server failed without an OAuth error; server says: db: down");
}

BOOST_AUTO_TEST_CASE(describe_from_a_real_answer) {
  diagnostics diag;
  const error_code ec = parse_error(
      400, R"({"error":"invalid_grant","error_description":"refresh token revoked"})", diag);
  const std::string s = nxsys::auth::describe(ec, diag);
  BOOST_TEST(s.find("invalid_grant") == 0u);
  BOOST_TEST(s.find("HTTP 400") != std::string::npos);
  BOOST_TEST(s.find("refresh token revoked") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(error_with_diagnostics_carries_everything) {
  const diagnostics diag{400, "invalid_grant", "refresh token revoked", ""};
  const error_code ec = nxsys::auth::make_error_code(errc::invalid_grant);
  try {
    throw nxsys::auth::error_with_diagnostics(ec, diag);
  } catch (const boost::system::system_error& e) {
    // Callers that only know Boost.System still get the code.
    BOOST_TEST((e.code() == errc::invalid_grant));
    BOOST_TEST((e.code() == ec));
    const std::string what = e.what();
    BOOST_TEST(what.find("HTTP 400") != std::string::npos, what);
    BOOST_TEST(what.find("invalid_grant") != std::string::npos, what);
    BOOST_TEST(what.find("refresh token revoked") != std::string::npos, what);
    BOOST_TEST(what == nxsys::auth::describe(ec, diag));

    const auto* full = dynamic_cast<const nxsys::auth::error_with_diagnostics*>(&e);
    BOOST_TEST_REQUIRE(full != nullptr);
    BOOST_TEST(full->get_diagnostics().http_status == 400);
    BOOST_TEST(full->get_diagnostics().server_error == "invalid_grant");
    BOOST_TEST(full->get_diagnostics().server_description == "refresh token revoked");
  }
}

BOOST_AUTO_TEST_CASE(error_with_diagnostics_as_std_exception) {
  try {
    throw nxsys::auth::error_with_diagnostics(nxsys::auth::make_error_code(errc::unexpected_status),
                                              {302, "", "", "redirects are not followed"});
  } catch (const std::exception& e) {
    BOOST_TEST(std::string(e.what()) ==
               "unexpected HTTP status (HTTP 302): redirects are not followed");
  }
  // Without diagnostics what() is just the message.
  const nxsys::auth::error_with_diagnostics plain(nxsys::auth::make_error_code(errc::timeout), {});
  BOOST_TEST(std::string(plain.what()) == "timed out");
  BOOST_TEST(plain.get_diagnostics().empty());
  // A copy (as when rethrown by value) keeps its text.
  const nxsys::auth::error_with_diagnostics copy = plain;
  BOOST_TEST(std::string(copy.what()) == "timed out");
  BOOST_TEST((copy.code() == errc::timeout));
}

BOOST_AUTO_TEST_SUITE_END()
