// SPDX-License-Identifier: BSL-1.0
// A Redis connection on Asio: RESP over beast::tcp_stream (its timeouts), or over
// ssl::stream on it, with hiredis's reader.
#include "connection.hpp"

#include "completion_tokens.hpp"
#include "text.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/append.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <algorithm>
#include <charconv>

namespace nxsys::auth::redis {
namespace asio = boost::asio;
using detail::use_tuple;
namespace beast = boost::beast;
using boost::system::error_code;

namespace {
constexpr std::size_t read_chunk = 16 * 1024;

// "127.0.0.1:6379 refused AUTH: WRONGPASS ...". The server's words (WRONGPASS, NOAUTH) name no
// secret; ours is cut out all the same. (Not in the coroutine: GCC 12 and braced lists there.)
std::string refusal(const std::string& where, std::string_view what, const std::string& reply,
                    std::string_view secret) {
  std::string text = reply;
  detail::redact(text, {secret});
  return where + " refused " + std::string(what) + ": " + detail::printable(text, 200);
}

// "host:port", an IPv6 address in brackets.
std::string host_port(const std::string& host, const std::string& port) {
  return host.find(':') != std::string::npos ? "[" + host + "]:" + port : host + ":" + port;
}

// A TLS error of OpenSSL's (a failed handshake, an alert), as opposed to the connection under
// it failing: a truncated stream is a lost connection (a Redis restart), not a TLS refusal.
bool tls_refusal(const error_code& ec) {
  return ec.category() == asio::error::get_ssl_category();
}

// What OpenSSL says of a TLS failure, with the likely fix for the common ones, naming the
// options of `tls` (the master's or the sentinels').
std::string tls_cause(const error_code& ec, long verify_result, const std::string& name,
                      const tls_settings& tls) {
  const std::string f = tls.field;
  std::string text = ec.message();
  if (verify_result != X509_V_OK) {
    text = std::string("the server's certificate was not verified: ") +
           X509_verify_cert_error_string(verify_result);
    if (verify_result == X509_V_ERR_HOSTNAME_MISMATCH ||
        verify_result == X509_V_ERR_IP_ADDRESS_MISMATCH) {
      text += " (it does not name \"" + name + "\"; " + tls.server_name_field +
              " sets the name to verify when it differs from the host)";
    } else if (verify_result == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
               verify_result == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT ||
               verify_result == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN ||
               verify_result == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT) {
      text += " (is the CA that signed it in " + f + ".ca_file or " + f + ".ca_dir?)";
    }
  } else if (ERR_GET_REASON(static_cast<unsigned long>(ec.value())) ==
             SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED) {
    text += " (the server requires a client certificate: " + f + ".certificate_file and " + f +
            ".private_key_file)";
  }
  return text;
}
}  // namespace

// The bytes of one connection: TCP, or TLS over it. See stream_ for who owns it.
struct connection::transport {
  beast::tcp_stream tcp;
  std::optional<asio::ssl::stream<beast::tcp_stream&>> tls;
  explicit transport(asio::any_io_executor ex) : tcp(std::move(ex)) {}
};

// A resolve bounded by a timer (the resolver has none of its own, and getaddrinfo cannot be
// interrupted). The first of the two to finish completes `waiter`; the other finds it empty.
// Owned by the pending handlers of both (and by close() through a weak_ptr), never by the
// coroutine's frame alone: a handler that runs after the frame is gone, or after connect() gave
// up on a resolve still in getaddrinfo, touches only this.
struct connection::resolve_op {
  using results = asio::ip::tcp::resolver::results_type;
  asio::ip::tcp::resolver resolver;
  asio::steady_timer timer;
  std::optional<asio::any_completion_handler<void(error_code, results)>> waiter;
  resolve_op(const asio::any_io_executor& ex, steady_time deadline)
      : resolver(ex), timer(ex, deadline) {}
  // On the strand, from either handler.
  void finish(error_code ec, results r) {
    if (!waiter) return;
    asio::any_completion_handler<void(error_code, results)> h(std::move(*waiter));
    waiter.reset();
    // post() runs it on its associated executor (the awaiting coroutine's strand).
    asio::post(resolver.get_executor(), asio::append(std::move(h), ec, std::move(r)));
  }
};

connection::connection(asio::any_io_executor strand, const server_address& addr)
    : strand_(std::move(strand)), addr_(addr), where_(host_port(addr.host, addr.port)) {}

connection::~connection() {
  close();
}

void connection::close() noexcept {
  ++generation_;
  tls_unconfirmed_ = false;
  if (auto op = resolving_.lock()) {
    op->resolver.cancel();
    op->timer.cancel();  // its handler completes the waiting connect() with operation_aborted
  }
  resolving_.reset();
  if (stream_) {
    // The operation in progress, if any, holds its own reference: it ends (operation_aborted)
    // on a stream that still exists.
    error_code ignored;
    stream_->tcp.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    stream_->tcp.socket().close(ignored);
    stream_.reset();
  }
  decoder_.reset();
}

error_code connection::failed(const error_code& ec, std::string what, diagnostics& diag) {
  const bool unconfirmed = tls_unconfirmed_;
  close();
  if (ec == asio::error::operation_aborted) return ec;
  const bool timed_out = ec == beast::error::timeout;
  if (!timed_out && tls_refusal(ec)) {
    diag.client_message = std::move(what) + ": TLS: " + tls_cause(ec, X509_V_OK, {}, addr_.tls);
    return make_error_code(errc::tls);
  }
  diag.client_message = std::move(what) + ": " + (timed_out ? "timed out" : ec.message());
  // With TLS 1.3 a server checks the client's certificate after the client's handshake is
  // done, and may close without the alert that would say why ("certificate required"): a
  // connection lost then gets the likely cause, and is retried as any lost connection.
  if (unconfirmed && !timed_out) {
    const std::string f = addr_.tls.field;
    diag.client_message +=
        " (the server closed the TLS connection before its first reply: does it require a "
        "client certificate, " +
        f + ".certificate_file and " + f + ".private_key_file, or refuse ours?)";
  }
  return make_error_code(timed_out ? errc::timeout : errc::connection);
}

asio::awaitable<error_code> connection::connect(steady_time deadline, diagnostics& diag) {
  close();
  const auto gen = generation_;
  // The address as it is now: a change while this connect runs counts from the next one.
  const std::string host = addr_.host;
  const std::string port = addr_.port;
  where_ = host_port(host, port);
  deadline = std::min(deadline, std::chrono::steady_clock::now() + addr_.connect_timeout);
  error_code ec;
  resolve_op::results endpoints;
  auto ip = asio::ip::make_address(host, ec);
  if (!ec) {
    unsigned short number = 0;
    const auto [end, perr] = std::from_chars(port.data(), port.data() + port.size(), number);
    if (perr != std::errc{} || end != port.data() + port.size() || number == 0) {
      diag.client_message = "cannot connect to " + where_ + ": invalid port";
      co_return make_error_code(errc::connection);
    }
    endpoints = resolve_op::results::create(asio::ip::tcp::endpoint(ip, number), host, port);
  } else {
    // The resolve's state is made in the initiation, not kept in this frame: it holds the
    // handler that resumes this frame, and a frame holding it would make a cycle that an
    // io_context destroyed mid-resolve never breaks (LeakSanitizer saw it).
    std::tie(ec, endpoints) =
        co_await asio::async_initiate<decltype(use_tuple), void(error_code, resolve_op::results)>(
            [this, &host, &port, deadline](auto handler) {
              auto op = std::make_shared<resolve_op>(strand_, deadline);
              resolving_ = op;
              op->waiter.emplace(std::move(handler));
              op->timer.async_wait([op](error_code e) {
                if (!e)
                  op->resolver.cancel();  // frees the resolver's work when getaddrinfo returns
                op->finish(e ? error_code(asio::error::operation_aborted)
                             : error_code(beast::error::timeout),
                           {});
              });
              op->resolver.async_resolve(host, port, [op](error_code e, resolve_op::results r) {
                op->timer.cancel();
                op->finish(e, std::move(r));
              });
            },
            use_tuple);
    if (gen != generation_) co_return asio::error::operation_aborted;
    resolving_.reset();
    if (ec) co_return failed(ec, ("cannot resolve " + host), diag);
  }
  auto t = std::make_shared<transport>(strand_);
  stream_ = t;
  decoder_ = std::make_unique<decoder>();
  t->tcp.expires_at(deadline);
  std::tie(ec, std::ignore) = co_await t->tcp.async_connect(endpoints, use_tuple);
  if (gen != generation_) co_return asio::error::operation_aborted;
  if (ec) co_return failed(ec, ("cannot connect to " + where_), diag);
  t->tcp.socket().set_option(asio::ip::tcp::no_delay(true), ec);
  if (addr_.tls.context) {
    if (auto e = co_await handshake(t, host, gen, diag)) co_return e;
  }

  reply r;
  if (!addr_.password.empty()) {
    const auto auth =
        encode(addr_.username.empty() ? command("AUTH", addr_.password.str())
                                      : command("AUTH", addr_.username, addr_.password.str()));
    if (auto e = co_await roundtrip(auth, r, deadline, diag)) co_return e;
    if (!r.is_ok()) {
      close();
      diag.client_message = refusal(where_, "AUTH", r.str, addr_.password.view());
      co_return make_error_code(errc::store_failed);
    }
  }
  if (addr_.database != 0) {
    const auto select = encode(command("SELECT", std::to_string(addr_.database)));
    if (auto e = co_await roundtrip(select, r, deadline, diag)) co_return e;
    if (!r.is_ok()) {
      close();
      diag.client_message =
          refusal(where_, "SELECT " + std::to_string(addr_.database), r.str, addr_.password.view());
      co_return make_error_code(errc::store_failed);
    }
  }
  co_return error_code{};
}

asio::awaitable<error_code> connection::handshake(std::shared_ptr<transport> t,
                                                  const std::string& host, std::uint64_t gen,
                                                  diagnostics& diag) {
  const auto& tls = addr_.tls;
  const std::string& name = tls.server_name.empty() ? host : tls.server_name;
  error_code ec;
  asio::ip::make_address(name, ec);
  const bool name_is_ip = !ec;
  t->tls.emplace(t->tcp, *tls.context);
  SSL* ssl = t->tls->native_handle();
  // SNI only for a name (RFC 6066 forbids addresses). The name (or address) is checked by
  // OpenSSL's own chain verification, as the HTTP side does, so that a verify callback of
  // tls.configure_context stays in place and sees a wrong name as a failure.
  if (!name_is_ip && SSL_set_tlsext_host_name(ssl, name.c_str()) != 1) {
    ERR_clear_error();
    close();
    diag.client_message = "TLS with " + where_ + ": cannot set the SNI name";
    co_return make_error_code(errc::tls);
  }
  if (tls.verify_peer) {
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    const int set = name_is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str())
                               : X509_VERIFY_PARAM_set1_host(param, name.c_str(), 0);
    if (set != 1) {
      ERR_clear_error();
      close();
      diag.client_message = "TLS with " + where_ + ": cannot set the name to verify";
      co_return make_error_code(errc::tls);
    }
  }
  std::tie(ec) = co_await t->tls->async_handshake(asio::ssl::stream_base::client, use_tuple);
  if (gen != generation_) co_return asio::error::operation_aborted;
  if (!ec) {
    tls_unconfirmed_ = true;  // until the first reply (see failed())
    co_return error_code{};
  }
  if (!tls_refusal(ec)) co_return failed(ec, "TLS handshake with " + where_, diag);
  const long verified = SSL_get_verify_result(ssl);  // `t` keeps `ssl` alive past close()
  close();
  diag.client_message =
      "TLS handshake with " + where_ + " failed: " + tls_cause(ec, verified, name, tls);
  co_return make_error_code(errc::tls);
}

