// SPDX-License-Identifier: BSL-1.0
// The types that hold credentials overwrite them whenever they let go of their bytes:
// stored_tokens, protocol::token_response, protocol::refresh_request (public) and
// secret_string (internal). Checked on short secrets, which live inside the object itself
// (the short-string buffer), so what is left behind can be read without touching freed memory.
#include <nxsys/auth/config.hpp>
#include <nxsys/auth/protocol.hpp>
#include <nxsys/auth/stored_tokens.hpp>

#include "secret_string.hpp"
#include "wiping_json.hpp"

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstring>
#include <new>
#include <string>
#include <string_view>
#include <utility>

namespace {

namespace na = nxsys::auth;
namespace proto = nxsys::auth::protocol;

// Short enough for the short-string buffer of libstdc++ and libc++.
constexpr std::string_view secret = "s3cr3t-9Kq";
constexpr std::string_view other = "x";

bool bytes_contain(const void* p, std::size_t n, std::string_view needle) {
  const auto* b = static_cast<const char*>(p);
  return std::search(b, b + n, needle.begin(), needle.end()) != b + n;
}

// What a shorter value written over the secret leaves of it.
constexpr std::string_view tail = secret.substr(2);

template <class T>
bool holds_secret(const T& t) {
  return bytes_contain(&t, sizeof t, tail);
}

// The secret in every credential field of each type.
na::stored_tokens make_stored(std::string_view s) {
  return na::stored_tokens(std::string(s), std::string(s));
}
proto::token_response make_response(std::string_view s) {
  proto::token_response r;
  r.access_token = s;
  r.refresh_token = s;
  return r;
}
proto::refresh_request make_request(std::string_view s) {
  proto::refresh_request r;
  r.body = s;
  r.authorization = s;
  return r;
}

na::secret make_secret(std::string_view s) {
  return na::secret(s);
}
na::client_config make_config(std::string_view s) {
  na::client_config c;
  c.client_secret = s;
  c.refresh_token = std::string(s);
  return c;
}

// What an object leaves in its own storage once destroyed.
template <class T, class Make>
bool trace_after_destruction(Make make) {
  alignas(T) unsigned char storage[sizeof(T)];
  T* p = ::new (static_cast<void*>(storage)) T(make(secret));
  BOOST_REQUIRE(holds_secret(*p));  // the check can see the secret when it is there
  p->~T();
  return bytes_contain(storage, sizeof storage, tail);
}

template <class T, class Make>
void check_type(Make make) {
  BOOST_TEST(!trace_after_destruction<T>(make));

  T from = make(secret);
  T to(std::move(from));
  BOOST_TEST(!holds_secret(from));  // a move leaves nothing behind
  BOOST_TEST(holds_secret(to));

  T assigned = make(secret);
  assigned = make(other);  // a shorter value would leave the old one's tail
  BOOST_TEST(!holds_secret(assigned));

  T move_assigned = make(other);
  T source = make(secret);
  move_assigned = std::move(source);
  BOOST_TEST(!holds_secret(source));
  BOOST_TEST(holds_secret(move_assigned));

  const T original = make(secret);
  T copy_assigned = make(secret);
  copy_assigned = make(other);
  copy_assigned = original;  // a copy is a copy: both hold it
  BOOST_TEST(holds_secret(copy_assigned));
  BOOST_TEST(holds_secret(original));
}

}  // namespace

BOOST_AUTO_TEST_SUITE(wiping)

BOOST_AUTO_TEST_CASE(stored_tokens_wipes_what_it_lets_go) {
  check_type<na::stored_tokens>(make_stored);
  na::stored_tokens t = make_stored(secret);
  t.wipe();
  BOOST_TEST(t.refresh_token.empty());
  BOOST_TEST(!holds_secret(t));
}

