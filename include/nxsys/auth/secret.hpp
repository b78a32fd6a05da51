// SPDX-License-Identifier: BSL-1.0
/// @file
/// nxsys::auth::secret, the type of the credentials in a configuration.
#ifndef NXSYS_AUTH_SECRET_HPP
#define NXSYS_AUTH_SECRET_HPP

#include <nxsys/auth/detail/wipe.hpp>

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

namespace nxsys::auth {

/// A credential held by a configuration (a client secret, a refresh token, a proxy password):
/// a string that overwrites its bytes whenever it lets go of them — on destruction, on
/// assignment (the old value) and on move (what the move leaves behind). The type carries the
/// rule, so a configuration copied, moved or dropped never leaves a credential in freed memory.
///
/// It converts implicitly from text, so designated initializers and assignments from strings
/// keep working (`cfg.client_secret = read_secret_file();`). Copies are allowed, since
/// configurations are values, and each copy is wiped in its turn. It is never printed: there is
/// no stream operator, and view() is the one way to read it.
class secret {
 public:
  /// An empty secret.
  secret() = default;
  /// Takes the bytes of `s`, then wipes what the move left in `s` (a short string keeps its
  /// bytes in its own buffer).
  /// @param s the credential; left empty
  secret(std::string&& s) noexcept : s_(std::move(s)) { detail::wipe_all(s); }  // NOLINT
  /// Copies `s`; the caller's copy is the caller's to wipe.
  /// @param s the credential
  secret(const std::string& s) : s_(s) {}  // NOLINT(google-explicit-constructor)
  /// Copies `s`; the caller's copy is the caller's to wipe.
  /// @param s the credential
  secret(std::string_view s) : s_(s) {}  // NOLINT(google-explicit-constructor)
  /// Copies the NUL-terminated `s` (a literal in a test, say).
  /// @param s the credential; not null
  secret(const char* s) : s_(s) {}  // NOLINT(google-explicit-constructor)
  /// A second copy, wiped in its own turn.
  secret(const secret&) = default;
  /// Takes the bytes of `o` and wipes what the move left in it.
  /// @param o the secret moved from; left empty
  secret(secret&& o) noexcept : s_(std::move(o.s_)) { detail::wipe_all(o.s_); }
  /// Wipes this value, then takes `o`'s (one operator for copy and move).
  /// @param o the secret assigned
  /// @return *this
  secret& operator=(secret o) noexcept {
    detail::wipe_all(s_);
    s_ = std::move(o.s_);
    return *this;  // `o` wipes what the move left in it
  }
  ~secret() { detail::wipe_all(s_); }

  /// @return the credential's bytes, valid until this secret changes or dies
  std::string_view view() const noexcept { return s_; }
  /// @return whether it is empty
  bool empty() const noexcept { return s_.empty(); }
  /// @return its length in bytes
  std::size_t size() const noexcept { return s_.size(); }
  /// Overwrites the bytes and empties it.
  void wipe() noexcept { detail::wipe_all(s_); }

  /// @param a a secret
  /// @param b text to compare with
  /// @return whether they hold the same bytes (not in constant time: for tests and
  ///   configuration checks, never to authenticate anyone)
  friend bool operator==(const secret& a, std::string_view b) noexcept { return a.s_ == b; }
  /// @param a a secret
  /// @param b text to compare with
  /// @return whether they hold the same bytes (not in constant time)
  friend bool operator==(const secret& a, const std::string& b) noexcept { return a.s_ == b; }
  /// @param a a secret
  /// @param b NUL-terminated text to compare with
  /// @return whether they hold the same bytes (not in constant time)
  friend bool operator==(const secret& a, const char* b) noexcept { return a.s_ == b; }
  /// @param a a secret
  /// @param b another
  /// @return whether they hold the same bytes (not in constant time)
  friend bool operator==(const secret& a, const secret& b) noexcept { return a.s_ == b.s_; }

 private:
  std::string s_;
};

}  // namespace nxsys::auth

#endif
