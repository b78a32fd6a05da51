// SPDX-License-Identifier: BSL-1.0
// Unit tests of the library's private text helpers (lib/text.hpp: redact, printable,
// is_header_token, iequals) and of make_token_url from config.hpp.
#include <nxsys/auth/config.hpp>
#include <nxsys/auth/error.hpp>
#include <nxsys/auth/protocol.hpp>

#include "text.hpp"

#include <boost/test/unit_test.hpp>

#include <cstddef>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace detail = nxsys::auth::detail;

constexpr std::string_view mask = "[redacted]";

std::string redacted(std::string s, std::initializer_list<std::string_view> secrets) {
  detail::redact(s, secrets);
  return s;
}

// Independent oracle for redaction: the bytes of `text` covered by no occurrence of any secret
// (occurrences found at every position, so overlapping ones count too), in order.
std::string uncovered_bytes(std::string_view text,
                            std::initializer_list<std::string_view> secrets) {
  std::vector<bool> covered(text.size(), false);
  for (auto secret : secrets) {
    if (secret.empty()) continue;
    for (auto pos = text.find(secret); pos != std::string_view::npos;
         pos = text.find(secret, pos + 1))
      for (std::size_t i = pos; i < pos + secret.size(); ++i) covered[i] = true;
  }
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i)
    if (!covered[i]) out.push_back(text[i]);
  return out;
}

