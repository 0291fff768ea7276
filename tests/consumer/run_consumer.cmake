# Driver of the consumer tests (cmake -P). Each mode installs, configures, builds or runs one
# thing an outside project does with mailq; any failing step fails the test with that step's
# output.
#
# -DCONSUMER_MODE=install           install MAILQ_BINARY_DIR into CONSUMER_PREFIX (wiped first)
#                                   and check what the install holds (the other installed-mailq
#                                   modes use that prefix: a ctest fixture)
# -DCONSUMER_MODE=find_package      build find_package/ against CONSUMER_PREFIX
# -DCONSUMER_MODE=pkgconfig         build pkgconfig/ (a plain Makefile, pkg-config) against
#                                   CONSUMER_PREFIX
# -DCONSUMER_MODE=headers           compile every header installed in CONSUMER_PREFIX on its own,
#                                   strict C++17 with -Werror, with g++ and clang++
# -DCONSUMER_MODE=add_subdirectory  build add_subdirectory/ with MAILQ_SOURCE_DIR vendored
#                                   (the build directory is kept: the rebuild is incremental)
# -DCONSUMER_MODE=core_only         configure MAILQ_SOURCE_DIR with MAILQ_WITH_UV, _ARES and
#                                   _SPOOL OFF, build and install it, check that none of libuv,
#                                   c-ares and mbedTLS was looked for, and build find_package/
#                                   (linking mailq::core) and pkgconfig/ against it
#
# CONSUMER_PARTS: the parts the build under test has ("core uv ares spool" in full).
cmake_minimum_required(VERSION 3.16)

foreach(_var CONSUMER_MODE MAILQ_SOURCE_DIR CONSUMER_WORK_DIR CONSUMER_CXX_COMPILER)
  if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
    message(FATAL_ERROR "run_consumer.cmake: ${_var} is not set")
  endif()
endforeach()
separate_arguments(CONSUMER_PARTS UNIX_COMMAND "${CONSUMER_PARTS}")
set(_optional_parts uv ares spool)

# Runs a command; on failure prints what it printed and stops.
function(consumer_step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _out)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "consumer (${CONSUMER_MODE}): ${what} failed (${_rc}):\n${_out}")
  endif()
  set(CONSUMER_STEP_OUTPUT "${_out}" PARENT_SCOPE)
endfunction()

# Fails with the message made of the arguments (the first is kept whole, ';' included).
function(consumer_fail first)
  string(CONCAT _msg "${first}" ${ARGN})
  message(FATAL_ERROR "consumer (${CONSUMER_MODE}): ${_msg}")
endfunction()

set(_build_type "${CONSUMER_CONFIG}")
if(_build_type STREQUAL "")
  set(_build_type RelWithDebInfo)
endif()

