// SPDX-License-Identifier: BSL-1.0
// nxsys-mock-server: runs the mock Nxsys token server standalone until SIGINT/SIGTERM, for trying
// clients by hand (curl, the seed's fetch example) and for load tests from another process.
#include <nxsys/auth/testing/connect_proxy.hpp>
#include <nxsys/auth/testing/mock_server.hpp>
#include <nxsys/auth/version.hpp>

#include <boost/json.hpp>

#include <pthread.h>

#include <charconv>
#include <csignal>
#include <cstdint>
#include <exception>
#include <iostream>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace {

namespace testing = nxsys::auth::testing;

constexpr std::string_view usage = R"(usage: nxsys-mock-server [options]

Serves POST /nxsys/oauth/token (and GET /stats) on 127.0.0.1 until SIGINT or SIGTERM, then
prints its statistics as JSON.

  --port N              port to listen on; 0 (default) picks a free one
  --tls                 serve HTTPS; the built-in certificate (127.0.0.1, localhost) is
                        signed by a test CA written to the file printed at start
  --cert FILE           PEM certificate chain for --tls (with --key)
  --key FILE            PEM private key for --tls (with --cert)
  --require-client-cert mutual TLS (with --tls): the handshake needs a client certificate
                        signed by the client CA; the built-in one and its key are written to
                        the files printed at start
  --client-ca FILE      PEM CA certificates of --require-client-cert (default: the test CA)
  --no-client-credentials
                        refuse grant_type=client_credentials (400 unauthorized_client)
  --latency-ms N        wait N ms before each token answer (default 0)
  --ttl SECONDS         expiresIn of issued tokens (default 3600)
  --rotate              issue a new refresh token on every refresh
  --reuse-detection     a rotated-away refresh token revokes the whole chain
  --reuse-grace-ms N    after a rotation, the replaced refresh token stays valid for N ms
                        (answered with the current one, as Auth0's reuse interval)
  --fail-every N        every Nth token request answers 503 (default 0: never)
  --camel | --snake     field names of the answer: accessToken (default) or access_token
  --client-id ID        accepted client id (default test-client)
  --client-secret S     accepted client secret (default test-secret)
  --refresh-token T     initial refresh token (default refresh-0)
  --threads N           server threads (default 1)
  --proxy               also run a CONNECT proxy (loopback targets only) on a free port,
                        printed at start as "proxy listening on 127.0.0.1:PORT"
  --proxy-user U        the proxy requires Basic credentials U and --proxy-password
  --proxy-password P    (test credentials: they are visible in ps)
  --help                show this message
  --version             show the version
)";

struct usage_error {
  std::string message;
};

template <class T>
T parse_number(std::string_view flag, std::string_view text, T min, T max) {
  T value{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < min || value > max) {
    throw usage_error{std::string(flag) + " needs a number from " + std::to_string(min) + " to " +
                      std::to_string(max) + ", not '" + std::string(text) + "'"};
  }
  return value;
}

struct arguments {
  testing::mock_server_options server;
  std::optional<testing::connect_proxy_options> proxy;
};

