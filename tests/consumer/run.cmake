# Run by the `install-consumer` test: install nbdwire into a scratch prefix, then configure,
# build and run tests/consumer against that prefix only. Any failing step fails the test.
foreach(v NBDWIRE_BINARY_DIR NBDWIRE_PREFIX CONSUMER_SOURCE_DIR CONSUMER_BINARY_DIR CONSUMER_GENERATOR
          CONSUMER_CXX_COMPILER CONSUMER_EXPECTED_VERSION)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "run.cmake needs -D${v}=...")
  endif()
endforeach()

# A fresh prefix and build each time, so a stale install cannot make the test pass.
file(REMOVE_RECURSE "${NBDWIRE_PREFIX}" "${CONSUMER_BINARY_DIR}")

execute_process(
  COMMAND "${CMAKE_COMMAND}" --install "${NBDWIRE_BINARY_DIR}" --prefix "${NBDWIRE_PREFIX}"
  COMMAND_ERROR_IS_FATAL ANY)

execute_process(
  COMMAND "${CMAKE_COMMAND}"
    -S "${CONSUMER_SOURCE_DIR}" -B "${CONSUMER_BINARY_DIR}"
    -G "${CONSUMER_GENERATOR}"
    "-DCMAKE_CXX_COMPILER=${CONSUMER_CXX_COMPILER}"
    "-DCMAKE_PREFIX_PATH=${NBDWIRE_PREFIX}"
    "-DCONSUMER_EXPECTED_PREFIX=${NBDWIRE_PREFIX}"
    "-DCONSUMER_EXPECTED_VERSION=${CONSUMER_EXPECTED_VERSION}"
    # Only the prefix under test may satisfy find_package.
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
    -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF
  COMMAND_ERROR_IS_FATAL ANY)

execute_process(
  COMMAND "${CMAKE_COMMAND}" --build "${CONSUMER_BINARY_DIR}"
  COMMAND_ERROR_IS_FATAL ANY)

execute_process(
  COMMAND "${CONSUMER_BINARY_DIR}/consumer"
  COMMAND_ERROR_IS_FATAL ANY)
