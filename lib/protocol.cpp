// SPDX-License-Identifier: BSL-1.0
// Request building and answer parsing for the Nxsys refresh flow (no I/O).
#include <nxsys/auth/protocol.hpp>

#include "diag.hpp"
#include "secret_string.hpp"
#include "text.hpp"
#include "url_authority.hpp"
#include "wiping_json.hpp"

#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <boost/url/parse.hpp>

#include <openssl/evp.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <utility>

namespace nxsys::auth::protocol {
using detail::fail;
namespace {

using boost::system::error_code;

// URLSearchParams' set, spelled out: std::isalnum would depend on the C locale.
bool is_unreserved(unsigned char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '*';
}

// The first of several accepted names (camelCase, snake_case) present in the object.
const boost::json::value* find_field(const boost::json::object& o, std::string_view camel,
                                     std::string_view snake) {
  if (auto* v = o.if_contains(camel)) return v;
  return o.if_contains(snake);
}

// A field that must be a string if present; absent and null both mean "not given".
error_code string_field(const boost::json::object& o, std::string_view camel,
                        std::string_view snake, std::string& out, diagnostics& diag) {
  const auto* v = find_field(o, camel, snake);
  if (v == nullptr || v->is_null()) return {};
  if (!v->is_string())
    return fail(errc::malformed_response, diag,
                "field '" + std::string(camel) + "' is not a string");
  out.assign(v->get_string().data(), v->get_string().size());
  return {};
}

error_code parse_expires_in(const boost::json::value& v, std::optional<std::chrono::seconds>& out,
                            diagnostics& diag) {
  long double secs = 0;
  if (v.is_int64()) {
    secs = static_cast<long double>(v.get_int64());
  } else if (v.is_uint64()) {
    secs = static_cast<long double>(v.get_uint64());
  } else if (v.is_double()) {
    secs = v.get_double();  // 1e400 arrives as +inf: huge, clamped below like 1e30
    if (std::isnan(secs)) return fail(errc::malformed_response, diag, "expiresIn is not a number");
  } else if (v.is_string()) {
    const auto& s = v.get_string();
    long long n = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (s.empty() || ec == std::errc::result_out_of_range) {
      if (ec == std::errc::result_out_of_range && s.front() != '-')
        n = max_expires_in.count();
      else
        return fail(errc::malformed_response, diag, "expiresIn is not a number");
    } else if (ec != std::errc{} || end != s.data() + s.size()) {
      return fail(errc::malformed_response, diag, "expiresIn is not a number");
    }
    secs = static_cast<long double>(n);
  } else if (v.is_null()) {
    return {};
  } else {
    return fail(errc::malformed_response, diag, "expiresIn is neither a number nor a string");
  }
  // A token that is already expired when it arrives cannot be used: refreshing it again would
  // only loop against the server.
  if (secs < 1) return fail(errc::malformed_response, diag, "expiresIn is not positive");
  if (secs > static_cast<long double>(max_expires_in.count())) secs = max_expires_in.count();
  out = std::chrono::seconds(static_cast<long long>(secs));
  return {};
}

errc oauth_errc(std::string_view e) noexcept {
  if (e == "invalid_request") return errc::invalid_request;
  if (e == "invalid_client") return errc::invalid_client;
  if (e == "invalid_grant") return errc::invalid_grant;
  if (e == "unauthorized_client") return errc::unauthorized_client;
  if (e == "unsupported_grant_type") return errc::unsupported_grant_type;
  if (e == "invalid_scope") return errc::invalid_scope;
  if (e == "server_error") return errc::server_error;
  if (e == "temporarily_unavailable") return errc::temporarily_unavailable;
  return errc::unrecognized_error;
}

// Server text is redacted before it is cut, so a secret straddling the cut cannot survive.
std::string server_text(std::string_view text, std::size_t max,
                        std::initializer_list<std::string_view> secrets) {
  std::string s(text);
  detail::redact(s, secrets);
  return detail::printable(s, max);
}

error_code parse_error_answer(unsigned status, std::string_view body, diagnostics& diag,
                              std::initializer_list<std::string_view> secrets) {
  error_code jec;
  const auto jv = detail::parse_json_wiping(body, jec);
  const boost::json::object* o = (!jec && jv.is_object()) ? &jv.get_object() : nullptr;
  const boost::json::value* e = o ? o->if_contains("error") : nullptr;
  if (e != nullptr && e->is_string()) {
    diag.server_error = server_text(e->get_string(), 128, secrets);
    if (const auto* d = o->if_contains("error_description"); d && d->is_string())
      diag.server_description = server_text(d->get_string(), 512, secrets);
    // A 5xx that names a client error is still the server's failure to decide.
    errc code = oauth_errc(e->get_string());
    if (status >= 500 && code == errc::unrecognized_error) code = errc::server_error;
    return make_error_code(code);
  }
  if (status >= 500)
    return fail(errc::server_error, diag, "the server failed without an OAuth error");
  if (status == 429)
    return fail(errc::temporarily_unavailable, diag, "rate limited (HTTP 429 Too Many Requests)");
  return fail(errc::unexpected_status, diag, "the answer carries no OAuth error");
}

// Appends the encoding of `s` to `out`. A caller whose `out` holds credentials reserves the
// whole length first: growing it here would free a buffer holding them without overwriting it.
void append_form_urlencoded(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789ABCDEF";
  out.reserve(out.size() + 3 * s.size());
  for (unsigned char c : s) {
    if (is_unreserved(c)) {
      out.push_back(static_cast<char>(c));
    } else if (c == ' ') {
      out.push_back('+');
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 0xF]);
    }
  }
}
}  // namespace

