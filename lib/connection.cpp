// SPDX-License-Identifier: BSL-1.0
// One Beast HTTP/1.1 connection over TCP or TLS, with timeouts, answer limits and host checks.
#include "connection.hpp"

#include <nxsys/auth/version.hpp>

#include "completion_tokens.hpp"
#include "secret_string.hpp"
#include "text.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/version.hpp>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>

namespace nxsys::auth::detail {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;

namespace {

// What OpenSSL's passphrase callback reads and tells while a private key is loaded.
struct key_password_request {
  const secret* password;
  bool asked = false;  // the key is encrypted
};

// OpenSSL's passphrase callback while a private key is loaded; `userdata` is a
// key_password_request. Installed for every load, so that OpenSSL never falls back to asking
// on the terminal for the passphrase of an encrypted key.
int key_password_callback(char* buf, int size, int /*rwflag*/, void* userdata) {
  auto* req = static_cast<key_password_request*>(userdata);
  if (req == nullptr || size <= 0) return 0;
  req->asked = true;
  const auto n = std::min(req->password->size(), static_cast<std::size_t>(size));
  std::memcpy(buf, req->password->view().data(), n);
  return static_cast<int>(n);
}

[[noreturn]] void invalid_tls(std::string message) {
  diagnostics d;
  d.client_message = std::move(message);
  throw error_with_diagnostics(make_error_code(errc::invalid_config), std::move(d));
}

// The client certificate and its key of `opts`, if any, into `ctx`. http_options::validate
// (which every client and session runs first) has checked that they come in pairs, one of
// each kind.
void load_client_certificate(asio::ssl::context& ctx, const tls_options& opts,
                             const std::string& f) {
  const bool cert_file = !opts.certificate_file.empty();
  const bool key_file = !opts.private_key_file.empty();
  if (!cert_file && opts.certificate_pem.empty()) return;

  SSL_CTX* h = ctx.native_handle();
  key_password_request request{&opts.private_key_password};
  SSL_CTX_set_default_passwd_cb(h, key_password_callback);
  SSL_CTX_set_default_passwd_cb_userdata(h, &request);
  // Reset before anything else can see the context (an exception included): it outlives
  // `opts`, and Asio deletes whatever user data it holds as a callback object of its own.
  struct forget_password {
    SSL_CTX* h;
    ~forget_password() {
      SSL_CTX_set_default_passwd_cb(h, nullptr);
      SSL_CTX_set_default_passwd_cb_userdata(h, nullptr);
    }
  } forget{h};
  error_code ec;
  // The key first: a certificate loaded after a key that does not match it drops the key,
  // which SSL_CTX_check_private_key then reports whatever the key type.
  if (key_file) {
    ctx.use_private_key_file(opts.private_key_file, asio::ssl::context::pem, ec);
  } else {
    const auto k = opts.private_key_pem.view();
    ctx.use_private_key(asio::buffer(k.data(), k.size()), asio::ssl::context::pem, ec);
  }
  if (ec) {
    // OpenSSL says "bad decrypt" or less: name the likely cause when the key is encrypted.
    const std::string hint =
        !request.asked ? std::string()
        : opts.private_key_password.empty()
            ? " (the key is encrypted: set " + f + ".private_key_password)"
            : " (the key is encrypted: is " + f + ".private_key_password right?)";
    invalid_tls("cannot load " + f + ".private_key_" + (key_file ? "file" : "pem") + ": " +
                ec.message() + hint);
  }
  if (cert_file) {
    ctx.use_certificate_chain_file(opts.certificate_file, ec);
    if (ec) invalid_tls("cannot load " + f + ".certificate_file: " + ec.message());
  } else {
    ctx.use_certificate_chain(asio::buffer(opts.certificate_pem), ec);
    if (ec) invalid_tls("cannot load " + f + ".certificate_pem: " + ec.message());
  }
  if (SSL_CTX_check_private_key(h) != 1) {
    ERR_clear_error();
    invalid_tls("the private key does not match the client certificate (" + f + ".certificate_" +
                (cert_file ? "file" : "pem") + ", " + f + ".private_key_" +
                (key_file ? "file" : "pem") + ")");
  }
}

}  // namespace

asio::ssl::context make_ssl_context(const tls_options& opts, std::string_view field) {
  const std::string f(field);
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  ctx.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                  asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                  asio::ssl::context::no_tlsv1_1);
  error_code ec;
  auto bad = [](const std::string& what, const error_code& e) {
    diagnostics d;
    d.client_message = what + ": " + e.message();
    throw error_with_diagnostics(make_error_code(errc::invalid_config), std::move(d));
  };
  if (!opts.ca_file.empty()) {
    ctx.load_verify_file(opts.ca_file, ec);
    if (ec) bad("cannot load " + f + ".ca_file", ec);
  }
  if (!opts.ca_dir.empty()) {
    ctx.add_verify_path(opts.ca_dir, ec);
    if (ec) bad("cannot use " + f + ".ca_dir", ec);
  }
  if (opts.ca_file.empty() && opts.ca_dir.empty()) {
    ctx.set_default_verify_paths(ec);
    if (ec) bad("cannot load the system's CA certificates", ec);
  }
  ctx.set_verify_mode(opts.verify_peer ? asio::ssl::verify_peer : asio::ssl::verify_none);
  load_client_certificate(ctx, opts, f);
  if (opts.configure_context) {
    try {
      opts.configure_context(ctx);
    } catch (const error_with_diagnostics&) {
      throw;
    } catch (const std::exception& e) {
      invalid_tls(f + ".configure_context threw: " + e.what());
    }
  }
  return ctx;
}

