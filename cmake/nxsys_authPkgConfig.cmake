# SPDX-License-Identifier: BSL-1.0
# nxsys-auth.pc (nxsys-auth-redis.pc when nxsys::auth_redis is built, nxsys-auth-testing.pc when
# nxsys::auth_testing is), installed beside the CMake package for builds that use pkg-config:
#   c++ -std=c++20 app.cpp $(pkg-config --cflags --libs nxsys-auth)
# Included from the top-level CMakeLists.txt when NXSYS_AUTH_INSTALL is on.

set(NXSYS_AUTH_INSTALL_PKGCONFIGDIR ${CMAKE_INSTALL_LIBDIR}/pkgconfig
  CACHE STRING "Where the pkg-config files are installed, relative to the prefix")
mark_as_advanced(NXSYS_AUTH_INSTALL_PKGCONFIGDIR)

# The prefix is found from the .pc file's own place (${pcfiledir}), as the CMake package finds
# it: `cmake --install --prefix` chooses it after this file is written, and a staged or moved
# install keeps working. Absolute install dirs stay as they are.
if(IS_ABSOLUTE "${NXSYS_AUTH_INSTALL_PKGCONFIGDIR}")
  set(NXSYS_AUTH_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  file(RELATIVE_PATH nxsys_auth_pc_up "/${NXSYS_AUTH_INSTALL_PKGCONFIGDIR}" /)
  string(REGEX REPLACE "/$" "" nxsys_auth_pc_up "${nxsys_auth_pc_up}")
  set(NXSYS_AUTH_PC_PREFIX "\${pcfiledir}/${nxsys_auth_pc_up}")
endif()
foreach(dir INCLUDEDIR LIBDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${dir}}")
    set(NXSYS_AUTH_PC_${dir} "${CMAKE_INSTALL_${dir}}")
  else()
    set(NXSYS_AUTH_PC_${dir} "\${prefix}/${CMAKE_INSTALL_${dir}}")
  endif()
endforeach()

# Boost has no .pc files: its flags are written here, with its own directories only when the
# compiler would not search them anyway (a Boost of one's own in /opt, say).
set(NXSYS_AUTH_PC_BOOST_CFLAGS "")
get_target_property(nxsys_auth_pc_dirs Boost::headers INTERFACE_INCLUDE_DIRECTORIES)
foreach(dir IN LISTS nxsys_auth_pc_dirs)
  if(dir AND NOT dir IN_LIST CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES)
    string(APPEND NXSYS_AUTH_PC_BOOST_CFLAGS " -I${dir}")
  endif()
endforeach()

# " -L<dir>" for a library file outside the linker's default directories, or "".
function(nxsys_auth_pc_libdir_flag out file)
  get_filename_component(dir "${file}" DIRECTORY)
  if(dir AND NOT dir IN_LIST CMAKE_CXX_IMPLICIT_LINK_DIRECTORIES)
    set(${out} " -L${dir}" PARENT_SCOPE)
  else()
    set(${out} "" PARENT_SCOPE)
  endif()
endfunction()

get_target_property(nxsys_auth_pc_json Boost::json LOCATION)
nxsys_auth_pc_libdir_flag(NXSYS_AUTH_PC_BOOST_LIBS "${nxsys_auth_pc_json}")

configure_file(${CMAKE_CURRENT_LIST_DIR}/nxsys-auth.pc.in ${PROJECT_BINARY_DIR}/nxsys-auth.pc
  @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/nxsys-auth.pc DESTINATION ${NXSYS_AUTH_INSTALL_PKGCONFIGDIR})

if(TARGET nxsys_auth_redis)
  nxsys_auth_pc_libdir_flag(NXSYS_AUTH_PC_HIREDIS_LIBS "${NXSYS_AUTH_HIREDIS_LIBRARY}")
  configure_file(${CMAKE_CURRENT_LIST_DIR}/nxsys-auth-redis.pc.in
    ${PROJECT_BINARY_DIR}/nxsys-auth-redis.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/nxsys-auth-redis.pc
    DESTINATION ${NXSYS_AUTH_INSTALL_PKGCONFIGDIR})
endif()

if(TARGET nxsys_auth_testing)
  configure_file(${CMAKE_CURRENT_LIST_DIR}/nxsys-auth-testing.pc.in
    ${PROJECT_BINARY_DIR}/nxsys-auth-testing.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/nxsys-auth-testing.pc
    DESTINATION ${NXSYS_AUTH_INSTALL_PKGCONFIGDIR})
endif()