std::string form_urlencode(std::string_view s) {
  std::string out;
  append_form_urlencoded(out, s);
  return out;
}

std::string build_refresh_body(std::string_view refresh_token, std::string_view client_id,
                               std::string_view client_secret) {
  auto r = build_refresh_request(dialect::nxsys, client_authentication::request_body, refresh_token,
                                 client_id, client_secret);
  return std::exchange(r.body, {});
}

std::string basic_authorization(std::string_view client_id, std::string_view client_secret) {
  std::string joined;
  joined.reserve(3 * (client_id.size() + client_secret.size()) + 1);
  append_form_urlencoded(joined, client_id);
  joined += ':';
  append_form_urlencoded(joined, client_secret);
  const detail::secret_string plain(std::move(joined));
  constexpr std::string_view scheme = "Basic ";
  std::string out(scheme.size() + 4 * ((plain.view().size() + 2) / 3) + 1, '\0');
  out.replace(0, scheme.size(), scheme);
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data() + scheme.size()),
                                reinterpret_cast<const unsigned char*>(plain.view().data()),
                                static_cast<int>(plain.view().size()));
  out.resize(scheme.size() + static_cast<std::size_t>(n));
  return out;
}

namespace {

// Both grants' requests: `refresh_token` is sent for the refresh_token grant only.
refresh_request build_grant_request(grant_type g, dialect d, client_authentication auth,
                                    std::string_view refresh_token, std::string_view client_id,
                                    std::string_view client_secret, std::string_view scope) {
  const bool rfc = d == dialect::rfc6749;
  refresh_request r;
  // Room for every parameter at its longest, so that the body never reallocates.
  r.body.reserve(
      96 + 3 * (refresh_token.size() + client_id.size() + client_secret.size() + scope.size()));
  auto add = [&](std::string_view name, std::string_view value) {
    if (!r.body.empty()) r.body += '&';
    r.body += name;
    r.body += '=';
    append_form_urlencoded(r.body, value);
  };
  if (g == grant_type::refresh_token) {
    add(rfc ? "grant_type" : "grantType", "refresh_token");
    add(rfc ? "refresh_token" : "refreshToken", refresh_token);
  } else {
    add(rfc ? "grant_type" : "grantType", "client_credentials");
  }
  if (auth == client_authentication::http_basic) {
    r.authorization = basic_authorization(client_id, client_secret);
  } else {
    add(rfc ? "client_id" : "clientId", client_id);
    add(rfc ? "client_secret" : "clientSecret", client_secret);
  }
  if (!scope.empty()) add("scope", scope);
  return r;
}

}  // namespace

