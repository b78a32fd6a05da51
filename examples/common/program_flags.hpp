// SPDX-License-Identifier: BSL-1.0
// --version and --help, answered the same way by every program of nxsys-auth: the examples
// share this header so that `nxsys-example-... --version` names the library it was built with.
// An example copied into your project can drop it.
#ifndef NXSYS_AUTH_EXAMPLES_PROGRAM_FLAGS_HPP
#define NXSYS_AUTH_EXAMPLES_PROGRAM_FLAGS_HPP

#include <nxsys/auth/version.hpp>

#include <iostream>
#include <string_view>

namespace nxsys_examples {

/// True when argv is just `--version` or `--help` and the answer was printed: main returns 0.
/// @param name the program's name, as it is installed
/// @param usage the lines --help prints before the --version line
inline bool answered_version_or_help(int argc, char** argv, std::string_view name,
                                     std::string_view usage) {
  if (argc != 2) return false;
  const std::string_view arg = argv[1];
  if (arg == "--version") {
    std::cout << name << ' ' << nxsys::auth::version_string << '\n';
    return true;
  }
  if (arg == "--help" || arg == "-h") {
    std::cout << usage << "  --version  show the version\n  --help     show this help\n";
    return true;
  }
  return false;
}

}  // namespace nxsys_examples

#endif
