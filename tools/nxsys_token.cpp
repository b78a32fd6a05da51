// SPDX-License-Identifier: BSL-1.0
// nxsys-token: prints a valid Nxsys access token (like `gcloud auth print-access-token`), for
// shell scripts and debugging. Secrets are read from the environment or files only, never from
// argv (visible in ps), and never written anywhere; the access token goes only to stdout.
#include <nxsys/auth/client.hpp>
#include <nxsys/auth/config.hpp>
#include <nxsys/auth/error.hpp>
#include <nxsys/auth/token_store.hpp>
#include <nxsys/auth/version.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>

#include <sys/stat.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace {

namespace asio = boost::asio;
namespace auth = nxsys::auth;

constexpr std::string_view usage = R"usage(usage: nxsys-token [options]

Prints a valid Nxsys access token and a newline on stdout, for shell scripts and debugging:
  curl -H "Authorization: Bearer $(nxsys-token --store ~/.nxsys-token.json)" ...

Configuration (flags override the environment):
  NXSYS_BASE_API_URL   --base-url URL       base API URL; the token URL is URL/nxsys/oauth/token
                       --token-url URL      the full token URL (overrides the base URL)
  NXSYS_CLIENT_ID      --client-id ID
  NXSYS_CLIENT_SECRET  --client-secret-file FILE
  NXSYS_REFRESH_TOKEN  --refresh-token-file FILE
Secrets (client secret, refresh token) are taken only from the environment or from files
(trailing newlines stripped), never as command-line values: argv is visible in ps.

Options:
  --store FILE          keep the tokens in FILE (JSON, mode 0600; shared safely by concurrent
                        runs): a stored token that is still valid is printed without a request,
                        and a rotated refresh token is saved before the access token is printed.
                        The refresh token is needed only until FILE exists.
                        Without --store every run refreshes; if the server rotates refresh tokens
                        this consumes the configured one (a warning says so on stderr).
  --json                print {"access_token", "token_type", "expires_in" (seconds left),
                        "from_store" (true: taken from --store without a request)}
  --ca-file FILE        PEM bundle of trusted CAs for https (default: the system's)
  --insecure-http       allow plain http:// to a host that is not loopback
  --timeout SECONDS     give up after this long, retries included (default 30)
  --verbose             log what the client does on stderr (never a secret or token)
  --help                show this message
  --version             show the version

Exit status:
  0  success
  1  any other failure
  2  usage or configuration error (bad flag, missing variable, invalid_config)
  3  authorization needed: invalid_grant, invalid_client, unauthorized_client
     (re-authorize to get a new refresh token, or fix the client credentials)
  4  server or network failure: timeout, connection, tls, server_error,
     temporarily_unavailable, malformed_response, unexpected_status, response_too_large,
     unrecognized_error
  5  token store failure: store_failed, store_corrupt, store_conflict, store_busy
)usage";

enum exit_code : int {
  exit_ok = 0,
  exit_other = 1,
  exit_usage = 2,
  exit_authorization = 3,
  exit_server = 4,
  exit_store = 5,
};

struct usage_error {
  std::string message;
};

struct options {
  std::string base_url, token_url, client_id, client_secret, refresh_token;
  std::string store, ca_file;
  bool insecure_http = false, json = false, verbose = false;
  std::chrono::seconds timeout{30};
};

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

// A secret from a file: its content without trailing line breaks. Never quoted in errors.
std::string read_secret(std::string_view flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw usage_error{std::string(flag) + ": cannot read '" + path + "'"};
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  if (s.empty()) throw usage_error{std::string(flag) + ": '" + path + "' is empty"};
  return s;
}