asio::awaitable<error_code> connection::read_reply(reply& out, steady_time deadline,
                                                   diagnostics& diag) {
  const auto gen = generation_;
  for (;;) {
    if (!decoder_) co_return asio::error::operation_aborted;
    if (auto r = decoder_->next()) {
      tls_unconfirmed_ = false;
      out = std::move(*r);
      co_return error_code{};
    }
    if (decoder_->failed()) {
      close();
      diag.client_message = where_ + " sent something that is not a Redis reply";
      co_return make_error_code(errc::connection);
    }
    buf_.resize(read_chunk);
    // This operation's own reference: close() may drop the connection's while it is pending.
    const auto t = stream_;
    if (!t) co_return asio::error::operation_aborted;
    if (deadline == steady_time::max()) {
      t->tcp.expires_never();  // a subscriber waits for as long as it takes
    } else {
      t->tcp.expires_at(deadline);
    }
    // Two statements, not one co_await of a conditional: GCC 12 destroys the temporary of
    // such an operand twice.
    error_code ec;
    std::size_t n = 0;
    if (t->tls) {
      std::tie(ec, n) = co_await t->tls->async_read_some(asio::buffer(buf_), use_tuple);
    } else {
      std::tie(ec, n) = co_await t->tcp.async_read_some(asio::buffer(buf_), use_tuple);
    }
    if (gen != generation_) co_return asio::error::operation_aborted;
    if (ec) co_return failed(ec, ("no reply from " + where_), diag);
    decoder_->feed(std::string_view(buf_.data(), n));
    detail::wipe_bytes(buf_.data(), n);  // the decoder has its own copy now
  }
}

