# Builds and runs tests/consumer against nbdwire, one way per test (MODE):
#   find_package      an installed prefix (NBDWIRE_PREFIX), found with find_package(nbdwire)
#   pkg-config        the same prefix, compiled by hand with `pkg-config --cflags nbdwire`
#   add_subdirectory  the source tree (NBDWIRE_SOURCE_DIR) as a subproject
#   fetchcontent      FetchContent from the source tree's git repository at tag v<version>
# Every way must print "consumer: nbdwire <version> works"; any failing step fails the test.
# A test that cannot run here (no pkg-config, no git checkout) prints "nbdwire-test-skipped:"
# and ctest reports it as skipped.
cmake_minimum_required(VERSION 3.25)
foreach(v MODE CONSUMER_SOURCE_DIR CONSUMER_BINARY_DIR CONSUMER_CXX_COMPILER CONSUMER_EXPECTED_VERSION)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "run.cmake needs -D${v}=...")
  endif()
endforeach()

set(_expected_output "consumer: nbdwire ${CONSUMER_EXPECTED_VERSION} works\n")

# Runs the built consumer and compares what it prints with the expected line.
function(run_consumer program)
  execute_process(COMMAND "${program}"
    OUTPUT_VARIABLE _out ERROR_VARIABLE _err RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0 OR NOT _out STREQUAL _expected_output)
    message(FATAL_ERROR "${program} exited with ${_rc} and printed\n${_out}${_err}\n"
                        "want exit 0 and: ${_expected_output}")
  endif()
  message(STATUS "${MODE}: ${_out}")
endfunction()

# A fresh build each time, so a stale one cannot make the test pass.
file(REMOVE_RECURSE "${CONSUMER_BINARY_DIR}")
file(MAKE_DIRECTORY "${CONSUMER_BINARY_DIR}")

if(MODE STREQUAL "pkg-config")
  if(NOT PKG_CONFIG OR NOT EXISTS "${PKG_CONFIG}")
    message("nbdwire-test-skipped: pkg-config not found (Debian: apt-get install pkgconf)")
    return()
  endif()
  # Only the prefix under test: PKG_CONFIG_LIBDIR replaces the default search path.
  set(_env "${CMAKE_COMMAND}" -E env --unset=PKG_CONFIG_PATH --unset=PKG_CONFIG_SYSROOT_DIR
    "PKG_CONFIG_LIBDIR=${NBDWIRE_PREFIX}/${NBDWIRE_PKGCONFIG_DIR}")
  execute_process(COMMAND ${_env} "${PKG_CONFIG}" --modversion nbdwire
    OUTPUT_VARIABLE _version OUTPUT_STRIP_TRAILING_WHITESPACE COMMAND_ERROR_IS_FATAL ANY)
  if(NOT _version STREQUAL CONSUMER_EXPECTED_VERSION)
    message(FATAL_ERROR "pkg-config --modversion nbdwire says '${_version}', want ${CONSUMER_EXPECTED_VERSION}")
  endif()
  execute_process(COMMAND ${_env} "${PKG_CONFIG}" --cflags nbdwire
    OUTPUT_VARIABLE _cflags OUTPUT_STRIP_TRAILING_WHITESPACE COMMAND_ERROR_IS_FATAL ANY)
  # The include directory of the prefix, and no language standard: that is the user's choice.
  if(NOT _cflags STREQUAL "-I${NBDWIRE_PREFIX}/${NBDWIRE_INCLUDEDIR}")
    message(FATAL_ERROR "pkg-config --cflags nbdwire says '${_cflags}', want -I${NBDWIRE_PREFIX}/${NBDWIRE_INCLUDEDIR}")
  endif()
  execute_process(COMMAND ${_env} "${PKG_CONFIG}" --libs nbdwire
    OUTPUT_VARIABLE _libs OUTPUT_STRIP_TRAILING_WHITESPACE COMMAND_ERROR_IS_FATAL ANY)
  if(NOT _libs STREQUAL "")
    message(FATAL_ERROR "pkg-config --libs nbdwire says '${_libs}'; a header-only library links nothing")
  endif()
  separate_arguments(_cflags UNIX_COMMAND "${_cflags}")
  execute_process(
    COMMAND "${CONSUMER_CXX_COMPILER}" -std=c++20 ${_cflags} -Wall -Wextra -Werror
      "-DCONSUMER_EXPECTED_VERSION=\"${CONSUMER_EXPECTED_VERSION}\""
      "${CONSUMER_SOURCE_DIR}/main.cpp" -o "${CONSUMER_BINARY_DIR}/consumer"
    COMMAND_ERROR_IS_FATAL ANY)
  run_consumer("${CONSUMER_BINARY_DIR}/consumer")
  return()
