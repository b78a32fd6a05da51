// SPDX-License-Identifier: BSL-1.0
// Redis protocol (RESP2) without I/O: commands encoded with hiredis's formatter, replies decoded
// with hiredis's reader into plain values. Internal to nxsys::auth_redis.
#ifndef NXSYS_AUTH_LIB_REDIS_RESP_HPP
#define NXSYS_AUTH_LIB_REDIS_RESP_HPP

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "secret_string.hpp"

struct redisReader;

namespace nxsys::auth::redis {

/// One reply, owned (the reader's objects are freed at once). A reply may carry the stored
/// state, so its text is overwritten whenever the reply lets go of it (destruction, assignment,
/// move).
struct reply {
  enum class kind { nil, integer, string, status, error, array };
  kind type = kind::nil;
  long long integer = 0;
  std::string str;  ///< string, status and error replies
  std::vector<reply> elements;

  bool is_error() const noexcept { return type == kind::error; }
  bool is_ok() const noexcept { return type == kind::status && str == "OK"; }

  reply() = default;
  reply(const reply&) = default;
  reply(reply&& o) noexcept
      : type(o.type), integer(o.integer), str(std::move(o.str)), elements(std::move(o.elements)) {
    detail::wipe_all(o.str);
  }
  // One operator for copy and move, as in stored_tokens: `o` wipes what it keeps.
  reply& operator=(reply o) noexcept {
    detail::wipe_all(str);
    type = o.type;
    integer = o.integer;
    str = std::move(o.str);
    elements = std::move(o.elements);
    return *this;
  }
  ~reply() { detail::wipe_all(str); }
};

/// A command's arguments. They may hold tokens or the password, so they are overwritten when
/// they go. Move-only: moving the vector moves no string, so nothing is left behind.
class arguments {
 public:
  arguments() = default;
  explicit arguments(std::vector<std::string> v) noexcept : v_(std::move(v)) {}
  arguments(arguments&&) noexcept = default;
  arguments& operator=(arguments&& o) noexcept {
    if (this != &o) {
      wipe();
      v_ = std::move(o.v_);
    }
    return *this;
  }
  arguments(const arguments&) = delete;
  arguments& operator=(const arguments&) = delete;
  ~arguments() { wipe(); }

  const std::vector<std::string>& items() const noexcept { return v_; }

 private:
  void wipe() noexcept {
    for (auto& s : v_) detail::wipe_all(s);
  }
  std::vector<std::string> v_;
};

/// A command's arguments, sized once (growing the vector would move short strings and leave
/// their bytes behind). Not a braced list at the call: GCC 12 miscompiles
/// std::initializer_list temporaries inside co_await expressions.
template <class... Args>
arguments command(Args&&... args) {
  std::vector<std::string> v;
  v.reserve(sizeof...(Args));
  (v.emplace_back(std::forward<Args>(args)), ...);
  return arguments(std::move(v));
}

/// The RESP encoding of one command ("*3\r\n$3\r\nSET\r\n...").
detail::secret_string encode(const arguments& args);

/// Incremental reply decoder: feed bytes as they arrive, take complete replies out.
class decoder {
 public:
  decoder();
  ~decoder();
  decoder(const decoder&) = delete;
  decoder& operator=(const decoder&) = delete;

  /// False when the bytes are not RESP (the connection must be dropped).
  bool feed(std::string_view bytes);
  /// The next complete reply, if any; nullopt also on a protocol error (see failed()).
  std::optional<reply> next();
  bool failed() const noexcept { return failed_; }

 private:
  /// Overwrites the reader's buffer except the bytes it has yet to parse.
  void wipe_consumed() noexcept;

  redisReader* r_;
  bool failed_ = false;
};

}  // namespace nxsys::auth::redis

#endif
