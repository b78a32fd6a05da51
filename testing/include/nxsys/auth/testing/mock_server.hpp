// SPDX-License-Identifier: BSL-1.0
/// @file
/// The mock Nxsys token server of nxsys::auth_testing: a real HTTP(S) server on 127.0.0.1 whose
/// POST /nxsys/oauth/token behaves like the real endpoint (refresh_token and client_credentials
/// grants, optionally behind mutual TLS), with knobs to make it misbehave.
#ifndef NXSYS_AUTH_TESTING_MOCK_SERVER_HPP
#define NXSYS_AUTH_TESTING_MOCK_SERVER_HPP

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

/// Test support for applications using nxsys-auth (CMake target nxsys::auth_testing). Link it
/// into test programs only: it serves a private key that everyone has.
namespace nxsys::auth::testing {

/// How the server names the fields of a successful answer.
enum class field_names {
  camel,  ///< accessToken, tokenType, expiresIn, refreshToken (the Nxsys endpoint)
  snake,  ///< access_token, token_type, expires_in, refresh_token (RFC 6749)
};

/// An answer the server gives instead of a token (see mock_server::fail_next()).
struct scripted_failure {
  int status = 500;    ///< HTTP status of the answer
  std::string body{};  ///< raw body, e.g. {"error":"invalid_grant"} or an HTML error page
  std::string content_type = "application/json";               ///< "": no Content-Type header
  std::vector<std::pair<std::string, std::string>> headers{};  ///< extra headers (Retry-After)
};

/// How a mock_server behaves. Every field has a default that makes it a well-behaved endpoint
/// issuing one-hour tokens without rotation. (The {} initializers keep -Wextra quiet about
/// designated initializers, `{.tls = true, .rotate = true}`, that name only what they change.)
struct mock_server_options {
  /// The client credentials the server accepts (in the body or as HTTP Basic).
  std::string client_id = "test-client";
  std::string client_secret = "test-secret";        ///< see client_id
  std::string initial_refresh_token = "refresh-0";  ///< the refresh token accepted first
  /// Accept grant_type=client_credentials (RFC 6749 §4.4; grantType in the Nxsys dialect): the
  /// client authenticates as for a refresh and gets an access token without a refresh token.
  /// false: such requests are answered 400 unauthorized_client (after client authentication).
  bool allow_client_credentials = true;
  std::uint16_t port = 0;  ///< port on 127.0.0.1; 0: a free one, see mock_server::port()
  /// Serve HTTPS. Without cert_chain_file and private_key_file the server uses a built-in
  /// certificate for 127.0.0.1 and localhost; clients trust it through mock_server::ca_file().
  bool tls = false;
  std::string cert_chain_file{};   ///< PEM certificate chain to serve instead of the built-in one
  std::string private_key_file{};  ///< PEM private key of cert_chain_file
  /// Mutual TLS (needs tls): the handshake requires a client certificate that verifies against
  /// client_ca_file (OpenSSL verify_peer | verify_fail_if_no_peer_cert) and whose extended key
  /// usage allows client authentication; a client without one never gets to send a request.
  /// mock_server::client_certificate_file() is such a certificate for the default client CA.
  bool require_client_certificate = false;
  /// PEM file of the CAs a client certificate must chain to; "": the built-in test CA (the one
  /// of ca_file(), which signed the built-in client certificate). Only with
  /// require_client_certificate.
  std::string client_ca_file{};
  std::chrono::milliseconds latency{0};  ///< wait before each token answer (never blocks a thread)
  std::chrono::seconds ttl{3600};        ///< expiresIn of issued access tokens
  bool send_expires_in = true;           ///< false: answers carry no expiry
  bool expires_in_as_string = false;     ///< "expiresIn":"3600" instead of 3600
  bool rotate = false;                   ///< issue a new refresh token with every refresh
  /// A rotated-away refresh token presented again revokes the whole chain (invalid_grant from
  /// then on), as servers that detect refresh token reuse do.
  bool reuse_detection = false;
  /// For this long after a rotation, the refresh token it replaced is still accepted (as
  /// Auth0's reuse interval or Okta's grace period): the answer carries a new access token and
  /// the current refresh token, with no further rotation. 0: no grace.
  std::chrono::milliseconds reuse_grace{0};
  /// Decide each token request (and rotate) when it arrives, before the latency wait, as a
  /// server whose answer is delayed on the way back: a client that times out during the wait
  /// has lost an answer the server already acted on. false: decided after the wait.
  bool decide_on_arrival = false;
  field_names names = field_names::camel;  ///< field names of successful answers
  /// A JSON object whose members are added to every token answer, e.g. R"({"scope":"read"})".
  std::string extra_answer_fields{};
  int fail_every = 0;  ///< every Nth token request fails with 503 and Retry-After: 1; 0: none
  /// Threads the server runs on when it has its own (1 or more); ignored on your executor.
  unsigned threads = 1;
};

/// Counters since the server started. A request is counted before its answer is written, so a
/// client that has read an answer sees it counted.
struct mock_server_stats {
  std::uint64_t requests = 0;             ///< HTTP requests of any kind
  std::uint64_t refreshes = 0;            ///< token requests answered with a token (either grant)
  std::uint64_t errors = 0;               ///< token requests answered with an error
  std::uint64_t max_in_flight = 0;        ///< most token requests being handled at once
  std::uint64_t connections = 0;          ///< TCP connections accepted
  std::uint64_t reuse_detected = 0;       ///< rotated refresh tokens presented again
  std::uint64_t rfc6749_requests = 0;     ///< token requests with RFC 6749 parameter names
  std::uint64_t basic_auth_requests = 0;  ///< token requests with an Authorization header
  std::uint64_t api_requests = 0;         ///< requests to /api/...
  std::uint64_t api_unauthorized = 0;     ///< of those, answered 401
  std::uint64_t grace_refreshes = 0;      ///< refreshes with the replaced token, within the grace
  /// The shortest interval between two successful refreshes, in ms (0 before the second):
  /// two replicas refreshing for one expiry show up here as a few milliseconds.
  std::uint64_t min_refresh_gap_ms = 0;
  /// Of refreshes, the client_credentials grants (RFC 6749 §4.4) answered with a token.
  std::uint64_t client_credentials_grants = 0;
  std::uint64_t tls_handshakes = 0;  ///< TLS handshakes completed
  /// TLS handshakes that failed: no or an unverified client certificate under
  /// require_client_certificate, an untrusting client, or a client gone during the handshake.
  /// Counted when the server's side of the handshake ends, which may be just after the client
  /// saw the failure (with TLS 1.3 a refused client certificate shows on the client's first
  /// read).
  std::uint64_t tls_handshake_failures = 0;
  /// Completed TLS handshakes in which the client presented a certificate that verified.
  std::uint64_t client_certificates = 0;
};

/// A mock Nxsys token server on 127.0.0.1, listening from construction until stop() or
/// destruction. Besides the token endpoint it serves GET /stats (the counters as JSON) and
/// /api/... (200 for an unexpired access token it issued, 401 otherwise).
///
/// Thread safety: all member functions may be called concurrently from any thread; moving is
/// not supported and destruction must not race with other calls.
class mock_server {
 public:
  /// Starts a server on threads of its own (`opts.threads` of them), so that a client on any
  /// executor, even one not running, can use it.
  /// @param opts how the server behaves (see mock_server_options)
  /// @throws boost::system::system_error when it cannot listen or load its certificate.
  /// @throws std::invalid_argument when `opts.require_client_certificate` is set without
  ///   `opts.tls`.
  explicit mock_server(mock_server_options opts = {});

