// SPDX-License-Identifier: BSL-1.0
// Text helpers: comparison, header safety, sanitising server text, redaction.
#include "text.hpp"

#include "secret_string.hpp"

#include <openssl/crypto.h>

#include <algorithm>
#include <utility>
#include <vector>

namespace nxsys::auth::detail {

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

bool is_header_token(std::string_view s) noexcept {
  for (unsigned char c : s)
    if (c < 0x21 || c > 0x7E) return false;
  return true;
}

std::string printable(std::string_view s, std::size_t max) {
  std::string out;
  const bool cut = s.size() > max;
  if (cut) {
    // Never split a UTF-8 sequence: step back over continuation bytes (10xxxxxx).
    std::size_t n = max;
    while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
    s = s.substr(0, n);
  }
  out.reserve(s.size() + 3);
  for (unsigned char c : s) out.push_back(c < 0x20 || c == 0x7F ? '?' : static_cast<char>(c));
  if (cut) out += "...";
  return out;
}

void redact(std::string& s, std::initializer_list<std::string_view> secrets) {
  // Every occurrence of every secret is found in the original text first, so that overlapping
  // occurrences and secrets contained in one another leave no byte behind.
  std::vector<std::pair<std::size_t, std::size_t>> ranges;
  for (auto secret : secrets) {
    if (secret.empty()) continue;
    for (auto pos = s.find(secret); pos != std::string::npos; pos = s.find(secret, pos + 1))
      ranges.emplace_back(pos, pos + secret.size());
  }
  if (ranges.empty()) return;
  std::sort(ranges.begin(), ranges.end());
  std::string out;
  out.reserve(s.size());
  std::size_t copied = 0;
  for (std::size_t i = 0; i < ranges.size();) {
    auto [begin, end] = ranges[i];
    // Overlapping occurrences become one mask; adjacent ones stay separate.
    for (++i; i < ranges.size() && ranges[i].first < end; ++i)
      end = std::max(end, ranges[i].second);
    out.append(s, copied, begin - copied);
    out += "[redacted]";
    copied = end;
  }
  out.append(s, copied, std::string::npos);
  s = std::move(out);
}

void wipe_bytes(void* p, std::size_t n) noexcept {
  if (n != 0) OPENSSL_cleanse(p, n);
}

void wipe_all(std::string& s) noexcept {
  wipe_bytes(s.data(), s.capacity());
  s.clear();
}

}  // namespace nxsys::auth::detail
