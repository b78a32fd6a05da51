// SPDX-License-Identifier: BSL-1.0
// The mock Nxsys token server: a Beast HTTP/1.1 (optionally TLS, optionally mutual TLS) server on
// 127.0.0.1 whose POST /nxsys/oauth/token behaves like the real endpoint, plus knobs tests use to
// misbehave.
#include <nxsys/auth/testing/mock_server.hpp>

#include "certificates.hpp"
#include "loopback_server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json.hpp>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <thread>
#include <type_traits>
#include <unistd.h>  // mkstemps, close
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace nxsys::auth::testing {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using strand_type = asio::strand<asio::any_io_executor>;

constexpr std::string_view token_path = "/nxsys/oauth/token";
constexpr std::string_view stats_path = "/stats";
constexpr std::string_view api_prefix = "/api/";
constexpr std::size_t max_body_size = 1024 * 1024;
// How much of a rejected body we read and discard before closing: closing with unread data makes
// the kernel send RST, which can destroy the answer before the client reads it.
constexpr std::size_t max_drain_size = 8 * max_body_size;
constexpr auto drain_timeout = std::chrono::seconds(1);
constexpr auto tls_timeout = std::chrono::seconds(5);

// Completion token of every await: errors come back as values, so a peer that goes away never
// turns into an exception unwinding through a session.
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

using form_fields = std::map<std::string, std::string, std::less<>>;

// ---- Protocol helpers (no I/O) -----------------------------------------------------------------

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; };
           return lower(x) == lower(y);
         });
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Media type only: parameters such as "; charset=UTF-8" are allowed and ignored.
bool is_form_content_type(std::string_view value) {
  return iequals(trim_ows(value.substr(0, value.find(';'))), "application/x-www-form-urlencoded");
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// application/x-www-form-urlencoded decoding: '+' is a space, %XX a byte.
std::optional<std::string> form_decode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '+') {
      out += ' ';
    } else if (in[i] == '%') {
      if (i + 2 >= in.size()) return std::nullopt;
      int hi = hex_value(in[i + 1]);
      int lo = hex_value(in[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += in[i];
    }
  }
  return out;
}

bool is_known_parameter(std::string_view name) {
  return name == "grantType" || name == "refreshToken" || name == "clientId" ||
         name == "clientSecret" || name == "grant_type" || name == "refresh_token" ||
         name == "client_id" || name == "client_secret" || name == "scope";
}

// "Basic base64(urlencode(id):urlencode(secret))" (RFC 6749 §2.3.1) into id and secret.
std::optional<std::pair<std::string, std::string>> parse_basic(std::string_view header) {
  if (header.size() < 6 || !boost::beast::iequals(header.substr(0, 6), "Basic "))
    return std::nullopt;
  auto b64 = header.substr(6);
  if (b64.empty() || b64.size() % 4 != 0) return std::nullopt;
  std::string plain(b64.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(plain.data()),
                                reinterpret_cast<const unsigned char*>(b64.data()),
                                static_cast<int>(b64.size()));
  if (n < 0) return std::nullopt;
  std::size_t len = static_cast<std::size_t>(n);
  for (std::size_t i = b64.size(); i > 0 && b64[i - 1] == '='; --i) --len;  // padding bytes
  plain.resize(len);
  const auto colon = plain.find(':');
  if (colon == std::string::npos) return std::nullopt;
  auto id = form_decode(std::string_view(plain).substr(0, colon));
  auto secret = form_decode(std::string_view(plain).substr(colon + 1));
  if (!id || !secret) return std::nullopt;
  return std::pair{std::move(*id), std::move(*secret)};
}

// Parses a form body into `out`. On failure returns a description that is safe to send back:
// it never quotes what the client sent, since values are secrets and tokens.
std::optional<std::string> parse_form(std::string_view body, form_fields& out) {
  while (!body.empty()) {
    auto amp = body.find('&');
    std::string_view pair = body.substr(0, amp);
    body = amp == std::string_view::npos ? std::string_view{} : body.substr(amp + 1);
    if (pair.empty()) continue;  // "a=1&&b=2" is tolerated, as browsers do
    auto eq = pair.find('=');
    auto name = form_decode(pair.substr(0, eq));
    auto value =
        form_decode(eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1));
    if (!name || !value) return "malformed percent-encoding in the request body";
    // RFC 6749 §3.2: parameters must not be included more than once. Only known names are
    // quoted back; unknown parameters are ignored, as the endpoint would.
    if (out.count(*name) != 0) {
      if (is_known_parameter(*name)) return "parameter " + *name + " is repeated";
      continue;
    }
    out.emplace(std::move(*name), std::move(*value));
  }
  return std::nullopt;
}

std::string error_json(std::string_view error, std::string_view description) {
  json::object o;
  o["error"] = error;
  if (!description.empty()) o["error_description"] = description;
  return json::serialize(o);
}

// An answer before it becomes a response, so token decisions stay free of Beast types.
struct answer {
  http::status status = http::status::ok;
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  bool no_store = false;            // token endpoint answers must not be cached (RFC 6749 §5.1)
  bool client_credentials = false;  // a token issued for a client_credentials grant
};

