// SPDX-License-Identifier: BSL-1.0
// callbacks: nxsys-auth without coroutines. A plain completion callback, and a std::future
// waited on by a thread that does not run Asio: the io_context runs on a thread of its own, as
// in a program whose main loop is someone else's (a GUI, a game loop, a legacy server).
//
//   export NXSYS_BASE_API_URL=https://api.nxsys.example NXSYS_CLIENT_ID=my-client
//   export NXSYS_CLIENT_SECRET=... NXSYS_REFRESH_TOKEN=...
//   export NXSYS_CA_FILE=/etc/ssl/private-ca.pem   # optional: a CA of your own for https
//   nxsys-example-callbacks
//   callback: a Bearer token, valid for 3599 s
//   future: a Bearer token, valid for 3599 s
//   calls 2, refreshes 1
//
// Exit status: 0 when both got a token, 1 otherwise, 2 for a missing or unusable configuration.
#include <nxsys/auth.hpp>

#include "../common/program_flags.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include <chrono>
#include <cstdlib>
#include <future>
#include <iostream>
#include <stdexcept>
#include <string>
#include <thread>

namespace asio = boost::asio;
namespace auth = nxsys::auth;

namespace {

// Secrets come from the environment (or files), never from the command line, which `ps` shows
// to every user of the machine.
std::string required_env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0')
    throw std::runtime_error(std::string(name) + " is not set");
  return value;
}

// What a token is good for, never its value: the value is a bearer credential.
std::string describe_token(const auth::access_token& token) {
  const auto left = std::chrono::duration_cast<std::chrono::seconds>(
      token.expires_at() - std::chrono::steady_clock::now());
  return "a " + std::string(token.type()) + " token, valid for " + std::to_string(left.count()) +
         " s";
}

int run(auth::client_config cfg) {
  asio::io_context ctx;
  auth::client client(ctx.get_executor(), std::move(cfg));  // throws invalid_config

  // run() returns as soon as it has nothing to do; the guard keeps the thread in it until this
  // thread has made its calls and let go.
  auto work = asio::make_work_guard(ctx);
  std::thread io_thread([&ctx] { ctx.run(); });

  // 1. A plain callback. It runs on the io_context's thread (the client's executor: it has no
  // executor of its own), never inside async_token() itself, so it must not block: it reports
  // through a promise. `callback_diag` receives the server's words on failure and must outlive
  // the call, hence out here.
  std::promise<bool> callback_done;
  auth::diagnostics callback_diag;
  client.async_token(callback_diag, [&](boost::system::error_code ec, auth::access_token token) {
    // One string, one write, as for anything a handler prints: a handler on another thread
    // may be printing at the same time.
    if (ec) {
      std::cerr << "callback: " + auth::describe(ec, callback_diag) + "\n";
    } else {
      std::cout << "callback: " + describe_token(token) + "\n";
    }
    callback_done.set_value(!ec);
  });

  // 2. A std::future, from this thread, which does not run the io_context. Asked while the
  // callback's refresh is most likely in flight, it joins that refresh (or, if it came too late
  // to join, finds the token it left in the cache): one refresh for both.
  // get() blocks until the io_context's thread completes the operation, so it must never be
  // called on a thread that runs the io_context (it would wait for itself). A failure comes
  // out of get() as a boost::system::system_error carrying the error code alone; the
  // diagnostics overload keeps the server's words for the message.
  auth::diagnostics future_diag;
  std::future<auth::access_token> token = client.async_token(future_diag, asio::use_future);
  bool future_ok = false;
  std::string future_line;
  try {
    future_line = "future: " + describe_token(token.get()) + "\n";
    future_ok = true;
  } catch (const boost::system::system_error& e) {
    future_line = "future: " + auth::describe(e.code(), future_diag) + "\n";
  }
  const bool callback_ok = callback_done.get_future().get();
  (future_ok ? std::cout : std::cerr) << future_line;

  // Both calls are complete: the stats are final. refreshes_started counts refreshes, one per
  // flight however many calls waited for it.
  std::cout << "calls 2, refreshes " << client.stats().refreshes_started << "\n";

  work.reset();  // run() returns once the client's own work (if any) is done
  io_thread.join();
  return callback_ok && future_ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (nxsys_examples::answered_version_or_help(
          argc, argv, "nxsys-example-callbacks",
          "usage: nxsys-example-callbacks\n"
          "  reads NXSYS_BASE_API_URL, NXSYS_CLIENT_ID, NXSYS_CLIENT_SECRET, NXSYS_REFRESH_TOKEN\n"
          "  and, optionally, NXSYS_CA_FILE\n"))
    return 0;
  auth::client_config cfg;
  try {
    cfg.token_url = auth::make_token_url(required_env("NXSYS_BASE_API_URL"));
    cfg.client_id = required_env("NXSYS_CLIENT_ID");
    cfg.client_secret = required_env("NXSYS_CLIENT_SECRET");
    cfg.refresh_token = required_env("NXSYS_REFRESH_TOKEN");
  } catch (const std::runtime_error& e) {
    std::cerr << "callbacks: " << e.what() << '\n';
    return 2;
  }
  if (const char* ca = std::getenv("NXSYS_CA_FILE")) cfg.http.tls.ca_file = ca;
  try {
    return run(std::move(cfg));
  } catch (const auth::error_with_diagnostics& e) {
    std::cerr << "callbacks: " << e.what() << '\n';  // never a secret
    return 2;  // only the constructor throws: the configuration is unusable
  }
}