// The output with every mask taken out.
std::string without_masks(std::string s) {
  for (auto pos = s.find(mask); pos != std::string::npos; pos = s.find(mask, pos))
    s.erase(pos, mask.size());
  return s;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(text)

// =============================================================================================
// redact

BOOST_AUTO_TEST_CASE(redact_single_and_repeated_occurrences) {
  BOOST_TEST(redacted("token s3cret rejected", {"s3cret"}) == "token [redacted] rejected");
  BOOST_TEST(redacted("s3cret", {"s3cret"}) == "[redacted]");
  BOOST_TEST(redacted("s3cret at start", {"s3cret"}) == "[redacted] at start");
  BOOST_TEST(redacted("at end s3cret", {"s3cret"}) == "at end [redacted]");
  BOOST_TEST(redacted("a s3cret, b s3cret, c s3cret", {"s3cret"}) ==
             "a [redacted], b [redacted], c [redacted]");
  // Adjacent repeats are each replaced.
  BOOST_TEST(redacted("s3crets3crets3cret", {"s3cret"}) == "[redacted][redacted][redacted]");
  BOOST_TEST(redacted("xx", {"x"}) == "[redacted][redacted]");
}

BOOST_AUTO_TEST_CASE(redact_several_secrets) {
  BOOST_TEST(redacted("refresh R1 secret S2 access A3", {"R1", "S2", "A3"}) ==
             "refresh [redacted] secret [redacted] access [redacted]");
  BOOST_TEST(redacted("S2R1S2", {"R1", "S2"}) == "[redacted][redacted][redacted]");
  // A secret that is absent changes nothing.
  BOOST_TEST(redacted("nothing here", {"R1", "S2"}) == "nothing here");
  // The same secret twice in the list is harmless.
  BOOST_TEST(redacted("a R1 b", {"R1", "R1"}) == "a [redacted] b");
}

BOOST_AUTO_TEST_CASE(redact_ignores_empty_secrets) {
  // An empty secret (e.g. no rotated refresh token) must neither loop nor insert masks.
  BOOST_TEST(redacted("some text", {""}) == "some text");
  BOOST_TEST(redacted("", {""}) == "");
  BOOST_TEST(redacted("a S b", {"", "S", ""}) == "a [redacted] b");
  BOOST_TEST(redacted("", {"S"}) == "");
  BOOST_TEST(redacted("abc", {}) == "abc");
}

BOOST_AUTO_TEST_CASE(redact_longer_secret_than_text) {
  BOOST_TEST(redacted("abc", {"abcd"}) == "abc");
  BOOST_TEST(redacted("bcd", {"abcd"}) == "bcd");
}

// Replacing must not rescan the mask it just inserted: a secret that occurs in "[redacted]"
// itself would otherwise loop forever (hence the timeout) or be mangled.
BOOST_AUTO_TEST_CASE(redact_secret_inside_the_mask_text, *boost::unit_test::timeout(10)) {
  BOOST_TEST(redacted("redacted", {"redacted"}) == "[redacted]");
  BOOST_TEST(redacted("redactedredacted", {"redacted"}) == "[redacted][redacted]");
  BOOST_TEST(redacted("[redacted]", {"[redacted]"}) == "[redacted]");
  BOOST_TEST(redacted("d", {"d"}) == "[redacted]");
}

BOOST_AUTO_TEST_CASE(redact_binary_and_utf8_secrets) {
  const std::string secret("s\0\xFF\xC3\xA9", 5);
  const std::string text = "before " + secret + " after " + secret;
  BOOST_TEST(redacted(text, {secret}) == "before [redacted] after [redacted]");
}

// Redaction is the last guard against a server echoing a credential: no byte of any occurrence
// of any secret may survive, also when occurrences overlap ("abab" in "ababab") or when one
// secret is a part of another (client id "abc", secret "abcdef"), whatever order the secrets
// come in. Checked against an oracle that marks every covered byte.
//
BOOST_AUTO_TEST_CASE(redact_overlapping_and_nested_secrets) {
  struct redact_case {
    std::string text;
    std::string first, second;  // redact() takes an initializer_list, so a fixed pair
  };
  const std::vector<redact_case> cases = {
      {"xx ababab yy", "abab", ""},               // overlapping repeats
      {"aaaaa", "aa", ""},                        // overlapping repeats, odd length
      {"id=abc secret=abcdef", "abc", "abcdef"},  // shorter secret first
      {"id=abc secret=abcdef", "abcdef", "abc"},  // longer secret first
      {"XabcdefX", "cde", "abcdef"},              // inner part first
      {"XabcdefX", "abcd", "cdef"},               // two secrets overlapping each other
      {"Z1Z2Z3", "Z1Z2", "Z2Z3"},
  };
  for (const auto& c : cases) {
    std::string out = c.text;
    detail::redact(out, {c.first, c.second});
    BOOST_TEST_CONTEXT("text '" << c.text << "' with secrets '" << c.first << "', '" << c.second
                                << "' redacted to '" << out << "'") {
      BOOST_TEST(without_masks(out) == uncovered_bytes(c.text, {c.first, c.second}));
      BOOST_TEST(out.find(c.first) == std::string::npos);
      if (!c.second.empty()) BOOST_TEST(out.find(c.second) == std::string::npos);
    }
  }
}

// The orders and overlaps that must work today (and keep working).
BOOST_AUTO_TEST_CASE(redact_longer_secret_listed_first) {
  BOOST_TEST(redacted("id=abc secret=abcdef", {"abcdef", "abc"}) ==
             "id=[redacted] secret=[redacted]");
  BOOST_TEST(redacted("abab", {"abab"}) == "[redacted]");
  // Overlapping occurrences (at 0, 1 and 2) become one mask.
  BOOST_TEST(redacted("aaaa", {"aa"}) == "[redacted]");
}

// =============================================================================================
// printable

BOOST_AUTO_TEST_CASE(printable_replaces_control_bytes) {
  BOOST_TEST(detail::printable("plain text, 100% fine!", 100) == "plain text, 100% fine!");
  BOOST_TEST(detail::printable("a\nb\rc\td", 100) == "a?b?c?d");
  BOOST_TEST(detail::printable("\x1b[31mred\x1b[0m", 100) == "?[31mred?[0m");
  BOOST_TEST(detail::printable(std::string_view("a\0b", 3), 100) == "a?b");
  BOOST_TEST(detail::printable("del\x7f", 100) == "del?");
  BOOST_TEST(detail::printable("\x01\x1f", 100) == "??");
  // Space and the whole visible ASCII range stay.
  std::string visible;
  for (char c = 0x20; c < 0x7F; ++c) visible.push_back(c);
  BOOST_TEST(detail::printable(visible, 1000) == visible);
  // UTF-8 bytes (>= 0x80) are text, not control characters.
  BOOST_TEST(detail::printable("caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC", 100) ==
             "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC");
  // Every byte below 0x20 is replaced.
  for (int b = 0; b < 0x20; ++b) {
    const std::string in(1, static_cast<char>(b));
    BOOST_TEST(detail::printable(in, 10) == "?", "byte " << b);
  }
}

BOOST_AUTO_TEST_CASE(printable_truncates) {
  BOOST_TEST(detail::printable("", 0) == "");
  BOOST_TEST(detail::printable("", 5) == "");
  BOOST_TEST(detail::printable("abcde", 5) == "abcde");  // exactly max: not cut
  BOOST_TEST(detail::printable("abcdef", 5) == "abcde...");
  BOOST_TEST(detail::printable("abcdef", 0) == "...");
  BOOST_TEST(detail::printable("a\nbcdef", 3) == "a?b...");  // replaced and cut
  BOOST_TEST(detail::printable(std::string(10000, 'x'), 512) == std::string(512, 'x') + "...");
}

// =============================================================================================
// is_header_token

BOOST_AUTO_TEST_CASE(is_header_token_accepts_visible_ascii) {
  BOOST_TEST(detail::is_header_token("Bearer"));
  BOOST_TEST(detail::is_header_token("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-_+/="));
  BOOST_TEST(detail::is_header_token("!"));  // 0x21, first visible character
  BOOST_TEST(detail::is_header_token("~"));  // 0x7E, last visible character
  std::string visible;
  for (char c = 0x21; c < 0x7F; ++c) visible.push_back(c);
  BOOST_TEST(detail::is_header_token(visible));
  // Emptiness is the caller's business (parse_token_response rejects an empty token itself).
  BOOST_TEST(detail::is_header_token(""));
}

BOOST_AUTO_TEST_CASE(is_header_token_rejects_anything_else) {
  BOOST_TEST(!detail::is_header_token("a b"));
  BOOST_TEST(!detail::is_header_token(" "));
  BOOST_TEST(!detail::is_header_token("a\tb"));
  BOOST_TEST(!detail::is_header_token("tok\r\nX-Injected: 1"));
  BOOST_TEST(!detail::is_header_token(std::string_view("a\0b", 3)));
  BOOST_TEST(!detail::is_header_token("a\x7f"));
  BOOST_TEST(!detail::is_header_token("t\xC3\xB6ken"));
  for (int b = 0; b < 256; ++b) {
    const std::string in = "ok" + std::string(1, static_cast<char>(b));
    BOOST_TEST(detail::is_header_token(in) == (b >= 0x21 && b <= 0x7E), "byte " << b);
  }
}

// =============================================================================================
// iequals

BOOST_AUTO_TEST_CASE(iequals_ascii_case_insensitive) {
  BOOST_TEST(detail::iequals("", ""));
  BOOST_TEST(detail::iequals("localhost", "localhost"));
  BOOST_TEST(detail::iequals("LOCALHOST", "localhost"));
  BOOST_TEST(detail::iequals("LocalHost", "lOCALhOST"));
  BOOST_TEST(detail::iequals("AZaz09-.", "azAZ09-."));
  BOOST_TEST(!detail::iequals("localhost", "localhost."));
  BOOST_TEST(!detail::iequals("localhos", "localhost"));
  BOOST_TEST(!detail::iequals("localhost", ""));
  BOOST_TEST(!detail::iequals("localhost", "localhosT2"));
  BOOST_TEST(!detail::iequals("abc", "abd"));
  // Only letters fold: characters 0x20 apart that are not letters stay different.
  BOOST_TEST(!detail::iequals("[", "{"));
  BOOST_TEST(!detail::iequals("@", "`"));
  BOOST_TEST(!detail::iequals("^", "~"));
  BOOST_TEST(!detail::iequals("1", "\x11"));
  // No locale-dependent folding of non-ASCII bytes ("é" vs "É").
  BOOST_TEST(!detail::iequals("\xC3\xA9", "\xC3\x89"));
  BOOST_TEST(detail::iequals("\xC3\xA9", "\xC3\xA9"));
  // Every pair of ASCII letters.
  for (char c = 'a'; c <= 'z'; ++c) {
    const char upper = static_cast<char>(c - 'a' + 'A');
    BOOST_TEST(detail::iequals(std::string(1, c), std::string(1, upper)), c);
    BOOST_TEST(!detail::iequals(std::string(1, c), std::string(1, c == 'z' ? 'a' : c + 1)), c);
  }
}

// =============================================================================================
// make_token_url (config.hpp)

BOOST_AUTO_TEST_CASE(make_token_url_appends_the_seed_path) {
  using nxsys::auth::make_token_url;
  BOOST_TEST(make_token_url("https://api.example") == "https://api.example/nxsys/oauth/token");
  BOOST_TEST(make_token_url("https://api.example/") == "https://api.example/nxsys/oauth/token");
  BOOST_TEST(make_token_url("https://api.example///") == "https://api.example/nxsys/oauth/token");
  BOOST_TEST(make_token_url("https://api.example:8443") ==
             "https://api.example:8443/nxsys/oauth/token");
  BOOST_TEST(make_token_url("https://api.example/v1") ==
             "https://api.example/v1/nxsys/oauth/token");
  BOOST_TEST(make_token_url("https://api.example/v1/") ==
             "https://api.example/v1/nxsys/oauth/token");
  BOOST_TEST(make_token_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080/nxsys/oauth/token");
  BOOST_TEST(make_token_url("") == "/nxsys/oauth/token");
  BOOST_TEST(make_token_url("/") == "/nxsys/oauth/token");
}

// What make_token_url builds is what parse_token_url accepts, with the seed's path as target.
BOOST_AUTO_TEST_CASE(make_token_url_result_parses) {
  for (std::string_view base :
       {"https://api.example", "https://api.example/", "http://localhost:8080/"}) {
    BOOST_TEST_CONTEXT(base) {
      nxsys::auth::protocol::endpoint ep;
      nxsys::auth::diagnostics diag;
      const auto url = nxsys::auth::make_token_url(base);
      BOOST_TEST(!nxsys::auth::protocol::parse_token_url(url, false, ep, diag));
      BOOST_TEST(ep.target == "/nxsys/oauth/token");
    }
  }
}

BOOST_AUTO_TEST_SUITE_END()
