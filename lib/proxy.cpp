// SPDX-License-Identifier: BSL-1.0
// The proxy of http_options::proxy: URL parsing, the environment, NO_PROXY matching and Basic
// credentials.
#include "proxy.hpp"

#include "diag.hpp"
#include "url_authority.hpp"

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/network_v4.hpp>
#include <boost/asio/ip/network_v6.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>

#include <openssl/evp.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <string>

namespace nxsys::auth::detail {
namespace {

using boost::system::error_code;
namespace ip = boost::asio::ip;

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

// The first of the variables that is set and not empty, with its name; nullptr if none.
const char* first_env(std::initializer_list<const char*> names, const char*& found) {
  for (const char* n : names) {
    const char* v = std::getenv(n);  // NOLINT(concurrency-mt-unsafe): read once, at construction
    if (v != nullptr && *v != '\0') {
      found = n;
      return v;
    }
  }
  return nullptr;
}

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_';
}

// One NO_PROXY pattern, parsed once for both the check in validate() and the match.
struct no_proxy_pattern {
  enum class kind { any, network_v4, network_v6, address, name } what = kind::any;
  std::uint16_t port = 0;  // 0: any port
  ip::network_v4 net4;
  ip::network_v6 net6;
  ip::address address;
  std::string name;  // lower case, without a leading "*." or "." and a trailing "."
};

// nullptr and `out` filled when `pat` (trimmed, not empty) is a pattern; else what is wrong.
const char* parse_pattern(std::string_view pat, no_proxy_pattern& out) {
  if (pat == "*") {
    out.what = no_proxy_pattern::kind::any;
    return nullptr;
  }
  std::string_view port;
  bool has_port = false;
  std::string network;                       // "[v6]/len" rewritten as "v6/len"
  if (!pat.empty() && pat.front() == '[') {  // [v6], [v6]:port, [v6]/len
    const auto close = pat.find(']');
    if (close == std::string_view::npos) return "an IPv6 address opened with '[' is not closed";
    auto rest = pat.substr(close + 1);
    std::string_view inner = pat.substr(1, close - 1);
    if (rest.empty()) {
      pat = inner;
    } else if (rest.front() == ':') {
      port = rest.substr(1);
      has_port = true;
      pat = inner;
    } else if (rest.front() == '/') {
      // A network in brackets: put the prefix length back behind the address.
      network.assign(inner).append(rest);
      pat = network;
    } else {
      return "after ']' only ':port' or '/length' may follow";
    }
  } else if (std::count(pat.begin(), pat.end(), ':') == 1) {  // name:port or v4:port
    const auto colon = pat.find(':');
    port = pat.substr(colon + 1);
    has_port = true;
    pat = pat.substr(0, colon);
  }
  if (has_port && !port.empty()) {  // "name:" is the name on any port, as it always was
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535)
      return "the port is not a number from 1 to 65535";
    out.port = static_cast<std::uint16_t>(value);
  }
  if (pat.empty()) return "there is no host";

  error_code ec;
  if (pat.find('/') != std::string_view::npos) {  // an IP network
    const std::string text(pat);
    out.net4 = ip::make_network_v4(text, ec);
    if (!ec) {
      out.what = no_proxy_pattern::kind::network_v4;
      return nullptr;
    }
    out.net6 = ip::make_network_v6(text, ec);
    if (!ec) {
      out.what = no_proxy_pattern::kind::network_v6;
      return nullptr;
    }
    return "not an IP network (address/prefix length)";
  }
  out.address = ip::make_address(std::string(pat), ec);
  if (!ec) {
    out.what = no_proxy_pattern::kind::address;
    return nullptr;
  }
  // A name: itself and its subdomains, whatever the leading "." or "*." says.
  if (pat.substr(0, 2) == "*.") {
    pat.remove_prefix(2);
  } else if (pat.front() == '.') {
    pat.remove_prefix(1);
  }
  if (!pat.empty() && pat.back() == '.') pat.remove_suffix(1);
  if (pat.empty() || !std::all_of(pat.begin(), pat.end(), is_name_char))
    return "not '*', a host name, an IP address or an IP network";
  out.what = no_proxy_pattern::kind::name;
  out.name = lower(pat);
  return nullptr;
}

bool pattern_matches(const no_proxy_pattern& pat, const protocol::endpoint& target) {
  using kind = no_proxy_pattern::kind;
  if (pat.what == kind::any) return true;
  if (pat.port != 0 && std::to_string(pat.port) != target.port) return false;
  if (pat.what == kind::name) {
    // Never an IP address's suffix ("2.3" is no pattern for 10.1.2.3).
    if (target.host_is_ip) return false;
    std::string_view host = target.host;
    if (!host.empty() && host.back() == '.') host.remove_suffix(1);
    const auto h = lower(host);
    const auto& p = pat.name;
    if (h == p) return true;
    return h.size() > p.size() && h.compare(h.size() - p.size(), p.size(), p) == 0 &&
           h[h.size() - p.size() - 1] == '.';
  }
  // An address or a network: names are never resolved, so only an IP target can match.
  if (!target.host_is_ip) return false;
  error_code ec;
  const auto host = ip::make_address(target.host, ec);
  if (ec) return false;
  switch (pat.what) {
    case kind::address:
      return host == pat.address;
    case kind::network_v4:
      return host.is_v4() && ip::network_v4(host.to_v4(), pat.net4.prefix_length()).canonical() ==
                                 pat.net4.canonical();
    case kind::network_v6:
      return host.is_v6() && ip::network_v6(host.to_v6(), pat.net6.prefix_length()).canonical() ==
                                 pat.net6.canonical();
    default:
      return false;
  }
}

