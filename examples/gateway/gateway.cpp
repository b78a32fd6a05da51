// SPDX-License-Identifier: BSL-1.0
// nxsys-gateway: a small HTTP/1.1 server that forwards every request it gets to the Nxsys API
// with a bearer token, for callers that should never see the credentials themselves.
//
// What it shows:
//   * one nxsys::auth::client and one nxsys::auth::session shared by every thread and every
//     connection: however many requests arrive at once, at most one token refresh is in flight,
//     and a 401 from the API causes one refresh, not one per request;
//   * Beast + C++20 coroutines: a coroutine per downstream connection, on a strand of its own,
//     with errors as values (as_tuple(use_awaitable)) instead of exceptions on the hot path;
//   * limits and timeouts on what callers send, and error answers that never carry a secret;
//   * a graceful stop on SIGINT/SIGTERM, with the final counters as one JSON line on stdout;
//   * --timeline FILE: requests/s and latency percentiles per time slice with each refresh
//     marked (timeline.hpp), for watching a refresh under sustained load.
//
// The client settings are the ones nxsys-token takes (tools/cli/client_flags.hpp): the NXSYS_*
// environment, flags over it, secrets only from the environment or files (argv is visible in
// ps), and --store so that a restart continues the rotated refresh-token chain. The gateway
// listens on 127.0.0.1 by default because anyone who can reach it uses the API with its
// credentials: put it on another address only behind your own access control.
//
//   export NXSYS_BASE_API_URL=https://api.nxsys.example NXSYS_CLIENT_ID=...
//   export NXSYS_CLIENT_SECRET=... NXSYS_REFRESH_TOKEN=...
//   nxsys-gateway --port 8080
//   curl http://127.0.0.1:8080/api/orders         # sent on with Authorization: Bearer ...
//   curl http://127.0.0.1:8080/gateway/stats       # the counters, answered locally
#include <nxsys/auth/client.hpp>
#include <nxsys/auth/config.hpp>
#include <nxsys/auth/error.hpp>
#include <nxsys/auth/session.hpp>
#include <nxsys/auth/version.hpp>

#include "cli/client_flags.hpp"
#include "timeline.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
namespace auth = nxsys::auth;
using asio::ip::tcp;
using boost::system::error_code;
using namespace std::chrono_literals;

// Errors as values: `auto [ec, n] = co_await op(..., use_tuple)`. An exception per closed
// connection would cost more than the rest of the request under load.
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// What a downstream caller may send, and how long it may take. The upstream side has its own
// limits and timeouts in session_config.
constexpr std::size_t max_header_bytes = 8 * 1024;
constexpr std::size_t max_body_bytes = 1024 * 1024;
constexpr auto read_timeout = 30s;   // an idle keep-alive connection is closed after this
constexpr auto write_timeout = 30s;  // a caller that does not read its answer is dropped
constexpr auto drain_timeout = 10s;  // how long a stop waits for requests in progress

constexpr std::string_view usage = R"(usage: nxsys-gateway [options]

Serves HTTP/1.1 and forwards every request (method, target, Content-Type and body) to the Nxsys
API with "Authorization: Bearer <token>"; answers with the API's status, Content-Type and body.
GET /gateway/stats is answered locally with the client's and the session's counters.
SIGINT or SIGTERM stops it: requests in progress are finished, then the final counters are
printed as one JSON line on stdout.

The API is at the base URL (NXSYS_BASE_API_URL or --base-url), which the gateway needs even
with --token-url.

)";

constexpr std::string_view usage_options = R"(
Options:
  --listen ADDR          address to listen on (default 127.0.0.1). Anyone who can reach the
                         gateway uses the API with its credentials.
  --port N               port to listen on (default 8080); 0 picks a free one. The address is
                         printed on stdout as "listening on http://ADDR:PORT".
  --threads N            threads running the server (default: the number of cores)
  --max-connections N    connections to the API at most (default 64)
  --timeline FILE        write requests, requests/s and latency percentiles per time slice,
                         and each refresh of the token as it finishes, to FILE (tab-separated,
                         written as the gateway runs; see examples/gateway/timeline.hpp)
  --timeline-slice-ms N  the slices' length (default 100)
  --verbose              log everything the client does on stderr (never a secret or token);
                         by default only warnings and errors
  --help                 show this message
  --version              show the version

Exit status: 0 after a stop by signal, 1 on a failure, 2 for a usage or configuration error.
)";

// ---- Configuration ------------------------------------------------------------------------

using auth::cli::usage_error;

