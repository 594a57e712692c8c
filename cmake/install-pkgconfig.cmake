# Runs at install time (install(CODE) in CMakeLists.txt): writes nbdwire.pc for the prefix
# being installed into, which `cmake --install --prefix DIR` may change after configuring.
# The library is header-only, so the file names the include directory and nothing else; the
# language standard (C++20) is the user's to choose, and version.hpp says so when it is wrong.
# Inputs: NBDWIRE_PC_TEMPLATE, NBDWIRE_PC_DIR, NBDWIRE_PC_INCLUDEDIR (relative to the prefix,
# or absolute), PROJECT_DESCRIPTION, PROJECT_VERSION; CMAKE_INSTALL_PREFIX and DESTDIR as
# cmake --install sets them.
set(NBDWIRE_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
if(IS_ABSOLUTE "${NBDWIRE_PC_INCLUDEDIR}")
  # Absolute include directories stay as given; under the prefix they are written relative to it.
  cmake_path(IS_PREFIX NBDWIRE_PC_PREFIX "${NBDWIRE_PC_INCLUDEDIR}" NORMALIZE _under_prefix)
  if(_under_prefix)
    cmake_path(RELATIVE_PATH NBDWIRE_PC_INCLUDEDIR BASE_DIRECTORY "${NBDWIRE_PC_PREFIX}")
    set(NBDWIRE_PC_INCLUDEDIR "\${prefix}/${NBDWIRE_PC_INCLUDEDIR}")
  endif()
else()
  set(NBDWIRE_PC_INCLUDEDIR "\${prefix}/${NBDWIRE_PC_INCLUDEDIR}")
endif()
if(IS_ABSOLUTE "${NBDWIRE_PC_DIR}")
  set(_dir "$ENV{DESTDIR}${NBDWIRE_PC_DIR}")
else()
  set(_dir "$ENV{DESTDIR}${CMAKE_INSTALL_PREFIX}/${NBDWIRE_PC_DIR}")
endif()
message(STATUS "Installing: ${_dir}/nbdwire.pc")
configure_file("${NBDWIRE_PC_TEMPLATE}" "${_dir}/nbdwire.pc" @ONLY)
list(APPEND CMAKE_INSTALL_MANIFEST_FILES "${_dir}/nbdwire.pc")
