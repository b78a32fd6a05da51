// SPDX-License-Identifier: BSL-1.0
// RESP encoding and decoding through hiredis's formatter and reader.
#include "resp.hpp"

#include <hiredis/hiredis.h>
#include <hiredis/sds.h>
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

// hiredis's reply objects hold their text in allocations of their own.
void wipe_reply_object(redisReply& r) noexcept {
  if (r.str != nullptr) detail::wipe_bytes(r.str, r.len);
  for (std::size_t i = 0; i < r.elements; ++i) wipe_reply_object(*r.element[i]);
}

}  // namespace

detail::secret_string encode(const arguments& args) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lens;
  argv.reserve(args.items().size());
  lens.reserve(args.items().size());
  for (const auto& a : args.items()) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  char* cmd = nullptr;
  const int n =
      redisFormatCommandArgv(&cmd, static_cast<int>(argv.size()), argv.data(), lens.data());
  if (n < 0 || cmd == nullptr) throw std::bad_alloc();
  const auto size = static_cast<std::size_t>(n);
  detail::secret_string out(std::string(cmd, size));
  detail::wipe_bytes(cmd, size);
  redisFreeCommand(cmd);
  return out;
}

decoder::decoder() : r_(redisReaderCreate()) {
  if (r_ == nullptr) throw std::bad_alloc();
}

decoder::~decoder() {
  r_->pos = r_->len;  // nothing left to parse: all of it goes
  wipe_consumed();
  redisReaderFree(r_);
}

// The reader keeps the raw replies in its buffer: the parsed part before `pos`, and beyond
// `len` what its compaction (a memmove to the front) left behind. Both may hold tokens.
void decoder::wipe_consumed() noexcept {
  if (r_->buf == nullptr) return;
  detail::wipe_bytes(r_->buf, r_->pos);
  detail::wipe_bytes(r_->buf + r_->len, sdsalloc(r_->buf) - r_->len);
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
  wipe_reply_object(*r);
  freeReplyObject(r);
  wipe_consumed();
  return out;
}

}  // namespace nxsys::auth::redis
