// A real Beast HTTP(S) server implementing the Nxsys token endpoint, for tests, the demo and
// benchmarks. Never linked into the shipped library.
#ifndef NXSYS_AUTH_TESTING_MOCK_SERVER_HPP
#define NXSYS_AUTH_TESTING_MOCK_SERVER_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace nxsys::auth::testing {

/// How the server names the fields of a successful answer.
enum class field_names { camel, snake };

/// A scripted failure the server answers with instead of a token.
struct scripted_failure {
  int status = 500;  ///< HTTP status of the answer
  std::string body;  ///< raw body (e.g. {"error":"invalid_grant"} or HTML)
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;  ///< extra headers (Retry-After)
};

struct mock_server_options {
  std::string client_id = "test-client";
  std::string client_secret = "test-secret";
  std::string initial_refresh_token = "refresh-0";
  std::uint16_t port = 0;                ///< port on 127.0.0.1; 0: an ephemeral one
  bool tls = false;                      ///< serve HTTPS with tests/data/server.pem
  std::string cert_chain_file;           ///< PEM; defaults to the test data server cert
  std::string private_key_file;          ///< PEM; defaults to the test data server key
  std::chrono::milliseconds latency{0};  ///< delay before each token answer (async timer)
  std::chrono::seconds ttl{3600};        ///< expiresIn of issued tokens
  bool send_expires_in = true;           ///< false: the answer carries no expiry
  bool expires_in_as_string = false;     ///< "expiresIn":"3600" instead of 3600
  bool rotate = false;                   ///< issue a new refresh token on every refresh
  bool reuse_detection = false;          ///< a rotated (old) refresh token revokes the chain
  /// For this long after a rotation, the refresh token it replaced is still accepted (as
  /// Auth0's reuse interval or Okta's grace period): the answer carries a new access token and
  /// the current refresh token, with no further rotation. 0: no grace.
  std::chrono::milliseconds reuse_grace{0};
  /// Decide each token request (and rotate) when it arrives, before the latency wait, as a
  /// server whose answer is delayed on the way back: a client that times out during the wait
  /// has lost an answer the server already acted on. false: decided after the wait.
  bool decide_on_arrival = false;
  field_names names = field_names::camel;
  /// A JSON object whose members are added to every token answer (extra fields).
  std::string extra_answer_fields;
  int fail_every = 0;    ///< every Nth token request fails with 503
  unsigned threads = 1;  ///< io_context threads of the server
};

/// Counters, readable while the server runs.
struct mock_server_stats {
  std::uint64_t requests = 0;             ///< HTTP requests of any kind
  std::uint64_t refreshes = 0;            ///< token requests answered with a token
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
};

/// Runs on its own threads, bound to 127.0.0.1; stops in the destructor.
class mock_server {
 public:
  explicit mock_server(mock_server_options opts = {});
  ~mock_server();
  mock_server(const mock_server&) = delete;
  mock_server& operator=(const mock_server&) = delete;

  std::uint16_t port() const;
  /// "http://127.0.0.1:PORT" or "https://127.0.0.1:PORT" (the base API URL).
  std::string base_url() const;
  /// base_url() + "/nxsys/oauth/token"
  std::string token_url() const;

  mock_server_stats stats() const;
  /// The refresh tokens presented by successful and failed token requests, in arrival order.
  std::vector<std::string> presented_refresh_tokens() const;
  /// The refresh token the server currently accepts.
  std::string current_refresh_token() const;
  /// The last access token issued ("" if none).
  std::string last_access_token() const;
  /// The refresh token the last rotation replaced ("" if none yet): with the current one, the
  /// only refresh token a client that died mid-refresh may still hold.
  std::string previous_refresh_token() const;
  /// Connections accepted and not yet ended. 0 after a client died: nothing it sent is still
  /// being handled (a request it wrote before dying is answered before its connection ends).
  std::size_t open_connections() const;

  /// Resynchronises the chain: `token` becomes the refresh token the server accepts, and the
  /// current one is retired (presenting it later counts as reuse). For tests whose client died
  /// after the server rotated but before it kept the new token. Does not undo a revoked chain.
  void set_refresh_token(std::string token);

  /// The next `count` token requests are answered with `f` (after the latency).
  void fail_next(scripted_failure f, int count = 1);
  /// Drops the scripted failures not used yet.
  void clear_failures();
  /// Changes the latency of later requests.
  void set_latency(std::chrono::milliseconds latency);
  /// Makes the server close every connection after its answer (Connection: close).
  void set_close_after_response(bool close);
  /// Makes /api/ refuse (401) every access token issued so far, as a server-side revocation.
  void revoke_access_tokens();
  /// Closes every idle keep-alive connection now (as a server's idle timeout would).
  void close_idle_connections();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// The counters as a JSON object (what GET /stats answers).
std::string to_json(const mock_server_stats& s);

/// Directory of tests/data (certificates).
std::string test_data_dir();

}  // namespace nxsys::auth::testing

#endif
