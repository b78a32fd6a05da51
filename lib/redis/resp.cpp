// SPDX-License-Identifier: BSL-1.0
// RESP encoding and decoding through hiredis's formatter and reader.
#include "resp.hpp"

#include <hiredis/hiredis.h>
#include <stdexcept>

namespace nxsys::auth::redis {
namespace {

reply convert(const redisReply& r) {
  reply out;
  switch (r.type) {
    case REDIS_REPLY_INTEGER:
      out.type = reply::kind::integer;
      out.integer = r.integer;
      break;
    case REDIS_REPLY_STRING:
      out.type = reply::kind::string;
      out.str.assign(r.str, r.len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = reply::kind::status;
      out.str.assign(r.str, r.len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = reply::kind::error;
      out.str.assign(r.str, r.len);
      break;
    case REDIS_REPLY_ARRAY:
      out.type = reply::kind::array;
      out.elements.reserve(r.elements);
      for (std::size_t i = 0; i < r.elements; ++i) out.elements.push_back(convert(*r.element[i]));
      break;
    default:
      out.type = reply::kind::nil;
  }
  return out;
}

}  // namespace

std::string encode(const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lens;
  argv.reserve(args.size());
  lens.reserve(args.size());
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  char* cmd = nullptr;
  const int n =
      redisFormatCommandArgv(&cmd, static_cast<int>(args.size()), argv.data(), lens.data());
  if (n < 0 || cmd == nullptr) throw std::bad_alloc();
  std::string out(cmd, static_cast<std::size_t>(n));
  redisFreeCommand(cmd);
  return out;
}

decoder::decoder() : r_(redisReaderCreate()) {
  if (r_ == nullptr) throw std::bad_alloc();
}

decoder::~decoder() {
  redisReaderFree(r_);
}

bool decoder::feed(std::string_view bytes) {
  if (failed_) return false;
  if (redisReaderFeed(r_, bytes.data(), bytes.size()) != REDIS_OK) failed_ = true;
  return !failed_;
}

std::optional<reply> decoder::next() {
  if (failed_) return std::nullopt;
  void* raw = nullptr;
  if (redisReaderGetReply(r_, &raw) != REDIS_OK) {
    failed_ = true;
    return std::nullopt;
  }
  if (raw == nullptr) return std::nullopt;
  auto* r = static_cast<redisReply*>(raw);
  reply out = convert(*r);
  freeReplyObject(r);
  return out;
}

}  // namespace nxsys::auth::redis
