// SPDX-License-Identifier: BSL-1.0
// Small text helpers shared by the library's sources (not installed).
#ifndef NXSYS_AUTH_LIB_TEXT_HPP
#define NXSYS_AUTH_LIB_TEXT_HPP

#include <initializer_list>
#include <string>
#include <string_view>

namespace nxsys::auth::detail {

bool iequals(std::string_view a, std::string_view b) noexcept;

/// Visible ASCII only (0x21..0x7E): what may stand in an Authorization header as one token.
bool is_header_token(std::string_view s) noexcept;

/// Text from a server made safe to show: control bytes become '?', at most `max` bytes kept.
std::string printable(std::string_view s, std::size_t max);

/// Replaces every occurrence of each non-empty secret in `s` with "[redacted]", so that a server
/// echoing what it was sent cannot leak a credential into messages or logs.
void redact(std::string& s, std::initializer_list<std::string_view> secrets);

}  // namespace nxsys::auth::detail

#endif
