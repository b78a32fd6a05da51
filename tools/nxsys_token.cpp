// SPDX-License-Identifier: BSL-1.0
// nxsys-token: prints a valid Nxsys access token (like `gcloud auth print-access-token`), for
// shell scripts and debugging. Secrets are read from the environment or files only, never from
// argv (visible in ps), and never written anywhere; the access token goes only to stdout.
#include <nxsys/auth/client.hpp>
#include <nxsys/auth/config.hpp>
#include <nxsys/auth/error.hpp>
#include <nxsys/auth/token_store.hpp>
#include <nxsys/auth/version.hpp>

#include "cli/client_flags.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <exception>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace {

namespace asio = boost::asio;
namespace auth = nxsys::auth;

constexpr std::string_view usage_head = R"usage(usage: nxsys-token [options]

Prints a valid Nxsys access token and a newline on stdout, for shell scripts and debugging:
  curl -H "Authorization: Bearer $(nxsys-token --store ~/.nxsys-token.json)" ...

)usage";

constexpr std::string_view usage =
    R"usage(With --store, a stored token that is still valid is printed without a request, and a rotated
refresh token is saved before the access token is printed. Without --store every run refreshes;
if the server rotates refresh tokens this consumes the configured one (a warning says so).

Options:
  --json                print {"access_token", "token_type", "expires_in" (seconds left),
                        "from_store" (true: taken from --store without a request),
                        "scope" (when the server named one)}
  --timeout SECONDS     give up after this long, retries included (default 30)
  --verbose             log what the client does on stderr (never a secret or token)
  --help                show this message
  --version             show the version

Exit status:
  0  success
  1  any other failure
  2  usage or configuration error (bad flag, missing variable, invalid_config)
  3  authorization needed: invalid_grant, invalid_client, unauthorized_client,
     proxy_authentication (re-authorize to get a new refresh token, or fix the client's
     or the proxy's credentials)
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

using auth::cli::usage_error;

struct options {
  auth::cli::client_flags client;
  bool json = false, verbose = false;
  std::chrono::seconds timeout{30};
};

// Returns nullopt when --help or --version was handled.
std::optional<options> parse_args(int argc, char** argv) {
  options o;
  o.client.read_environment();
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
      std::cout << usage_head << auth::cli::client_flags_help << usage;
      return std::nullopt;
    } else if (arg == "--version") {
      flag();
      std::cout << "nxsys-token " << auth::version_string << "\n";
      return std::nullopt;
    } else if (o.client.take(arg, value, flag)) {
      // a client setting (tools/cli/client_flags.hpp)
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

  o.client.finish();
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
    case auth::errc::proxy_authentication:
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
  auto cfg = o.client.make_config();  // throws store_corrupt for a damaged --store file
  // One call per process: the whole refresh (store lease, retries, back-offs) ends by --timeout.
  cfg.refresh.deadline = o.timeout;
  cfg.http.connect_timeout =
      std::min<std::chrono::milliseconds>(cfg.http.connect_timeout, o.timeout);
  cfg.http.request_timeout =
      std::min<std::chrono::milliseconds>(cfg.http.request_timeout, o.timeout);
  // Tokens that could not be saved are an error: the next run would lose the chain.
  if (cfg.storage.store) cfg.storage.strict_durability = true;
  if (o.verbose) {
    cfg.observers.log = [](auth::log_level l, std::string_view m) {
      std::cerr << "nxsys-token: " << level_name(l) << ": " << m << '\n';
    };
  }
  auth::refresh_event last;  // the run's refresh, if it got that far
  cfg.observers.on_refresh = [&last](const auth::refresh_event& e) { last = e; };

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

  if (last.refresh_token_rotated && o.client.store.empty())
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
    if (!token.scope().empty()) out["scope"] = token.scope();
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
