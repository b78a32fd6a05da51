// Text helpers: comparison, header safety, sanitising server text, redaction.
#include "text.hpp"

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
  if (cut) s = s.substr(0, max);
  out.reserve(s.size() + 3);
  for (unsigned char c : s) out.push_back(c < 0x20 || c == 0x7F ? '?' : static_cast<char>(c));
  if (cut) out += "...";
  return out;
}

void redact(std::string& s, std::initializer_list<std::string_view> secrets) {
  static constexpr std::string_view mask = "[redacted]";
  for (auto secret : secrets) {
    if (secret.empty()) continue;
    for (auto pos = s.find(secret); pos != std::string::npos; pos = s.find(secret, pos + mask.size()))
      s.replace(pos, secret.size(), mask);
  }
}

}  // namespace nxsys::auth::detail
