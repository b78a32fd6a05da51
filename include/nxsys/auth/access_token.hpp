// SPDX-License-Identifier: BSL-1.0
/// @file
/// The access token handed to callers: an immutable, cheaply copied snapshot.
#ifndef NXSYS_AUTH_ACCESS_TOKEN_HPP
#define NXSYS_AUTH_ACCESS_TOKEN_HPP

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace boost::json {
class object;
}

namespace nxsys::auth {

namespace detail {
struct token_data {
  std::string value;
  std::string type;
  std::chrono::steady_clock::time_point expires_at;
  std::uint64_t serial = 0;  ///< which refresh produced it (1, 2, ...): equal serials, same token
  std::string scope;
  std::shared_ptr<const boost::json::object> extra;
};
}  // namespace detail

/// An access token. Copying shares the immutable data; a default-constructed one is empty.
class access_token {
 public:
  /// An empty token.
  access_token() = default;
  /// A token sharing the snapshot `d`. The library makes them; an application gets its tokens
  /// from client::token() or client::async_token().
  /// @param d the snapshot; nullptr makes an empty token
  explicit access_token(std::shared_ptr<const detail::token_data> d) noexcept : d_(std::move(d)) {}

  /// The bearer credential. Treat as a secret: never log it.
  /// @return the token; "" when empty. The view stays valid while this token or a copy lives.
  std::string_view value() const noexcept { return d_ ? std::string_view(d_->value) : ""; }
  /// The token type, e.g. "Bearer", as the server sent it ("Bearer" when it sent none).
  /// @return the type; "" when empty. Valid while this token or a copy lives.
  std::string_view type() const noexcept { return d_ ? std::string_view(d_->type) : ""; }
  /// When the token stops being valid, on the client's clock.
  /// @return the expiry on steady_clock (client_config::clock's timeline when one is set); the
  ///   epoch when empty
  std::chrono::steady_clock::time_point expires_at() const noexcept {
    return d_ ? d_->expires_at : std::chrono::steady_clock::time_point{};
  }
  /// Which refresh of the issuing client produced this token (1 for the first). Tokens with the
  /// same serial from the same client are the same token.
  /// @return the serial; 0 when empty
  std::uint64_t serial() const noexcept { return d_ ? d_->serial : 0; }

  /// The answer's `scope` ("" when it named none: then it is the scope requested).
  /// @return the scope; "" when empty. Valid while this token or a copy lives.
  std::string_view scope() const noexcept { return d_ ? std::string_view(d_->scope) : ""; }
  /// The answer's other members (id_token, custom fields) as sent, or nullptr when none.
  /// Include `<boost/json/object.hpp>` to read it.
  /// @return the members, valid while this token or a copy lives; nullptr when the answer had
  ///   none or the token is empty
  const boost::json::object* extra() const noexcept { return d_ ? d_->extra.get() : nullptr; }

  /// @return true for a default-constructed token (no token at all)
  bool empty() const noexcept { return !d_; }
  /// The shared snapshot itself (for the library's own copies).
  /// @return the snapshot; nullptr when empty
  const std::shared_ptr<const detail::token_data>& data() const noexcept { return d_; }
  /// @return !empty()
  explicit operator bool() const noexcept { return d_ != nullptr; }

 private:
  std::shared_ptr<const detail::token_data> d_;
};

}  // namespace nxsys::auth

#endif