// Returns nullopt when --help or --version was handled.
std::optional<arguments> parse_args(int argc, char** argv) {
  testing::mock_server_options opts;
  testing::connect_proxy_options proxy;
  bool with_proxy = false;
  bool camel = false;
  bool snake = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::optional<std::string_view> inline_value;  // --flag=value
    if (auto eq = arg.find('='); arg.substr(0, 2) == "--" && eq != std::string_view::npos) {
      inline_value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    }
    auto value = [&]() -> std::string_view {
      if (inline_value) return *inline_value;
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
      std::cout << "nxsys-mock-server " << nxsys::auth::version_string << "\n";
      return std::nullopt;
    } else if (arg == "--port") {
      opts.port = parse_number<std::uint16_t>(arg, value(), 0, 65535);
    } else if (arg == "--tls") {
      flag();
      opts.tls = true;
    } else if (arg == "--cert") {
      opts.cert_chain_file = value();
    } else if (arg == "--key") {
      opts.private_key_file = value();
    } else if (arg == "--require-client-cert") {
      flag();
      opts.require_client_certificate = true;
    } else if (arg == "--client-ca") {
      opts.client_ca_file = value();
    } else if (arg == "--no-client-credentials") {
      flag();
      opts.allow_client_credentials = false;
    } else if (arg == "--latency-ms") {
      opts.latency = std::chrono::milliseconds(
          parse_number<std::int64_t>(arg, value(), 0, std::int64_t{24} * 3600 * 1000));
    } else if (arg == "--ttl") {
      opts.ttl = std::chrono::seconds(
          parse_number<std::int64_t>(arg, value(), 0, std::numeric_limits<std::int32_t>::max()));
    } else if (arg == "--rotate") {
      flag();
      opts.rotate = true;
    } else if (arg == "--reuse-detection") {
      flag();
      opts.reuse_detection = true;
    } else if (arg == "--reuse-grace-ms") {
      opts.reuse_grace = std::chrono::milliseconds(
          parse_number<std::int64_t>(arg, value(), 0, std::int64_t{24} * 3600 * 1000));
    } else if (arg == "--fail-every") {
      opts.fail_every = parse_number<int>(arg, value(), 0, std::numeric_limits<int>::max());
    } else if (arg == "--camel") {
      flag();
      camel = true;
    } else if (arg == "--snake") {
      flag();
      snake = true;
    } else if (arg == "--client-id") {
      opts.client_id = value();
    } else if (arg == "--client-secret") {
      opts.client_secret = value();
    } else if (arg == "--refresh-token") {
      opts.initial_refresh_token = value();
    } else if (arg == "--threads") {
      opts.threads = parse_number<unsigned>(arg, value(), 1, 256);
    } else if (arg == "--proxy") {
      flag();
      with_proxy = true;
    } else if (arg == "--proxy-user") {
      proxy.username = value();
    } else if (arg == "--proxy-password") {
      proxy.password = value();
    } else {
      throw usage_error{"unknown option '" + std::string(arg) + "'"};
    }
  }
  if (camel && snake) throw usage_error{"--camel and --snake exclude each other"};
  opts.names = snake ? testing::field_names::snake : testing::field_names::camel;
  // Silently serving plain HTTP, or a key that does not match the certificate, would only
  // surface later as a confusing handshake failure in the client under test.
  if ((!opts.cert_chain_file.empty() || !opts.private_key_file.empty()) && !opts.tls)
    throw usage_error{"--cert and --key need --tls"};
  if (opts.cert_chain_file.empty() != opts.private_key_file.empty())
    throw usage_error{"--cert and --key go together"};
  if (opts.require_client_certificate && !opts.tls)
    throw usage_error{"--require-client-cert needs --tls"};
  if (!opts.client_ca_file.empty() && !opts.require_client_certificate)
    throw usage_error{"--client-ca needs --require-client-cert"};
  if (opts.client_id.empty() || opts.client_secret.empty() || opts.initial_refresh_token.empty())
    throw usage_error{"--client-id, --client-secret and --refresh-token must not be empty"};
  if (proxy.username.empty() != proxy.password.empty())
    throw usage_error{"--proxy-user and --proxy-password go together"};
  if (!proxy.username.empty() && !with_proxy)
    throw usage_error{"--proxy-user and --proxy-password need --proxy"};
  arguments a{std::move(opts), std::nullopt};
  if (with_proxy) a.proxy = std::move(proxy);
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  std::optional<arguments> opts;
  try {
    opts = parse_args(argc, argv);
  } catch (const usage_error& e) {
    std::cerr << "nxsys-mock-server: " << e.message << "\n\n" << usage;
    return 2;
  }
  if (!opts) return 0;

  // Blocked before the server starts its threads (they inherit the mask), so the signals reach
  // only sigwait below and never interrupt a server thread.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  try {
    testing::mock_server_stats stats;
    std::optional<testing::connect_proxy_stats> proxy_stats;
    {
      const auto& o = opts->server;
      testing::mock_server server(o);
      std::optional<testing::connect_proxy> proxy;
      if (opts->proxy) proxy.emplace(*opts->proxy);
      std::cout << "listening on 127.0.0.1:" << server.port() << std::endl;
      if (!server.ca_file().empty()) std::cout << "test CA " << server.ca_file() << std::endl;
      if (o.require_client_certificate && o.client_ca_file.empty()) {
        std::cout << "test client certificate " << server.client_certificate_file() << "\n"
                  << "test client key " << server.client_key_file() << std::endl;
      }
      if (proxy) std::cout << "proxy listening on 127.0.0.1:" << proxy->port() << std::endl;
      int signal = 0;
      while (sigwait(&stop_signals, &signal) != 0) {
      }
      stats = server.stats();
      if (proxy) proxy_stats = proxy->stats();
    }
    std::cout << testing::to_json(stats) << std::endl;
    if (proxy_stats) {
      std::cout << "proxy: tunnels " << proxy_stats->tunnels << ", refused (credentials) "
                << proxy_stats->refused_auth << ", refused (target) " << proxy_stats->refused_target
                << std::endl;
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "nxsys-mock-server: " << e.what() << "\n";
    return 1;
  }
}