asio::awaitable<error_code> connection::roundtrip(const detail::secret_string& encoded, reply& out,
                                                  steady_time deadline, diagnostics& diag) {
  const auto gen = generation_;
  const auto t = stream_;  // see read_reply
  if (!t) co_return asio::error::operation_aborted;
  t->tcp.expires_at(deadline);
  const auto bytes = asio::buffer(encoded.view());
  error_code ec;
  if (t->tls) {  // see read_reply
    std::tie(ec, std::ignore) = co_await asio::async_write(*t->tls, bytes, use_tuple);
  } else {
    std::tie(ec, std::ignore) = co_await asio::async_write(t->tcp, bytes, use_tuple);
  }
  if (gen != generation_) co_return asio::error::operation_aborted;
  if (ec) co_return failed(ec, ("cannot send to " + where_), diag);
  co_return co_await read_reply(out, deadline, diag);
}

asio::awaitable<error_code> connection::exec(const arguments& args, reply& out,
                                             steady_time deadline, diagnostics& diag) {
  // One command at a time: a caller that finds the connection busy waits for its turn.
  if (busy_) {
    auto turn = std::make_shared<asio::steady_timer>(strand_, deadline);
    queue_.push_back(turn);
    co_await turn->async_wait(use_tuple);  // expiry or hand-over: settled below
    auto it = std::find(queue_.begin(), queue_.end(), turn);
    if (it != queue_.end()) {  // still in line: the deadline passed
      queue_.erase(it);
      diag.client_message = "no turn on the connection to " + where_ +
                            " before the deadline (the commands before this one were slow)";
      co_return make_error_code(errc::timeout);
    }
    // Handed the turn (busy_ stayed true for us).
  }
  busy_ = true;
  error_code ec;
  if (!stream_) ec = co_await connect(deadline, diag);
  if (!ec) {
    const auto encoded = encode(args);
    ec = co_await roundtrip(encoded, out, deadline, diag);
  }
  if (!queue_.empty()) {
    auto next = std::move(queue_.front());
    queue_.pop_front();
    next->cancel();
  } else {
    busy_ = false;
  }
  co_return ec;
}

asio::awaitable<error_code> connection::receive(reply& out, steady_time deadline,
                                                diagnostics& diag) {
  if (!stream_) {
    diag.client_message = "not connected to " + where_;
    co_return make_error_code(errc::connection);
  }
  co_return co_await read_reply(out, deadline, diag);
}

}  // namespace nxsys::auth::redis