void wipe_field(http::fields& h, http::field name) noexcept {
  for (auto& f : h) {
    if (f.name() != name) continue;
    const auto v = f.value();
    // The value lives in the field's own allocation, which Beast hands out read-only.
    wipe_bytes(const_cast<char*>(v.data()), v.size());
  }
}

void wipe_authorization(http::fields& h) noexcept {
  wipe_field(h, http::field::authorization);
}

origin::origin(protocol::endpoint ep, const http_options& http,
               std::size_t default_max_response_bytes)
    : ep_(std::move(ep)),
      limits_{http.connect_timeout, http.request_timeout, http.max_idle_connection,
              http.max_response_bytes != 0 ? http.max_response_bytes : default_max_response_bytes},
      verify_peer_(http.tls.verify_peer) {
  const bool v6 = ep_.host.find(':') != std::string::npos;
  host_header_ = v6 ? "[" + ep_.host + "]" : ep_.host;
  if (ep_.port != (ep_.tls ? "443" : "80")) host_header_ += ":" + ep_.port;
  connect_target_ = (v6 ? "[" + ep_.host + "]" : ep_.host) + ":" + ep_.port;
  proxy_ = choose_proxy(ep_, http.proxy);
  if (ep_.tls) ssl_ctx_.emplace(make_ssl_context(http.tls));
}

// A resolve in progress and its timeout. The timer's handler owns it, not the connection: a
// timer that has fired cannot be taken back (cancel() finds nothing to cancel and the handler
// runs anyway), and on a strand that handler may run only after connect() has returned and the
// session's pool has freed the connection. One per connect(), so that a late handler can only
// cancel the resolve it was armed for, never a later connect()'s.
struct http_connection::resolve_attempt {
  explicit resolve_attempt(const asio::any_io_executor& ex) : resolver(ex), timer(ex) {}
  asio::ip::tcp::resolver resolver;
  asio::steady_timer timer;
  bool timed_out = false;  // the timer cancelled the resolve
};

http_connection::http_connection(asio::any_io_executor ex, const origin& o)
    : ex_(std::move(ex)), origin_(o) {}

http_connection::~http_connection() {
  close();
}

void http_connection::close() noexcept {
  error_code ignored;
  if (tls_) {
    tls_->next_layer().socket().close(ignored);
    tls_.reset();
  }
  if (tcp_) {
    tcp_->socket().close(ignored);
    tcp_.reset();
  }
  buffer_.clear();
  wipe_read_buffer();
}

void http_connection::wipe_read_buffer() noexcept {
  // prepare() of at most the spare capacity never reallocates; consumed bytes lie in it too,
  // since a fully consumed flat_buffer starts again at the beginning of its storage.
  const auto spare = buffer_.capacity() - buffer_.size();
  if (spare == 0) return;
  try {
    const auto b = buffer_.prepare(spare);
    wipe_bytes(b.data(), b.size());
  } catch (...) {  // only past max_size, which spare never is
  }
}

void http_connection::cancel() noexcept {
  cancelled_ = true;
  if (resolving_) {
    resolving_->resolver.cancel();
    resolving_->timer.cancel();
  }
  if (is_open()) {
    error_code ignored;
    lowest_layer().socket().cancel(ignored);
    lowest_layer().socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  }
}

