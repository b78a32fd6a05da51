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
#include <cstdlib>

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

// One NO_PROXY pattern against the target.
bool pattern_matches(std::string_view pat, const protocol::endpoint& target) {
  if (pat == "*") return true;
  std::string_view port;
  std::string network;                       // "[v6]/len" rewritten as "v6/len"
  if (!pat.empty() && pat.front() == '[') {  // [v6], [v6]:port, [v6]/len
    const auto close = pat.find(']');
    if (close == std::string_view::npos) return false;
    auto rest = pat.substr(close + 1);
    std::string_view inner = pat.substr(1, close - 1);
    if (rest.empty()) {
      pat = inner;
    } else if (rest.front() == ':') {
      port = rest.substr(1);
      pat = inner;
    } else if (rest.front() == '/') {
      // A network in brackets: put the prefix length back behind the address.
      network.assign(inner).append(rest);
      pat = network;
    } else {
      return false;
    }
  } else if (std::count(pat.begin(), pat.end(), ':') == 1) {  // name:port or v4:port
    const auto colon = pat.find(':');
    port = pat.substr(colon + 1);
    pat = pat.substr(0, colon);
  }
  if (!port.empty() && port != target.port) return false;
  if (pat.empty()) return false;

  error_code ec;
  if (pat.find('/') != std::string_view::npos) {  // an IP network
    if (!target.host_is_ip) return false;
    const auto host = ip::make_address(target.host, ec);
    if (ec) return false;
    const std::string p(pat);
    if (host.is_v4()) {
      const auto net = ip::make_network_v4(p, ec);
      return !ec &&
             ip::network_v4(host.to_v4(), net.prefix_length()).canonical() == net.canonical();
    }
    const auto net = ip::make_network_v6(p, ec);
    return !ec && ip::network_v6(host.to_v6(), net.prefix_length()).canonical() == net.canonical();
  }
  const auto pat_addr = ip::make_address(std::string(pat), ec);
  if (!ec) {  // an IP address
    if (!target.host_is_ip) return false;
    const auto host = ip::make_address(target.host, ec);
    return !ec && host == pat_addr;
  }
  // A name: itself and its subdomains, whatever the leading "." or "*." says. Never an IP
  // address's suffix ("2.3" is no pattern for 10.1.2.3).
  if (target.host_is_ip) return false;
  if (pat.substr(0, 2) == "*.") {
    pat.remove_prefix(2);
  } else if (pat.front() == '.') {
    pat.remove_prefix(1);
  }
  if (!pat.empty() && pat.back() == '.') pat.remove_suffix(1);
  if (pat.empty()) return false;
  std::string_view host = target.host;
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  const auto h = lower(host);
  const auto p = lower(pat);
  if (h == p) return true;
  return h.size() > p.size() && h.compare(h.size() - p.size(), p.size(), p) == 0 &&
         h[h.size() - p.size() - 1] == '.';
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
  while (!patterns.empty()) {
    const auto comma = patterns.find(',');
    const auto pat = trim(patterns.substr(0, comma));
    if (!pat.empty() && pattern_matches(pat, target)) return true;
    if (comma == std::string_view::npos) break;
    patterns.remove_prefix(comma + 1);
  }
  return false;
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