// Calls f(pattern) for each non-empty pattern of a comma-separated list until f returns true.
template <class F>
bool any_pattern(std::string_view patterns, F f) {
  while (!patterns.empty()) {
    const auto comma = patterns.find(',');
    const auto pat = trim(patterns.substr(0, comma));
    if (!pat.empty() && f(pat)) return true;
    if (comma == std::string_view::npos) break;
    patterns.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace

error_code parse_proxy_url(std::string_view url, std::string_view name, bool scheme_optional,
                           proxy_route& out, diagnostics& diag, std::string* user,
                           secret_string* password) {
  auto bad = [&](std::string_view what) {
    return fail(errc::invalid_config, diag, std::string(name) + " " + std::string(what));
  };
  // A copy with a scheme put in front; it may hold credentials, so it is wiped on return.
  struct wiped_string {
    std::string s;
    ~wiped_string() { wipe_all(s); }
  } with_scheme;
  if (scheme_optional && url.find("://") == std::string_view::npos) {
    with_scheme.s.reserve(url.size() + 7);
    with_scheme.s.append("http://").append(url);
    url = with_scheme.s;
  }
  auto r = boost::urls::parse_uri(url);
  if (!r) return bad("is not a valid proxy URL (http://host:port)");
  const auto& u = *r;
  if (u.scheme_id() == boost::urls::scheme::https)
    return bad("must be http://: a proxy reached over TLS (https://) is not supported");
  if (u.scheme_id() != boost::urls::scheme::http) return bad("must be an http:// URL");
  if (u.has_userinfo()) {
    if (user == nullptr || password == nullptr)
      return bad(
          "must not hold user info: put the credentials in proxy.username and proxy.password");
    std::string pw = u.password();
    *password = secret_string(std::move(pw));
    *user = u.user();
  }
  if (u.has_query() || u.has_fragment() || (!u.encoded_path().empty() && u.encoded_path() != "/"))
    return bad("must be http://host:port, without a path, query or fragment");
  url_authority a;
  if (const char* wrong = read_authority(u, "80", a)) return bad(wrong);
  out.host = std::move(a.host);
  out.port = std::move(a.port);
  out.host_is_ip = a.host_is_ip;
  const bool v6 = out.host.find(':') != std::string::npos;
  out.display = (v6 ? "[" + out.host + "]" : out.host) + ":" + out.port;
  out.source = std::string(name);
  return {};
}

bool no_proxy_matches(std::string_view patterns, const protocol::endpoint& target) {
  return any_pattern(patterns, [&](std::string_view pat) {
    no_proxy_pattern p;
    return parse_pattern(pat, p) == nullptr && pattern_matches(p, target);
  });
}

const char* no_proxy_error(std::string_view patterns, std::string& bad_pattern) {
  const char* why = nullptr;
  any_pattern(patterns, [&](std::string_view pat) {
    no_proxy_pattern p;
    why = parse_pattern(pat, p);
    if (why != nullptr) bad_pattern.assign(pat);
    return why != nullptr;
  });
  return why;
}

std::optional<proxy_route> choose_proxy(const protocol::endpoint& target,
                                        const proxy_options& opts) {
  std::string_view url = opts.url;
  const char* source = "http.proxy.url";
  bool from_env = false;
  if (url.empty() && opts.from_environment) {
    const char* v = nullptr;
    if (target.tls) {
      v = first_env({"https_proxy", "HTTPS_PROXY"}, source);
    } else if (std::getenv("REQUEST_METHOD") != nullptr) {  // NOLINT(concurrency-mt-unsafe)
      // Under CGI, HTTP_PROXY may come from a request's Proxy header ("httpoxy").
      v = first_env({"http_proxy"}, source);
    } else {
      v = first_env({"http_proxy", "HTTP_PROXY"}, source);
    }
    if (v != nullptr) {
      url = v;
      from_env = true;
    }
  }
  if (url.empty()) return std::nullopt;

  std::string exclusions;
  for (const auto& e : opts.no_proxy) (exclusions += e) += ',';
  if (opts.from_environment) {
    const char* ignored = nullptr;
    if (const char* v = first_env({"no_proxy", "NO_PROXY"}, ignored)) exclusions += v;
  }
  if (no_proxy_matches(exclusions, target)) return std::nullopt;

  proxy_route route;
  diagnostics diag;
  std::string env_user;
  secret_string env_password;
  if (auto ec = parse_proxy_url(url, source, from_env, route, diag, from_env ? &env_user : nullptr,
                                from_env ? &env_password : nullptr))
    throw error_with_diagnostics(ec, std::move(diag));
  if (!opts.username.empty()) {
    route.username = opts.username;
    route.password = secret_string(opts.password.view());
  } else if (!env_user.empty() || !env_password.empty()) {
    route.username = std::move(env_user);
    route.password = std::move(env_password);
  }
  if (!route.username.empty() || !route.password.empty())
    route.authorization = proxy_basic_authorization(route.username, route.password.view());
  return route;
}

secret_string proxy_basic_authorization(std::string_view user, std::string_view password) {
  std::string joined;
  joined.reserve(user.size() + 1 + password.size());
  joined.append(user).append(1, ':').append(password);
  const secret_string plain(std::move(joined));
  constexpr std::string_view scheme = "Basic ";
  std::string out(scheme.size() + 4 * ((plain.size() + 2) / 3) + 1, '\0');
  out.replace(0, scheme.size(), scheme);
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data() + scheme.size()),
                                reinterpret_cast<const unsigned char*>(plain.view().data()),
                                static_cast<int>(plain.size()));
  out.resize(scheme.size() + static_cast<std::size_t>(n));
  return secret_string(std::move(out));
}

}  // namespace nxsys::auth::detail
