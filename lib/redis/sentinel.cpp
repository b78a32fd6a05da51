// SPDX-License-Identifier: BSL-1.0
// Redis Sentinel for redis_store: discovery (SENTINEL get-master-addr-by-name, then ROLE on the
// master named), shared by concurrent callers, and a SUBSCRIBE +switch-master watch that ends
// when the store is idle.
#include "sentinel.hpp"

#include "completion_tokens.hpp"
#include "text.hpp"
#include "tls.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <charconv>

// GCC 12 and Asio's coroutine frames: a mismatch that is not there (GCC bug 109224; see
// lib/refresh.cpp).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace nxsys::auth::redis {
namespace asio = boost::asio;
using boost::system::error_code;
using detail::use_tuple;
using steady = std::chrono::steady_clock;

namespace {

// After a watch connection failed, before the next sentinel is tried.
constexpr std::chrono::milliseconds watch_pause{250};

bool valid_port(std::string_view text, std::string& out) {
  if (text.empty() || text.size() > 5) return false;
  int v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc{} || end != text.data() + text.size() || v < 1 || v > 65535) return false;
  out = std::to_string(v);
  return true;
}

std::string where(const server_address& a) {
  return a.host.find(':') != std::string::npos ? "[" + a.host + "]:" + a.port
                                               : a.host + ":" + a.port;
}

// The master's address with the store's credentials, for ROLE. Copies each field the
// connection reads: a field added to server_address (TLS) must be copied here as well.
server_address probe_address(const server_address& master, const std::string& host,
                             const std::string& port) {
  server_address a;
  a.host = host;
  a.port = port;
  a.username = master.username;
  a.password = master.password.copy();
  a.database = master.database;
  a.connect_timeout = master.connect_timeout;
  a.tls = master.tls;  // the master is asked as the store will reach it
  return a;
}

// Registers a connection of a discovery with close() while it lives.
struct probe_guard {
  std::list<connection*>& list;
  std::list<connection*>::iterator it;
  probe_guard(std::list<connection*>& l, connection* c) : list(l), it(l.insert(l.end(), c)) {}
  ~probe_guard() { list.erase(it); }
  probe_guard(const probe_guard&) = delete;
  probe_guard& operator=(const probe_guard&) = delete;
};

discovery aborted() {
  discovery d;
  d.ec = asio::error::operation_aborted;
  return d;
}

}  // namespace

bool parse_host_port(std::string_view text, std::string& host, std::string& port) {
  std::string_view h, p;
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return false;
    h = text.substr(1, close - 1);
    p = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return false;
    h = text.substr(0, colon);
    p = text.substr(colon + 1);
    if (h.find(':') != std::string_view::npos) return false;  // IPv6 needs its brackets
  }
  if (h.empty() || !valid_port(p, port)) return false;
  host = std::string(h);
  return true;
}

bool is_host_port(const std::string& text) {
  std::string host, port;
  return parse_host_port(text, host, port);
}

bool parse_switch_master(std::string_view payload, std::string_view master_name, std::string& host,
                         std::string& port) {
  std::vector<std::string_view> words;
  while (!payload.empty()) {
    const auto space = payload.find(' ');
    if (space != 0) words.push_back(payload.substr(0, space));
    if (space == std::string_view::npos) break;
    payload.remove_prefix(space + 1);
  }
  if (words.size() != 5 || words[0] != master_name || words[3].empty()) return false;
  if (!valid_port(words[4], port)) return false;
  host = std::string(words[3]);
  return true;
}

sentinel::sentinel(asio::any_io_executor strand, options opts, server_address& master,
                   std::function<void()> on_switch)
    : strand_(std::move(strand)),
      opts_(std::move(opts)),
      sentinels_(opts_.sentinels.size()),
      master_(master),
      on_switch_(std::move(on_switch)),
      idle_timer_(strand_),
      pause_timer_(strand_) {
  for (std::size_t i = 0; i < sentinels_.size(); ++i) {
    auto& s = sentinels_[i];
    parse_host_port(opts_.sentinels[i], s.host, s.port);  // validated by the store's options
    s.username = opts_.username;
    s.password = opts_.password.copy();
    s.connect_timeout = opts_.connect_timeout;
    s.tls = opts_.tls;
  }
  opts_.password.clear();  // the addresses' copies are the ones used
}

void sentinel::log(log_level level, const std::string& text) const {
  if (opts_.log) opts_.log(level, text);
}

bool sentinel::in_use() const {
  return steady::now() < last_use_ + opts_.idle;
}