struct options {
  std::string listen = "127.0.0.1";
  std::uint16_t port = 8080;
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  std::size_t max_connections = 64;
  std::string timeline;  // empty: no timeline
  std::chrono::milliseconds timeline_slice{100};
  bool verbose = false;
  auth::cli::client_flags client;  // endpoint, credentials, dialect, store, TLS
};

template <class T>
T parse_number(std::string_view flag, std::string_view text, T min, T max) {
  T value{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < min || value > max)
    throw usage_error{std::string(flag) + " needs a number from " + std::to_string(min) + " to " +
                      std::to_string(max)};
  return value;
}

// Returns nullopt when --help or --version was handled.
std::optional<options> parse_args(int argc, char** argv) {
  options o;
  o.client.read_environment();
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::optional<std::string_view> inline_value;  // --flag=value
    if (auto eq = arg.find('='); arg.substr(0, 2) == "--" && eq != std::string_view::npos) {
      inline_value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);  // messages below never show the value: it may be a secret
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
      std::cout << usage << auth::cli::client_flags_help << usage_options;
      return std::nullopt;
    } else if (arg == "--version") {
      std::cout << "nxsys-gateway " << auth::version_string << "\n";
      return std::nullopt;
    } else if (arg == "--listen") {
      o.listen = value();
      error_code ec;
      asio::ip::make_address(o.listen, ec);
      if (ec) throw usage_error{"--listen needs an IP address, like 127.0.0.1 or ::1"};
    } else if (arg == "--port") {
      o.port = parse_number<std::uint16_t>(arg, value(), 0, 65535);
    } else if (arg == "--threads") {
      o.threads = parse_number<unsigned>(arg, value(), 1, 256);
    } else if (arg == "--max-connections") {
      o.max_connections = parse_number<std::size_t>(arg, value(), 1, 100'000);
    } else if (arg == "--timeline") {
      o.timeline = value();
      if (o.timeline.empty()) throw usage_error{"--timeline needs a file name"};
    } else if (arg == "--timeline-slice-ms") {
      o.timeline_slice = std::chrono::milliseconds(parse_number<unsigned>(arg, value(), 1, 60'000));
    } else if (o.client.take(arg, value, flag)) {
      // a client setting (tools/cli/client_flags.hpp)
    } else if (arg == "--verbose" || arg == "-v") {
      flag();
      o.verbose = true;
    } else if (arg.substr(0, 1) == "-") {
      throw usage_error{"unknown option '" + std::string(arg) + "'"};
    } else {
      throw usage_error{"unexpected argument (nxsys-gateway takes options only)"};  // not echoed
    }
  }

  o.client.finish();
  if (o.client.base_url.empty())
    throw usage_error{"no API base URL: set NXSYS_BASE_API_URL or use --base-url"};
  return o;
}

// ---- Counters as JSON ---------------------------------------------------------------------

json::object to_json(const auth::client_stats& s) {
  auto us = [](std::chrono::nanoseconds d) {
    return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
  };
  json::object o;
  o["refreshes_started"] = s.refreshes_started;
  o["refreshes_succeeded"] = s.refreshes_succeeded;
  o["refreshes_failed"] = s.refreshes_failed;
  o["refreshes_ahead"] = s.refreshes_ahead;
  o["refresh_tokens_rotated"] = s.refresh_tokens_rotated;
  o["waiters_coalesced"] = s.waiters_coalesced;
  o["max_waiters_per_refresh"] = s.max_waiters_per_refresh;
  o["stale_tokens_served"] = s.stale_tokens_served;
  o["invalidations"] = s.invalidations;
  o["slow_path_calls"] = s.slow_path_calls;
  o["retries"] = s.retries;
  o["calls_failed_fast"] = s.calls_failed_fast;
  o["connections_opened"] = s.connections_opened;
  json::object reasons;
  for (const auto& [reason, n] : s.refreshes_failed_by_reason) reasons[reason] = n;
  o["refreshes_failed_by_reason"] = std::move(reasons);
  const auto finished = s.refreshes_succeeded + s.refreshes_failed;
  o["refresh_latency_us_avg"] =
      finished == 0 ? 0 : us(s.refresh_latency_total) / static_cast<std::int64_t>(finished);
  o["refresh_latency_us_max"] = us(s.refresh_latency_max);
  return o;
}

json::object to_json(const auth::session_stats& s) {
  json::object o;
  o["requests"] = s.requests;
  o["responses"] = s.responses;
  o["failures"] = s.failures;
  o["unauthorized_retries"] = s.unauthorized_retries;
  o["tokens_invalidated"] = s.tokens_invalidated;
  o["connections_opened"] = s.connections_opened;
  o["connections_reused"] = s.connections_reused;
  o["stale_connection_retries"] = s.stale_connection_retries;
  o["waited_for_connection"] = s.waited_for_connection;
  return o;
}

// ---- The gateway's shared state -----------------------------------------------------------

// One downstream connection. Touched only on its own strand (the stream's executor).
struct downstream {
  explicit downstream(tcp::socket s) : stream(std::move(s)) {}
  beast::tcp_stream stream;
  bool waiting_for_request = false;  // a stop may close it now: no request would be lost
};

// What every connection shares. Held by shared_ptr from each connection coroutine, so that a
// stop that gives up on slow connections may destroy their coroutines in any order.
class gateway {
 public:
  gateway(auth::client& client, auth::session& api, nxsys_gateway::timeline* timeline)
      : client_(client), api_(api), timeline_(timeline) {}

  auth::session& api() { return api_; }
  nxsys_gateway::timeline* timeline() { return timeline_; }  // nullptr without --timeline
  bool stopping() const { return stopping_.load(std::memory_order_acquire); }

  // A connection is registered for the life of its coroutine: a stop must find the idle ones.
  void add(const std::shared_ptr<downstream>& d) {
    std::lock_guard lock(mutex_);
    open_.insert(d);
    ++connections_accepted;
  }
  void remove(const std::shared_ptr<downstream>& d) {
    std::lock_guard lock(mutex_);
    open_.erase(d);
  }

  std::size_t open_connections() const {
    std::lock_guard lock(mutex_);
    return open_.size();
  }

  // Stops the keep-alive loops: idle connections are closed now, the others after the answer
  // to the request they are handling.
  void begin_stop() {
    stopping_.store(true, std::memory_order_release);
    std::vector<std::shared_ptr<downstream>> open;
    {
      std::lock_guard lock(mutex_);
      open.assign(open_.begin(), open_.end());
    }
    for (auto& d : open) {
      // On the connection's strand: its stream is not thread-safe. A connection that checked
      // stopping() just before the store above is reading by now, and is cancelled here.
      asio::post(d->stream.get_executor(), [d] {
        if (d->waiting_for_request) d->stream.cancel();
      });
    }
  }

  json::object stats() const {
    json::object g;
    g["connections_accepted"] = connections_accepted.load();
    g["connections_open"] = open_connections();
    g["requests"] = requests.load();
    g["upstream_answers"] = upstream_answers.load();
    g["upstream_failures"] = upstream_failures.load();
    g["local_answers"] = local_answers.load();
    json::object o;
    o["gateway"] = std::move(g);
    o["client"] = to_json(client_.stats());
    o["session"] = to_json(api_.stats());
    return o;
  }

  std::atomic<std::uint64_t> connections_accepted{0};
  std::atomic<std::uint64_t> requests{0};           // requests read from callers
  std::atomic<std::uint64_t> upstream_answers{0};   // answered with the API's answer
  std::atomic<std::uint64_t> upstream_failures{0};  // no answer from the API: 502, 503, 504
  std::atomic<std::uint64_t> local_answers{0};      // /gateway/stats, malformed requests

 private:
  auth::client& client_;
  auth::session& api_;
  nxsys_gateway::timeline* timeline_;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mutex_;
  std::unordered_set<std::shared_ptr<downstream>> open_;
};

// ---- Answering one request ----------------------------------------------------------------

using request = http::request<http::string_body>;
using response = http::response<http::string_body>;

response json_response(http::status status, const json::value& body) {
  response res{status, 11};
  res.set(http::field::content_type, "application/json");
  // Error answers and stats are about this moment: caches must not keep them.
  res.set(http::field::cache_control, "no-store");
  res.body() = json::serialize(body);
  return res;
}

// A stable, machine-readable name for the `error` field (message() is prose: "timed out").
std::string_view error_name(const error_code& ec) {
  using auth::errc;
  static constexpr std::pair<errc, std::string_view> names[] = {
      {errc::invalid_request, "invalid_request"},
      {errc::invalid_client, "invalid_client"},
      {errc::invalid_grant, "invalid_grant"},
      {errc::unauthorized_client, "unauthorized_client"},
      {errc::unsupported_grant_type, "unsupported_grant_type"},
      {errc::invalid_scope, "invalid_scope"},
      {errc::server_error, "server_error"},
      {errc::temporarily_unavailable, "temporarily_unavailable"},
      {errc::unrecognized_error, "unrecognized_error"},
      {errc::malformed_response, "malformed_response"},
      {errc::timeout, "timeout"},
      {errc::tls, "tls"},
      {errc::connection, "connection"},
      {errc::response_too_large, "response_too_large"},
      {errc::unexpected_status, "unexpected_status"},
      {errc::invalid_config, "invalid_config"},
      {errc::store_failed, "store_failed"},
      {errc::store_corrupt, "store_corrupt"},
      {errc::store_conflict, "store_conflict"},
      {errc::store_busy, "store_busy"},
      {errc::invalid_argument, "invalid_argument"},
  };
  for (const auto& [e, name] : names)
    if (ec == e) return name;
  return ec == asio::error::operation_aborted ? "operation_aborted" : "upstream_error";
}

// No answer from the API. The caller gets the failure's name and the library's description,
// which never holds a token or secret (the server's own words are stripped of them).
//
// Why not 401 for invalid_grant / invalid_client: a 401 tells a caller that *its* credentials
// were refused, but callers send none; the gateway's own authorization is what failed, and
// only its operator can fix it (re-authorize, fix the secret). So every failure to get an
// answer is a 502 ("the upstream failed"), a timeout a 504; the `error` field tells them apart.
response failure_response(const error_code& ec, const auth::diagnostics& diag) {
  http::status status = http::status::bad_gateway;
  if (ec == auth::errc::timeout) status = http::status::gateway_timeout;
  if (ec == auth::errc::invalid_argument) status = http::status::bad_request;  // target not '/'
  if (ec == asio::error::operation_aborted) status = http::status::service_unavailable;  // stop
  json::object body;
  body["error"] = error_name(ec);
  body["message"] = auth::describe(ec, diag);
  return json_response(status, body);
}

asio::awaitable<response> forward(gateway& gw, request& req) {
  // Only what the API needs. Callers' other headers (Cookie, their own Authorization, ...) are
  // not passed on: the session adds Host, Content-Length and the Authorization itself.
  request upstream;
  upstream.version(11);
  upstream.method_string(req.method_string());  // keeps methods Beast has no verb for
  upstream.target(req.target());
  if (auto ct = req.find(http::field::content_type); ct != req.end())
    upstream.set(http::field::content_type, ct->value());
  upstream.body() = std::move(req.body());

  // `diag` lives in this coroutine's frame until the request completes, as the session needs.
  auth::diagnostics diag;
  auto [ec, answer] = co_await gw.api().async_request(std::move(upstream), diag,
                                                      asio::as_tuple(asio::use_awaitable));
  if (ec) {
    ++gw.upstream_failures;
    co_return failure_response(ec, diag);
  }
  ++gw.upstream_answers;
  // Status, Content-Type and body; the API's other headers describe its connection, not ours.
  response res{answer.result(), 11};
  if (auto ct = answer.find(http::field::content_type); ct != answer.end())
    res.set(http::field::content_type, ct->value());
  res.body() = std::move(answer.body());
  co_return res;
}

asio::awaitable<response> handle(gateway& gw, request& req) {
  const std::string_view target(req.target().data(), req.target().size());
  // Routes under /gateway/ belong to the gateway: they are never sent to the API.
  if (target.substr(0, 9) == "/gateway/" || target == "/gateway") {
    ++gw.local_answers;
    if (target == "/gateway/stats" && req.method() == http::verb::get)
      co_return json_response(http::status::ok, gw.stats());
    co_return json_response(http::status::not_found,
                            {{"error", "not_found"}, {"message", "GET /gateway/stats only"}});
  }
  co_return co_await forward(gw, req);
}

// ---- Connections --------------------------------------------------------------------------

// A malformed or oversized request: answered (when we know what to say) and the connection
// closed, since the rest of the stream cannot be trusted to start at a request boundary.
std::optional<response> read_error_response(const error_code& ec) {
  static const auto& http_errors = http::make_error_code(http::error::bad_target).category();
  if (ec == http::error::header_limit)
    return json_response(http::status::request_header_fields_too_large,
                         {{"error", "header_too_large"}, {"message", "headers over 8 KiB"}});
  if (ec == http::error::body_limit)
    return json_response(http::status::payload_too_large,
                         {{"error", "body_too_large"}, {"message", "body over 1 MiB"}});
  // end_of_stream: the caller closed between requests; partial_message: in the middle of one.
  if (ec.category() == http_errors && ec != http::error::end_of_stream &&
      ec != http::error::partial_message)
    return json_response(http::status::bad_request,
                         {{"error", "bad_request"}, {"message", "malformed HTTP request"}});
  return std::nullopt;  // the caller went away, timed out, or the gateway is stopping
}

asio::awaitable<void> serve(std::shared_ptr<gateway> gw, tcp::socket socket) {
  auto conn = std::make_shared<downstream>(std::move(socket));
  // Removed however the coroutine ends: returned, or destroyed by a stop that gave up on it.
  struct registration {
    gateway& gw;
    std::shared_ptr<downstream> conn;
    ~registration() { gw.remove(conn); }
  } registered{*gw, conn};
  gw->add(conn);
  auto& stream = conn->stream;
  beast::flat_buffer buffer;

  // HTTP/1.1 keep-alive: one request after another on this connection.
  while (!gw->stopping()) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(max_header_bytes);
    parser.body_limit(max_body_bytes);
    stream.expires_after(read_timeout);
    conn->waiting_for_request = true;
    auto [ec, n] = co_await http::async_read(stream, buffer, parser, use_tuple);
    conn->waiting_for_request = false;
    if (ec) {
      if (auto res = read_error_response(ec)) {
        ++gw->local_answers;
        res->keep_alive(false);
        res->prepare_payload();
        stream.expires_after(write_timeout);
        co_await http::async_write(stream, *res, use_tuple);
      }
      break;  // end_of_stream (the caller closed), timeout, reset, or a stop
    }
    ++gw->requests;
    // The clock is read only for a timeline: a gateway without one pays nothing for it.
    auto* timeline = gw->timeline();
    const auto read_at = timeline ? nxsys_gateway::timeline::clock::now()
                                  : nxsys_gateway::timeline::clock::time_point{};

    request req = parser.release();
    // The upstream exchange has its own timeouts (session_config): no deadline on our stream
    // meanwhile, and nothing is read from the caller until its answer is written.
    stream.expires_never();
    response res = co_await handle(*gw, req);
    res.version(req.version());
    res.keep_alive(req.keep_alive() && !gw->stopping());
    res.prepare_payload();
    stream.expires_after(write_timeout);
    auto [wec, written] = co_await http::async_write(stream, res, use_tuple);
    if (timeline && !wec)
      timeline->record(read_at, nxsys_gateway::timeline::clock::now(), res.result_int());
    if (wec || !res.keep_alive()) break;
  }
  // Half-close: the caller reads our last answer, then sees the end of the stream.
  error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

// Logs what escaped a coroutine (bad_alloc, a bug): detached would drop it silently.
void log_exception(std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    std::cerr << "nxsys-gateway: error: " + std::string(x.what()) + "\n";
  }
}

