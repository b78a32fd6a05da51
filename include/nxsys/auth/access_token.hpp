// SPDX-License-Identifier: BSL-1.0
/// @file
/// The access token handed to callers: an immutable, cheaply copied snapshot.
#ifndef NXSYS_AUTH_ACCESS_TOKEN_HPP
#define NXSYS_AUTH_ACCESS_TOKEN_HPP

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

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
/// The immutable snapshot behind an access_token and its copies, with their reference count.
struct token_block {
  explicit token_block(token_data d) : data(std::move(d)) {}
  token_block(const token_block&) = delete;
  token_block& operator=(const token_block&) = delete;
  /// Handles alive, plus any references a client took ahead for its fast path.
  mutable std::atomic<std::uint64_t> refs{1};
  const token_data data;
};

/// Tag: the handle takes over a reference already counted.
struct adopt_reference_t {
  explicit adopt_reference_t() = default;
};
inline constexpr adopt_reference_t adopt_reference{};
}  // namespace detail

/// An access token. Copying shares the immutable data (one atomic count, kept inline); a
/// default-constructed one is empty. Copies may be made, moved and dropped on any thread.
class access_token {
 public:
  /// An empty token.
  access_token() = default;
  /// A token holding a copy of `d`. The library makes them; an application gets its tokens
  /// from client::token() or client::async_token().
  /// @param d the snapshot; nullptr makes an empty token
  explicit access_token(const std::shared_ptr<const detail::token_data>& d)
      : b_(d ? new detail::token_block(*d) : nullptr) {}
  /// A token holding `d`.
  /// @param d the snapshot's data
  explicit access_token(detail::token_data d) : b_(new detail::token_block(std::move(d))) {}
  /// Takes over one reference of `b` that the caller counted (the library's own use).
  /// @param b the block; nullptr makes an empty token
  access_token(const detail::token_block* b, detail::adopt_reference_t) noexcept : b_(b) {}

  /// Shares `o`'s snapshot.
  /// @param o the token to copy
  access_token(const access_token& o) noexcept : b_(o.b_) {
    if (b_ != nullptr) b_->refs.fetch_add(1, std::memory_order_relaxed);
  }
  /// Takes `o`'s snapshot; `o` is left empty.
  /// @param o the token to move from
  access_token(access_token&& o) noexcept : b_(o.b_) { o.b_ = nullptr; }
  /// Shares `o`'s snapshot, dropping this one's.
  /// @param o the token to copy
  /// @return *this
  access_token& operator=(const access_token& o) noexcept {
    access_token(o).swap(*this);
    return *this;
  }
  /// Takes `o`'s snapshot, dropping this one's; `o` is left empty.
  /// @param o the token to move from
  /// @return *this
  access_token& operator=(access_token&& o) noexcept {
    access_token(std::move(o)).swap(*this);
    return *this;
  }
  ~access_token() {
    if (b_ != nullptr && b_->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete b_;
  }
  /// Exchanges the snapshots of two tokens.
  /// @param o the other token
  void swap(access_token& o) noexcept { std::swap(b_, o.b_); }

  /// The bearer credential. Treat as a secret: never log it.
  /// @return the token; "" when empty. The view stays valid while this token or a copy lives.
  std::string_view value() const noexcept { return b_ ? std::string_view(b_->data.value) : ""; }
  /// The token type, e.g. "Bearer", as the server sent it ("Bearer" when it sent none).
  /// @return the type; "" when empty. Valid while this token or a copy lives.
  std::string_view type() const noexcept { return b_ ? std::string_view(b_->data.type) : ""; }
  /// When the token stops being valid, on the client's clock.
  /// @return the expiry on steady_clock (client_config::clock's timeline when one is set); the
  ///   epoch when empty
  std::chrono::steady_clock::time_point expires_at() const noexcept {
    return b_ ? b_->data.expires_at : std::chrono::steady_clock::time_point{};
  }
  /// Which refresh of the issuing client produced this token (1 for the first). Tokens with the
  /// same serial from the same client are the same token.
  /// @return the serial; 0 when empty
  std::uint64_t serial() const noexcept { return b_ ? b_->data.serial : 0; }

  /// The answer's `scope` ("" when it named none: then it is the scope requested).
  /// @return the scope; "" when empty. Valid while this token or a copy lives.
  std::string_view scope() const noexcept { return b_ ? std::string_view(b_->data.scope) : ""; }
  /// The answer's other members (id_token, custom fields) as sent, or nullptr when none.
  /// Include `<boost/json/object.hpp>` to read it.
  /// @return the members, valid while this token or a copy lives; nullptr when the answer had
  ///   none or the token is empty
  const boost::json::object* extra() const noexcept { return b_ ? b_->data.extra.get() : nullptr; }

  /// @return true for a default-constructed token (no token at all)
  bool empty() const noexcept { return b_ == nullptr; }
  /// The shared snapshot itself (for the library's own copies).
  /// @return the snapshot; nullptr when empty
  const detail::token_block* block() const noexcept { return b_; }
  /// @return !empty()
  explicit operator bool() const noexcept { return b_ != nullptr; }

 private:
  const detail::token_block* b_ = nullptr;
};

}  // namespace nxsys::auth

#endif