// An idle keep-alive connection the server has closed (or written to unasked) is readable.
// Checking before sending avoids sending a request the server may never read — for a refresh,
// one it may have consumed the token of without our seeing the answer.
bool http_connection::reusable() {
  if (!is_open()) return false;
  if (std::chrono::steady_clock::now() - last_used_ > origin_.limits_.max_idle) return false;
  if (buffer_.size() != 0) return false;
  char byte;
  const auto n = ::recv(lowest_layer().socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

error_code http_connection::classify(error_code ec, const char* phase, diagnostics& diag) const {
  return classify_at(ec, std::string(phase) + " " + origin_.host_header_, diag);
}

error_code http_connection::classify_at(error_code ec, std::string where, diagnostics& diag) const {
  if (ec == beast::error::timeout) {
    diag.client_message = where + ": timed out";
    return make_error_code(errc::timeout);
  }
  if (ec == asio::error::operation_aborted) return ec;
  if (ec == http::error::body_limit || ec == http::error::header_limit ||
      ec == http::error::buffer_overflow) {
    diag.client_message = where + ": the answer exceeds http.max_response_bytes";
    return make_error_code(errc::response_too_large);
  }
  if (ec.category() == make_error_code(http::error::end_of_stream).category() &&
      ec != http::error::end_of_stream && ec != http::error::partial_message) {
    diag.client_message = where + ": invalid HTTP answer (" + ec.message() + ")";
    return make_error_code(errc::malformed_response);
  }
  diag.client_message = where + ": " + ec.message();
  if (ec.category() == asio::error::get_ssl_category() || ec == asio::ssl::error::stream_truncated)
    return make_error_code(errc::tls);
  return make_error_code(errc::connection);
}

asio::awaitable<error_code> http_connection::connect(steady_time deadline, diagnostics& diag) {
  close();
  deadline = std::min(std::chrono::steady_clock::now() + origin_.limits_.connect_timeout, deadline);
  const auto& ep = origin_.ep_;
  // Through a proxy, the TCP connection is the proxy's; the rest (TLS included) the target's.
  const proxy_route* const px = origin_.proxy();
  const std::string& host = px != nullptr ? px->host : ep.host;
  const std::string& port = px != nullptr ? px->port : ep.port;
  const bool host_is_ip = px != nullptr ? px->host_is_ip : ep.host_is_ip;
  const std::string peer = px != nullptr ? "proxy " + px->display : origin_.host_header_;
  asio::ip::tcp::resolver::results_type endpoints;
  error_code ec;
  cancelled_ = false;
  if (host_is_ip) {
    auto addr = asio::ip::make_address(host, ec);
    if (ec) co_return classify_at(ec, "resolve " + peer, diag);
    endpoints = asio::ip::tcp::resolver::results_type::create(
        asio::ip::tcp::endpoint(addr, static_cast<unsigned short>(std::stoi(port))), host, port);
  } else {
    // The resolver has no per-operation timeout: a timer cancels it. Its handler runs on this
    // coroutine's executor, so it never races with the coroutine.
    const auto self_ex = co_await asio::this_coro::executor;
    const auto attempt = std::make_shared<resolve_attempt>(ex_);
    resolving_ = attempt;
    attempt->timer.expires_at(deadline);
    attempt->timer.async_wait(asio::bind_executor(self_ex, [attempt](error_code e) {
      if (!e) {
        attempt->timed_out = true;
        attempt->resolver.cancel();
      }
    }));
    std::tie(ec, endpoints) = co_await attempt->resolver.async_resolve(host, port, use_tuple);
    attempt->timer.cancel();
    resolving_.reset();
    // Only the timer's handler and cancel() cancel the resolve, and the handler sets the flag
    // first, on this executor: an abort it caused is the timeout. A handler still queued (the
    // timer fired as the resolve ended) leaves the resolve's own result standing, and when it
    // runs it touches `attempt` alone.
    if (ec == asio::error::operation_aborted && attempt->timed_out) ec = beast::error::timeout;
    if (ec) co_return classify_at(ec, "resolve " + peer, diag);
    if (cancelled_) co_return asio::error::operation_aborted;
  }

  // The stream is a member from the start, so that cancel() reaches a connect in progress.
  // Its deadline covers the CONNECT exchange and the TLS handshake too.
  tcp_.emplace(ex_);
  tcp_->expires_at(deadline);
  std::tie(ec, std::ignore) = co_await tcp_->async_connect(endpoints, use_tuple);
  if (ec) {
    close();
    co_return classify_at(ec, "connect to " + peer, diag);
  }
  if (cancelled_) {
    close();
    co_return asio::error::operation_aborted;
  }
  tcp_->socket().set_option(asio::ip::tcp::no_delay(true), ec);
  origin_.connections_opened_.fetch_add(1, std::memory_order_relaxed);

  if (px != nullptr) {
    ec = co_await tunnel(diag);
    if (!ec && cancelled_) ec = asio::error::operation_aborted;
    if (ec) {
      close();
      co_return ec;
    }
  }

  if (!ep.tls) co_return error_code{};
  tls_.emplace(std::move(*tcp_), *origin_.ssl_ctx_);
  tcp_.reset();
  if (!ep.host_is_ip && !SSL_set_tlsext_host_name(tls_->native_handle(), ep.host.c_str())) {
    close();
    diag.client_message = "cannot set TLS SNI";
    co_return make_error_code(errc::tls);
  }
  // The host name (or address) is checked by OpenSSL's own chain verification, not by a
  // verify callback of the stream: that would replace the one tls.configure_context may have
  // set on the context (key pinning), which thus runs too and sees a wrong host as a failure.
  if (origin_.verify_peer_) {
    X509_VERIFY_PARAM* param = SSL_get0_param(tls_->native_handle());
    const int set = ep.host_is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, ep.host.c_str())
                                  : X509_VERIFY_PARAM_set1_host(param, ep.host.c_str(), 0);
    if (set != 1) {
      close();
      diag.client_message = "cannot set the host name to verify for " + origin_.host_header_;
      co_return make_error_code(errc::tls);
    }
  }
  std::tie(ec) = co_await tls_->async_handshake(asio::ssl::stream_base::client, use_tuple);
  if (ec) {
    close();
    auto r = classify(ec, "TLS handshake with", diag);
    // A handshake that fails for any reason but a timeout or cancellation is a TLS failure.
    co_return (r == errc::connection) ? make_error_code(errc::tls) : r;
  }
  co_return error_code{};
}

asio::awaitable<error_code> http_connection::tunnel(diagnostics& diag) {
  const proxy_route& px = *origin_.proxy();
  const std::string& target = origin_.connect_target_;
  const std::string where = "CONNECT " + target + " through proxy " + px.display;
  http::request<http::empty_body> req{http::verb::connect, target, 11};
  req.set(http::field::host, target);
  req.set(http::field::user_agent,
          "nxsys-auth/" NXSYS_AUTH_VERSION_STRING " " BOOST_BEAST_VERSION_STRING);
  if (!px.authorization.empty()) req.set(http::field::proxy_authorization, px.authorization.view());
  auto [wec, written] = co_await http::async_write(*tcp_, req, use_tuple);
  // The serializer wrote from the field's own storage: nothing else holds the credentials.
  wipe_field(req, http::field::proxy_authorization);
  if (wec) co_return classify_at(wec, where, diag);

  // The answer's header only: a 2xx has no body, and the tunnel's bytes follow it.
  beast::flat_buffer buf(max_proxy_header_bytes);
  http::response_parser<http::empty_body> parser;
  parser.header_limit(static_cast<std::uint32_t>(max_proxy_header_bytes));
  auto [rec, read] = co_await http::async_read_header(*tcp_, buf, parser, use_tuple);
  auto fail_with = [&](errc e, std::string message) {
    redact(message, {px.password.view(), px.authorization.view()});
    diag.client_message = std::move(message);
    return make_error_code(e);
  };
  if (rec == http::error::header_limit || rec == http::error::buffer_overflow)
    co_return fail_with(errc::connection, where + ": the proxy's answer has a header over " +
                                              std::to_string(max_proxy_header_bytes / 1024) +
                                              " KiB");
  if (rec == http::error::end_of_stream || rec == http::error::partial_message ||
      rec == asio::error::eof)
    co_return fail_with(errc::connection, where +
                                              ": the proxy closed the connection without "
                                              "a complete answer");
  if (rec.category() == make_error_code(http::error::end_of_stream).category())
    co_return fail_with(errc::connection,
                        where + ": the proxy's answer is not valid HTTP (" + rec.message() + ")");
  if (rec) co_return classify_at(rec, where, diag);

  const auto& res = parser.get();
  const unsigned status = res.result_int();
  const std::string answered = "proxy " + px.display + " answered " + std::to_string(status) + " " +
                               printable(res.reason(), 80) + " to CONNECT " + target;
  if (status == 407) {
    std::string m =
        answered + (px.authorization.empty() ? ": it requires credentials, and none are configured "
                                               "(http.proxy.username and password)"
                                             : ": it refused the credentials of user '" +
                                                   printable(px.username, 80) + "'");
    const auto challenge = res[http::field::proxy_authenticate];
    if (!challenge.empty()) m += "; it asks for: " + printable(challenge, 120);
    co_return fail_with(errc::proxy_authentication, std::move(m));
  }
  if (status < 200 || status > 299) co_return fail_with(errc::connection, answered);
  // RFC 9110 §9.3.6: a 2xx answer to CONNECT has no content; what would follow is already the
  // tunnel's, and no byte may come from the server before the client speaks.
  if (parser.chunked() || parser.content_length().value_or(0) != 0)
    co_return fail_with(errc::connection, answered + ", with a body, which a tunnel cannot have");
  if (buf.size() != 0)
    co_return fail_with(errc::connection,
                        answered + ", followed by bytes before the tunnel was used");
  co_return error_code{};
}

// The token transport's coroutine form of the one exchange the session also uses.
asio::awaitable<exchange_result> http_connection::exchange(
    const http::request<http::string_body>& req, http::response<http::string_body>& res,
    steady_time deadline) {
  auto [ec, started] = co_await async_exchange(req, res, deadline, deferred_tuple);
  co_return exchange_result{ec, started};
}

}  // namespace nxsys::auth::detail