refresh_request build_refresh_request(dialect d, client_authentication auth,
                                      std::string_view refresh_token, std::string_view client_id,
                                      std::string_view client_secret, std::string_view scope) {
  return build_grant_request(grant_type::refresh_token, d, auth, refresh_token, client_id,
                             client_secret, scope);
}

refresh_request build_client_credentials_request(dialect d, client_authentication auth,
                                                 std::string_view client_id,
                                                 std::string_view client_secret,
                                                 std::string_view scope) {
  return build_grant_request(grant_type::client_credentials, d, auth, {}, client_id, client_secret,
                             scope);
}

error_code parse_url(std::string_view url, std::string_view name, std::string_view secret_kind,
                     bool allow_insecure_http, endpoint& out, diagnostics& diag) {
  auto bad = [&](std::string_view what) {
    return fail(errc::invalid_config, diag, std::string(name) + " " + std::string(what));
  };
  auto r = boost::urls::parse_uri(url);
  // The URL may carry credentials: never echo it, only say what is wrong with it.
  if (!r) return bad("is not an absolute URL");
  const auto& u = *r;
  if (u.scheme_id() == boost::urls::scheme::https) {
    out.tls = true;
  } else if (u.scheme_id() == boost::urls::scheme::http) {
    out.tls = false;
  } else {
    return bad("must be http:// or https://");
  }
  if (u.has_userinfo()) return bad("must not hold user info");
  if (u.has_fragment()) return bad("must not hold a fragment");
  // Boost.URL reads "http://127.0.0.1.nip.io/t" as host 127.0.0.1 and path ".nip.io/t": a
  // path after an authority must start with '/', so such a URL is not what it looks like.
  if (!u.encoded_path().empty() && u.encoded_path().front() != '/')
    return bad("has an invalid host");
  detail::url_authority a;
  if (const char* wrong = detail::read_authority(u, out.tls ? "443" : "80", a)) return bad(wrong);
  out.host = std::move(a.host);
  out.port = std::move(a.port);
  out.host_is_ip = a.host_is_ip;
  out.loopback = a.loopback;
  out.target = u.encoded_path().empty() ? std::string("/") : std::string(u.encoded_path());
  if (u.has_query()) {
    out.target += '?';
    out.target += u.encoded_query();
  }
  if (!out.tls && !out.loopback && !allow_insecure_http)
    return fail(errc::invalid_config, diag,
                std::string(name) + ": plain http:// to a non-loopback host would send the " +
                    std::string(secret_kind) +
                    " unencrypted; use https:// or set http.allow_insecure_http");
  return {};
}

error_code parse_token_url(std::string_view url, bool allow_insecure_http, endpoint& out,
                           diagnostics& diag) {
  return parse_url(url, "token_url", "client secret", allow_insecure_http, out, diag);
}

