// nxsys-auth: keeps Nxsys OAuth access tokens valid, one refresh at a time.
//   nxsys::auth::access_token t = co_await client.token();
#ifndef NXSYS_AUTH_HPP
#define NXSYS_AUTH_HPP

#include <nxsys/auth/access_token.hpp>
#include <nxsys/auth/client.hpp>
#include <nxsys/auth/config.hpp>
#include <nxsys/auth/error.hpp>
#include <nxsys/auth/protocol.hpp>
#include <nxsys/auth/session.hpp>
#include <nxsys/auth/stats.hpp>
#include <nxsys/auth/stored_tokens.hpp>
#include <nxsys/auth/token_store.hpp>

#endif
