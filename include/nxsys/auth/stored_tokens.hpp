// SPDX-License-Identifier: BSL-1.0
/// @file
/// The state a token_store keeps. Plain data, no Asio: the refresh machine works on it too.
#ifndef NXSYS_AUTH_STORED_TOKENS_HPP
#define NXSYS_AUTH_STORED_TOKENS_HPP

#include "nxsys/auth/detail/wipe.hpp"

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>

namespace nxsys::auth {

/// What a store keeps: enough for a restarted process to continue the refresh-token chain and,
/// while it is still valid, to reuse the access token without a request.
///
/// It holds credentials, so it overwrites them whenever it lets go of their bytes: on
/// destruction, on assignment (the old values) and on move (what a moved-from string keeps in
/// its short-string buffer). A copy is a second copy of the secrets, wiped in its own turn.
struct stored_tokens {
  /// The chain's refresh token; empty with the client_credentials grant, which has none. The
  /// stores refuse a state with neither this nor an access token (errc::invalid_argument).
  std::string refresh_token;
  std::string access_token;   ///< empty: none stored
  std::string token_type;     ///< the access token's type, e.g. "Bearer"
  /// Wall-clock expiry of the access token: steady_clock does not survive a restart.
  std::chrono::system_clock::time_point expires_at{};
  /// The access token's lifetime as issued (to place the refresh point as for a fresh answer).
  std::chrono::seconds lifetime{0};
  /// The refresh token's place in its chain: 0 for the first one a chain was started with, one
  /// more for each rotation. It is how a client tells a newer stored state from an older one
  /// (an older one's refresh token was consumed: presenting it again revokes the chain). A
  /// store written by a version without it reads as 0.
  std::uint64_t generation = 0;

  stored_tokens() = default;
  /// The fields in declaration order. The token parameters are moved from and then wiped.
  /// @param refresh the refresh token (refresh_token)
  /// @param access the access token (access_token); empty: none
  /// @param type the token type (token_type)
  /// @param expires the access token's wall-clock expiry (expires_at)
  /// @param issued_lifetime the access token's lifetime as issued (lifetime)
  /// @param gen the refresh token's place in its chain (generation)
  stored_tokens(std::string refresh, std::string access = {}, std::string type = {},
                std::chrono::system_clock::time_point expires = {},
                std::chrono::seconds issued_lifetime = std::chrono::seconds{0},
                std::uint64_t gen = 0) noexcept
      : refresh_token(std::move(refresh)),
        access_token(std::move(access)),
        token_type(std::move(type)),
        expires_at(expires),
        lifetime(issued_lifetime),
        generation(gen) {
    detail::wipe_all(refresh);
    detail::wipe_all(access);
  }
  /// A second copy of the secrets, wiped in its own turn.
  stored_tokens(const stored_tokens&) = default;
  /// Takes `o`'s fields, then wipes what `o` kept.
  /// @param o the state moved from; left empty
  stored_tokens(stored_tokens&& o) noexcept
      : refresh_token(std::move(o.refresh_token)),
        access_token(std::move(o.access_token)),
        token_type(std::move(o.token_type)),
        expires_at(o.expires_at),
        lifetime(o.lifetime),
        generation(o.generation) {
    o.wipe();
  }
  /// Wipes this state's tokens and takes `o`'s fields. One operator for copy and move: `o` is a
  /// copy, or what a move made of the source (which the move wiped), and wipes what it keeps.
  /// @param o the state assigned
  /// @return *this
  stored_tokens& operator=(stored_tokens o) noexcept {
    wipe();
    refresh_token = std::move(o.refresh_token);
    access_token = std::move(o.access_token);
    token_type = std::move(o.token_type);
    expires_at = o.expires_at;
    lifetime = o.lifetime;
    generation = o.generation;
    return *this;
  }
  ~stored_tokens() { wipe(); }

  /// Overwrites both tokens and empties the state (the other fields are reset too).
  void wipe() noexcept {
    detail::wipe_all(refresh_token);
    detail::wipe_all(access_token);
    token_type.clear();
    expires_at = {};
    lifetime = std::chrono::seconds{0};
    generation = 0;
  }
};

}  // namespace nxsys::auth

#endif