asio::awaitable<void> accept_loop(std::shared_ptr<gateway> gw, tcp::acceptor& acceptor,
                                  asio::io_context& ctx) {
  for (;;) {
    // Each connection gets a strand of its own: its coroutine then runs on one thread at a
    // time, while different connections run in parallel on all the threads.
    auto [ec, socket] = co_await acceptor.async_accept(asio::make_strand(ctx), use_tuple);
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;  // stopping
    if (ec) {
      // Out of file descriptors, typically: pause instead of spinning on the error.
      std::cerr << "nxsys-gateway: warning: accept: " + ec.message() + "\n";
      asio::steady_timer pause(acceptor.get_executor(), 100ms);
      co_await pause.async_wait(use_tuple);
      continue;
    }
    socket.set_option(tcp::no_delay(true), ec);  // small answers: do not wait for Nagle
    auto ex = socket.get_executor();
    asio::co_spawn(ex, serve(gw, std::move(socket)), log_exception);
  }
}

// On SIGINT or SIGTERM: stop accepting, let requests in progress finish (for drain_timeout at
// most), then stop the io_context. main() prints the final counters once every thread is done.
asio::awaitable<void> stop_on_signal(std::shared_ptr<gateway> gw, tcp::acceptor& acceptor,
                                     asio::io_context& ctx) {
  asio::signal_set signals(acceptor.get_executor(), SIGINT, SIGTERM);
  co_await signals.async_wait(use_tuple);
  error_code ignored;
  acceptor.close(ignored);
  gw->begin_stop();
  // Polling is the simplest correct wait here: it runs once per stop, not per request.
  asio::steady_timer tick(acceptor.get_executor());
  for (auto deadline = std::chrono::steady_clock::now() + drain_timeout;
       gw->open_connections() > 0 && std::chrono::steady_clock::now() < deadline;) {
    tick.expires_after(20ms);
    co_await tick.async_wait(use_tuple);
  }
  // What still runs (a refresh-ahead, idle upstream connections, a connection past the drain
  // timeout) is abandoned: the session and the client are destroyed after this.
  ctx.stop();
}