# `cmake -G ... -B dir` for a consumer project or a mailq build of its own.
set(_configure ${CMAKE_COMMAND} -G "${CONSUMER_GENERATOR}"
    -DCMAKE_CXX_COMPILER=${CONSUMER_CXX_COMPILER}
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
if(CONSUMER_MAKE_PROGRAM)
  list(APPEND _configure -DCMAKE_MAKE_PROGRAM=${CONSUMER_MAKE_PROGRAM})
endif()

function(consumer_build dir config)
  set(_build ${CMAKE_COMMAND} --build "${dir}" --parallel 2)
  if(NOT "${config}" STREQUAL "")
    list(APPEND _build --config ${config})
  endif()
  consumer_step("build of ${dir}" ${_build} ${ARGN})
endfunction()

# Runs a consumer program, which must print `expected` (a regular expression). Further
# arguments are NAME=VALUE settings of its environment.
function(consumer_run exe expected)
  consumer_step("running ${exe}" ${CMAKE_COMMAND} -E env ${ARGN} "${exe}")
  if(NOT CONSUMER_STEP_OUTPUT MATCHES "${expected}")
    consumer_fail("${exe} printed, instead of '${expected}':\n${CONSUMER_STEP_OUTPUT}")
  endif()
  message(STATUS "consumer (${CONSUMER_MODE}): ${CONSUMER_STEP_OUTPUT}")
endfunction()

# The prefix's mailqConfig.cmake directory and its mailq.pc directory.
function(consumer_locate prefix)
  file(GLOB_RECURSE _configs "${prefix}/*/mailqConfig.cmake")
  list(LENGTH _configs _n)
  if(NOT _n EQUAL 1)
    consumer_fail("expected one mailqConfig.cmake in ${prefix}, got '${_configs}'")
  endif()
  get_filename_component(_dir "${_configs}" DIRECTORY)
  set(CONSUMER_CONFIG_DIR "${_dir}" PARENT_SCOPE)
  file(GLOB_RECURSE _pcs "${prefix}/*/pkgconfig/mailq.pc")
  list(LENGTH _pcs _n)
  if(NOT _n EQUAL 1)
    consumer_fail("expected one pkgconfig/mailq.pc in ${prefix}, got '${_pcs}'")
  endif()
  get_filename_component(_dir "${_pcs}" DIRECTORY)
  set(CONSUMER_PC_DIR "${_dir}" PARENT_SCOPE)
endfunction()

function(consumer_require_prefix)
  if(NOT DEFINED CONSUMER_PREFIX OR NOT EXISTS "${CONSUMER_PREFIX}/include/mailq/mailq.h")
    consumer_fail("no mailq installed in '${CONSUMER_PREFIX}': the test 'consumer: install' "
                  "sets it up")
  endif()
endfunction()

# Installs `binary_dir` into `prefix` and checks that it holds what a package with `parts`
# must hold, and nothing of the parts it lacks.
function(consumer_install binary_dir prefix config)
  set(parts ${ARGN})
  file(REMOVE_RECURSE "${prefix}")
  set(_install ${CMAKE_COMMAND} --install "${binary_dir}" --prefix "${prefix}")
  if(NOT "${config}" STREQUAL "")
    list(APPEND _install --config ${config})
  endif()
  consumer_step("cmake --install of ${binary_dir}" ${_install})

  foreach(_f include/mailq/mailq.h include/mailq/queue.h share/doc/mailq/LICENSE
          share/doc/mailq/README.md)
    if(NOT EXISTS "${prefix}/${_f}")
      consumer_fail("the install lacks ${_f}")
    endif()
  endforeach()
  file(GLOB _docs RELATIVE "${MAILQ_SOURCE_DIR}" "${MAILQ_SOURCE_DIR}/docs/*.md")
  foreach(_f ${_docs})
    if(NOT EXISTS "${prefix}/share/doc/mailq/${_f}")
      consumer_fail("the install lacks share/doc/mailq/${_f}")
    endif()
  endforeach()

  consumer_locate("${prefix}")
  foreach(_f mailqConfigVersion.cmake mailqTargets.cmake)
    if(NOT EXISTS "${CONSUMER_CONFIG_DIR}/${_f}")
      consumer_fail("${_f} is not installed next to mailqConfig.cmake")
    endif()
  endforeach()
  file(READ "${CONSUMER_CONFIG_DIR}/mailqConfig.cmake" _config)
  file(READ "${CONSUMER_PC_DIR}/mailq.pc" _pc)
  string(REPLACE ";" " " _parts_text "${parts}")
  foreach(_line "prefix=${prefix}" "parts=${_parts_text}")
    string(FIND "${_pc}" "\n${_line}\n" _at)
    if(_at EQUAL -1)
      consumer_fail("mailq.pc lacks the line '${_line}':\n${_pc}")
    endif()
  endforeach()

  # What each optional part brings: headers, find modules (mailqConfig.cmake looks for those
  # packages) and libraries named in mailq.pc. A part not built brings none of it.
  set(_headers_uv include/mailq/uv/transport.h include/mailq/dkim.h)
  set(_headers_ares include/mailq/ares/resolver.h)
  set(_headers_spool include/mailq/spool/layout.h)
  set(_packages_uv Libuv MbedTLS Nettle)
  set(_packages_ares Libuv Cares)
  set(_packages_spool "")
  set(_pc_uv "-lmailq-uv" "-lmbedtls" "-lhogweed")
  set(_pc_ares "-lmailq-ares" "libcares|-lcares")
  set(_pc_spool "-lmailq-spool")
  set(_needed_packages "")
  foreach(_part ${parts})
    list(APPEND _needed_packages ${_packages_${_part}})
  endforeach()
  foreach(_part ${_optional_parts})
    if(_part IN_LIST parts)
      set(_want TRUE)
    else()
      set(_want FALSE)
    endif()
    foreach(_f ${_headers_${_part}})
      if(_want AND NOT EXISTS "${prefix}/${_f}")
        consumer_fail("the install lacks ${_f}")
      elseif(NOT _want AND EXISTS "${prefix}/${_f}")
        consumer_fail("${_f} is installed, but mailq::${_part} was not built")
      endif()
    endforeach()
    foreach(_pattern ${_pc_${_part}})
      if(_want AND NOT _pc MATCHES "${_pattern}")
        consumer_fail("mailq.pc lacks '${_pattern}':\n${_pc}")
      elseif(NOT _want AND _pc MATCHES "${_pattern}")
        consumer_fail("mailq.pc names '${_pattern}', but mailq::${_part} was not built:\n${_pc}")
      endif()
    endforeach()
  endforeach()
  foreach(_package Libuv MbedTLS Nettle Cares)
    if(_package IN_LIST _needed_packages)
      if(NOT EXISTS "${CONSUMER_CONFIG_DIR}/Find${_package}.cmake")
        consumer_fail("Find${_package}.cmake is not installed next to mailqConfig.cmake")
      endif()
    else()
      if(EXISTS "${CONSUMER_CONFIG_DIR}/Find${_package}.cmake")
        consumer_fail("Find${_package}.cmake is installed, but no part built needs ${_package}")
      endif()
      if(_config MATCHES "_mailq_dependencies[^)]*${_package}")
        consumer_fail("mailqConfig.cmake looks for ${_package}, which no part built needs")
      endif()
    endif()
  endforeach()
  set(CONSUMER_CONFIG_DIR "${CONSUMER_CONFIG_DIR}" PARENT_SCOPE)
  set(CONSUMER_PC_DIR "${CONSUMER_PC_DIR}" PARENT_SCOPE)
endfunction()

# Builds find_package/ against `prefix`, linking `target`, and runs it.
function(consumer_find_package prefix work_dir target)
  set(parts ${ARGN})
  consumer_locate("${prefix}")
  set(_dir "${work_dir}/build")
  file(REMOVE_RECURSE "${_dir}")
  string(REPLACE ";" " " _parts_text "${parts}")
  consumer_step("configure" ${_configure} -S "${MAILQ_SOURCE_DIR}/tests/consumer/find_package"
                -B "${_dir}" -DCMAKE_BUILD_TYPE=${_build_type}
                "-DCMAKE_PREFIX_PATH=${prefix}"
                "-DMAILQ_EXPECTED_CONFIG_DIR=${CONSUMER_CONFIG_DIR}"
                "-DMAILQ_EXPECTED_PARTS=${_parts_text}"
                "-DMAILQ_CONSUMER_TARGET=${target}"
                "-DCMAKE_CXX_FLAGS=${CONSUMER_CXX_FLAGS}"
                "-DCMAKE_EXE_LINKER_FLAGS=${CONSUMER_LINK_FLAGS}")
  consumer_build("${_dir}" "${_build_type}")
  consumer_run("${_dir}/bin/mailq_consumer" "mailq consumer: ok")
endfunction()

# Builds pkgconfig/ with make against `prefix` (PKG_CONFIG_PATH) and runs it.
function(consumer_pkgconfig prefix work_dir)
  set(parts ${ARGN})
  foreach(_var CONSUMER_PKG_CONFIG CONSUMER_GNU_MAKE)
    if(NOT ${_var})
      consumer_fail("${_var} is not set")
    endif()
  endforeach()
  consumer_locate("${prefix}")
  set(_dir "${work_dir}/pkgconfig")
  file(REMOVE_RECURSE "${_dir}")
  file(MAKE_DIRECTORY "${_dir}")
  set(_env ${CMAKE_COMMAND} -E env "PKG_CONFIG_PATH=${CONSUMER_PC_DIR}")
  # The mailq.pc found must be the one just installed, not one elsewhere on the machine.
  consumer_step("pkg-config --variable=prefix mailq"
                ${_env} ${CONSUMER_PKG_CONFIG} --variable=prefix mailq)
  string(STRIP "${CONSUMER_STEP_OUTPUT}" _found)
  if(NOT _found STREQUAL prefix)
    consumer_fail("pkg-config found the mailq in '${_found}', expected '${prefix}'")
  endif()
  consumer_step("pkg-config --cflags --libs --static mailq"
                ${_env} ${CONSUMER_PKG_CONFIG} --cflags --libs --static mailq)
  message(STATUS "consumer (${CONSUMER_MODE}): pkg-config --cflags --libs --static mailq: "
                 "${CONSUMER_STEP_OUTPUT}")
  consumer_step("make" ${_env} ${CONSUMER_GNU_MAKE} -C "${MAILQ_SOURCE_DIR}/tests/consumer/pkgconfig"
                "O=${_dir}" "CXX=${CONSUMER_CXX_COMPILER}" "PKG_CONFIG=${CONSUMER_PKG_CONFIG}"
                "EXTRA_CXXFLAGS=${CONSUMER_CXX_FLAGS}" "EXTRA_LDFLAGS=${CONSUMER_LINK_FLAGS}")
  string(REPLACE ";" " " _parts_text "${parts}")
  # Shared mailq libraries (BUILD_SHARED_LIBS) are found where mailq.pc says they are.
  consumer_step("pkg-config --variable=libdir mailq"
                ${_env} ${CONSUMER_PKG_CONFIG} --variable=libdir mailq)
  string(STRIP "${CONSUMER_STEP_OUTPUT}" _libdir)
  consumer_run("${_dir}/mailq_pkgconfig_consumer"
               "mailq pkg-config consumer: ok \\(${_parts_text}\\)"
               "LD_LIBRARY_PATH=${_libdir}")
endfunction()

if(CONSUMER_MODE STREQUAL "install")
  consumer_install("${MAILQ_BINARY_DIR}" "${CONSUMER_PREFIX}" "${_build_type}" ${CONSUMER_PARTS})
  string(REPLACE ";" " " _parts_text "${CONSUMER_PARTS}")
  message(STATUS "consumer (install): ${CONSUMER_PREFIX} holds mailq (${_parts_text})")

elseif(CONSUMER_MODE STREQUAL "find_package")
  consumer_require_prefix()
  consumer_find_package("${CONSUMER_PREFIX}" "${CONSUMER_WORK_DIR}" mailq::mailq
                        ${CONSUMER_PARTS})

elseif(CONSUMER_MODE STREQUAL "pkgconfig")
  consumer_require_prefix()
  consumer_pkgconfig("${CONSUMER_PREFIX}" "${CONSUMER_WORK_DIR}" ${CONSUMER_PARTS})

elseif(CONSUMER_MODE STREQUAL "headers")
  consumer_require_prefix()
  include("${CMAKE_CURRENT_LIST_DIR}/headers/check_headers.cmake")

elseif(CONSUMER_MODE STREQUAL "add_subdirectory")
  # No build type (no optimisation, no debug info): the point is the wiring, and this compiles
  # the library fastest. A subproject must not impose a build type of its own either.
  set(_dir "${CONSUMER_WORK_DIR}/build")
  set(_with "")
  foreach(_part ${_optional_parts})
    string(TOUPPER ${_part} _PART)
    if(_part IN_LIST CONSUMER_PARTS)
      list(APPEND _with -DMAILQ_WITH_${_PART}=ON)
    else()
      list(APPEND _with -DMAILQ_WITH_${_PART}=OFF)
    endif()
  endforeach()
  consumer_step("configure" ${_configure} -S "${MAILQ_SOURCE_DIR}/tests/consumer/add_subdirectory"
                -B "${_dir}" -DCMAKE_BUILD_TYPE= "-DMAILQ_SOURCE_DIR=${MAILQ_SOURCE_DIR}"
                ${_with})
  consumer_build("${_dir}" "")
  consumer_run("${_dir}/bin/mailq_consumer" "mailq consumer: ok")

elseif(CONSUMER_MODE STREQUAL "core_only")
  # mailq configured as a host wanting only the core would: the optional parts off, and the
  # programs, benchmarks and tests left on, to show that they step aside. Only the library is
  # built, with build type None (no flags: this checks the wiring, not the code).
  set(_mailq_build "${CONSUMER_WORK_DIR}/mailq-build")
  set(_prefix "${CONSUMER_WORK_DIR}/prefix")
  file(REMOVE_RECURSE "${_mailq_build}")
  consumer_step("configure of mailq without uv, ares and spool"
                ${_configure} -S "${MAILQ_SOURCE_DIR}" -B "${_mailq_build}" -DCMAKE_BUILD_TYPE=None
                -DMAILQ_WITH_UV=OFF -DMAILQ_WITH_ARES=OFF -DMAILQ_WITH_SPOOL=OFF
                -DMAILQ_INSTALL=ON -DMAILQ_BUILD_EXAMPLES=ON -DMAILQ_BUILD_BENCH=ON
                -DMAILQ_BUILD_TESTS=ON)
  set(_configure_output "${CONSUMER_STEP_OUTPUT}")
  foreach(_said "the example programs need MAILQ_WITH_UV, MAILQ_WITH_ARES, MAILQ_WITH_SPOOL"
          "the benchmarks need MAILQ_WITH_UV, MAILQ_WITH_SPOOL"
          "the integration, crash and program tests need MAILQ_WITH_UV")
    if(NOT _configure_output MATCHES "${_said}")
      consumer_fail("the configure did not say '${_said}':\n${_configure_output}")
    endif()
  endforeach()
  # A package looked for leaves its result in the cache, found or not.
  file(STRINGS "${_mailq_build}/CMakeCache.txt" _searched REGEX "^(Libuv|Cares|MbedTLS|Nettle)_")
  if(_searched)
    consumer_fail("the core-only configure looked for libuv, c-ares, mbedTLS or Nettle:\n${_searched}")
  endif()
  file(READ "${_mailq_build}/CMakeFiles/TargetDirectories.txt" _targets)
  foreach(_t mailq_uv mailq_ares mailq_spool mailq_relay_kit mailq_integration_tests
          bench_down)
    if(_targets MATCHES "/${_t}\\.dir\n")
      consumer_fail("the core-only build has the target ${_t}")
    endif()
  endforeach()
  if(NOT _targets MATCHES "/mailq_unit_tests\\.dir\n")
    consumer_fail("the core-only build lacks the unit tests (they need only the core)")
  endif()
  consumer_build("${_mailq_build}" None --target mailq_core)
  consumer_install("${_mailq_build}" "${_prefix}" None core)

  consumer_find_package("${_prefix}" "${CONSUMER_WORK_DIR}" mailq::core core)
  if(CONSUMER_PKG_CONFIG AND CONSUMER_GNU_MAKE)
    consumer_pkgconfig("${_prefix}" "${CONSUMER_WORK_DIR}" core)
  else()
    message(STATUS "consumer (core_only): no pkg-config or make: mailq.pc not tried")
  endif()

else()
  message(FATAL_ERROR "run_consumer.cmake: unknown CONSUMER_MODE '${CONSUMER_MODE}'")
endif()