  /// Starts a server whose I/O runs on `ex`, e.g. the io_context of the client under test, so
  /// that a single-threaded test needs no other thread. The execution context of `ex` must
  /// run for the server to answer, and outlive it. The server listens until stop(): until
  /// then, that context's run() does not run out of work.
  /// @param ex runs the server's I/O; `opts.threads` is ignored
  /// @param opts how the server behaves (see mock_server_options)
  /// @throws boost::system::system_error when it cannot listen or load its certificate.
  /// @throws std::invalid_argument when `opts.require_client_certificate` is set without
  ///   `opts.tls`.
  explicit mock_server(boost::asio::any_io_executor ex, mock_server_options opts = {});

  /// Calls stop().
  ~mock_server();
  mock_server(const mock_server&) = delete;
  mock_server& operator=(const mock_server&) = delete;

  /// @return the port the server listens on (the one chosen when `opts.port` was 0)
  std::uint16_t port() const;
  /// @return "http://127.0.0.1:PORT" or "https://127.0.0.1:PORT": the Nxsys base API URL
  std::string base_url() const;
  /// @return base_url() + "/nxsys/oauth/token", for client_config::token_url
  std::string token_url() const;
  /// @return a PEM file holding the CA certificate of the built-in TLS certificate, for
  ///   tls_options::ca_file; it lives as long as the server. "" when the server does not serve
  ///   the built-in certificate (no TLS, or your own certificate files).
  std::string ca_file() const;
  /// @return a PEM file holding the built-in client certificate (CN "nxsys-auth test client",
  ///   signed by the test CA, clientAuth only), which a server with
  ///   `require_client_certificate` and the default `client_ca_file` accepts. Written on the
  ///   first call, whether or not the server serves TLS; it lives as long as the server.
  /// @throws std::system_error or std::runtime_error when the file cannot be written.
  std::string client_certificate_file() const;
  /// @return a PEM file holding the private key of client_certificate_file(); written on the
  ///   first call, it lives as long as the server.
  /// @throws std::system_error or std::runtime_error when the file cannot be written.
  std::string client_key_file() const;
  /// @return the built-in client certificate (PEM), what client_certificate_file() holds, for
  ///   clients that take certificates in memory
  static std::string client_certificate_pem();
  /// @return the private key of the built-in client certificate (PEM, unencrypted)
  static std::string client_key_pem();
  /// @return the test CA certificate (PEM) that signed the built-in server and client
  ///   certificates, what ca_file() holds
  static std::string ca_certificate_pem();

