// SPDX-License-Identifier: BSL-1.0
// A string that holds a credential: move-only, and overwritten whenever it lets go of its
// bytes (destruction, assignment, clear, move). The type carries the rule, so no call site has
// to remember a wipe. Internal.
#ifndef NXSYS_AUTH_LIB_SECRET_STRING_HPP
#define NXSYS_AUTH_LIB_SECRET_STRING_HPP

#include "nxsys/auth/detail/wipe.hpp"

#include <string>
#include <string_view>
#include <utility>

namespace nxsys::auth::detail {

/// Overwrites `n` bytes at `p`: for I/O buffers that held credentials and are kept or freed.
void wipe_bytes(void* p, std::size_t n) noexcept;

class secret_string {
 public:
  secret_string() = default;
  /// Takes the bytes of `s` and wipes what is left behind in it.
  explicit secret_string(std::string&& s) noexcept : s_(std::move(s)) { wipe_all(s); }
  explicit secret_string(std::string_view s) : s_(s) {}
  secret_string(secret_string&& o) noexcept : s_(std::move(o.s_)) { wipe_all(o.s_); }
  secret_string& operator=(secret_string&& o) noexcept {
    if (this != &o) {
      wipe_all(s_);
      s_ = std::move(o.s_);
      wipe_all(o.s_);
    }
    return *this;
  }
  secret_string(const secret_string&) = delete;
  secret_string& operator=(const secret_string&) = delete;
  ~secret_string() { wipe_all(s_); }

  /// An explicit copy: copies of a secret are made on purpose, never by accident.
  secret_string copy() const { return secret_string(std::string_view(s_)); }

  const std::string& str() const noexcept { return s_; }
  std::string_view view() const noexcept { return s_; }
  bool empty() const noexcept { return s_.empty(); }
  std::size_t size() const noexcept { return s_.size(); }
  /// For filling in place (a read buffer): the size stays, so nothing is reallocated.
  char* data() noexcept { return s_.data(); }
  void clear() noexcept { wipe_all(s_); }

  friend bool operator==(const secret_string& a, const secret_string& b) noexcept {
    return a.s_ == b.s_;
  }
  friend bool operator==(const secret_string& a, std::string_view b) noexcept { return a.s_ == b; }

 private:
  std::string s_;
};

}  // namespace nxsys::auth::detail

#endif