answer json_answer(http::status status, std::string body) {
  answer a;
  a.status = status;
  a.body = std::move(body);
  return a;
}

answer oauth_error(http::status status, std::string_view error, std::string_view description) {
  answer a = json_answer(status, error_json(error, description));
  a.no_store = true;
  return a;
}

// What the server decided about a token request when it arrived; the rest is decided after the
// latency wait, like a real server that does its work before answering.
struct token_ticket {
  std::optional<scripted_failure> scripted;
  bool outage = false;  // fail_every hit
  bool bad_content_type = false;
  std::optional<std::string> form_error;
  form_fields fields;
  bool has_authorization = false;                            // an Authorization header was sent
  std::optional<std::pair<std::string, std::string>> basic;  // its id and secret, if Basic
  std::chrono::milliseconds latency{0};
};

// ---- Connections --------------------------------------------------------------------------------

// Lets close_idle_connections() wait until every connection has been dealt with.
class countdown {
 public:
  explicit countdown(std::size_t n) : left_(n) {}
  void arrive() {
    std::lock_guard lock(mutex_);
    if (--left_ == 0) cv_.notify_all();
  }
  void wait() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] { return left_ == 0; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::size_t left_;
};

// The part of a connection the registry needs; everything in it is touched only on strand_.
struct connection_base {
  explicit connection_base(strand_type strand)
      : strand_(std::move(strand)), latency_timer_(strand_) {}
  virtual ~connection_base() { release_idle_waiters(); }
  connection_base(const connection_base&) = delete;
  connection_base& operator=(const connection_base&) = delete;

  // Kept alive after an answer, with nothing of the next request received yet: closing now
  // loses nothing. A fresh connection is not idle: its client is about to use it, and only a
  // reused connection is one a client can expect to find closed and retry on.
  bool idle() const { return answered_ && waiting_for_request_ && buffer_.size() == 0; }

  // Called by close_idle_connections() on the strand. A client may read an answer before the write
  // of it has completed here; a connection in that state becomes idle the moment the write
  // completes, so the decision (and the caller's wait) is put off until then.
  void close_if_idle(std::shared_ptr<countdown> done) {
    if (idle()) {
      close();
    } else if (writing_ && !closed_) {
      idle_waiters_.push_back(std::move(done));
      return;
    }
    done->arrive();
  }

  // After the write of a keep-alive answer: honours a close_if_idle() that came during it.
  void answer_written(bool ok) {
    writing_ = false;
    answered_ = true;
    if (idle_waiters_.empty()) return;
    if (ok && buffer_.size() == 0) close();
    release_idle_waiters();
  }

  void release_idle_waiters() {
    for (auto& w : idle_waiters_) w->arrive();
    idle_waiters_.clear();
  }

  // Aborts whatever the session awaits; the session sees closed_ and ends.
  void close() {
    release_idle_waiters();
    if (closed_) return;
    closed_ = true;
    latency_timer_.cancel();
    auto& socket = lowest_layer().socket();
    error_code ignored;
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    lowest_layer().close();
  }

  virtual beast::tcp_stream& lowest_layer() = 0;

  strand_type strand_;
  asio::steady_timer latency_timer_;
  beast::flat_buffer buffer_;
  bool waiting_for_request_ = false;
  bool writing_ = false;
  bool answered_ = false;
  bool closed_ = false;
  std::vector<std::shared_ptr<countdown>> idle_waiters_;
};

template <class Stream>
struct connection final : connection_base {
  template <class... Args>
  connection(strand_type strand, tcp::socket socket, Args&... args)
      : connection_base(std::move(strand)), stream_(std::move(socket), args...) {}

  beast::tcp_stream& lowest_layer() override { return beast::get_lowest_layer(stream_); }

  Stream stream_;
};

using tls_stream = beast::ssl_stream<beast::tcp_stream>;

template <class Stream>
constexpr bool is_tls = std::is_same_v<Stream, tls_stream>;

