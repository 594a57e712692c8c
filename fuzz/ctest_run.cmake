# One fuzz target under ctest: replay the committed corpus, then (libFuzzer) a fixed number
# of runs with a fixed seed. New inputs go to a scratch directory, never into the corpus.
file(GLOB _inputs "${CORPUS}/*")
list(LENGTH _inputs _n)
if(_n EQUAL 0)
  message(FATAL_ERROR "empty corpus: ${CORPUS}")
endif()
if(LIBFUZZER)
  file(REMOVE_RECURSE "${SCRATCH}")
  file(MAKE_DIRECTORY "${SCRATCH}")
  execute_process(
    COMMAND "${FUZZER}" -seed=1 "-runs=${RUNS}" -max_len=4096 "-dict=${DICT}"
      "-artifact_prefix=${SCRATCH}/" "${SCRATCH}" "${CORPUS}"
    RESULT_VARIABLE _rc)
else()
  execute_process(COMMAND "${FUZZER}" "${CORPUS}" RESULT_VARIABLE _rc)
endif()
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "${FUZZER} failed (${_rc})")
endif()