error_code parse_token_response(unsigned status, std::string_view body, token_response& out,
                                diagnostics& diag,
                                std::initializer_list<std::string_view> secrets) {
  diag.http_status = static_cast<int>(status);
  if (status >= 400 && status <= 599) return parse_error_answer(status, body, diag, secrets);
  if (status < 200 || status > 299) {
    return fail(
        errc::unexpected_status, diag,
        status >= 300 && status <= 399 ? "redirects are not followed" : "not a token answer");
  }
  error_code jec;
  const auto jv = detail::parse_json_wiping(body, jec);
  if (jec) return fail(errc::malformed_response, diag, "the answer is not valid JSON");
  if (!jv.is_object())
    return fail(errc::malformed_response, diag, "the answer is not a JSON object");
  const auto& o = jv.get_object();

  token_response r;
  if (auto ec = string_field(o, "accessToken", "access_token", r.access_token, diag)) return ec;
  if (r.access_token.empty())
    return fail(errc::malformed_response, diag, "the answer carries no access token");
  if (auto ec = string_field(o, "tokenType", "token_type", r.token_type, diag)) return ec;
  if (r.token_type.empty()) r.token_type = "Bearer";
  if (auto ec = string_field(o, "refreshToken", "refresh_token", r.refresh_token, diag)) return ec;
  if (auto ec = string_field(o, "scope", "scope", r.scope, diag)) return ec;
  static constexpr std::string_view known[] = {"accessToken", "access_token", "tokenType",
                                               "token_type",  "refreshToken", "refresh_token",
                                               "expiresIn",   "expires_in",   "scope"};
  boost::json::object extra(detail::wiping_storage());  // an id_token is a credential too
  for (const auto& m : o)
    if (std::find(std::begin(known), std::end(known), m.key()) == std::end(known))
      extra.emplace(m.key(), m.value());
  if (!extra.empty()) r.extra = std::make_shared<const boost::json::object>(std::move(extra));
  if (const auto* e = find_field(o, "expiresIn", "expires_in")) {
    if (auto ec = parse_expires_in(*e, r.expires_in, diag)) return ec;
  }
  // A token or type with control characters or spaces cannot go into an Authorization header.
  if (!detail::is_header_token(r.access_token) || !detail::is_header_token(r.token_type))
    return fail(errc::malformed_response, diag, "the access token or its type is not header-safe");
  out = std::move(r);
  return {};
}

std::optional<std::chrono::seconds> parse_retry_after(std::string_view value,
                                                      std::chrono::system_clock::time_point now) {
  constexpr std::chrono::seconds longest{24 * 3600};
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  if (value.empty()) return std::nullopt;
  if (std::isdigit(static_cast<unsigned char>(value.front()))) {
    std::uint64_t n = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
    if (ec != std::errc() || end != value.data() + value.size()) return std::nullopt;
    if (n > static_cast<std::uint64_t>(longest.count())) return std::nullopt;
    return std::chrono::seconds(n);
  }
  // IMF-fixdate, the form RFC 9110 requires senders to use: "Sun, 06 Nov 1994 08:49:37 GMT".
  static constexpr std::string_view months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  if (value.size() != 29 || value[3] != ',' || value.substr(25) != " GMT") return std::nullopt;
  auto number = [&](std::size_t pos, std::size_t len, int& out) {
    auto [end, ec] = std::from_chars(value.data() + pos, value.data() + pos + len, out);
    return ec == std::errc() && end == value.data() + pos + len;
  };
  int day = 0, year = 0, hour = 0, minute = 0, second = 0;
  if (!number(5, 2, day) || !number(12, 4, year) || !number(17, 2, hour) ||
      !number(20, 2, minute) || !number(23, 2, second) || value[19] != ':' || value[22] != ':')
    return std::nullopt;
  int month = 0;
  while (month < 12 && months[month] != value.substr(8, 3)) ++month;
  if (month == 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60)
    return std::nullopt;
  using namespace std::chrono;
  const year_month_day ymd{std::chrono::year(year), std::chrono::month(month + 1),
                           std::chrono::day(day)};
  if (!ymd.ok()) return std::nullopt;
  const auto at = sys_days(ymd) + hours(hour) + minutes(minute) + seconds(second);
  const auto delay = duration_cast<seconds>(at - time_point_cast<seconds>(now));
  if (delay <= seconds(0)) return seconds(0);
  if (delay > longest) return std::nullopt;
  return delay;
}

}  // namespace nxsys::auth::protocol
