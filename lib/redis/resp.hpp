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

struct redisReader;

namespace nxsys::auth::redis {

/// One reply, owned (the reader's objects are freed at once).
struct reply {
  enum class kind { nil, integer, string, status, error, array };
  kind type = kind::nil;
  long long integer = 0;
  std::string str;  ///< string, status and error replies
  std::vector<reply> elements;

  bool is_error() const noexcept { return type == kind::error; }
  bool is_ok() const noexcept { return type == kind::status && str == "OK"; }
};

/// A command's arguments. (Not a braced list at the call: GCC 12 miscompiles
/// std::initializer_list temporaries inside co_await expressions.)
template <class... Args>
std::vector<std::string> command(Args&&... args) {
  std::vector<std::string> v;
  v.reserve(sizeof...(Args));
  (v.emplace_back(std::forward<Args>(args)), ...);
  return v;
}

/// The RESP encoding of one command ("*3\r\n$3\r\nSET\r\n...").
std::string encode(const std::vector<std::string>& args);

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
  redisReader* r_;
  bool failed_ = false;
};

}  // namespace nxsys::auth::redis

#endif
