// SPDX-License-Identifier: BSL-1.0
/// @file
/// The version of nxsys-auth, for the preprocessor and for C++. The three numbers below are the
/// only place it is written: CMakeLists.txt reads them for project(VERSION) and the packages.
#ifndef NXSYS_AUTH_VERSION_HPP
#define NXSYS_AUTH_VERSION_HPP

#include <string_view>

// CMakeLists.txt and scripts/docs.sh read the three lines below: their comments go above them.
/// The major version. Semantic versioning; while the major version is 0, a new minor version
/// may break the API.
#define NXSYS_AUTH_VERSION_MAJOR 0
/// The minor version.
#define NXSYS_AUTH_VERSION_MINOR 2
/// The patch version.
#define NXSYS_AUTH_VERSION_PATCH 0

/// One number for `#if` comparisons, like BOOST_VERSION: major * 100000 + minor * 100 + patch.
#define NXSYS_AUTH_VERSION \
  (NXSYS_AUTH_VERSION_MAJOR * 100000 + NXSYS_AUTH_VERSION_MINOR * 100 + NXSYS_AUTH_VERSION_PATCH)

// Two steps, so that the arguments are expanded before they are turned into strings.
#define NXSYS_AUTH_VERSION_STRINGIZE_(x) #x
#define NXSYS_AUTH_VERSION_STRINGIZE(x) NXSYS_AUTH_VERSION_STRINGIZE_(x)

/// "MAJOR.MINOR.PATCH" as a string literal, so that it can be pasted into other literals:
/// `"nxsys-auth/" NXSYS_AUTH_VERSION_STRING`.
#define NXSYS_AUTH_VERSION_STRING \
  NXSYS_AUTH_VERSION_STRINGIZE(   \
      NXSYS_AUTH_VERSION_MAJOR.NXSYS_AUTH_VERSION_MINOR.NXSYS_AUTH_VERSION_PATCH)

namespace nxsys::auth {

/// The major version of the headers compiled in: a change may break the API.
inline constexpr int version_major = NXSYS_AUTH_VERSION_MAJOR;
/// While version_major is 0, a change of version_minor may break the API.
inline constexpr int version_minor = NXSYS_AUTH_VERSION_MINOR;
/// Fixes only: no API or behaviour a user relies on changes.
inline constexpr int version_patch = NXSYS_AUTH_VERSION_PATCH;
/// "MAJOR.MINOR.PATCH", as the programs print it for --version and the User-Agent sends it.
inline constexpr std::string_view version_string = NXSYS_AUTH_VERSION_STRING;

}  // namespace nxsys::auth

#endif