// ---- main ---------------------------------------------------------------------------------

auth::log_function stderr_log(bool verbose) {
  return [verbose](auth::log_level level, std::string_view message) {
    if (!verbose && level < auth::log_level::warning) return;
    static constexpr const char* names[] = {"debug", "info", "warning", "error"};
    // One write per line, so that lines from several threads do not interleave.
    std::cerr << "nxsys-gateway: " + std::string(names[static_cast<int>(level)]) + ": " +
                     std::string(message) + "\n";
  };
}

int run(const options& o) {
  asio::io_context ctx(static_cast<int>(o.threads));

  auto cfg = o.client.make_config();  // throws store_corrupt for a damaged --store file
  cfg.observers.log = stderr_log(o.verbose);
  // Before the client, whose refresh observer points at it: it outlives the client.
  std::unique_ptr<nxsys_gateway::timeline> timeline;
  if (!o.timeline.empty()) {
    timeline = std::make_unique<nxsys_gateway::timeline>(o.timeline, o.timeline_slice);
    cfg.observers.on_refresh = [t = timeline.get()](const auth::refresh_event& e) {
      t->refresh(e.latency, e.ahead, e.waiters, e.ec ? error_name(e.ec) : "ok");
    };
  }
  // The one client and the one session of the process: every connection on every thread uses
  // them, which is what makes the refresh a single flight. Both throw invalid_config.
  auth::client client(ctx.get_executor(), std::move(cfg));
  auth::session_config api_cfg;
  api_cfg.base_url = o.client.base_url;
  api_cfg.max_connections = o.max_connections;
  api_cfg.http.tls.ca_file = o.client.ca_file;
  api_cfg.http.allow_insecure_http = o.client.insecure_http;
  auth::session api(client, std::move(api_cfg));

  auto gw = std::make_shared<gateway>(client, api, timeline.get());
  // The acceptor and the signal wait share a strand: the stop closes the acceptor safely.
  auto control = asio::make_strand(ctx);
  tcp::acceptor acceptor(control);
  const tcp::endpoint where(asio::ip::make_address(o.listen), o.port);  // throws for a bad one
  acceptor.open(where.protocol());
  acceptor.set_option(tcp::acceptor::reuse_address(true));
  acceptor.bind(where);
  acceptor.listen(asio::socket_base::max_listen_connections);

  const auto bound = acceptor.local_endpoint();
  const std::string host = bound.address().is_v6() ? "[" + bound.address().to_string() + "]"
                                                   : bound.address().to_string();
  // Scripts wait for this line to learn the port (--port 0): flushed at once.
  std::cout << "listening on http://" << host << ':' << bound.port() << std::endl;

  asio::co_spawn(control, accept_loop(gw, acceptor, ctx), log_exception);
  asio::co_spawn(control, stop_on_signal(gw, acceptor, ctx), log_exception);

  std::vector<std::jthread> threads;
  for (unsigned i = 1; i < o.threads; ++i) threads.emplace_back([&ctx] { ctx.run(); });
  try {
    ctx.run();
  } catch (...) {
    ctx.stop();  // a handler threw (a bug): end the other threads too, so that the joins end
    throw;
  }
  for (auto& t : threads) t.join();

  // Every thread is done: these are the final counters, and the timeline's last slices.
  std::cout << json::serialize(gw->stats()) << std::endl;
  if (timeline && !timeline->finish()) {
    std::cerr << "nxsys-gateway: error: --timeline " + o.timeline + ": write failed\n";
    return 1;
  }
  return std::cout ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::optional<options> opts;
  try {
    opts = parse_args(argc, argv);
    if (!opts) return 0;
  } catch (const usage_error& e) {
    std::cerr << "nxsys-gateway: " << e.message << "\n\n" << usage;
    return 2;
  }
  try {
    return run(*opts);
  } catch (const auth::error_with_diagnostics& e) {
    // what() is describe(): the configuration problem, never a secret.
    std::cerr << "nxsys-gateway: " << e.what() << '\n';
    return e.code() == auth::errc::invalid_config ? 2 : 1;
  } catch (const std::exception& e) {
    std::cerr << "nxsys-gateway: " << e.what() << '\n';
    return 1;
  }
}
