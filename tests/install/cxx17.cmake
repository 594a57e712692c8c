# Run by the `install-cxx17-error` test: every public header, included first by a translation
# unit built as C++17, must stop the compiler with version.hpp's message, and that message must
# be the first error reported. The same translation unit built as C++20 must compile, so the
# check cannot pass because of some other failure.
cmake_minimum_required(VERSION 3.25)
foreach(v CXX SOURCE_DIR WORK_DIR)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "cxx17.cmake needs -D${v}=...")
  endif()
endforeach()
set(_message "nbdwire needs C++20 (-std=c++20")

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
file(GLOB_RECURSE _headers RELATIVE "${SOURCE_DIR}/include" "${SOURCE_DIR}/include/nbdwire/*.hpp")
list(SORT _headers)
set(_failures "")
set(_checked 0)
foreach(h IN LISTS _headers)
  string(MAKE_C_IDENTIFIER "${h}" _name)
  set(_tu "${WORK_DIR}/${_name}.cpp")
  file(WRITE "${_tu}" "#include <${h}>\nint main() { return 0; }\n")
  execute_process(
    COMMAND "${CXX}" -std=c++17 -fsyntax-only "-I${SOURCE_DIR}/include" "${_tu}"
    OUTPUT_VARIABLE _out ERROR_VARIABLE _err RESULT_VARIABLE _rc)
  string(REGEX MATCH "[^\n]*error:[^\n]*" _first "${_err}")
  string(FIND "${_first}" "${_message}" _at)
  if(_rc EQUAL 0)
    string(APPEND _failures "  ${h}: compiles as C++17\n")
  elseif(_at EQUAL -1)
    string(APPEND _failures "  ${h}: the first error as C++17 is not nbdwire's:\n    ${_first}\n")
  endif()
  math(EXPR _checked "${_checked} + 1")
endforeach()

# The control: nbdwire.hpp as C++20 compiles.
execute_process(
  COMMAND "${CXX}" -std=c++20 -fsyntax-only "-I${SOURCE_DIR}/include" "${WORK_DIR}/nbdwire_nbdwire_hpp.cpp"
  OUTPUT_VARIABLE _out ERROR_VARIABLE _err RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  string(APPEND _failures "  nbdwire/nbdwire.hpp does not compile as C++20:\n${_err}\n")
endif()

if(_checked LESS 10 OR NOT _failures STREQUAL "")
  message(FATAL_ERROR "C++17 check (${_checked} headers):\n${_failures}")
endif()
message(STATUS "all ${_checked} headers stop a C++17 build with: ${_message} ...")
