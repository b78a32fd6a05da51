// SPDX-License-Identifier: BSL-1.0
// Unit tests of nxsys::auth::protocol: the form-encoded refresh body, token URL parsing and
// checking, and the interpretation of token endpoint answers (no sockets).
#include <nxsys/auth/error.hpp>
#include <nxsys/auth/protocol.hpp>

#include <boost/json/object.hpp>
#include <boost/test/unit_test.hpp>

#include <cstddef>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nxsys::auth {
// Lets BOOST_TEST print both sides of `ec == errc::...` when a check fails.
static std::ostream& boost_test_print_type(std::ostream& os, errc e) {
  return os << make_error_code(e) << " (" << make_error_code(e).message() << ")";
}
}  // namespace nxsys::auth

namespace {

// The test suite below is itself named `protocol`, so the library namespace gets another name.
namespace proto = nxsys::auth::protocol;
using boost::system::error_code;
using nxsys::auth::diagnostics;
using nxsys::auth::errc;

// ---------------------------------------------------------------------------------------------
// Independent references, written from the specifications rather than from the library code.

// What JavaScript's URLSearchParams serialises (WHATWG application/x-www-form-urlencoded): ASCII
// alphanumerics and * - . _ stay, space becomes '+', every other byte of the UTF-8 text %XX in
// upper case. Note that '~' is NOT kept by URLSearchParams.
std::string url_search_params_encode(std::string_view s) {
  std::string out;
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (alnum || c == '*' || c == '-' || c == '.' || c == '_') {
      out.push_back(ch);
    } else if (c == ' ') {
      out.push_back('+');
    } else {
      static constexpr std::string_view digits = "0123456789ABCDEF";
      out.push_back('%');
      out.push_back(digits[c / 16]);
      out.push_back(digits[c % 16]);
    }
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// A form decoder as a server would run it: '+' is a space, %XX a byte. Returns nullopt on a
// malformed escape so an encoder bug cannot hide behind lenient decoding.
std::optional<std::string> form_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out.push_back(' ');
    } else if (s[i] == '%') {
      if (i + 2 >= s.size()) return std::nullopt;  // truncated escape
      const int hi = hex_value(s[i + 1]);
      const int lo = hex_value(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

using form_fields = std::vector<std::pair<std::string, std::string>>;

// Splits a whole body into decoded (name, value) pairs in order; nullopt if any part is malformed.
std::optional<form_fields> parse_form(std::string_view body) {
  form_fields fields;
  while (true) {
    const auto amp = body.find('&');
    const auto part = body.substr(0, amp);
    const auto eq = part.find('=');
    if (eq == std::string_view::npos) return std::nullopt;
    auto name = form_decode(part.substr(0, eq));
    auto value = form_decode(part.substr(eq + 1));
    if (!name || !value) return std::nullopt;
    fields.emplace_back(std::move(*name), std::move(*value));
    if (amp == std::string_view::npos) break;
    body.remove_prefix(amp + 1);
  }
  return fields;
}

// Values that stress the encoder: every separator of the form syntax, the escape character,
// URL delimiters, spaces, UTF-8 and the empty string.
const std::vector<std::string> tricky_values = {
    "",
    "plain-Token_1.2*3",
    "a&b",
    "a=b",
    "a+b",
    "100%",
    "%41",
    "a/b?c",
    "with space",
    "  leading and trailing  ",
    "&=+%/? #;:@,$!'()[]{}\"<>\\^`|",
    "caf\xC3\xA9",               // "café"
    "\xE6\x97\xA5\xE6\x9C\xAC",  // "日本"
    "line\r\nbreak\ttab",
    std::string("nul\0inside", 10),
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl+/==",  // a JWT-like token
};

// ---------------------------------------------------------------------------------------------
// Helpers for parse_token_response.

struct parsed {
  error_code ec;
  proto::token_response response;
  diagnostics diag;
};

parsed parse(unsigned status, std::string_view body) {
  parsed p;
  p.ec = proto::parse_token_response(status, body, p.response, p.diag);
  return p;
}

// A 200 answer whose only interesting field is the expiry `expires_json` (raw JSON text).
parsed parse_expiry(std::string_view expires_json) {
  return parse(200, R"({"accessToken":"tok","expiresIn":)" + std::string(expires_json) + "}");
}

struct parsed_url {
  error_code ec;
  proto::endpoint ep;
  diagnostics diag;
};

parsed_url parse_url(std::string_view url, bool allow_insecure_http = false) {
  parsed_url p;
  p.ec = proto::parse_token_url(url, allow_insecure_http, p.ep, p.diag);
  return p;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(protocol)

// =============================================================================================
// form_urlencode / build_refresh_body

BOOST_AUTO_TEST_CASE(form_urlencode_exact_outputs) {
  BOOST_TEST(proto::form_urlencode("") == "");
  BOOST_TEST(proto::form_urlencode("abcXYZ019") == "abcXYZ019");
  BOOST_TEST(proto::form_urlencode("-._*") == "-._*");
  BOOST_TEST(proto::form_urlencode("a b") == "a+b");
  BOOST_TEST(proto::form_urlencode("a&b=c") == "a%26b%3Dc");
  BOOST_TEST(proto::form_urlencode("a+b") == "a%2Bb");
  BOOST_TEST(proto::form_urlencode("100%") == "100%25");
  BOOST_TEST(proto::form_urlencode("%41") == "%2541");
  BOOST_TEST(proto::form_urlencode("a/b?c") == "a%2Fb%3Fc");
  BOOST_TEST(proto::form_urlencode("#;:@,$!'()") == "%23%3B%3A%40%2C%24%21%27%28%29");
  BOOST_TEST(proto::form_urlencode("caf\xC3\xA9") == "caf%C3%A9");
  BOOST_TEST(proto::form_urlencode("\xE6\x97\xA5\xE6\x9C\xAC") == "%E6%97%A5%E6%9C%AC");
  BOOST_TEST(proto::form_urlencode("\r\n\t") == "%0D%0A%09");
  BOOST_TEST(proto::form_urlencode(std::string_view("\0", 1)) == "%00");
  BOOST_TEST(proto::form_urlencode("\x7F\x80\xFF") == "%7F%80%FF");
}

// Whatever the encoder keeps literally must be a character a form decoder leaves alone, and
// everything else must come back byte for byte: checked for all 256 byte values.
BOOST_AUTO_TEST_CASE(form_urlencode_round_trips_every_byte) {
  for (int b = 0; b < 256; ++b) {
    const std::string in(1, static_cast<char>(b));
    const std::string enc = proto::form_urlencode(in);
    BOOST_TEST_CONTEXT("byte " << b << " encoded as '" << enc << "'") {
      const auto dec = form_decode(enc);
      BOOST_TEST_REQUIRE(dec.has_value());
      BOOST_TEST(*dec == in);
      // Nothing that means something in a form body may stay literal.
      BOOST_TEST(enc.find_first_of("&=+ ") == (b == ' ' ? 0 : std::string::npos));
      if (enc.size() != 1) {
        BOOST_TEST(enc.size() == 3u);
        BOOST_TEST(enc[0] == '%');
        // Upper-case hex digits, as URLSearchParams writes them.
        BOOST_TEST(enc.find_first_of("abcdef") == std::string::npos);
      }
    }
  }
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  BOOST_TEST(form_decode(proto::form_urlencode(all)).value_or("<malformed>") == all);
}

BOOST_AUTO_TEST_CASE(form_urlencode_round_trips_tricky_values) {
  for (const auto& v : tricky_values) {
    BOOST_TEST_CONTEXT("value '" << v << "'") {
      BOOST_TEST(form_decode(proto::form_urlencode(v)).value_or("<malformed>") == v);
    }
  }
}

// The seed builds its body with URLSearchParams; for values without '~' our encoding must be the
// same bytes, not merely equivalent ones.
BOOST_AUTO_TEST_CASE(form_urlencode_matches_url_search_params) {
  // Outputs of `new URLSearchParams({v: value}).toString()` in a browser, minus the "v=".
  const std::vector<std::pair<std::string, std::string>> from_javascript = {
      {"YOUR_REFRESH_TOKEN", "YOUR_REFRESH_TOKEN"},
      {"a b&c=d+e%f/g?h", "a+b%26c%3Dd%2Be%25f%2Fg%3Fh"},
      {"caf\xC3\xA9", "caf%C3%A9"},
      {"\xE6\x97\xA5\xE6\x9C\xAC", "%E6%97%A5%E6%9C%AC"},
      {"*-._", "*-._"},
      {"!'()", "%21%27%28%29"},
      {"", ""},
  };
  for (const auto& [value, expected] : from_javascript) {
    BOOST_TEST_CONTEXT("value '" << value << "'") {
      BOOST_TEST(url_search_params_encode(value) == expected);  // the reference itself
      BOOST_TEST(proto::form_urlencode(value) == expected);
    }
  }
  for (const auto& v : tricky_values) {
    BOOST_TEST_CONTEXT("value '" << v << "'") {
      BOOST_TEST(proto::form_urlencode(v) == url_search_params_encode(v));
    }
  }
}

// protocol.hpp promises the encoding URLSearchParams uses, which percent-encodes '~'
// (new URLSearchParams({v: "~"}).toString() === "v=%7E"). The library keeps '~' literally, which
// decodes to the same value but is not the same bytes.
BOOST_AUTO_TEST_CASE(form_urlencode_encodes_tilde_like_url_search_params) {
  BOOST_TEST(proto::form_urlencode("~") == "%7E");
  BOOST_TEST(proto::form_urlencode("a~b") == url_search_params_encode("a~b"));
}

BOOST_AUTO_TEST_CASE(refresh_body_exact) {
  BOOST_TEST(
      proto::build_refresh_body("YOUR_REFRESH_TOKEN", "YOUR_CLIENT_ID", "YOUR_CLIENT_SECRET") ==
      "grantType=refresh_token&refreshToken=YOUR_REFRESH_TOKEN&clientId=YOUR_CLIENT_ID"
      "&clientSecret=YOUR_CLIENT_SECRET");
  BOOST_TEST(proto::build_refresh_body("r&t=1", "id with space", "s+c%r/e?t") ==
             "grantType=refresh_token&refreshToken=r%26t%3D1&clientId=id+with+space"
             "&clientSecret=s%2Bc%25r%2Fe%3Ft");
  BOOST_TEST(proto::build_refresh_body("", "", "") ==
             "grantType=refresh_token&refreshToken=&clientId=&clientSecret=");
  BOOST_TEST(proto::build_refresh_body("caf\xC3\xA9", "\xE6\x97\xA5\xE6\x9C\xAC", "x") ==
             "grantType=refresh_token&refreshToken=caf%C3%A9&clientId=%E6%97%A5%E6%9C%AC"
             "&clientSecret=x");
}

BOOST_AUTO_TEST_CASE(dialects_and_client_authentication) {
  using nxsys::auth::client_authentication;
  using nxsys::auth::dialect;
  auto r = proto::build_refresh_request(dialect::rfc6749, client_authentication::request_body,
                                        "r&t", "id", "s+c", "read write");
  BOOST_TEST(r.body ==
             "grant_type=refresh_token&refresh_token=r%26t&client_id=id&client_secret=s%2Bc"
             "&scope=read+write");
  BOOST_TEST(r.authorization.empty());
  // The seed's dialect is build_refresh_body's, plus an optional scope.
  r = proto::build_refresh_request(dialect::nxsys, client_authentication::request_body, "r", "i",
                                   "s");
  BOOST_TEST(r.body == proto::build_refresh_body("r", "i", "s"));
  // client_secret_basic: no credentials in the body; id and secret form-encoded, then base64.
  r = proto::build_refresh_request(dialect::rfc6749, client_authentication::http_basic, "r",
                                   "client:1", "p@ss word+");
  BOOST_TEST(r.body == "grant_type=refresh_token&refresh_token=r");
  BOOST_TEST(r.authorization == "Basic Y2xpZW50JTNBMTpwJTQwc3Mrd29yZCUyQg==");
  r = proto::build_refresh_request(dialect::nxsys, client_authentication::http_basic, "r", "i",
                                   "s");
  BOOST_TEST(r.body == "grantType=refresh_token&refreshToken=r");
  // RFC 6749 §2.3.1's own example.
  BOOST_TEST(proto::basic_authorization("s6BhdRkqt3", "7Fjfp0ZBr1KtDRbnfVdmIw") ==
             "Basic czZCaGRSa3F0Mzo3RmpmcDBaQnIxS3REUmJuZlZkbUl3");
}

BOOST_AUTO_TEST_CASE(client_credentials_requests) {
  using nxsys::auth::client_authentication;
  using nxsys::auth::dialect;
  auto r = proto::build_client_credentials_request(
      dialect::rfc6749, client_authentication::request_body, "id", "s+c", "read write");
  BOOST_TEST(r.body ==
             "grant_type=client_credentials&client_id=id&client_secret=s%2Bc"
             "&scope=read+write");
  BOOST_TEST(r.authorization.empty());
  r = proto::build_client_credentials_request(dialect::nxsys, client_authentication::request_body,
                                              "i", "s");
  BOOST_TEST(r.body == "grantType=client_credentials&clientId=i&clientSecret=s");
  // RFC 6749 §4.4.2's own example: Basic authentication, nothing but the grant in the body.
  r = proto::build_client_credentials_request(dialect::rfc6749, client_authentication::http_basic,
                                              "s6BhdRkqt3", "7Fjfp0ZBr1KtDRbnfVdmIw");
  BOOST_TEST(r.body == "grant_type=client_credentials");
  BOOST_TEST(r.authorization == "Basic czZCaGRSa3F0Mzo3RmpmcDBaQnIxS3REUmJuZlZkbUl3");
}

BOOST_AUTO_TEST_CASE(scope_and_extra_fields_are_kept) {
  auto p = parse(200, R"({"access_token":"a","scope":"read","id_token":"x.y.z","n":{"k":1}})");
  BOOST_REQUIRE(!p.ec);
  BOOST_TEST(p.response.scope == "read");
  BOOST_REQUIRE(p.response.extra != nullptr);
  BOOST_TEST(p.response.extra->size() == 2u);
  BOOST_TEST(p.response.extra->at("id_token").as_string() == "x.y.z");
  BOOST_TEST(p.response.extra->at("n").at("k").as_int64() == 1);
  BOOST_TEST(parse(200, R"({"access_token":"a"})").response.extra == nullptr);
}

// Whatever the values, a server splitting on '&' and '=' must see exactly the seed's four
// fields, in the seed's order, with the values we passed.
BOOST_AUTO_TEST_CASE(refresh_body_fields_round_trip) {
  for (const auto& refresh : tricky_values) {
    for (const auto& secret : {std::string("s3cret"), std::string("&clientId=evil"),
                               std::string("=&=&"), std::string("")}) {
      const std::string client_id = refresh + "#id";
      const std::string body = proto::build_refresh_body(refresh, client_id, secret);
      BOOST_TEST_CONTEXT("refresh token '" << refresh << "', secret '" << secret << "'") {
        const auto fields = parse_form(body);
        BOOST_TEST_REQUIRE(fields.has_value());
        BOOST_TEST_REQUIRE(fields->size() == 4u);
        BOOST_TEST((*fields)[0].first == "grantType");
        BOOST_TEST((*fields)[0].second == "refresh_token");
        BOOST_TEST((*fields)[1].first == "refreshToken");
        BOOST_TEST((*fields)[1].second == refresh);
        BOOST_TEST((*fields)[2].first == "clientId");
        BOOST_TEST((*fields)[2].second == client_id);
        BOOST_TEST((*fields)[3].first == "clientSecret");
        BOOST_TEST((*fields)[3].second == secret);
        // The same bytes URLSearchParams would send for these four fields.
        BOOST_TEST(body ==
                   "grantType=refresh_token&refreshToken=" + url_search_params_encode(refresh) +
                       "&clientId=" + url_search_params_encode(client_id) +
                       "&clientSecret=" + url_search_params_encode(secret));
      }
    }
  }
}

// =============================================================================================
// parse_token_url

BOOST_AUTO_TEST_CASE(token_url_https_defaults) {
  auto p = parse_url("https://auth.example.com/nxsys/oauth/token");
  BOOST_TEST_REQUIRE(!p.ec);
  BOOST_TEST(p.ep.tls);
  BOOST_TEST(p.ep.host == "auth.example.com");
  BOOST_TEST(p.ep.port == "443");
  BOOST_TEST(p.ep.target == "/nxsys/oauth/token");
  BOOST_TEST(!p.ep.host_is_ip);
  BOOST_TEST(!p.ep.loopback);
}

BOOST_AUTO_TEST_CASE(token_url_http_loopback_defaults) {
  auto p = parse_url("http://localhost/nxsys/oauth/token");
  BOOST_TEST_REQUIRE(!p.ec);
  BOOST_TEST(!p.ep.tls);
  BOOST_TEST(p.ep.host == "localhost");
  BOOST_TEST(p.ep.port == "80");
  BOOST_TEST(p.ep.target == "/nxsys/oauth/token");
  BOOST_TEST(!p.ep.host_is_ip);
  BOOST_TEST(p.ep.loopback);
}

BOOST_AUTO_TEST_CASE(token_url_explicit_ports) {
  BOOST_TEST(parse_url("https://auth.example.com:8443/t").ep.port == "8443");
  BOOST_TEST(parse_url("http://127.0.0.1:8080/t").ep.port == "8080");
  BOOST_TEST(parse_url("https://auth.example.com:443/t").ep.port == "443");
  BOOST_TEST(parse_url("https://auth.example.com:80/t").ep.port == "80");
  BOOST_TEST(parse_url("http://localhost:443/t").ep.port == "443");
  BOOST_TEST(parse_url("https://auth.example.com:1/t").ep.port == "1");
  BOOST_TEST(parse_url("https://auth.example.com:65535/t").ep.port == "65535");
  // The port is a number, not text: leading zeros do not reach the resolver.
  BOOST_TEST(parse_url("https://auth.example.com:08443/t").ep.port == "8443");
  // An explicit port does not change the scheme.
  BOOST_TEST(parse_url("https://auth.example.com:80/t").ep.tls);
  BOOST_TEST(!parse_url("http://localhost:443/t").ep.tls);
}

BOOST_AUTO_TEST_CASE(token_url_target_keeps_path_and_query) {
  BOOST_TEST(parse_url("https://auth.example.com").ep.target == "/");
  BOOST_TEST(parse_url("https://auth.example.com/").ep.target == "/");
  BOOST_TEST(parse_url("https://auth.example.com:8443").ep.target == "/");
  BOOST_TEST(parse_url("https://auth.example.com/a/b/").ep.target == "/a/b/");
  BOOST_TEST(parse_url("https://auth.example.com/t?x=1").ep.target == "/t?x=1");
  BOOST_TEST(parse_url("https://auth.example.com?x=1").ep.target == "/?x=1");
  // Kept as written (still encoded): the request line must carry the same bytes.
  BOOST_TEST(parse_url("https://auth.example.com/a%20b/t?q=a+b&r=%2F").ep.target ==
             "/a%20b/t?q=a+b&r=%2F");
  BOOST_TEST(parse_url("https://auth.example.com/nxsys/oauth/token?tenant=x&v=2").ep.target ==
             "/nxsys/oauth/token?tenant=x&v=2");
}

BOOST_AUTO_TEST_CASE(token_url_scheme_is_case_insensitive) {
  // RFC 3986 §3.1: schemes compare case-insensitively.
  auto p = parse_url("HTTPS://auth.example.com/t");
  BOOST_TEST_REQUIRE(!p.ec);
  BOOST_TEST(p.ep.tls);
  BOOST_TEST(p.ep.port == "443");
  auto q = parse_url("Http://localhost/t");
  BOOST_TEST_REQUIRE(!q.ec);
  BOOST_TEST(!q.ep.tls);
}

BOOST_AUTO_TEST_CASE(token_url_ipv4_hosts) {
  auto p = parse_url("https://192.0.2.10:8443/t");
  BOOST_TEST_REQUIRE(!p.ec);
  BOOST_TEST(p.ep.host == "192.0.2.10");
  BOOST_TEST(p.ep.host_is_ip);
  BOOST_TEST(!p.ep.loopback);
  BOOST_TEST(p.ep.port == "8443");
}

BOOST_AUTO_TEST_CASE(token_url_ipv6_hosts) {
  auto p = parse_url("http://[::1]:9000/t");
  BOOST_TEST_REQUIRE(!p.ec);
  BOOST_TEST(p.ep.host == "::1");  // without brackets, as the resolver wants it
  BOOST_TEST(p.ep.host_is_ip);
  BOOST_TEST(p.ep.loopback);
  BOOST_TEST(p.ep.port == "9000");
  BOOST_TEST(p.ep.target == "/t");

  auto q = parse_url("https://[2001:db8::1]/t");
  BOOST_TEST_REQUIRE(!q.ec);
  BOOST_TEST(q.ep.host == "2001:db8::1");
  BOOST_TEST(q.ep.host_is_ip);
  BOOST_TEST(!q.ep.loopback);
  BOOST_TEST(q.ep.port == "443");
}

BOOST_AUTO_TEST_CASE(token_url_loopback_detection) {
  // Plain http is accepted for these without allow_insecure_http because they are loopback.
  for (std::string_view url :
       {"http://127.0.0.1/t", "http://127.5.5.5/t", "http://127.255.255.254/t", "http://[::1]/t",
        "http://[0:0:0:0:0:0:0:1]/t", "http://localhost/t", "http://LOCALHOST/t",
        "http://LocalHost:8080/t"}) {
    BOOST_TEST_CONTEXT(url) {
      auto p = parse_url(url);
      BOOST_TEST(!p.ec);
      BOOST_TEST(p.ep.loopback);
      BOOST_TEST(!p.ep.tls);
    }
  }
  // Loopback is also reported for https (the client may use it, e.g. to relax nothing else).
  BOOST_TEST(parse_url("https://127.0.0.1/t").ep.loopback);
  BOOST_TEST(parse_url("https://localhost/t").ep.loopback);
}

BOOST_AUTO_TEST_CASE(token_url_look_alike_hosts_are_not_loopback) {
  // Names that merely start like loopback resolve wherever their DNS says.
  for (std::string_view url :
       {"http://localhost.evil.example/t", "http://mylocalhost/t", "http://127.0.0.01/t",
        "http://127.1/t", "http://128.0.0.1/t", "http://126.255.255.255/t", "http://0.0.0.0/t",
        "http://[::2]/t", "http://[2001:db8::1]/t", "http://192.168.1.1/t",
        "http://example.com/t"}) {
    BOOST_TEST_CONTEXT(url) {
      auto p = parse_url(url);
      BOOST_TEST(p.ec == errc::invalid_config);
      BOOST_TEST(!p.diag.client_message.empty());
      // The same URL is fine when the user explicitly allows plain http.
      auto q = parse_url(url, true);
      BOOST_TEST(!q.ec);
      BOOST_TEST(!q.ep.loopback);
      BOOST_TEST(!q.ep.tls);
      BOOST_TEST(q.ep.port == "80");
    }
  }
}

// KNOWN LIBRARY BUG (reported): Boost.URL 1.81 parses "http://127.0.0.1.nip.io/t" as the IPv4
// host 127.0.0.1 followed by the path ".nip.io/t" (a path that does not start with '/', which
// RFC 3986 forbids after an authority). parse_token_url takes that as a loopback host and a
// target that is not origin-form. Whatever it decides, the host must be the whole name and the
// target must start with '/'.
BOOST_AUTO_TEST_CASE(token_url_dotted_names_starting_with_an_ipv4_address) {
  for (std::string_view url :
       {"http://127.0.0.1.nip.io/t", "https://1.2.3.4.5/t", "http://127.0.0.1a/t"}) {
    BOOST_TEST_CONTEXT(url) {
      auto p = parse_url(url);
      // Not loopback, so plain http must be refused; https would be refused or a plain name.
      if (!p.ec) {
        BOOST_TEST(p.ep.tls);
        BOOST_TEST(!p.ep.host_is_ip);
        BOOST_TEST(p.ep.target.substr(0, 1) == "/");
      } else {
        BOOST_TEST(p.ec == errc::invalid_config);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(token_url_plain_http_refused_off_loopback) {
  auto p = parse_url("http://auth.example.com/nxsys/oauth/token");
  BOOST_TEST(p.ec == errc::invalid_config);
  BOOST_TEST(p.ec.category().name() == std::string_view("nxsys.auth.client"));
  BOOST_TEST(p.diag.client_message.find("http") != std::string::npos);

  auto q = parse_url("http://auth.example.com/nxsys/oauth/token", true);
  BOOST_TEST_REQUIRE(!q.ec);
  BOOST_TEST(q.ep.host == "auth.example.com");
  BOOST_TEST(q.ep.target == "/nxsys/oauth/token");
  // allow_insecure_http does not turn https off.
  auto r = parse_url("https://auth.example.com/t", true);
  BOOST_TEST(!r.ec);
  BOOST_TEST(r.ep.tls);
}

BOOST_AUTO_TEST_CASE(token_url_rejects_bad_urls) {
  for (std::string_view url : {
           "",
           "garbage",
           "not a url",
           "auth.example.com/nxsys/oauth/token",  // no scheme
           "//auth.example.com/t",                // scheme-relative
           "/nxsys/oauth/token",                  // relative
           "auth.example.com:443",                // parses as scheme "auth.example.com"
           "ftp://auth.example.com/t",
           "ws://auth.example.com/t",
           "wss://auth.example.com/t",
           "file:///etc/passwd",
           "mailto:someone@example.com",
           "https//auth.example.com/t",
           "https:/auth.example.com/t",  // no authority
           "https:auth.example.com",
           "https://",
           "https:///t",
           "https://:443/t",
           "https://auth.example.com/t#fragment",
           "https://auth.example.com/t#",
           "http://localhost/t#x",
           "https://auth.example.com:0/t",
           "https://auth.example.com:00/t",
           "https://auth.example.com:/t",
           "https://auth.example.com:65536/t",
           "https://auth.example.com:99999999999999999999/t",
           "https://auth.example.com:port/t",
           "https://auth.example.com:-1/t",
           " https://auth.example.com/t",
           "https://auth.example.com/t ",
           "https://auth example.com/t",
           "https://auth.example.com/t\n",
           "https://[::1/t",
           "https://[v1.future]/t",
           "https://::1/t",
       }) {
    BOOST_TEST_CONTEXT("url '" << url << "'") {
      for (bool allow_insecure : {false, true}) {
        auto p = parse_url(url, allow_insecure);
        BOOST_TEST(p.ec == errc::invalid_config);
        BOOST_TEST(!p.diag.client_message.empty());
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(token_url_rejects_user_info) {
  for (std::string_view url :
       {"https://alice:S3cr3tPa55@auth.example.com/t", "https://alice@auth.example.com/t",
        "https://:S3cr3tPa55@auth.example.com/t", "https://@auth.example.com/t",
        "http://alice:S3cr3tPa55@localhost/t"}) {
    BOOST_TEST_CONTEXT(url) {
      auto p = parse_url(url, true);
      BOOST_TEST(p.ec == errc::invalid_config);
      BOOST_TEST(!p.diag.client_message.empty());
    }
  }
}

// The URL may carry credentials; whatever is wrong with it, the message must not repeat them.
BOOST_AUTO_TEST_CASE(token_url_diagnostics_never_echo_credentials) {
  for (std::string_view url : {
           "https://alice:S3cr3tPa55@auth.example.com/t",
           "http://alice:S3cr3tPa55@auth.example.com/t",
           "ftp://alice:S3cr3tPa55@auth.example.com/t",
           "https://alice:S3cr3tPa55@auth.example.com/t#frag",
           "https://alice:S3cr3tPa55@auth.example.com:0/t",
           "https://alice:S3cr3tPa55@auth.example.com:bad/t",
           "https://alice:S3cr3tPa55@/t",
           "https ://alice:S3cr3tPa55@auth.example.com/t",
           "alice:S3cr3tPa55",
       }) {
    for (bool allow_insecure : {false, true}) {
      BOOST_TEST_CONTEXT(url << " allow_insecure_http=" << allow_insecure) {
        auto p = parse_url(url, allow_insecure);
        BOOST_TEST(p.ec);
        const auto& m = p.diag.client_message;
        BOOST_TEST(m.find("S3cr3tPa55") == std::string::npos);
        BOOST_TEST(m.find("alice") == std::string::npos);
        BOOST_TEST(m.find("auth.example.com") == std::string::npos);
        BOOST_TEST(p.diag.server_error.empty());
        BOOST_TEST(p.diag.server_description.empty());
        BOOST_TEST(nxsys::auth::describe(p.ec, p.diag).find("S3cr3tPa55") == std::string::npos);
      }
    }
  }
}

// A client may parse into an endpoint it reuses; no field may keep a value from before.
BOOST_AUTO_TEST_CASE(token_url_overwrites_every_endpoint_field) {
  proto::endpoint ep;
  diagnostics diag;
  BOOST_TEST_REQUIRE(!proto::parse_token_url("http://[::1]:9000/a?b=c", false, ep, diag));
  BOOST_TEST_REQUIRE(!proto::parse_token_url("https://auth.example.com", false, ep, diag));
  BOOST_TEST(ep.tls);
  BOOST_TEST(ep.host == "auth.example.com");
  BOOST_TEST(ep.port == "443");
  BOOST_TEST(ep.target == "/");
  BOOST_TEST(!ep.host_is_ip);
  BOOST_TEST(!ep.loopback);
}

// =============================================================================================
// parse_token_response: successful answers

BOOST_AUTO_TEST_CASE(response_camel_case) {
  auto p = parse(200, R"({"accessToken":"at-1","tokenType":"Bearer","expiresIn":3600,)"
                      R"("refreshToken":"rt-2","scope":"read write"})");
  BOOST_TEST_REQUIRE(!p.ec);
  BOOST_TEST(p.response.access_token == "at-1");
  BOOST_TEST(p.response.token_type == "Bearer");
  BOOST_TEST_REQUIRE(p.response.expires_in.has_value());
  BOOST_TEST(p.response.expires_in->count() == 3600);
  BOOST_TEST(p.response.refresh_token == "rt-2");
  BOOST_TEST(p.response.scope == "read write");
  BOOST_TEST(p.diag.http_status == 200);
  BOOST_TEST(p.diag.client_message.empty());
  BOOST_TEST(p.diag.server_error.empty());
}

BOOST_AUTO_TEST_CASE(response_snake_case) {
  auto p = parse(200, R"({"access_token":"at-1","token_type":"mac","expires_in":"120",)"
                      R"("refresh_token":"rt-2","scope":"s"})");
  BOOST_TEST_REQUIRE(!p.ec);
  BOOST_TEST(p.response.access_token == "at-1");
  BOOST_TEST(p.response.token_type == "mac");  // kept as sent, not normalised
  BOOST_TEST_REQUIRE(p.response.expires_in.has_value());
  BOOST_TEST(p.response.expires_in->count() == 120);
  BOOST_TEST(p.response.refresh_token == "rt-2");
  BOOST_TEST(p.response.scope == "s");
}

BOOST_AUTO_TEST_CASE(response_camel_case_wins_over_snake_case) {
  auto p =
      parse(200, R"({"access_token":"snake","accessToken":"camel","expires_in":5,"expiresIn":60})");
  BOOST_TEST_REQUIRE(!p.ec);
  BOOST_TEST(p.response.access_token == "camel");
  BOOST_TEST(p.response.expires_in->count() == 60);
}

BOOST_AUTO_TEST_CASE(response_any_2xx_is_an_answer) {
  for (unsigned status : {200u, 201u, 203u, 299u}) {
    BOOST_TEST_CONTEXT("status " << status) {
      auto p = parse(status, R"({"accessToken":"tok"})");
      BOOST_TEST(!p.ec);
      BOOST_TEST(p.response.access_token == "tok");
      BOOST_TEST(p.diag.http_status == static_cast<int>(status));
    }
  }
}

BOOST_AUTO_TEST_CASE(response_minimal_defaults) {
  auto p = parse(200, R"({"accessToken":"tok"})");
  BOOST_TEST_REQUIRE(!p.ec);
  BOOST_TEST(p.response.token_type == "Bearer");
  BOOST_TEST(!p.response.expires_in.has_value());
  BOOST_TEST(p.response.refresh_token.empty());
  BOOST_TEST(p.response.scope.empty());
}

BOOST_AUTO_TEST_CASE(response_token_type_defaults_to_bearer) {
  for (std::string_view body :
       {R"({"accessToken":"tok"})", R"({"accessToken":"tok","tokenType":null})",
        R"({"accessToken":"tok","tokenType":""})", R"({"accessToken":"tok","token_type":""})"}) {
    BOOST_TEST_CONTEXT(body) {
      auto p = parse(200, body);
      BOOST_TEST_REQUIRE(!p.ec);
      BOOST_TEST(p.response.token_type == "Bearer");
    }
  }
}

BOOST_AUTO_TEST_CASE(response_refresh_token_present_absent_null) {
  auto present = parse(200, R"({"accessToken":"a","refreshToken":"rotated"})");
  BOOST_TEST_REQUIRE(!present.ec);
  BOOST_TEST(present.response.refresh_token == "rotated");
  auto absent = parse(200, R"({"accessToken":"a"})");
  BOOST_TEST_REQUIRE(!absent.ec);
  BOOST_TEST(absent.response.refresh_token.empty());
  auto null = parse(200, R"({"accessToken":"a","refreshToken":null})");
  BOOST_TEST_REQUIRE(!null.ec);
  BOOST_TEST(null.response.refresh_token.empty());
  auto snake_null = parse(200, R"({"accessToken":"a","refresh_token":null})");
  BOOST_TEST_REQUIRE(!snake_null.ec);
  BOOST_TEST(snake_null.response.refresh_token.empty());
}

BOOST_AUTO_TEST_CASE(response_unknown_fields_are_ignored) {
  auto p = parse(200, R"({"accessToken":"a","idToken":{"x":[1,2]},"extra":null,"n":1.5})");
  BOOST_TEST(!p.ec);
  BOOST_TEST(p.response.access_token == "a");
}

BOOST_AUTO_TEST_CASE(response_surrounding_whitespace_is_fine) {
  auto p = parse(200, " \r\n\t{\"accessToken\" : \"a\"}\r\n ");
  BOOST_TEST(!p.ec);
  BOOST_TEST(p.response.access_token == "a");
}

// =============================================================================================
// parse_token_response: expiry

BOOST_AUTO_TEST_CASE(expiry_number_string_double) {
  const std::vector<std::pair<std::string_view, long long>> cases = {
      {"3600", 3600},
      {"\"3600\"", 3600},
      {"1", 1},
      {"\"1\"", 1},
      {"3600.0", 3600},
      {"86400", 86400},
      {"2", 2},
      {"1.0", 1},
      {"3600e0", 3600},
      {"3.6e3", 3600},
      // Fractions are cut, never rounded up: assuming a token lives longer than it does would
      // send an expired token.
      {"3599.9", 3599},
      {"1.5", 1},
  };
  for (const auto& [json, seconds] : cases) {
    BOOST_TEST_CONTEXT("expiresIn " << json) {
      auto p = parse_expiry(json);
      BOOST_TEST_REQUIRE(!p.ec);
      BOOST_TEST_REQUIRE(p.response.expires_in.has_value());
      BOOST_TEST(p.response.expires_in->count() == seconds);
    }
  }
  auto snake = parse(200, R"({"access_token":"tok","expires_in":"42"})");
  BOOST_TEST_REQUIRE(snake.response.expires_in.has_value());
  BOOST_TEST(snake.response.expires_in->count() == 42);
}

BOOST_AUTO_TEST_CASE(expiry_missing_or_null_is_none) {
  auto missing = parse(200, R"({"accessToken":"tok"})");
  BOOST_TEST_REQUIRE(!missing.ec);
  BOOST_TEST(!missing.response.expires_in.has_value());
  auto null = parse_expiry("null");
  BOOST_TEST_REQUIRE(!null.ec);
  BOOST_TEST(!null.response.expires_in.has_value());
}

BOOST_AUTO_TEST_CASE(expiry_invalid_values_are_malformed) {
  for (std::string_view json : {
           "0",         "-1",      "-3600",     "0.0",
           "-0.0",      "0.5",     "0.999",     "-1e30",
           "\"0\"",     "\"-1\"",  "\"-3600\"", "\"-99999999999999999999\"",
           "\"\"",      "\"abc\"", "\"12abc\"", "\"12 \"",
           "\" 12\"",   "\"+12\"", "\"1.5\"",   "\"1e3\"",
           "\"0x10\"",  "true",    "false",     "{}",
           "{\"s\":1}", "[]",      "[3600]",    "-9223372036854775808",
       }) {
    BOOST_TEST_CONTEXT("expiresIn " << json) {
      auto p = parse_expiry(json);
      BOOST_TEST(p.ec == errc::malformed_response);
      BOOST_TEST(p.ec.category().name() == std::string_view("nxsys.auth.client"));
      BOOST_TEST(!p.diag.client_message.empty());
      BOOST_TEST(p.diag.http_status == 200);
    }
  }
}

BOOST_AUTO_TEST_CASE(expiry_huge_values_are_clamped) {
  const long long max = proto::max_expires_in.count();
  BOOST_TEST(max == 10LL * 365 * 24 * 3600);
  for (std::string_view json : {
           "1e30",
           "1.7976931348623157e308",
           "\"99999999999999999999\"",
           "\"9223372036854775807\"",
           "9223372036854775807",
           "18446744073709551615",
           "99999999999999999999",
           "315360001",
           "\"315360001\"",
       }) {
    BOOST_TEST_CONTEXT("expiresIn " << json) {
      auto p = parse_expiry(json);
      BOOST_TEST_REQUIRE(!p.ec);
      BOOST_TEST_REQUIRE(p.response.expires_in.has_value());
      BOOST_TEST(p.response.expires_in->count() == max);
    }
  }
  // The limit itself and values just below are kept exactly.
  BOOST_TEST(parse_expiry("315360000").response.expires_in->count() == max);
  BOOST_TEST(parse_expiry("315359999").response.expires_in->count() == max - 1);
}

// =============================================================================================
// parse_token_response: malformed 2xx answers

BOOST_AUTO_TEST_CASE(response_without_access_token_is_malformed) {
  for (std::string_view body : {
           R"({})",
           R"({"accessToken":""})",
           R"({"access_token":""})",
           R"({"accessToken":null})",
           R"({"accessToken":123})",
           R"({"accessToken":true})",
           R"({"accessToken":["a"]})",
           R"({"accessToken":{"value":"a"}})",
           R"({"access_token":7})",
           R"({"token":"a"})",
           R"({"AccessToken":"a"})",
           R"({"refreshToken":"r","expiresIn":60})",
       }) {
    BOOST_TEST_CONTEXT(body) {
      auto p = parse(200, body);
      BOOST_TEST(p.ec == errc::malformed_response);
      BOOST_TEST(!p.diag.client_message.empty());
    }
  }
}

BOOST_AUTO_TEST_CASE(response_with_non_string_fields_is_malformed) {
  for (std::string_view body : {
           R"({"accessToken":"a","tokenType":1})",
           R"({"accessToken":"a","token_type":{}})",
           R"({"accessToken":"a","refreshToken":1})",
           R"({"accessToken":"a","refresh_token":false})",
           R"({"accessToken":"a","scope":["read"]})",
       }) {
    BOOST_TEST_CONTEXT(body) {
      BOOST_TEST(parse(200, body).ec == errc::malformed_response);
    }
  }
}

BOOST_AUTO_TEST_CASE(response_not_a_json_object_is_malformed) {
  for (std::string_view body : {
           "",
           " ",
           "{",
           "}",
           "not json",
           "<html><body>OK</body></html>",
           "null",
           "[]",
           R"([{"accessToken":"a"}])",
           "42",
           "3.5",
           R"("accessToken")",
           "true",
           R"({"accessToken":"a",})",
           R"({"accessToken":"a"} trailing)",
           R"({"accessToken":"a"}{"accessToken":"b"})",
           R"({'accessToken':'a'})",
           R"({accessToken:"a"})",
           "{\"accessToken\":\"a\"/*c*/}",
           "\xEF\xBB\xBF{\"accessToken\":\"a\"}",
           "{\"accessToken\":\"a\xFF\"}",  // not UTF-8
       }) {
    BOOST_TEST_CONTEXT("body '" << body << "'") {
      auto p = parse(200, body);
      BOOST_TEST(p.ec == errc::malformed_response);
      BOOST_TEST(!p.diag.client_message.empty());
    }
  }
  // A NUL after the object is trailing garbage too.
  BOOST_TEST((parse(200, std::string_view("{\"accessToken\":\"a\"}\0", 20)).ec ==
              errc::malformed_response));
  // The same for a 204, which has no body by definition.
  BOOST_TEST(parse(204, "").ec == errc::malformed_response);
  BOOST_TEST(parse(204, "").diag.http_status == 204);
}

// The token goes into "Authorization: <type> <token>": a space or control character would let a
// server inject header text, and non-ASCII is not a valid token68.
BOOST_AUTO_TEST_CASE(response_token_not_header_safe_is_malformed) {
  for (std::string_view body : {
           R"({"accessToken":"abc def"})",
           R"({"accessToken":" abc"})",
           R"({"accessToken":"abc "})",
           R"({"accessToken":"abc\r\nX-Injected: 1"})",
           R"({"accessToken":"abc\n"})",
           R"({"accessToken":"abc\t"})",
           R"({"accessToken":"a\u0000b"})",
           R"({"accessToken":"a\u0001b"})",
           R"({"accessToken":"a\u007fb"})",
           R"({"accessToken":"t\u00f6ken"})",
           R"({"accessToken":"tok","tokenType":"Bearer x"})",
           R"({"accessToken":"tok","tokenType":"Bearer\r\nX: 1"})",
           R"({"accessToken":"tok","tokenType":"B\u00e9arer"})",
       }) {
    BOOST_TEST_CONTEXT(body) {
      auto p = parse(200, body);
      BOOST_TEST(p.ec == errc::malformed_response);
      BOOST_TEST(!p.diag.client_message.empty());
    }
  }
  // Every visible ASCII character is fine (token68 and beyond).
  auto p = parse(200, R"({"accessToken":"A-z0._~+/=!#$%&'*^`|"})");
  BOOST_TEST_REQUIRE(!p.ec);
  BOOST_TEST(p.response.access_token == "A-z0._~+/=!#$%&'*^`|");
}

// On failure the caller's previous token must survive untouched.
BOOST_AUTO_TEST_CASE(response_failure_leaves_output_untouched) {
  proto::token_response out;
  out.access_token = "old";
  out.refresh_token = "old-refresh";
  out.expires_in = std::chrono::seconds(7);
  const std::vector<std::pair<unsigned, std::string_view>> answers = {
      {200, R"({"accessToken":"new","expiresIn":-1})"},
      {200, R"({"accessToken":"new","refreshToken":"r","tokenType":"a b"})"},
      {200, "nope"},
      {400, R"({"error":"invalid_grant"})"},
      {302, R"({"accessToken":"new"})"},
  };
  for (const auto& answer : answers) {
    diagnostics diag;
    BOOST_TEST(proto::parse_token_response(answer.first, answer.second, out, diag));
    BOOST_TEST(out.access_token == "old");
    BOOST_TEST(out.refresh_token == "old-refresh");
    BOOST_TEST(out.expires_in->count() == 7);
  }
}

// =============================================================================================
// parse_token_response: error answers

BOOST_AUTO_TEST_CASE(oauth_errors_map_to_their_errc) {
  const std::vector<std::pair<std::string, errc>> table = {
      {"invalid_request", errc::invalid_request},
      {"invalid_client", errc::invalid_client},
      {"invalid_grant", errc::invalid_grant},
      {"unauthorized_client", errc::unauthorized_client},
      {"unsupported_grant_type", errc::unsupported_grant_type},
      {"invalid_scope", errc::invalid_scope},
      {"server_error", errc::server_error},
      {"temporarily_unavailable", errc::temporarily_unavailable},
  };
  for (const auto& [name, code] : table) {
    for (unsigned status : {400u, 401u, 403u}) {
      BOOST_TEST_CONTEXT(name << " with HTTP " << status) {
        const std::string body =
            R"({"error":")" + name + R"(","error_description":"why )" + name + R"("})";
        auto p = parse(status, body);
        BOOST_TEST(p.ec == code);
        BOOST_TEST(p.ec.category().name() == std::string_view("nxsys.auth.oauth"));
        BOOST_TEST(p.diag.http_status == static_cast<int>(status));
        BOOST_TEST(p.diag.server_error == name);
        BOOST_TEST(p.diag.server_description == "why " + name);
      }
    }
  }
  // The usual 5xx pairings keep their own meaning too.
  BOOST_TEST(parse(500, R"({"error":"server_error"})").ec == errc::server_error);
  BOOST_TEST(parse(503, R"({"error":"temporarily_unavailable"})").ec ==
             errc::temporarily_unavailable);
}

BOOST_AUTO_TEST_CASE(oauth_error_without_description) {
  auto p = parse(400, R"({"error":"invalid_grant"})");
  BOOST_TEST(p.ec == errc::invalid_grant);
  BOOST_TEST(p.diag.server_error == "invalid_grant");
  BOOST_TEST(p.diag.server_description.empty());
  // A description that is not a string is dropped, the error still counts.
  auto q = parse(400, R"({"error":"invalid_client","error_description":{"text":"x"}})");
  BOOST_TEST(q.ec == errc::invalid_client);
  BOOST_TEST(q.diag.server_description.empty());
  // Other members of the error object (error_uri, ...) do not matter.
  auto r = parse(401, R"({"error_uri":"https://x","error":"invalid_client","extra":[1]})");
  BOOST_TEST(r.ec == errc::invalid_client);
}

BOOST_AUTO_TEST_CASE(unknown_oauth_error) {
  auto p = parse(400, R"({"error":"account_locked","error_description":"too many attempts"})");
  BOOST_TEST(p.ec == errc::unrecognized_error);
  BOOST_TEST(p.ec.category().name() == std::string_view("nxsys.auth.oauth"));
  BOOST_TEST(p.diag.server_error == "account_locked");
  BOOST_TEST(p.diag.server_description == "too many attempts");
  BOOST_TEST(p.diag.http_status == 400);
  // RFC 6749 error codes are case-sensitive.
  BOOST_TEST(parse(400, R"({"error":"INVALID_GRANT"})").ec == errc::unrecognized_error);
  BOOST_TEST(parse(400, R"({"error":""})").ec == errc::unrecognized_error);

  // From a 5xx the unknown error is the server failing, not an answer about our request.
  for (unsigned status : {500u, 502u, 503u, 599u}) {
    BOOST_TEST_CONTEXT("status " << status) {
      auto q = parse(status, R"({"error":"database_down","error_description":"later"})");
      BOOST_TEST(q.ec == errc::server_error);
      BOOST_TEST(q.diag.server_error == "database_down");
      BOOST_TEST(q.diag.server_description == "later");
      BOOST_TEST(q.diag.http_status == static_cast<int>(status));
    }
  }
}

BOOST_AUTO_TEST_CASE(server_failure_without_oauth_body) {
  for (std::string_view body : {"<html><body><h1>500 Internal Server Error</h1></body></html>", "",
                                "{}", R"({"error":42})", R"({"message":"boom"})", "[]", "null"}) {
    for (unsigned status : {500u, 502u, 503u, 504u}) {
      BOOST_TEST_CONTEXT(status << " '" << body << "'") {
        auto p = parse(status, body);
        BOOST_TEST(p.ec == errc::server_error);
        BOOST_TEST(p.diag.http_status == static_cast<int>(status));
        BOOST_TEST(p.diag.server_error.empty());
        BOOST_TEST(!p.diag.client_message.empty());
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(client_error_status_without_oauth_body) {
  for (std::string_view body : {"<html>Not Found</html>", "", "{}", R"({"error":null})",
                                R"({"error":["invalid_grant"]})", R"({"message":"no route"})"}) {
    for (unsigned status : {400u, 404u, 405u, 429u, 499u}) {
      BOOST_TEST_CONTEXT(status << " '" << body << "'") {
        auto p = parse(status, body);
        // 429 means "later": the client retries it, as it does a 503.
        BOOST_TEST(p.ec == (status == 429 ? make_error_code(errc::temporarily_unavailable)
                                          : make_error_code(errc::unexpected_status)));
        BOOST_TEST(p.ec.category().name() ==
                   std::string_view(status == 429 ? "nxsys.auth.oauth" : "nxsys.auth.client"));
        BOOST_TEST(p.diag.http_status == static_cast<int>(status));
        BOOST_TEST(!p.diag.client_message.empty());
      }
    }
  }
  // A 404 that does carry an OAuth error is that error.
  BOOST_TEST(parse(404, R"({"error":"invalid_client"})").ec == errc::invalid_client);
}

BOOST_AUTO_TEST_CASE(retry_after_seconds_and_http_dates) {
  using nxsys::auth::protocol::parse_retry_after;
  using std::chrono::seconds;
  // 2015-10-21 07:28:00 UTC
  const auto now = std::chrono::system_clock::time_point(seconds(1445412480));
  BOOST_TEST((parse_retry_after("120", now).value_or(seconds(-1)) == seconds(120)));
  BOOST_TEST((parse_retry_after(" 0 ", now).value_or(seconds(-1)) == seconds(0)));
  BOOST_TEST((parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now).value_or(seconds(-1)) ==
              seconds(30)));
  BOOST_TEST((parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now).value_or(seconds(-1)) ==
              seconds(0)));  // past
  BOOST_TEST((parse_retry_after("Thu, 22 Oct 2015 07:28:00 GMT", now).value_or(seconds(-1)) ==
              seconds(86400)));
  for (std::string_view bad :
       {"", "  ", "-1", "1.5", "12abc", "86401", "99999999999999999999999",
        "Wed, 21 Oct 2015 07:28:30 UTC", "Wed, 32 Oct 2015 07:28:30 GMT",
        "Wed, 21 Foo 2015 07:28:30 GMT", "Wed, 31 Feb 2015 07:28:30 GMT",
        "Wed, 21 Oct 2015 25:28:30 GMT", "Wed, 21 Oct 2015 07:28 GMT", "soon"}) {
    BOOST_TEST_CONTEXT("'" << bad << "'") {
      BOOST_TEST(!parse_retry_after(bad, now).has_value());
    }
  }
}

BOOST_AUTO_TEST_CASE(non_answer_statuses_are_unexpected) {
  // Redirects are never followed, even when the body looks like a token: the client secret
  // must not be re-sent to wherever a Location points.
  for (unsigned status : {300u, 301u, 302u, 303u, 304u, 307u, 308u, 399u}) {
    BOOST_TEST_CONTEXT("status " << status) {
      auto p = parse(status, R"({"accessToken":"tok","expiresIn":60})");
      BOOST_TEST(p.ec == errc::unexpected_status);
      BOOST_TEST(p.diag.http_status == static_cast<int>(status));
      BOOST_TEST(!p.diag.client_message.empty());
      BOOST_TEST(p.response.access_token.empty());
    }
  }
  for (unsigned status : {0u, 1u, 100u, 101u, 103u, 199u, 600u, 999u}) {
    BOOST_TEST_CONTEXT("status " << status) {
      auto p = parse(status, R"({"accessToken":"tok"})");
      BOOST_TEST(p.ec == errc::unexpected_status);
      BOOST_TEST(!p.diag.client_message.empty());
    }
    BOOST_TEST_CONTEXT("status " << status << " with an OAuth error") {
      BOOST_TEST(parse(status, R"({"error":"invalid_grant"})").ec == errc::unexpected_status);
    }
  }
}

// Text from the server ends up in what() and in logs: control characters could forge log lines
// or terminal escapes, so they are replaced, and overlong text is cut.
BOOST_AUTO_TEST_CASE(server_text_is_made_printable) {
  auto p = parse(
      400,
      R"({"error":"invalid_grant\r\nX","error_description":"line1\nline2\u001b[31m\t\u007f!"})");
  BOOST_TEST(p.diag.server_error == "invalid_grant??X");
  BOOST_TEST(p.diag.server_description ==
             "line1?line2?[31m??"
             "!");
  // The error value with control characters is not a known code.
  BOOST_TEST(p.ec == errc::unrecognized_error);

  // UTF-8 text is kept as it is.
  auto u = parse(
      400,
      R"({"error":"invalid_grant","error_description":"jeton p\u00e9rim\u00e9 \u65e5\u672c"})");
  BOOST_TEST(u.diag.server_description == "jeton p\xC3\xA9rim\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC");

  const std::string long_error(1000, 'e');
  const std::string long_description(5000, 'd');
  auto l = parse(400, R"({"error":")" + long_error + R"(","error_description":")" +
                          long_description + R"("})");
  BOOST_TEST(l.ec == errc::unrecognized_error);
  BOOST_TEST(l.diag.server_error == std::string(128, 'e') + "...");
  BOOST_TEST(l.diag.server_description == std::string(512, 'd') + "...");
}

// Redaction happens before the cut: a secret that straddles the 512-byte limit, or that the
// server echoes form-encoded, leaves no part behind.
BOOST_AUTO_TEST_CASE(secrets_in_server_text_are_redacted_before_it_is_cut) {
  const std::string rt = "RT-0123456789abcdef0123456789abcdef";
  const std::string secret = "a+b/c";
  const std::string encoded = proto::form_urlencode(secret);
  const std::string body = R"({"error":"invalid_grant","error_description":")" +
                           std::string(500, 'x') + " " + rt + R"("})";
  proto::token_response out;
  nxsys::auth::diagnostics diag;
  auto ec = proto::parse_token_response(400, body, out, diag, {rt, secret, encoded});
  BOOST_TEST(ec == errc::invalid_grant);
  BOOST_TEST(diag.server_description.find("RT-") == std::string::npos);
  BOOST_TEST(diag.server_description.find("[redac") != std::string::npos);

  nxsys::auth::diagnostics d2;
  proto::parse_token_response(
      401,
      R"({"error":"invalid_client","error_description":"got clientSecret=)" + encoded + R"("})",
      out, d2, {rt, secret, encoded});
  BOOST_TEST(d2.server_description == "got clientSecret=[redacted]");
}

BOOST_AUTO_TEST_CASE(error_codes_compare_with_errc) {
  auto p = parse(401, R"({"error":"invalid_client","error_description":"bad secret"})");
  BOOST_TEST(p.ec == nxsys::auth::errc::invalid_client);
  BOOST_TEST(p.ec != nxsys::auth::errc::invalid_grant);
  BOOST_TEST(p.ec != nxsys::auth::errc::invalid_config);
  BOOST_TEST(static_cast<bool>(p.ec));
}

BOOST_AUTO_TEST_SUITE_END()