// The CA certificate (and the client certificate and key) as a file, because that is what TLS
// clients take (tls_options::ca_file). mkstemps creates it readable by its owner only.
class temporary_file {
 public:
  // `what` names the file: nxsys-mock-WHAT-XXXXXX.pem in the temporary directory.
  temporary_file(std::string_view content, std::string_view what) {
    std::string name = (std::filesystem::temp_directory_path() /
                        ("nxsys-mock-" + std::string(what) + "-XXXXXX.pem"))
                           .string();
    const int fd = ::mkstemps(name.data(), 4);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "mkstemps " + name);
    ::close(fd);
    path_ = std::move(name);
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    if (!out.flush()) {
      std::remove(path_.c_str());
      throw std::runtime_error("cannot write " + path_);
    }
  }
  ~temporary_file() { std::remove(path_.c_str()); }
  temporary_file(const temporary_file&) = delete;
  temporary_file& operator=(const temporary_file&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace

// ---- The server ---------------------------------------------------------------------------------

// Shared with the completion handlers of its coroutines: on a user's executor they may outlive
// the mock_server object, and must find the state they run against still there.
struct mock_server::impl : detail::loopback_server<mock_server::impl, connection_base> {
  // `ex` empty: the server runs an io_context of its own on opts.threads threads.
  impl(std::optional<asio::any_io_executor> ex, mock_server_options opts);

  void require_client_certificates();  // from the constructor

  // loopback_server's hooks.
  void on_accept();
  std::pair<std::shared_ptr<connection_base>, asio::awaitable<void>> open_session(
      strand_type strand, tcp::socket socket);
  template <class Stream>
  asio::awaitable<void> run_session(std::shared_ptr<connection<Stream>> c);
  template <class Stream>
  asio::awaitable<void> write_answer(connection<Stream>& c, answer a, bool keep_alive);
  template <class Stream>
  asio::awaitable<void> graceful_close(connection<Stream>& c);
  template <class Stream>
  asio::awaitable<bool> serve_token_request(connection<Stream>& c,
                                            const http::request<http::string_body>& req);

  token_ticket begin_token_request(const http::request<http::string_body>& req);
  answer finish_token_request(const token_ticket& t);
  answer decide_token_request(const token_ticket& t);  // under mutex_
  // What an issued token's answer says about refresh tokens.
  enum class refresh_field {
    none,     // no refresh token (no rotation; client_credentials)
    rotate,   // rotate, and answer the new one
    current,  // answer the current one (a grace answer)
  };
  answer issue_token(const std::string* scope, refresh_field refresh);  // under mutex_
  answer answer_api(std::string_view authorization, std::string_view path);
  void end_token_request();
  void count_request();
  void count_token_error();
  void count_tls_handshake(SSL* ssl, bool ok);
  const std::string& client_file(std::optional<temporary_file>& file, std::string_view content,
                                 std::string_view what);

  // Fixed after construction; read from any thread without locking.
  const mock_server_options opts_;

  std::optional<ssl::context> ssl_ctx_;
  std::optional<temporary_file> ca_file_;  // when serving the built-in certificate
  // The built-in client certificate and key as files, written on demand.
  std::mutex client_files_mutex_;
  std::optional<temporary_file> client_certificate_file_;
  std::optional<temporary_file> client_key_file_;
  std::atomic<std::int64_t> latency_ms_;
  std::atomic<bool> close_after_response_{false};

  // Token state and counters; one mutex since none of this is hot enough to need more.
  mutable std::mutex mutex_;
  mock_server_stats stats_;
  std::uint64_t in_flight_ = 0;
  std::uint64_t token_requests_ = 0;
  std::vector<std::string> presented_;
  std::string current_refresh_;
  std::unordered_set<std::string> issued_refresh_;   // every refresh token of the chain
  std::unordered_set<std::string> retired_refresh_;  // rotated away: presenting one is reuse
  bool chain_revoked_ = false;
  std::uint64_t refresh_counter_ = 0;
  std::uint64_t access_counter_ = 0;
  std::string last_access_;
  // Issued access tokens and when each stops being accepted by /api/ (steady clock).
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> access_valid_until_;
  std::string last_replaced_refresh_;                        // what the last rotation replaced
  std::chrono::steady_clock::time_point rotated_at_{};       // when it was replaced
  std::chrono::steady_clock::time_point last_refresh_at_{};  // the last successful refresh
  std::deque<std::pair<scripted_failure, int>> scripted_;
  std::mt19937_64 rng_{std::random_device{}()};
};

mock_server::impl::impl(std::optional<asio::any_io_executor> ex, mock_server_options opts)
    : loopback_server(std::move(ex), opts.threads, opts.port, "nxsys mock server"),
      opts_(std::move(opts)),
      latency_ms_(opts_.latency.count()),
      current_refresh_(opts_.initial_refresh_token) {
  issued_refresh_.insert(current_refresh_);
  if (opts_.require_client_certificate && !opts_.tls)
    throw std::invalid_argument("mock_server: require_client_certificate needs tls");
  if (opts_.tls) {
    ssl_ctx_.emplace(ssl::context::tls_server);
    ssl_ctx_->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                          ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                          ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
    if (opts_.cert_chain_file.empty() && opts_.private_key_file.empty()) {
      // Compiled in rather than read from the source tree, so an installed library serves TLS.
      ssl_ctx_->use_certificate_chain(asio::buffer(detail::server_certificate_pem));
      ssl_ctx_->use_private_key(asio::buffer(detail::server_key_pem), ssl::context::pem);
      ca_file_.emplace(detail::ca_certificate_pem, "ca");
    } else {
      ssl_ctx_->use_certificate_chain_file(opts_.cert_chain_file);
      ssl_ctx_->use_private_key_file(opts_.private_key_file, ssl::context::pem);
    }
    if (opts_.require_client_certificate) require_client_certificates();
  }
}

// Mutual TLS: the handshake fails without a client certificate that verifies against the client
// CA. OpenSSL checks the certificate's purpose too (a server verifying a client wants
// clientAuth), so a server certificate is no client certificate.
void mock_server::impl::require_client_certificates() {
  SSL_CTX* ctx = ssl_ctx_->native_handle();
  ssl_ctx_->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
  if (opts_.client_ca_file.empty()) {
    ssl_ctx_->add_certificate_authority(asio::buffer(detail::ca_certificate_pem));
    // The CA's name goes into the CertificateRequest, for clients that pick a certificate by it.
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(
        BIO_new_mem_buf(detail::ca_certificate_pem.data(),
                        static_cast<int>(detail::ca_certificate_pem.size())),
        &BIO_free);
    std::unique_ptr<X509, decltype(&X509_free)> ca(
        bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr, &X509_free);
    if (!ca || SSL_CTX_add_client_CA(ctx, ca.get()) != 1)
      throw boost::system::system_error(
          error_code(static_cast<int>(::ERR_get_error()), asio::error::get_ssl_category()),
          "mock_server: built-in client CA");
  } else {
    ssl_ctx_->load_verify_file(opts_.client_ca_file);
    // Takes ownership of the list; a file without names leaves the list empty, which is allowed.
    if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(opts_.client_ca_file.c_str()))
      SSL_CTX_set_client_CA_list(ctx, names);
  }
  // A server that verifies peers refuses to resume a session without a session id context, so
  // a client resuming its session (TLS 1.2 ids, TLS 1.3 tickets) would fail its handshake.
  static constexpr unsigned char sid_context[] = "nxsys-mock-server";
  if (SSL_CTX_set_session_id_context(ctx, sid_context, sizeof sid_context - 1) != 1)
    throw boost::system::system_error(
        error_code(static_cast<int>(::ERR_get_error()), asio::error::get_ssl_category()),
        "mock_server: session id context");
}

