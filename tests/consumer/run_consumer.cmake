# Driver of the consumer tests (cmake -P). Configures, builds and runs one consumer project;
# any failing step fails the test with that step's output.
#
# -DCONSUMER_MODE=find_package      install MAILQ_BINARY_DIR into CONSUMER_WORK_DIR/prefix
#                                   (wiped first), build find_package/ against that prefix
# -DCONSUMER_MODE=add_subdirectory  build add_subdirectory/ with MAILQ_SOURCE_DIR vendored
#                                   (the build directory is kept: the rebuild is incremental)
cmake_minimum_required(VERSION 3.16)

foreach(_var CONSUMER_MODE MAILQ_SOURCE_DIR MAILQ_BINARY_DIR CONSUMER_WORK_DIR
        CONSUMER_GENERATOR CONSUMER_CXX_COMPILER)
  if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
    message(FATAL_ERROR "run_consumer.cmake: ${_var} is not set")
  endif()
endforeach()

# Runs a command; on failure prints what it printed and stops.
function(consumer_step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _out)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "consumer (${CONSUMER_MODE}): ${what} failed (${_rc}):\n${_out}")
  endif()
  set(CONSUMER_STEP_OUTPUT "${_out}" PARENT_SCOPE)
endfunction()

set(_build_type "${CONSUMER_CONFIG}")
if(_build_type STREQUAL "")
  set(_build_type RelWithDebInfo)
endif()
set(_build_dir "${CONSUMER_WORK_DIR}/build")
set(_configure ${CMAKE_COMMAND} -G "${CONSUMER_GENERATOR}" -B "${_build_dir}"
    -DCMAKE_CXX_COMPILER=${CONSUMER_CXX_COMPILER}
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
if(CONSUMER_MAKE_PROGRAM)
  list(APPEND _configure -DCMAKE_MAKE_PROGRAM=${CONSUMER_MAKE_PROGRAM})
endif()

if(CONSUMER_MODE STREQUAL "find_package")
  set(_prefix "${CONSUMER_WORK_DIR}/prefix")
  file(REMOVE_RECURSE "${_prefix}" "${_build_dir}")
  consumer_step("cmake --install of ${MAILQ_BINARY_DIR}"
                ${CMAKE_COMMAND} --install "${MAILQ_BINARY_DIR}" --prefix "${_prefix}"
                --config ${_build_type})
  # What an installed package must hold, whatever the libraries are called on this platform.
  foreach(_f include/mailq/mailq.h include/mailq/queue.h)
    if(NOT EXISTS "${_prefix}/${_f}")
      message(FATAL_ERROR "consumer (find_package): the install lacks ${_f}")
    endif()
  endforeach()
  file(GLOB_RECURSE _configs "${_prefix}/*/mailqConfig.cmake")
  list(LENGTH _configs _n)
  if(NOT _n EQUAL 1)
    message(FATAL_ERROR "consumer (find_package): expected one mailqConfig.cmake, got '${_configs}'")
  endif()
  get_filename_component(_config_dir "${_configs}" DIRECTORY)
  foreach(_f mailqConfigVersion.cmake mailqTargets.cmake FindLibuv.cmake FindCares.cmake
          FindMbedTLS.cmake)
    if(NOT EXISTS "${_config_dir}/${_f}")
      message(FATAL_ERROR "consumer (find_package): ${_f} is not installed next to mailqConfig.cmake")
    endif()
  endforeach()

  consumer_step("configure" ${_configure} -S "${MAILQ_SOURCE_DIR}/tests/consumer/find_package"
                -DCMAKE_BUILD_TYPE=${_build_type}
                "-DCMAKE_PREFIX_PATH=${_prefix}"
                "-DMAILQ_EXPECTED_CONFIG_DIR=${_config_dir}"
                "-DCMAKE_CXX_FLAGS=${CONSUMER_CXX_FLAGS}"
                "-DCMAKE_EXE_LINKER_FLAGS=${CONSUMER_LINK_FLAGS}")
elseif(CONSUMER_MODE STREQUAL "add_subdirectory")
  # No build type (no optimisation, no debug info): the point is the wiring, and this compiles
  # the library fastest. A subproject must not impose a build type of its own either.
  set(_build_type "")
  consumer_step("configure" ${_configure} -S "${MAILQ_SOURCE_DIR}/tests/consumer/add_subdirectory"
                -DCMAKE_BUILD_TYPE= "-DMAILQ_SOURCE_DIR=${MAILQ_SOURCE_DIR}")
else()
  message(FATAL_ERROR "run_consumer.cmake: unknown CONSUMER_MODE '${CONSUMER_MODE}'")
endif()

set(_build ${CMAKE_COMMAND} --build "${_build_dir}" --parallel 2)
if(NOT _build_type STREQUAL "")
  list(APPEND _build --config ${_build_type})
endif()
consumer_step("build" ${_build})

set(_exe "${_build_dir}/bin/mailq_consumer")
consumer_step("running ${_exe}" "${_exe}")
if(NOT CONSUMER_STEP_OUTPUT MATCHES "mailq consumer: ok")
  message(FATAL_ERROR "consumer (${CONSUMER_MODE}): unexpected output:\n${CONSUMER_STEP_OUTPUT}")
endif()
message(STATUS "consumer (${CONSUMER_MODE}): ${CONSUMER_STEP_OUTPUT}")