BOOST_AUTO_TEST_CASE(stored_tokens_constructor_takes_the_fields_in_order) {
  const na::stored_tokens t(std::string(secret), "at", "Bearer", {}, std::chrono::seconds{60}, 7);
  BOOST_TEST(t.refresh_token == secret);
  BOOST_TEST(t.access_token == "at");
  BOOST_TEST(t.token_type == "Bearer");
  BOOST_TEST(t.lifetime.count() == 60);
  BOOST_TEST(t.generation == 7u);
}

BOOST_AUTO_TEST_CASE(token_response_wipes_what_it_lets_go) {
  check_type<proto::token_response>(make_response);
}

BOOST_AUTO_TEST_CASE(refresh_request_wipes_what_it_lets_go) {
  check_type<proto::refresh_request>(make_request);
}

BOOST_AUTO_TEST_CASE(secret_string_wipes_what_it_lets_go) {
  auto make = [](std::string_view s) { return na::detail::secret_string(s); };
  BOOST_TEST(!trace_after_destruction<na::detail::secret_string>(make));
  std::string raw(secret);
  const na::detail::secret_string taken(std::move(raw));
  BOOST_TEST(taken.view() == secret);
  BOOST_TEST(!bytes_contain(&raw, sizeof raw, tail));
  auto from = make(secret);
  auto to = std::move(from);
  BOOST_TEST(!holds_secret(from));
  to = make(other);
  BOOST_TEST(!holds_secret(to));
}

BOOST_AUTO_TEST_CASE(secret_wipes_what_it_lets_go) {
  check_type<na::secret>(make_secret);
  std::string raw(secret);
  const na::secret taken(std::move(raw));  // the implicit conversion a configuration uses
  BOOST_TEST(taken.view() == secret);
  BOOST_TEST(!bytes_contain(&raw, sizeof raw, tail));
  na::secret w = make_secret(secret);
  w.wipe();
  BOOST_TEST(w.empty());
  BOOST_TEST(!holds_secret(w));
}

// A configuration copied, moved, reassigned or dropped leaves no credential behind: the rule
// is carried by the fields' type, not by the client.
BOOST_AUTO_TEST_CASE(client_config_wipes_its_credentials) {
  check_type<na::client_config>(make_config);
  const na::client_config designated{.client_secret = "abc", .refresh_token = std::string("def")};
  BOOST_TEST((designated.client_secret == "abc"));
  BOOST_TEST(designated.refresh_token.view() == "def");
}

BOOST_AUTO_TEST_CASE(wipe_all_covers_the_whole_capacity) {
  std::string s(secret);
  s.resize(2);  // the rest of the secret stays in the buffer, past the size
  BOOST_REQUIRE(bytes_contain(&s, sizeof s, secret.substr(3)));
  na::detail::wipe_all(s);
  BOOST_TEST(s.empty());
  BOOST_TEST(!bytes_contain(&s, sizeof s, secret.substr(3)));
}

// A token answer's JSON tree, and the members kept from it (an id_token), live in memory that
// is overwritten when freed.
BOOST_AUTO_TEST_CASE(json_of_answers_lives_in_wiping_memory) {
  const auto wiping = na::detail::wiping_storage().get();
  boost::system::error_code ec;
  const auto jv = na::detail::parse_json_wiping(R"({"accessToken":"a","n":[1,"x"]})", ec);
  BOOST_REQUIRE(!ec);
  BOOST_TEST(jv.storage().get() == wiping);
  BOOST_TEST(jv.at("n").storage().get() == wiping);

  proto::token_response r;
  na::diagnostics diag;
  BOOST_REQUIRE(!proto::parse_token_response(
      200, R"({"accessToken":"a","expiresIn":60,"id_token":"eyJ.s3cr3t"})", r, diag, {}));
  BOOST_REQUIRE(r.extra);
  BOOST_TEST(r.extra->storage().get() == wiping);
  BOOST_TEST(r.extra->at("id_token").storage().get() == wiping);
}

BOOST_AUTO_TEST_SUITE_END()