void mock_server::impl::on_accept() {
  std::lock_guard lock(mutex_);
  ++stats_.connections;
}

std::pair<std::shared_ptr<connection_base>, asio::awaitable<void>> mock_server::impl::open_session(
    strand_type strand, tcp::socket socket) {
  if (ssl_ctx_) {
    auto c = std::make_shared<connection<tls_stream>>(strand, std::move(socket), *ssl_ctx_);
    auto session = run_session(c);
    return {std::move(c), std::move(session)};
  }
  auto c = std::make_shared<connection<beast::tcp_stream>>(strand, std::move(socket));
  auto session = run_session(c);
  return {std::move(c), std::move(session)};
}

template <class Stream>
asio::awaitable<void> mock_server::impl::run_session(std::shared_ptr<connection<Stream>> c) {
  if constexpr (is_tls<Stream>) {
    c->lowest_layer().expires_after(tls_timeout);
    auto [ec] = co_await c->stream_.async_handshake(ssl::stream_base::server, use_tuple);
    c->lowest_layer().expires_never();
    if (c->closed_) co_return;  // stop(): neither a success nor a failure of the client's
    count_tls_handshake(c->stream_.native_handle(), !ec);
    if (ec) {
      c->close();
      co_return;
    }
  }

  while (!c->closed_) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(max_body_size);

    c->waiting_for_request_ = true;
    auto [ec, n] = co_await http::async_read_header(c->stream_, c->buffer_, parser, use_tuple);
    c->waiting_for_request_ = false;
    if (c->closed_) break;

    // Expect: 100-continue (curl sends it for larger bodies): say go ahead, or the client waits.
    auto expect = parser.get()[http::field::expect];
    if (!ec && !parser.is_done() &&
        iequals(std::string_view(expect.data(), expect.size()), "100-continue")) {
      http::response<http::empty_body> go_ahead{http::status::continue_, 11};
      auto [wec, wn] = co_await http::async_write(c->stream_, go_ahead, use_tuple);
      if (wec || c->closed_) break;
    }
    if (!ec && !parser.is_done()) {
      auto [rec, rn] = co_await http::async_read(c->stream_, c->buffer_, parser, use_tuple);
      ec = rec;
      if (c->closed_) break;
    }

    if (ec == http::error::body_limit) {
      count_request();
      const auto& partial = parser.get();
      if (partial.method() == http::verb::post &&
          std::string_view(partial.target().data(), partial.target().size()) == token_path)
        count_token_error();
      answer a = oauth_error(http::status::payload_too_large, "invalid_request",
                             "request body larger than 1 MiB");
      co_await write_answer(*c, std::move(a), false);
      break;
    }
    if (ec == http::error::end_of_stream || ec == http::error::partial_message ||
        ec == asio::error::eof || ec == asio::error::connection_reset ||
        ec == asio::error::broken_pipe || ec == asio::error::operation_aborted ||
        ec == ssl::error::stream_truncated || ec == beast::error::timeout) {
      break;  // the client went away between (or in the middle of) requests
    }
    if (ec) {
      count_request();
      co_await write_answer(*c,
                            json_answer(http::status::bad_request,
                                        error_json("invalid_request", "malformed HTTP request")),
                            false);
      break;
    }

    auto req = parser.release();
    bool keep_alive = req.keep_alive() && !close_after_response_.load();
    std::string_view target(req.target().data(), req.target().size());
    std::string_view path = target.substr(0, target.find('?'));

    if (path == token_path && req.method() == http::verb::post) {
      if (!co_await serve_token_request(*c, req)) break;
      continue;
    }

    count_request();
    answer a;
    if (path == token_path || path == stats_path) {
      if (path == stats_path && req.method() == http::verb::get) {
        std::lock_guard lock(mutex_);
        a = json_answer(http::status::ok, to_json(stats_));
        a.no_store = true;
      } else {
        a = json_answer(http::status::method_not_allowed, error_json("method_not_allowed", ""));
        a.headers.emplace_back("Allow", path == token_path ? "POST" : "GET");
      }
    } else if (path.substr(0, api_prefix.size()) == api_prefix) {
      const auto auth = req[http::field::authorization];
      a = answer_api(std::string_view(auth.data(), auth.size()), path);
    } else {
      a = json_answer(http::status::not_found, error_json("not_found", ""));
    }
    co_await write_answer(*c, std::move(a), keep_alive);
    if (!keep_alive) break;
  }
  c->close();
}

