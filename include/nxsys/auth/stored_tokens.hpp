// SPDX-License-Identifier: BSL-1.0
// The state a token_store keeps. Plain data, no Asio: the refresh machine works on it too.
#ifndef NXSYS_AUTH_STORED_TOKENS_HPP
#define NXSYS_AUTH_STORED_TOKENS_HPP

#include <chrono>
#include <cstdint>
#include <string>

namespace nxsys::auth {

/// What a store keeps: enough for a restarted process to continue the refresh-token chain and,
/// while it is still valid, to reuse the access token without a request.
struct stored_tokens {
  std::string refresh_token;  ///< never empty in a stored state
  std::string access_token;   ///< empty: none stored
  std::string token_type;
  /// Wall-clock expiry of the access token: steady_clock does not survive a restart.
  std::chrono::system_clock::time_point expires_at{};
  /// The access token's lifetime as issued (to place the refresh point as for a fresh answer).
  std::chrono::seconds lifetime{0};
  /// The refresh token's place in its chain: 0 for the first one a chain was started with, one
  /// more for each rotation. It is how a client tells a newer stored state from an older one
  /// (an older one's refresh token was consumed: presenting it again revokes the chain). A
  /// store written by a version without it reads as 0.
  std::uint64_t generation = 0;
};

}  // namespace nxsys::auth

#endif
