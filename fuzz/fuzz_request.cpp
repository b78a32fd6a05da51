// SPDX-License-Identifier: BSL-1.0
// libFuzzer target: the request side. build_refresh_body must round-trip any credentials
// through application/x-www-form-urlencoded exactly (four fields, in the seed's order, using
// only unreserved bytes, '+' and %XX); parse_token_url must accept only what the client can
// use, and never plain http to a non-loopback host without allow_insecure_http.
// Input: 1 byte of flags, then NUL-separated: URL, refresh token, client id, client secret.
#include <nxsys/auth/protocol.hpp>

#include <openssl/evp.h>

#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

namespace protocol = nxsys::auth::protocol;

void check(bool ok) {
  if (!ok) std::abort();
}

int hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;  // the encoder writes upper-case hex only
}

// A strict decoder: anything the encoder should never produce fails the check.
std::string form_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '+') {
      out += ' ';
    } else if (c == '%') {
      check(i + 2 < s.size());
      const int hi = hex(s[i + 1]), lo = hex(s[i + 2]);
      check(hi >= 0 && lo >= 0);
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      const auto u = static_cast<unsigned char>(c);
      check(std::isalnum(u) || c == '-' || c == '.' || c == '_' || c == '*');
      out += c;
    }
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> parse_form(std::string_view body) {
  std::vector<std::pair<std::string, std::string>> fields;
  while (true) {
    const auto amp = body.find('&');
    const auto field = body.substr(0, amp);
    const auto eq = field.find('=');
    check(eq != std::string_view::npos);
    fields.emplace_back(form_decode(field.substr(0, eq)), form_decode(field.substr(eq + 1)));
    if (amp == std::string_view::npos) break;
    body.remove_prefix(amp + 1);
  }
  return fields;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const bool allow_insecure = (data[0] & 1) != 0;
  std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  std::string parts[4];
  for (auto& p : parts) {
    const auto nul = rest.find('\0');
    p = std::string(rest.substr(0, nul));
    rest = nul == std::string_view::npos ? std::string_view{} : rest.substr(nul + 1);
  }

  protocol::endpoint ep;
  nxsys::auth::diagnostics diag;
  if (!protocol::parse_token_url(parts[0], allow_insecure, ep, diag)) {
    check(!ep.host.empty());
    check(!ep.target.empty() && ep.target.front() == '/');
    check(!ep.port.empty());
    for (char c : ep.port) check(c >= '0' && c <= '9');
    check(ep.tls || ep.loopback || allow_insecure);
  }

  const auto body = protocol::build_refresh_body(parts[1], parts[2], parts[3]);
  const auto fields = parse_form(body);
  check(fields.size() == 4);
  check(fields[0] == std::make_pair(std::string("grantType"), std::string("refresh_token")));
  check(fields[1] == std::make_pair(std::string("refreshToken"), parts[1]));
  check(fields[2] == std::make_pair(std::string("clientId"), parts[2]));
  check(fields[3] == std::make_pair(std::string("clientSecret"), parts[3]));

  // RFC 6749 with client_secret_basic: the body carries no credential, and the Basic header
  // decodes (base64, then form-decoding each side of the first ':') to exactly id and secret.
  const auto r =
      protocol::build_refresh_request(nxsys::auth::dialect::rfc6749,
                                      nxsys::auth::client_authentication::http_basic, parts[1],
                                      parts[2], parts[3], (data[0] & 2) != 0 ? "read write" : "");
  const auto rfields = parse_form(r.body);
  check(rfields.size() == ((data[0] & 2) != 0 ? 3u : 2u));
  check(rfields[0] == std::make_pair(std::string("grant_type"), std::string("refresh_token")));
  check(rfields[1] == std::make_pair(std::string("refresh_token"), parts[1]));
  check(r.authorization.rfind("Basic ", 0) == 0);
  const std::string b64 = r.authorization.substr(6);
  std::string plain(b64.size() / 4 * 3 + 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(plain.data()),
                          reinterpret_cast<const unsigned char*>(b64.data()),
                          static_cast<int>(b64.size()));
  check(n >= 0);
  for (std::size_t i = b64.size(); i > 0 && b64[i - 1] == '='; --i) --n;
  plain.resize(static_cast<std::size_t>(n));
  const auto colon = plain.find(':');
  check(colon != std::string::npos);
  check(form_decode(std::string_view(plain).substr(0, colon)) == parts[2]);
  check(form_decode(std::string_view(plain).substr(colon + 1)) == parts[3]);
  return 0;
}
