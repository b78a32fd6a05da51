// SPDX-License-Identifier: BSL-1.0
// Links nxsys::auth::redis_store with only `pkg-config --cflags --libs nxsys-auth-redis`
// (tests/package/run.sh pkgconfig). The store connects lazily: nothing here needs a Redis.
#include <nxsys/auth/redis_store.hpp>
#include <nxsys/auth/version.hpp>

#include <boost/asio/io_context.hpp>

#include <iostream>

int main() {
  boost::asio::io_context ctx;
  nxsys::auth::redis_store store(ctx.get_executor(), nxsys::auth::redis_store_options{});
  std::cout << "nxsys-auth-redis consumer: a redis_store of nxsys-auth "
            << nxsys::auth::version_string << "\n";
  return 0;
}
