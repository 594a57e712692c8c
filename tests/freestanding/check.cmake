# Step 1: run PROGRAM (and ALSO_RUN, the sanitized build, when given); each must exit 0.
# Step 2: list PROGRAM's undefined symbols with NM; none may be the allocator or the C++
# exception runtime. With -DEXPECT_FORBIDDEN=ON the verdict is inverted (canary binary).
foreach(v PROGRAM NM)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "check.cmake needs -D${v}=...")
  endif()
endforeach()

if(NOT EXPECT_FORBIDDEN)
  foreach(p IN ITEMS "${PROGRAM}" ${ALSO_RUN})
    execute_process(COMMAND "${p}" RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "${p} failed (${rc})")
    endif()
  endforeach()
endif()

execute_process(
  COMMAND "${NM}" -C --undefined-only "${PROGRAM}"
  OUTPUT_VARIABLE symbols
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${NM} failed on ${PROGRAM} (${rc})")
endif()
# Every dynamically linked program imports its C library start-up; without it the listing
# is not what this check thinks it is.
if(NOT symbols MATCHES "__libc_start_main")
  message(FATAL_ERROR "unexpected ${NM} output for ${PROGRAM}:\n${symbols}")
endif()

string(REPLACE "\n" ";" lines "${symbols}")
set(found "")
foreach(line IN LISTS lines)
  # "                 U name[@VERSION]", demangled
  string(REGEX REPLACE "^[ \t]*[A-Za-z][ \t]+" "" name "${line}")
  string(REGEX REPLACE "@.*$" "" name "${name}")
  string(STRIP "${name}" name)
  if(name MATCHES "^operator new" OR name MATCHES "^operator delete"
     OR name MATCHES "^(malloc|calloc|realloc|aligned_alloc|posix_memalign|free)$"
     OR name MATCHES "^(__cxa_throw|__cxa_allocate_exception|__cxa_rethrow|__cxa_begin_catch)$"
     OR name MATCHES "^std::__throw_")
    list(APPEND found "${name}")
  endif()
endforeach()

if(EXPECT_FORBIDDEN)
  if(NOT found MATCHES "operator new" OR NOT found MATCHES "malloc")
    message(FATAL_ERROR "the symbol check missed the allocator in ${PROGRAM}; found: ${found}")
  endif()
  message(STATUS "canary rejected as expected: ${found}")
elseif(found)
  list(JOIN found "\n  " shown)
  message(FATAL_ERROR "${PROGRAM} references the heap or exception runtime:\n  ${shown}")
else()
  message(STATUS "no allocator or exception runtime referenced by ${PROGRAM}")
endif()