// Answers one token request; false when the connection is done.
template <class Stream>
asio::awaitable<bool> mock_server::impl::serve_token_request(
    connection<Stream>& c, const http::request<http::string_body>& req) {
  token_ticket ticket = begin_token_request(req);
  std::optional<answer> decided;
  if (opts_.decide_on_arrival) decided = finish_token_request(ticket);
  if (ticket.latency.count() > 0 && !c.closed_) {
    // An asynchronous wait, so that concurrent requests overlap instead of queueing on a thread.
    c.latency_timer_.expires_after(ticket.latency);
    co_await c.latency_timer_.async_wait(use_tuple);
  }
  if (c.closed_) {
    // Closed while waiting: never answered (decided on arrival: acted on, answer lost).
    end_token_request();
    co_return false;
  }
  answer a = decided ? std::move(*decided) : finish_token_request(ticket);
  // Left before the write starts, not after it ends: a client may send its next request as soon
  // as it has read this answer, and must not find this one still counted as in flight.
  end_token_request();
  bool keep_alive = req.keep_alive() && !close_after_response_.load();
  co_await write_answer(c, std::move(a), keep_alive);
  co_return keep_alive && !c.closed_;
}

template <class Stream>
asio::awaitable<void> mock_server::impl::write_answer(connection<Stream>& c, answer a,
                                                      bool keep_alive) {
  if (c.closed_) co_return;
  http::response<http::string_body> res{a.status, 11};
  res.set(http::field::server, "nxsys-mock-server");
  if (!a.content_type.empty()) res.set(http::field::content_type, a.content_type);
  if (a.no_store) {
    res.set(http::field::cache_control, "no-store");
    res.set(http::field::pragma, "no-cache");
  }
  for (auto& [name, value] : a.headers) res.set(name, value);
  res.body() = std::move(a.body);
  res.keep_alive(keep_alive);
  res.prepare_payload();
  c.writing_ = true;
  auto [ec, n] = co_await http::async_write(c.stream_, res, use_tuple);
  c.answer_written(!ec && keep_alive);
  if (ec) {
    c.close();
  } else if (!keep_alive) {
    co_await graceful_close(c);
  }
}

template <class Stream>
asio::awaitable<void> mock_server::impl::graceful_close(connection<Stream>& c) {
  if (c.closed_) co_return;
  if constexpr (is_tls<Stream>) {
    c.lowest_layer().expires_after(tls_timeout);
    co_await c.stream_.async_shutdown(use_tuple);
  } else {
    // Half-close, then read what the client still sends until it closes too (lingering close).
    error_code ignored;
    c.stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    c.stream_.expires_after(drain_timeout);
    std::array<char, 16 * 1024> scratch;
    std::size_t drained = 0;
    while (!c.closed_ && drained < max_drain_size) {
      auto [ec, n] = co_await c.stream_.async_read_some(asio::buffer(scratch), use_tuple);
      if (ec) break;
      drained += n;
    }
  }
  c.close();
}

// ---- Token endpoint state -----------------------------------------------------------------------

void mock_server::impl::count_request() {
  std::lock_guard lock(mutex_);
  ++stats_.requests;
}

void mock_server::impl::count_token_error() {
  std::lock_guard lock(mutex_);
  ++stats_.errors;
}

// Before the first request is read, so a client that has read an answer sees its handshake
// counted.
void mock_server::impl::count_tls_handshake(SSL* ssl, bool ok) {
  bool verified_client = false;
  if (ok) {
    X509* peer = SSL_get_peer_certificate(ssl);  // a new reference (or null)
    verified_client = peer != nullptr && SSL_get_verify_result(ssl) == X509_V_OK;
    X509_free(peer);
  }
  std::lock_guard lock(mutex_);
  if (!ok) {
    ++stats_.tls_handshake_failures;
    return;
  }
  ++stats_.tls_handshakes;
  if (verified_client) ++stats_.client_certificates;
}

