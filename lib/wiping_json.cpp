// SPDX-License-Identifier: BSL-1.0
// JSON memory that is overwritten before it is freed.
#include "wiping_json.hpp"

#include "secret_string.hpp"

#include <boost/json/memory_resource.hpp>
#include <boost/json/parser.hpp>

#include <new>

namespace nxsys::auth::detail {
namespace json = boost::json;

namespace {

// Boost.JSON 1.81 frees with another alignment than it allocated with (ASan reports it), so
// alignment is left to plain operator new, which suffices for everything it stores.
class wiping_resource final : public json::memory_resource {
  void* do_allocate(std::size_t n, std::size_t align) override {
    if (align > __STDCPP_DEFAULT_NEW_ALIGNMENT__) throw std::bad_alloc();
    return ::operator new(n);
  }
  void do_deallocate(void* p, std::size_t n, std::size_t) override {
    wipe_bytes(p, n);
    ::operator delete(p);
  }
  bool do_is_equal(const json::memory_resource& o) const noexcept override { return this == &o; }
};

}  // namespace

json::storage_ptr wiping_storage() {
  static wiping_resource r;
  return json::storage_ptr(&r);
}

json::value parse_json_wiping(std::string_view text, boost::system::error_code& ec) {
  // The parser's working stack holds partly parsed strings too: from the same memory.
  json::parser p(wiping_storage());
  p.reset(wiping_storage());
  p.write(text.data(), text.size(), ec);
  if (ec) return json::value(wiping_storage());
  return p.release();
}

}  // namespace nxsys::auth::detail