  /// @return the counters, consistent with each other
  mock_server_stats stats() const;
  /// @return the refresh tokens presented by token requests, in arrival order
  std::vector<std::string> presented_refresh_tokens() const;
  /// @return the refresh token the server accepts now; "" after reuse detection revoked the
  ///   chain
  std::string current_refresh_token() const;
  /// @return the last access token issued; "" if none
  std::string last_access_token() const;
  /// @return the refresh token the last rotation replaced ("" if none yet): with the current
  ///   one, the only refresh token a client that died mid-refresh may still hold
  std::string previous_refresh_token() const;
  /// @return connections accepted and not yet ended. 0 after a client died: nothing it sent is
  ///   still being handled (a request it wrote before dying is answered before its connection
  ///   ends).
  std::size_t open_connections() const;

  /// Resynchronises the chain, for tests whose client died after the server rotated but
  /// before it kept the new token. Does not undo a revoked chain.
  /// @param token becomes the refresh token the server accepts; the current one is retired
  ///   (presenting it later counts as reuse)
  void set_refresh_token(std::string token);

  /// Scripts failures: the next `count` token requests, in arrival order, are answered with
  /// `f` (after the latency) instead of being served. Calls queue up behind each other.
  /// @param f the answer, e.g. {.status = 400, .body = R"({"error":"invalid_grant"})"}
  /// @param count how many requests get it; 0 or less: none
  void fail_next(scripted_failure f, int count = 1);
  /// Drops the scripted failures not used yet.
  void clear_failures();
  /// Changes the wait before the answer of later token requests.
  /// @param latency the new wait (mock_server_options::latency)
  void set_latency(std::chrono::milliseconds latency);
  /// @param close true: the server closes every connection after its answer
  ///   (Connection: close); false: keep-alive as the client asks
  void set_close_after_response(bool close);
  /// Makes /api/ refuse (401) every access token issued so far, as a server-side revocation.
  void revoke_access_tokens();
  /// Closes every idle keep-alive connection, as a server's idle timeout would. On the
  /// server's own threads it returns once they are closed; on your executor the closes are
  /// posted to it and happen when it runs them.
  void close_idle_connections();

  /// Stops the server: no new connection is accepted, and open ones are closed without an
  /// answer to what they are handling. On its own threads it returns when they have ended; on
  /// your executor the rest happens when that runs. The counters and tokens stay readable.
  /// Idempotent.
  void stop();

 private:
  struct impl;
  std::shared_ptr<impl> impl_;  // shared with the server's pending operations
};

/// @param s the counters, e.g. mock_server::stats()
/// @return the counters as a JSON object, what GET /stats answers
std::string to_json(const mock_server_stats& s);

}  // namespace nxsys::auth::testing

#endif