token_ticket mock_server::impl::begin_token_request(const http::request<http::string_body>& req) {
  token_ticket t;
  auto content_type = req[http::field::content_type];
  t.bad_content_type =
      !is_form_content_type(std::string_view(content_type.data(), content_type.size()));
  if (!t.bad_content_type) t.form_error = parse_form(req.body(), t.fields);
  const auto authorization = req[http::field::authorization];
  t.has_authorization = !authorization.empty();
  if (t.has_authorization)
    t.basic = parse_basic(std::string_view(authorization.data(), authorization.size()));
  t.latency = std::chrono::milliseconds(latency_ms_.load());
  const bool rfc = t.fields.count("grant_type") != 0;

  std::lock_guard lock(mutex_);
  ++stats_.requests;
  ++in_flight_;
  stats_.max_in_flight = std::max(stats_.max_in_flight, in_flight_);
  ++token_requests_;
  if (rfc) ++stats_.rfc6749_requests;
  if (t.has_authorization) ++stats_.basic_auth_requests;
  if (auto it = t.fields.find(rfc ? "refresh_token" : "refreshToken"); it != t.fields.end())
    presented_.push_back(it->second);
  // Scripted failures are taken in arrival order, so "the next N requests" means what it says
  // even when requests overlap.
  if (!scripted_.empty()) {
    t.scripted = scripted_.front().first;
    if (--scripted_.front().second <= 0) scripted_.pop_front();
  } else if (opts_.fail_every > 0 &&
             token_requests_ % static_cast<std::uint64_t>(opts_.fail_every) == 0) {
    t.outage = true;
  }
  return t;
}

void mock_server::impl::end_token_request() {
  std::lock_guard lock(mutex_);
  --in_flight_;
}

answer mock_server::impl::finish_token_request(const token_ticket& t) {
  std::lock_guard lock(mutex_);
  answer a = decide_token_request(t);
  // Counted before the answer is written, so a client that has read it sees the stats updated.
  if (a.status == http::status::ok && !t.scripted) {
    ++stats_.refreshes;
    if (a.client_credentials) ++stats_.client_credentials_grants;
    const auto now = std::chrono::steady_clock::now();
    if (stats_.refreshes > 1) {
      const auto gap = static_cast<std::uint64_t>(
          std::chrono::duration_cast<std::chrono::milliseconds>(now - last_refresh_at_).count());
      if (stats_.refreshes == 2 || gap < stats_.min_refresh_gap_ms) stats_.min_refresh_gap_ms = gap;
    }
    last_refresh_at_ = now;
  } else
    ++stats_.errors;
  return a;
}

answer mock_server::impl::decide_token_request(const token_ticket& t) {
  if (t.scripted) {
    answer a;
    a.status = static_cast<http::status>(t.scripted->status);
    a.body = t.scripted->body;
    a.content_type = t.scripted->content_type;
    a.headers = t.scripted->headers;
    return a;
  }
  if (t.outage) {
    answer a = oauth_error(http::status::service_unavailable, "temporarily_unavailable",
                           "the token endpoint is temporarily unavailable");
    a.headers.emplace_back("Retry-After", "1");
    return a;
  }
  if (t.bad_content_type)
    return oauth_error(http::status::bad_request, "invalid_request",
                       "Content-Type must be application/x-www-form-urlencoded");
  if (t.form_error) return oauth_error(http::status::bad_request, "invalid_request", *t.form_error);

  // RFC 6749 §3.2: a parameter sent without a value is treated as omitted.
  auto field = [&](std::string_view name) -> const std::string* {
    auto it = t.fields.find(name);
    return it == t.fields.end() || it->second.empty() ? nullptr : &it->second;
  };
  auto missing = [](std::string_view name) {
    return oauth_error(http::status::bad_request, "invalid_request",
                       "missing parameter: " + std::string(name));
  };
  // RFC 6749 names when the request uses them, the seed's camelCase otherwise.
  const bool rfc = t.fields.count("grant_type") != 0;
  const std::string_view grant_type = rfc ? "grant_type" : "grantType";
  const std::string_view refresh_name = rfc ? "refresh_token" : "refreshToken";
  const std::string_view id_name = rfc ? "client_id" : "clientId";
  const std::string_view secret_name = rfc ? "client_secret" : "clientSecret";
  // The grant type first: which other parameters are required depends on it.
  if (!field(grant_type)) return missing(grant_type);
  // RFC 6749 §4.4: the client alone, no refresh token; same client authentication.
  const bool client_credentials = *field(grant_type) == "client_credentials";
  if (*field(grant_type) != "refresh_token" && !client_credentials)
    return oauth_error(http::status::bad_request, "unsupported_grant_type",
                       std::string(grant_type) + " must be refresh_token or client_credentials");
  if (!client_credentials && !field(refresh_name)) return missing(refresh_name);
  // Client authentication: HTTP Basic or the body, never both (RFC 6749 §2.3).
  const std::string* id = nullptr;
  const std::string* secret = nullptr;
  if (t.has_authorization) {
    if (!t.basic)
      return oauth_error(http::status::bad_request, "invalid_request",
                         "malformed Basic credentials");
    if (field(id_name) || field(secret_name))
      return oauth_error(http::status::bad_request, "invalid_request",
                         "more than one client authentication method");
    id = &t.basic->first;
    secret = &t.basic->second;
  } else {
    for (std::string_view name : {id_name, secret_name})
      if (!field(name)) return missing(name);
    id = field(id_name);
    secret = field(secret_name);
  }
  if (*id != opts_.client_id || *secret != opts_.client_secret) {
    answer a =
        oauth_error(http::status::unauthorized, "invalid_client", "client authentication failed");
    a.headers.emplace_back("WWW-Authenticate", "Basic realm=\"nxsys\"");
    return a;
  }

  if (client_credentials) {
    // Refused only once the client is known (RFC 6749 §5.2: "the authenticated client").
    if (!opts_.allow_client_credentials)
      return oauth_error(http::status::bad_request, "unauthorized_client",
                         "the client is not authorized to use the client_credentials grant");
    // Never a refresh token (RFC 6749 §4.4.3), and the refresh token chain is left alone.
    answer a = issue_token(field("scope"), refresh_field::none);
    a.client_credentials = true;
    return a;
  }

  const std::string& refresh = *field(refresh_name);
  if (chain_revoked_)
    return oauth_error(http::status::bad_request, "invalid_grant", "the refresh token was revoked");
  if (refresh == current_refresh_)
    return issue_token(field("scope"), opts_.rotate ? refresh_field::rotate : refresh_field::none);
  if (opts_.reuse_grace.count() > 0 && !last_replaced_refresh_.empty() &&
      refresh == last_replaced_refresh_ &&
      std::chrono::steady_clock::now() < rotated_at_ + opts_.reuse_grace) {
    ++stats_.grace_refreshes;
    // The current refresh token, no new rotation.
    return issue_token(field("scope"), opts_.rotate ? refresh_field::current : refresh_field::none);
  }
  if (opts_.reuse_detection && retired_refresh_.count(refresh) != 0) {
    // A rotated-away token came back: someone holds a copy, so the whole chain is burnt.
    ++stats_.reuse_detected;
    chain_revoked_ = true;
    return oauth_error(http::status::bad_request, "invalid_grant",
                       "refresh token reuse detected; the token chain was revoked");
  }
  return oauth_error(http::status::bad_request, "invalid_grant",
                     "the refresh token is invalid, expired or revoked");
}