// Returns nullopt when --help or --version was handled.
std::optional<options> parse_args(int argc, char** argv) {
  options o;
  o.base_url = env("NXSYS_BASE_API_URL");
  o.client_id = env("NXSYS_CLIENT_ID");
  o.client_secret = env("NXSYS_CLIENT_SECRET");
  o.refresh_token = env("NXSYS_REFRESH_TOKEN");
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::optional<std::string_view> inline_value;  // --flag=value
    if (auto eq = arg.find('='); arg.substr(0, 2) == "--" && eq != std::string_view::npos) {
      inline_value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);  // messages below never show the value
    }
    auto value = [&]() -> std::string {
      if (inline_value) return std::string(*inline_value);
      if (i + 1 >= argc) throw usage_error{std::string(arg) + " needs a value"};
      return argv[++i];
    };
    auto flag = [&]() {
      if (inline_value) throw usage_error{std::string(arg) + " takes no value"};
    };

    if (arg == "--help" || arg == "-h") {
      flag();
      std::cout << usage;
      return std::nullopt;
    } else if (arg == "--version") {
      flag();
      std::cout << "nxsys-token " << auth::version_string << "\n";
      return std::nullopt;
    } else if (arg == "--base-url") {
      o.base_url = value();
    } else if (arg == "--token-url") {
      o.token_url = value();
    } else if (arg == "--client-id") {
      o.client_id = value();
    } else if (arg == "--client-secret-file") {
      o.client_secret = read_secret(arg, value());
    } else if (arg == "--refresh-token-file") {
      o.refresh_token = read_secret(arg, value());
    } else if (arg == "--client-secret" || arg == "--refresh-token") {
      throw usage_error{std::string(arg) +
                        " is not accepted: secrets on the command line are visible in ps; use " +
                        (arg == "--client-secret" ? "NXSYS_CLIENT_SECRET or --client-secret-file"
                                                  : "NXSYS_REFRESH_TOKEN or --refresh-token-file")};
    } else if (arg == "--store") {
      o.store = value();
    } else if (arg == "--ca-file") {
      o.ca_file = value();
    } else if (arg == "--insecure-http") {
      flag();
      o.insecure_http = true;
    } else if (arg == "--timeout") {
      const std::string v = value();
      int n = 0;
      auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
      if (ec != std::errc() || end != v.data() + v.size() || n < 1 || n > 3600)
        throw usage_error{"--timeout needs a number of seconds from 1 to 3600"};
      o.timeout = std::chrono::seconds(n);
    } else if (arg == "--json") {
      flag();
      o.json = true;
    } else if (arg == "--verbose" || arg == "-v") {
      flag();
      o.verbose = true;
    } else if (arg.substr(0, 1) == "-") {
      throw usage_error{"unknown option '" + std::string(arg) + "'"};
    } else {
      throw usage_error{"unexpected argument (nxsys-token takes options only)"};  // not echoed
    }
  }

  if (o.token_url.empty()) {
    if (o.base_url.empty())
      throw usage_error{"no token endpoint: set NXSYS_BASE_API_URL or use --base-url/--token-url"};
    o.token_url = auth::make_token_url(o.base_url);
  }
  if (o.client_id.empty()) throw usage_error{"no client id: set NXSYS_CLIENT_ID or --client-id"};
  if (o.client_secret.empty())
    throw usage_error{"no client secret: set NXSYS_CLIENT_SECRET or use --client-secret-file"};
  struct stat st {};
  const bool store_exists = !o.store.empty() && ::stat(o.store.c_str(), &st) == 0;
  if (o.refresh_token.empty() && !store_exists)
    throw usage_error{o.store.empty()
                          ? "no refresh token: set NXSYS_REFRESH_TOKEN or use --refresh-token-file"
                          : "no refresh token: set NXSYS_REFRESH_TOKEN or use --refresh-token-file "
                            "(needed until the --store file exists)"};
  return o;
}

int exit_code_for(const boost::system::error_code& ec) {
  if (ec.category() != auth::oauth_category() && ec.category() != auth::client_category())
    return exit_other;
  switch (static_cast<auth::errc>(ec.value())) {
    case auth::errc::invalid_config:
      return exit_usage;
    case auth::errc::invalid_grant:
    case auth::errc::invalid_client:
    case auth::errc::unauthorized_client:
      return exit_authorization;
    case auth::errc::timeout:
    case auth::errc::connection:
    case auth::errc::tls:
    case auth::errc::server_error:
    case auth::errc::temporarily_unavailable:
    case auth::errc::malformed_response:
    case auth::errc::unexpected_status:
    case auth::errc::response_too_large:
    case auth::errc::unrecognized_error:
      return exit_server;
    case auth::errc::store_failed:
    case auth::errc::store_corrupt:
    case auth::errc::store_conflict:
    case auth::errc::store_busy:
      return exit_store;
    default:
      return exit_other;
  }
}

