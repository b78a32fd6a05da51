// SPDX-License-Identifier: BSL-1.0
// A Redis connection on Asio: RESP over beast::tcp_stream (its timeouts), hiredis's reader.
#include "connection.hpp"
#include "completion_tokens.hpp"

#include "text.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>

#include <algorithm>

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
}  // namespace

connection::connection(asio::any_io_executor strand, const server_address& addr)
    : strand_(std::move(strand)), addr_(addr), where_(addr.host + ":" + addr.port) {}

connection::~connection() {
  close();
}

void connection::close() noexcept {
  ++generation_;
  if (stream_) {
    error_code ignored;
    stream_->socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    stream_->socket().close(ignored);
    stream_.reset();
  }
  decoder_.reset();
}

error_code connection::failed(const error_code& ec, std::string what, diagnostics& diag) {
  close();
  if (ec == asio::error::operation_aborted) return ec;
  const bool timed_out = ec == beast::error::timeout;
  diag.client_message = std::move(what) + ": " + (timed_out ? "timed out" : ec.message());
  return make_error_code(timed_out ? errc::timeout : errc::connection);
}

asio::awaitable<error_code> connection::connect(steady_time deadline, diagnostics& diag) {
  close();
  const auto gen = generation_;
  deadline = std::min(deadline, std::chrono::steady_clock::now() + addr_.connect_timeout);
  error_code ec;
  asio::ip::tcp::resolver::results_type endpoints;
  auto addr = asio::ip::make_address(addr_.host, ec);
  if (!ec) {
    endpoints = asio::ip::tcp::resolver::results_type::create(
        asio::ip::tcp::endpoint(addr, static_cast<unsigned short>(std::stoi(addr_.port))),
        addr_.host, addr_.port);
  } else {
    // A name: resolved with a timer bounding the resolver (it has no timeout of its own).
    asio::ip::tcp::resolver resolver(strand_);
    asio::steady_timer timer(strand_, deadline);
    bool timed_out = false;
    timer.async_wait([&](error_code e) {
      if (!e) {
        timed_out = true;
        resolver.cancel();
      }
    });
    std::tie(ec, endpoints) = co_await resolver.async_resolve(addr_.host, addr_.port, use_tuple);
    if (timer.cancel() == 0) co_await asio::post(strand_, asio::use_awaitable);
    if (timed_out) ec = beast::error::timeout;
    if (ec) co_return failed(ec, ("cannot resolve " + addr_.host), diag);
  }
  if (gen != generation_) co_return asio::error::operation_aborted;
  stream_.emplace(strand_);
  decoder_ = std::make_unique<decoder>();
  stream_->expires_at(deadline);
  std::tie(ec, std::ignore) = co_await stream_->async_connect(endpoints, use_tuple);
  if (gen != generation_) co_return asio::error::operation_aborted;
  if (ec) co_return failed(ec, ("cannot connect to " + where_), diag);
  stream_->socket().set_option(asio::ip::tcp::no_delay(true), ec);

  reply r;
  if (!addr_.password.empty()) {
    const auto auth = encode(addr_.username.empty()
                                 ? command("AUTH", addr_.password.str())
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

asio::awaitable<error_code> connection::read_reply(reply& out, steady_time deadline,
                                                   diagnostics& diag) {
  const auto gen = generation_;
  for (;;) {
    if (!decoder_) co_return asio::error::operation_aborted;
    if (auto r = decoder_->next()) {
      out = std::move(*r);
      co_return error_code{};
    }
    if (decoder_->failed()) {
      close();
      diag.client_message = where_ + " sent something that is not a Redis reply";
      co_return make_error_code(errc::connection);
    }
    buf_.resize(read_chunk);
    if (deadline == steady_time::max()) {
      stream_->expires_never();  // a subscriber waits for as long as it takes
    } else {
      stream_->expires_at(deadline);
    }
    auto [ec, n] = co_await stream_->async_read_some(asio::buffer(buf_), use_tuple);
    if (gen != generation_) co_return asio::error::operation_aborted;
    if (ec) co_return failed(ec, ("no reply from " + where_), diag);
    decoder_->feed(std::string_view(buf_.data(), n));
    detail::wipe_bytes(buf_.data(), n);  // the decoder has its own copy now
  }
}

asio::awaitable<error_code> connection::roundtrip(const detail::secret_string& encoded,
                                                  reply& out,
                                                  steady_time deadline, diagnostics& diag) {
  const auto gen = generation_;
  stream_->expires_at(deadline);
  auto [ec, n] = co_await asio::async_write(*stream_, asio::buffer(encoded.view()), use_tuple);
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