answer mock_server::impl::issue_token(const std::string* scope, refresh_field refresh) {
  const bool camel = opts_.names == field_names::camel;

  static constexpr char hex[] = "0123456789abcdef";
  std::string random(16, '0');
  auto bits = rng_();
  for (auto& ch : random) {
    ch = hex[bits & 0xf];
    bits >>= 4;
  }
  last_access_ = "at-" + std::to_string(++access_counter_) + "-" + random;
  access_valid_until_[last_access_] = std::chrono::steady_clock::now() + opts_.ttl;

  json::object o;
  if (!opts_.extra_answer_fields.empty()) o = json::parse(opts_.extra_answer_fields).as_object();
  if (scope != nullptr) o["scope"] = *scope;
  o[camel ? "accessToken" : "access_token"] = last_access_;
  o[camel ? "tokenType" : "token_type"] = "Bearer";
  if (opts_.send_expires_in) {
    auto key = camel ? "expiresIn" : "expires_in";
    if (opts_.expires_in_as_string)
      o[key] = std::to_string(opts_.ttl.count());
    else
      o[key] = static_cast<std::int64_t>(opts_.ttl.count());
  }
  if (refresh == refresh_field::rotate) {
    rotated_at_ = std::chrono::steady_clock::now();
    std::string next;
    do {  // never reissue a token of the chain, whatever initial_refresh_token was
      next = "refresh-" + std::to_string(++refresh_counter_);
    } while (!issued_refresh_.insert(next).second);
    last_replaced_refresh_ = std::exchange(current_refresh_, next);
    retired_refresh_.insert(last_replaced_refresh_);
    o[camel ? "refreshToken" : "refresh_token"] = current_refresh_;
  } else if (refresh == refresh_field::current) {
    o[camel ? "refreshToken" : "refresh_token"] = current_refresh_;  // a grace answer
  }
  answer a = json_answer(http::status::ok, json::serialize(o));
  a.no_store = true;
  return a;
}

// ---- Public interface ---------------------------------------------------------------------------

mock_server::mock_server(mock_server_options opts)
    : impl_(std::make_shared<impl>(std::nullopt, std::move(opts))) {
  impl_->start();
}

mock_server::mock_server(asio::any_io_executor ex, mock_server_options opts)
    : impl_(std::make_shared<impl>(std::move(ex), std::move(opts))) {
  impl_->start();
}

mock_server::~mock_server() {
  impl_->stop();
}

void mock_server::stop() {
  impl_->stop();
}

std::uint16_t mock_server::port() const {
  return impl_->port();
}

std::string mock_server::base_url() const {
  return std::string(impl_->opts_.tls ? "https" : "http") +
         "://127.0.0.1:" + std::to_string(impl_->port());
}

std::string mock_server::token_url() const {
  return base_url() + std::string(token_path);
}

std::string mock_server::ca_file() const {
  return impl_->ca_file_ ? impl_->ca_file_->path() : std::string();
}

const std::string& mock_server::impl::client_file(std::optional<temporary_file>& file,
                                                  std::string_view content, std::string_view what) {
  std::lock_guard lock(client_files_mutex_);
  if (!file) file.emplace(content, what);
  return file->path();
}

std::string mock_server::client_certificate_file() const {
  return impl_->client_file(impl_->client_certificate_file_, detail::client_certificate_pem,
                            "client-cert");
}