endif()

set(_args -G "${CONSUMER_GENERATOR}"
  "-DCMAKE_CXX_COMPILER=${CONSUMER_CXX_COMPILER}"
  "-DCONSUMER_EXPECTED_VERSION=${CONSUMER_EXPECTED_VERSION}"
  "-DCONSUMER_MODE=${MODE}"
  # The build type stays the consumer's: empty here, and nbdwire must not change it.
  "-DCMAKE_BUILD_TYPE="
  # Only the prefix or tree under test may satisfy find_package.
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
  -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF)

if(MODE STREQUAL "find_package")
  list(APPEND _args "-DCMAKE_PREFIX_PATH=${NBDWIRE_PREFIX}" "-DCONSUMER_EXPECTED_PREFIX=${NBDWIRE_PREFIX}")
elseif(MODE STREQUAL "add_subdirectory")
  list(APPEND _args "-DNBDWIRE_SOURCE_DIR=${NBDWIRE_SOURCE_DIR}")
elseif(MODE STREQUAL "fetchcontent")
  if(NOT GIT_EXECUTABLE OR NOT EXISTS "${NBDWIRE_SOURCE_DIR}/.git")
    message("nbdwire-test-skipped: ${NBDWIRE_SOURCE_DIR} is not a git checkout, or git is missing")
    return()
  endif()
  # FetchContent from the checkout at tag v<version>. A checkout without the tag (a shallow CI
  # clone, a release not yet tagged) is cloned, and the tag is made in the clone, on HEAD.
  set(_tag "v${CONSUMER_EXPECTED_VERSION}")
  set(_repository "${NBDWIRE_SOURCE_DIR}")
  execute_process(COMMAND "${GIT_EXECUTABLE}" -C "${_repository}" rev-parse -q --verify "refs/tags/${_tag}^{commit}"
    OUTPUT_VARIABLE _commit OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    set(_repository "${CONSUMER_BINARY_DIR}/repository")
    message(STATUS "fetchcontent: ${NBDWIRE_SOURCE_DIR} has no tag ${_tag}; tagging HEAD in a clone, ${_repository}")
    execute_process(COMMAND "${GIT_EXECUTABLE}" clone -q "${NBDWIRE_SOURCE_DIR}" "${_repository}" COMMAND_ERROR_IS_FATAL ANY)
    execute_process(
      COMMAND "${GIT_EXECUTABLE}" -C "${_repository}" -c user.name=nbdwire-test -c user.email=nbdwire-test@invalid
        tag -a "${_tag}" -m "test tag" HEAD
      COMMAND_ERROR_IS_FATAL ANY)
    execute_process(COMMAND "${GIT_EXECUTABLE}" -C "${_repository}" rev-parse "refs/tags/${_tag}^{commit}"
      OUTPUT_VARIABLE _commit OUTPUT_STRIP_TRAILING_WHITESPACE COMMAND_ERROR_IS_FATAL ANY)
  endif()
  list(APPEND _args "-DNBDWIRE_GIT_REPOSITORY=${_repository}" "-DNBDWIRE_GIT_TAG=${_tag}"
    "-DGIT_EXECUTABLE=${GIT_EXECUTABLE}")
else()
  message(FATAL_ERROR "unknown MODE '${MODE}'")
endif()

execute_process(
  COMMAND "${CMAKE_COMMAND}" -S "${CONSUMER_SOURCE_DIR}" -B "${CONSUMER_BINARY_DIR}/build" ${_args}
  COMMAND_ERROR_IS_FATAL ANY)

if(MODE STREQUAL "fetchcontent")
  # The sources FetchContent checked out are the tagged commit.
  execute_process(COMMAND "${GIT_EXECUTABLE}" -C "${CONSUMER_BINARY_DIR}/build/_deps/nbdwire-src" rev-parse HEAD
    OUTPUT_VARIABLE _fetched OUTPUT_STRIP_TRAILING_WHITESPACE COMMAND_ERROR_IS_FATAL ANY)
  if(NOT _fetched STREQUAL _commit)
    message(FATAL_ERROR "FetchContent checked out ${_fetched}, tag ${_tag} is ${_commit}")
  endif()
  message(STATUS "fetchcontent: ${_tag} is ${_commit}")
endif()

execute_process(
  COMMAND "${CMAKE_COMMAND}" --build "${CONSUMER_BINARY_DIR}/build"
  COMMAND_ERROR_IS_FATAL ANY)
run_consumer("${CONSUMER_BINARY_DIR}/build/consumer")
