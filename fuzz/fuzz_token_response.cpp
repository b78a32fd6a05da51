// SPDX-License-Identifier: BSL-1.0
// libFuzzer target: protocol::parse_token_response on any status and body, with secrets the
// client "sent". Beyond not crashing (ASan+UBSan), it checks what the client relies on:
//   - a success carries a non-empty access token fit for an Authorization header, a token type,
//     and an expiry in (0, max_expires_in];
//   - a failure is an error code of the library's categories;
//   - no secret appears in any diagnostic text, however the server echoes it.
// Input: 2 bytes status, 1 byte secret count (low 2 bits), 16 bytes per secret, then the body.
#include <nxsys/auth/protocol.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace protocol = nxsys::auth::protocol;

void check(bool ok) {
  if (!ok) std::abort();
}

bool header_safe(std::string_view s) {
  for (unsigned char c : s)
    if (c < 0x21 || c > 0x7e) return false;
  return true;
}

// Real secrets are long random strings: 16 characters from [A-Za-z0-9], which cannot occur in
// the library's own fixed messages or in "[redacted]".
std::string make_secret(const std::uint8_t* p) {
  static constexpr std::string_view alphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::string s;
  for (int i = 0; i < 16; ++i) s += alphabet[p[i] % alphabet.size()];
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  const unsigned status = 100 + (static_cast<unsigned>(data[0]) << 8 | data[1]) % 500;
  const std::size_t count = data[2] & 3u;
  std::size_t at = 3;
  std::vector<std::string> secrets;
  for (std::size_t i = 0; i < count && at + 16 <= size; ++i, at += 16)
    secrets.push_back(make_secret(data + at));
  secrets.resize(3);  // empty ones are ignored by the parser
  const std::string_view body(reinterpret_cast<const char*>(data + at), size - at);

  protocol::token_response out;
  nxsys::auth::diagnostics diag;
  const auto ec =
      protocol::parse_token_response(status, body, out, diag, {secrets[0], secrets[1], secrets[2]});
  if (!ec) {
    check(status >= 200 && status < 300);
    check(!out.access_token.empty() && header_safe(out.access_token));
    check(!out.token_type.empty() && header_safe(out.token_type));
    if (out.expires_in)
      check(out.expires_in->count() > 0 && *out.expires_in <= protocol::max_expires_in);
  } else {
    const auto& cat = ec.category();
    check(std::string_view(cat.name()).rfind("nxsys.auth.", 0) == 0);
  }
  for (const auto& s : secrets) {
    if (s.empty()) continue;
    check(diag.server_error.find(s) == std::string::npos);
    check(diag.server_description.find(s) == std::string::npos);
    check(diag.client_message.find(s) == std::string::npos);
  }
  return 0;
}
