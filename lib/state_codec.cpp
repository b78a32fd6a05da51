// SPDX-License-Identifier: BSL-1.0
// The JSON form of stored_tokens, shared by the file and Redis stores: parsed strictly (a
// damaged state is store_corrupt, never guessed at), and every buffer that held a token wiped.
#include "state_codec.hpp"

#include <nxsys/auth/protocol.hpp>

#include "diag.hpp"
#include "text.hpp"
#include "wiping_json.hpp"

#include <boost/json/object.hpp>
#include <boost/json/serializer.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <cstdint>
#include <limits>

namespace nxsys::auth::detail {
namespace json = boost::json;
using boost::system::error_code;

namespace {

constexpr std::string_view format_name = "nxsys-auth-token-store";
constexpr std::int64_t format_version = 1;
// Later than this, milliseconds since the epoch overflow system_clock (nanoseconds, year 2262).
const std::int64_t max_epoch_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                      std::chrono::system_clock::duration::max())
                                      .count();

// An optional string field: absent and null both mean "none".
error_code string_field(const json::object& o, std::string_view name, std::string& out,
                        const std::string& path, diagnostics& diag) {
  const auto* v = o.if_contains(name);
  if (v == nullptr || v->is_null()) return {};
  if (!v->is_string()) return corrupt(diag, path, std::string(name) + " is not a string");
  out.assign(v->get_string().data(), v->get_string().size());
  return {};
}

// An optional integer field in [0, max]. Not a double: nothing here writes one.
error_code int_field(const json::object& o, std::string_view name, std::int64_t max,
                     std::int64_t& out, const std::string& path, diagnostics& diag) {
  const auto* v = o.if_contains(name);
  if (v == nullptr || v->is_null()) return {};
  if (!v->is_int64() && !v->is_uint64())
    return corrupt(diag, path, std::string(name) + " is not an integer");
  if (!v->is_int64() || v->get_int64() < 0 || v->get_int64() > max)
    return corrupt(diag, path, std::string(name) + " is out of range");
  out = v->get_int64();
  return {};
}

// Messages name the problem and never quote a value: a value may be a token.
}  // namespace

error_code parse_stored_tokens(std::string_view text, const std::string& path, stored_tokens& out,
                               diagnostics& diag) {
  if (text.empty()) return corrupt(diag, path, "empty");
  error_code jec;
  const json::value jv = parse_json_wiping(text, jec);
  if (jec) return corrupt(diag, path, "not valid JSON (" + jec.message() + ")");
  const auto* o = jv.if_object();
  if (o == nullptr) return corrupt(diag, path, "not a JSON object");

  const auto* f = o->if_contains("format");
  if (f == nullptr || !f->is_string() || f->get_string() != format_name)
    return corrupt(diag, path, "format is missing or not \"nxsys-auth-token-store\"");
  const auto* v = o->if_contains("version");
  if (v == nullptr || !(v->is_int64() || v->is_uint64()))
    return corrupt(diag, path, "version is missing or not an integer");
  if (!v->is_int64() || v->get_int64() != format_version) {
    const auto n = v->is_int64() ? std::to_string(v->get_int64()) : std::to_string(v->get_uint64());
    return corrupt(diag, path, "version " + n + " is not supported (this build reads 1)");
  }

  stored_tokens t;
  std::int64_t expires_ms = 0, lifetime_s = 0, generation = 0;
  if (auto ec = string_field(*o, "refreshToken", t.refresh_token, path, diag)) return ec;
  if (auto ec = string_field(*o, "accessToken", t.access_token, path, diag)) return ec;
  // A client_credentials state has no refresh token; one with neither token is no state.
  if (t.refresh_token.empty() && t.access_token.empty())
    return corrupt(diag, path, "refreshToken and accessToken are both missing or empty");
  if (auto ec = string_field(*o, "tokenType", t.token_type, path, diag)) return ec;
  if (auto ec = int_field(*o, "expiresAtMs", max_epoch_ms, expires_ms, path, diag)) return ec;
  if (auto ec =
          int_field(*o, "lifetimeS", protocol::max_expires_in.count(), lifetime_s, path, diag))
    return ec;
  if (auto ec = int_field(*o, "generation", std::numeric_limits<std::int64_t>::max(), generation,
                          path, diag))
    return ec;
  // These go into an Authorization header (session): a CR or LF here would inject headers.
  if (!t.access_token.empty() && !is_header_token(t.access_token))
    return corrupt(diag, path, "accessToken holds bytes not allowed in an HTTP header");
  if (!t.token_type.empty() && !is_header_token(t.token_type))
    return corrupt(diag, path, "tokenType holds bytes not allowed in an HTTP header");
  t.expires_at = std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::milliseconds(expires_ms)));
  t.lifetime = std::chrono::seconds(lifetime_s);
  t.generation = static_cast<std::uint64_t>(generation);
  out = std::move(t);
  return {};
}

// A buffer big enough for any escaping, so that the serializer never reallocates (a
// reallocation would free an unwiped copy).
error_code check_savable(const stored_tokens& next, diagnostics& diag) {
  if (!next.refresh_token.empty() || !next.access_token.empty()) return {};
  diag.client_message = "refusing to save a state with neither a refresh token nor an access token";
  return make_error_code(errc::invalid_argument);
}

secret_string serialize_stored_tokens(const stored_tokens& t) {
  json::object o(wiping_storage());
  o["format"] = format_name;
  o["version"] = format_version;
  o["refreshToken"] = t.refresh_token;
  o["accessToken"] = t.access_token;
  o["tokenType"] = t.token_type;
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(t.expires_at.time_since_epoch())
          .count();
  o["expiresAtMs"] = std::max<std::int64_t>(ms, 0);  // before 1970: as expired as can be
  o["lifetimeS"] =
      std::clamp<std::int64_t>(t.lifetime.count(), 0, protocol::max_expires_in.count());
  o["generation"] = static_cast<std::int64_t>(
      std::min<std::uint64_t>(t.generation, std::numeric_limits<std::int64_t>::max()));
  const std::size_t worst =
      256 + 6 * (t.refresh_token.size() + t.access_token.size() + t.token_type.size());
  std::string out(worst, '\0');
  json::serializer sr;
  sr.reset(&o);
  const auto written = sr.read(out.data(), out.size()).size();
  out.resize(sr.done() ? written : 0);
  return secret_string(std::move(out));
}

}  // namespace nxsys::auth::detail