std::string mock_server::client_key_file() const {
  return impl_->client_file(impl_->client_key_file_, detail::client_key_pem, "client-key");
}

std::string mock_server::client_certificate_pem() {
  return std::string(detail::client_certificate_pem);
}

std::string mock_server::client_key_pem() {
  return std::string(detail::client_key_pem);
}

std::string mock_server::ca_certificate_pem() {
  return std::string(detail::ca_certificate_pem);
}

mock_server_stats mock_server::stats() const {
  std::lock_guard lock(impl_->mutex_);
  return impl_->stats_;
}

std::vector<std::string> mock_server::presented_refresh_tokens() const {
  std::lock_guard lock(impl_->mutex_);
  return impl_->presented_;
}

std::string mock_server::current_refresh_token() const {
  std::lock_guard lock(impl_->mutex_);
  // After reuse detection the server accepts no refresh token at all.
  return impl_->chain_revoked_ ? std::string() : impl_->current_refresh_;
}

std::string mock_server::last_access_token() const {
  std::lock_guard lock(impl_->mutex_);
  return impl_->last_access_;
}

std::string mock_server::previous_refresh_token() const {
  std::lock_guard lock(impl_->mutex_);
  return impl_->last_replaced_refresh_;
}

std::size_t mock_server::open_connections() const {
  return impl_->open_connections();
}

void mock_server::set_refresh_token(std::string token) {
  std::lock_guard lock(impl_->mutex_);
  if (token == impl_->current_refresh_) return;
  impl_->retired_refresh_.erase(token);
  impl_->issued_refresh_.insert(token);
  impl_->last_replaced_refresh_ = std::exchange(impl_->current_refresh_, std::move(token));
  impl_->retired_refresh_.insert(impl_->last_replaced_refresh_);
}

void mock_server::fail_next(scripted_failure f, int count) {
  if (count <= 0) return;
  std::lock_guard lock(impl_->mutex_);
  impl_->scripted_.emplace_back(std::move(f), count);
}

void mock_server::clear_failures() {
  std::lock_guard lock(impl_->mutex_);
  impl_->scripted_.clear();
}

void mock_server::set_latency(std::chrono::milliseconds latency) {
  impl_->latency_ms_.store(latency.count());
}

void mock_server::set_close_after_response(bool close) {
  impl_->close_after_response_.store(close);
}

void mock_server::close_idle_connections() {
  auto open = impl_->connection_snapshot();
  if (open.empty()) return;

  // Waits until the sockets are really closed, so a test that reuses a pooled connection right
  // after this call deterministically finds it closed.
  auto done = std::make_shared<countdown>(open.size());
  for (auto& c : open) asio::post(c->strand_, [c, done] { c->close_if_idle(done); });
  // On a user's executor nothing may block it: the closes run when it does. Likewise on a
  // server thread (threads == 1), where waiting would deadlock.
  if (impl_->must_not_block()) return;
  done->wait();
}

// A protected API: 200 for a Bearer token this server issued and that has not expired or been
// revoked, 401 with RFC 6750's WWW-Authenticate otherwise.
answer mock_server::impl::answer_api(std::string_view authorization, std::string_view path) {
  std::lock_guard lock(mutex_);
  ++stats_.api_requests;
  bool ok = false;
  if (authorization.size() > 7 && boost::beast::iequals(authorization.substr(0, 7), "Bearer ")) {
    auto it = access_valid_until_.find(std::string(authorization.substr(7)));
    ok = it != access_valid_until_.end() && std::chrono::steady_clock::now() < it->second;
  }
  if (!ok) {
    ++stats_.api_unauthorized;
    answer a = json_answer(http::status::unauthorized, error_json("invalid_token", ""));
    a.headers.emplace_back("WWW-Authenticate", "Bearer error=\"invalid_token\"");
    return a;
  }
  json::object o;
  o["ok"] = true;
  o["path"] = path;
  return json_answer(http::status::ok, json::serialize(o));
}

void mock_server::revoke_access_tokens() {
  std::lock_guard lock(impl_->mutex_);
  impl_->access_valid_until_.clear();
}

std::string to_json(const mock_server_stats& s) {
  boost::json::object o;
  o["requests"] = s.requests;
  o["refreshes"] = s.refreshes;
  o["errors"] = s.errors;
  o["max_in_flight"] = s.max_in_flight;
  o["connections"] = s.connections;
  o["reuse_detected"] = s.reuse_detected;
  o["rfc6749_requests"] = s.rfc6749_requests;
  o["basic_auth_requests"] = s.basic_auth_requests;
  o["api_requests"] = s.api_requests;
  o["api_unauthorized"] = s.api_unauthorized;
  o["grace_refreshes"] = s.grace_refreshes;
  o["min_refresh_gap_ms"] = s.min_refresh_gap_ms;
  o["client_credentials_grants"] = s.client_credentials_grants;
  o["tls_handshakes"] = s.tls_handshakes;
  o["tls_handshake_failures"] = s.tls_handshake_failures;
  o["client_certificates"] = s.client_certificates;
  return boost::json::serialize(o);
}

}  // namespace nxsys::auth::testing
