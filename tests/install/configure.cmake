# Run by the `install-configure-defaults` test: configures the nbdwire source tree as a top-level
# project (examples and benchmarks off, so it stays quick) and checks the defaults:
#   no CMAKE_BUILD_TYPE                    -> Release (single-config generators)
#   doctest missing, NBDWIRE_BUILD_TESTS unset -> configures without tests and says how to get doctest
#   doctest missing, NBDWIRE_BUILD_TESTS=ON    -> fails and says doctest is missing
#   doctest present, NBDWIRE_BUILD_TESTS unset -> configures the tests
# A missing doctest is simulated with CMAKE_DISABLE_FIND_PACKAGE_doctest.
cmake_minimum_required(VERSION 3.25)
foreach(v SOURCE_DIR WORK_DIR GENERATOR CXX)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "configure.cmake needs -D${v}=...")
  endif()
endforeach()
file(REMOVE_RECURSE "${WORK_DIR}")
set(_common -G "${GENERATOR}" "-DCMAKE_CXX_COMPILER=${CXX}"
  -DNBDWIRE_BUILD_EXAMPLES=OFF -DNBDWIRE_BUILD_BENCH=OFF -DNBDWIRE_BUILD_FUZZ=OFF)
set(_failures "")

# configure NAME ARGS...: sets _rc, _log (stdout and stderr) and _cache (CMakeCache.txt).
function(configure name)
  execute_process(
    COMMAND "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${WORK_DIR}/${name}" ${_common} ${ARGN}
    OUTPUT_VARIABLE _out ERROR_VARIABLE _err RESULT_VARIABLE _rc)
  set(_cache "")
  if(EXISTS "${WORK_DIR}/${name}/CMakeCache.txt")
    file(READ "${WORK_DIR}/${name}/CMakeCache.txt" _cache)
  endif()
  set(_rc "${_rc}" PARENT_SCOPE)
  set(_log "${_out}${_err}" PARENT_SCOPE)
  set(_cache "${_cache}" PARENT_SCOPE)
endfunction()

# 1. No build type, no doctest.
configure(no-doctest -DCMAKE_DISABLE_FIND_PACKAGE_doctest=ON)
string(REGEX REPLACE "[ \n]+" " " _flat "${_log}")
if(NOT _rc EQUAL 0)
  string(APPEND _failures "without doctest the configure failed:\n${_log}\n")
else()
  if(NOT _cache MATCHES "\nCMAKE_BUILD_TYPE:STRING=Release\n")
    string(APPEND _failures "no CMAKE_BUILD_TYPE did not give Release\n")
  endif()
  if(NOT _flat MATCHES "doctest not found, so the tests are not built" OR NOT _flat MATCHES "apt-get install doctest-dev")
    string(APPEND _failures "without doctest the configure did not say how to get it:\n${_log}\n")
  endif()
  if(EXISTS "${WORK_DIR}/no-doctest/tests/CTestTestfile.cmake")
    string(APPEND _failures "without doctest the tests were configured anyway\n")
  endif()
endif()

# 2. Tests asked for, no doctest: an error that names doctest.
configure(tests-on-no-doctest -DNBDWIRE_BUILD_TESTS=ON -DCMAKE_DISABLE_FIND_PACKAGE_doctest=ON)
string(REGEX REPLACE "[ \n]+" " " _flat "${_log}")
if(_rc EQUAL 0)
  string(APPEND _failures "NBDWIRE_BUILD_TESTS=ON without doctest configured successfully\n")
elseif(NOT _flat MATCHES "NBDWIRE_BUILD_TESTS is ON, but doctest was not found")
  string(APPEND _failures "NBDWIRE_BUILD_TESTS=ON without doctest failed without saying why:\n${_log}\n")
endif()

# 3. An explicit build type is kept, and with doctest present the tests are configured.
configure(debug -DCMAKE_BUILD_TYPE=Debug)
if(NOT _rc EQUAL 0)
  string(APPEND _failures "configure with doctest and Debug failed:\n${_log}\n")
else()
  if(NOT _cache MATCHES "\nCMAKE_BUILD_TYPE:STRING=Debug\n")
    string(APPEND _failures "CMAKE_BUILD_TYPE=Debug was not kept\n")
  endif()
  if(NOT EXISTS "${WORK_DIR}/debug/tests/CTestTestfile.cmake")
    string(APPEND _failures "with doctest found, the tests were not configured\n")
  endif()
endif()

file(REMOVE_RECURSE "${WORK_DIR}")
if(NOT _failures STREQUAL "")
  message(FATAL_ERROR "configure defaults:\n${_failures}")
endif()
message(STATUS "configure defaults OK: Release by default, tests only with doctest, a clear error for NBDWIRE_BUILD_TESTS=ON")