// The rule redis_store_options::validate() applies to `host`, for the masters sentinels name.
bool sentinel::plaintext_allowed(const std::string& host) const {
  return master_.tls.context != nullptr || opts_.allow_plaintext || is_loopback(host);
}

void sentinel::move_to(const std::string& host, const std::string& port, std::string_view how) {
  if (closed_) return;
  const bool first = !known_;
  known_ = true;
  if (!first && master_.host == host && master_.port == port) return;
  const std::string before = where(master_);
  master_.host = host;
  master_.port = port;
  ++epoch_;
  if (first) {
    log(log_level::info, "redis: master '" + opts_.master_name + "' is " + where(master_) + " (" +
                             std::string(how) + ")");
  } else {
    ++switches_;
    log(log_level::warning, "redis: master '" + opts_.master_name + "' moved from " + before +
                                " to " + where(master_) + " (" + std::string(how) + ")");
  }
  on_switch_();
}

asio::awaitable<discovery> sentinel::discover(steady_time deadline, std::string reason,
                                              diagnostics& diag) {
  if (closed_) co_return aborted();
  if (discovering_) {
    // One discovery at a time: wait for the one in progress and take its result.
    auto turn = std::make_shared<asio::steady_timer>(strand_, deadline);
    discovery_waiters_.push_back(turn);
    co_await turn->async_wait(use_tuple);
    if (closed_) co_return aborted();
    const auto it = std::find(discovery_waiters_.begin(), discovery_waiters_.end(), turn);
    if (it != discovery_waiters_.end()) {  // still waiting: the deadline passed
      discovery_waiters_.erase(it);
      diag.client_message = "still asking the sentinels for master '" + opts_.master_name +
                            "' when the command's time ran out";
      discovery d;
      d.ec = make_error_code(errc::timeout);
      d.retry = true;
      d.unreachable = true;
      co_return d;
    }
    diag.client_message = last_message_;
    co_return last_;
  }
  discovering_ = true;
  struct done_guard {
    sentinel& s;
    ~done_guard() {
      s.discovering_ = false;
      for (auto& w : s.discovery_waiters_) w->cancel();
      s.discovery_waiters_.clear();
    }
  };
  done_guard guard{*this};
  auto result = co_await find(deadline, reason, diag);
  last_ = result;
  last_message_ = result.ec ? diag.client_message : std::string();
  co_return result;
}

asio::awaitable<discovery> sentinel::find(steady_time deadline, const std::string& reason,
                                          diagnostics& diag) {
  std::string notes;
  const auto note = [&notes](std::string text) {
    if (!notes.empty()) notes += "; ";
    notes += text;
  };
  // `reached`: sentinels that answered, or refused us (TLS, AUTH): a misconfiguration, not an
  // outage, which must not count as unreachable (local_fallback).
  std::size_t answered = 0, reached = 0, master_unreachable = 0;
  bool transient = false;
  for (const auto& s : sentinels_) {
    if (closed_) co_return aborted();
    const std::string name = "sentinel " + where(s);
    if (steady::now() >= deadline) {
      note(name + ": not asked, no time left");
      transient = true;
      continue;
    }
    reply r;
    diagnostics d;
    error_code ec;
    {
      connection c(strand_, s);
      probe_guard g(probes_, &c);
      ec = co_await c.exec(command("SENTINEL", "get-master-addr-by-name", opts_.master_name), r,
                           deadline, d);
    }
    if (closed_ || ec == asio::error::operation_aborted) co_return aborted();
    if (ec) {
      note(name + ": " + d.client_message);
      if (ec == errc::connection || ec == errc::timeout)
        transient = true;
      else
        ++reached;  // refused the session: TLS (passed over like an outage, but not one), AUTH
      continue;
    }
    ++answered;
    ++reached;
    if (r.is_error()) {
      note(name + " answered " + detail::printable(r.str, 200));
      continue;
    }
    if (r.type == reply::kind::nil) {
      note(name + " does not know a master named '" + opts_.master_name + "'");
      continue;
    }
    std::string host, port;
    if (r.type != reply::kind::array || r.elements.size() != 2 ||
        r.elements[0].type != reply::kind::string || r.elements[0].str.empty() ||
        !valid_port(r.elements[1].str, port)) {
      note(name + " sent an answer that is not an address");
      continue;
    }
    host = r.elements[0].str;
    if (!plaintext_allowed(host)) {
      note(name + " names " + host + ":" + port +
           ", not a loopback address, and use_tls is off: refused (allow_plaintext)");
      continue;
    }
    // The master named must say so itself: a sentinel cut off from the others may still name
    // the old master after a failover.
    const auto probe = probe_address(master_, host, port);
    const std::string named = name + " names " + where(probe);
    reply role;
    {
      connection c(strand_, probe);
      probe_guard g(probes_, &c);
      ec = co_await c.exec(command("ROLE"), role, deadline, d);
    }
    if (closed_ || ec == asio::error::operation_aborted) co_return aborted();
    if (ec) {
      note(named + ": " + d.client_message);
      if (ec == errc::connection || ec == errc::timeout) {
        ++master_unreachable;
        transient = true;
      }
      continue;
    }
    // An error reply (ROLE not allowed to this ACL user): unconfirmed, but taken; a replica
    // would answer our writes READONLY, which starts another discovery.
    if (role.type == reply::kind::array && !role.elements.empty() &&
        role.elements[0].str != "master") {
      note(named + ", which is a " + detail::printable(role.elements[0].str, 20) +
           " (a failover in progress?)");
      transient = true;
      continue;
    }
    move_to(host, port, name + ", asked after " + reason);
    co_return discovery{};
  }
  discovery out;
  out.ec = make_error_code(errc::store_failed);
  out.retry = transient;
  out.unreachable = reached == 0 || (master_unreachable > 0 && master_unreachable == reached);
  diag.client_message = "no sentinel named the master '" + opts_.master_name + "': " + notes;
  co_return out;
}