const char* level_name(auth::log_level l) {
  switch (l) {
    case auth::log_level::debug:
      return "debug";
    case auth::log_level::info:
      return "info";
    case auth::log_level::warning:
      return "warning";
    case auth::log_level::error:
      return "error";
  }
  return "?";
}

int run(const options& o) {
  auth::client_config cfg;
  cfg.token_url = o.token_url;
  cfg.client_id = o.client_id;
  cfg.client_secret = o.client_secret;
  cfg.refresh_token = o.refresh_token;
  cfg.tls.ca_file = o.ca_file;
  cfg.allow_insecure_http = o.insecure_http;
  // One call per process: the whole refresh (store lease, retries, back-offs) ends by --timeout.
  cfg.refresh_deadline = o.timeout;
  cfg.connect_timeout = std::min<std::chrono::milliseconds>(cfg.connect_timeout, o.timeout);
  cfg.request_timeout = std::min<std::chrono::milliseconds>(cfg.request_timeout, o.timeout);
  if (!o.store.empty()) {
    cfg.store = std::make_shared<auth::file_store>(o.store);  // throws store_corrupt
    // Tokens that could not be saved are an error: the next run would lose the chain.
    cfg.strict_durability = true;
  }
  if (o.verbose) {
    cfg.log = [](auth::log_level l, std::string_view m) {
      std::cerr << "nxsys-token: " << level_name(l) << ": " << m << '\n';
    };
  }
  auth::refresh_event last;  // the run's refresh, if it got that far
  cfg.on_refresh = [&last](const auth::refresh_event& e) { last = e; };

  asio::io_context ctx;
  std::optional<auth::client> client;
  client.emplace(ctx.get_executor(), std::move(cfg));  // throws invalid_config
  auth::access_token token;
  std::exception_ptr failure;
  asio::co_spawn(
      ctx, [&]() -> asio::awaitable<void> { token = co_await client->token(); },
      [&](std::exception_ptr e) {
        failure = e;
        client
            .reset();  // ends the client's own work (a last save attempt at most) so run() returns
      });
  ctx.run();
  if (failure) std::rethrow_exception(failure);

  if (last.refresh_token_rotated && o.store.empty())
    std::cerr << "nxsys-token: warning: the server rotated the refresh token and no --store was "
                 "given: the new refresh token was not saved, and the configured one is probably "
                 "no longer valid. Use --store FILE to keep the chain.\n";

  if (o.json) {
    const auto left = std::chrono::duration_cast<std::chrono::seconds>(
        token.expires_at() - std::chrono::steady_clock::now());
    boost::json::object out;
    out["access_token"] = token.value();
    out["token_type"] = token.type();
    out["expires_in"] = std::max<std::int64_t>(left.count(), 0);
    out["from_store"] = last.from_store;
    std::cout << boost::json::serialize(out) << '\n';
  } else {
    std::cout << token.value() << '\n';
  }
  std::cout.flush();
  if (!std::cout) {
    std::cerr << "nxsys-token: cannot write to stdout\n";
    return exit_other;
  }
  return exit_ok;
}

}  // namespace

int main(int argc, char** argv) {
  std::optional<options> opts;
  try {
    opts = parse_args(argc, argv);
    if (!opts) return exit_ok;
  } catch (const usage_error& e) {
    std::cerr << "nxsys-token: " << e.message << "\nTry 'nxsys-token --help'.\n";
    return exit_usage;
  }
  try {
    return run(*opts);
  } catch (const auth::error_with_diagnostics& e) {
    // what() is the library's describe(): the server's words with every secret cut out.
    std::cerr << "nxsys-token: " << e.what() << '\n';
    return exit_code_for(e.code());
  } catch (const std::exception& e) {
    std::cerr << "nxsys-token: " << e.what() << '\n';
    return exit_other;
  }
}