void sentinel::touch(std::shared_ptr<void> keep) {
  last_use_ = steady::now();
  if (watching_ || closed_ || sentinels_.empty()) return;
  watching_ = true;
  asio::co_spawn(strand_, watch(std::move(keep)), asio::detached);
}

void sentinel::arm_idle(std::shared_ptr<void> keep) {
  idle_timer_.expires_at(last_use_ + opts_.idle);  // ends the previous wait, if any
  idle_timer_.async_wait([this, keep = std::move(keep)](error_code ec) mutable {
    if (ec || closed_) return;
    if (in_use()) {
      arm_idle(std::move(keep));
      return;
    }
    // Idle: end the watch (the watch loop sees it is not in use and stops).
    if (watch_conn_) watch_conn_->close();
    pause_timer_.cancel();
  });
}

asio::awaitable<void> sentinel::watch(std::shared_ptr<void> keep) {
  std::size_t next = 0;
  while (!closed_ && in_use()) {
    arm_idle(keep);
    const auto& s = sentinels_[next % sentinels_.size()];
    const std::string name = "sentinel " + where(s);
    watch_conn_.emplace(strand_, s);
    reply r;
    diagnostics d;
    auto ec = co_await watch_conn_->exec(command("SUBSCRIBE", "+switch-master"), r,
                                         steady::now() + 2 * opts_.connect_timeout, d);
    if (!ec && r.is_error()) {
      ec = make_error_code(errc::store_failed);
      d.client_message = name + " refused SUBSCRIBE: " + detail::printable(r.str, 200);
    }
    while (!ec && !closed_) {
      r = {};
      ec = co_await watch_conn_->receive(r, steady_time::max(), d);
      if (ec) break;
      std::string host, port;
      if (r.type == reply::kind::array && r.elements.size() == 3 &&
          r.elements[0].str == "message" &&
          parse_switch_master(r.elements[2].str, opts_.master_name, host, port) &&
          plaintext_allowed(host))
        move_to(host, port, "+switch-master from " + name);
    }
    watch_conn_->close();
    if (closed_) break;
    if (ec == asio::error::operation_aborted) continue;  // ended as idle: in use again?
    log(log_level::debug, "redis: the watch on " + name + " ended: " + d.client_message);
    ++next;  // the next sentinel, after a pause
    pause_timer_.expires_after(watch_pause);
    co_await pause_timer_.async_wait(use_tuple);
  }
  watching_ = false;
  idle_timer_.cancel();
  // Never after close(): the store is gone, and with it, maybe, what the log function uses.
  if (!closed_) log(log_level::debug, "redis: no watch on the sentinels while the store is idle");
}

void sentinel::close() noexcept {
  closed_ = true;
  for (auto* c : probes_) c->close();
  if (watch_conn_) watch_conn_->close();
  idle_timer_.cancel();
  pause_timer_.cancel();
  for (auto& w : discovery_waiters_) w->cancel();
}

}  // namespace nxsys::auth::redis
