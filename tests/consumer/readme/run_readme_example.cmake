# Builds and runs a C++ example of README.md (cmake -P), so that the README never shows code
# that does not compile or does not work.
#
# The convention: a fenced C++ block (```cpp or ```c++) right after a line
#
#     <!-- example: NAME -->
#
# (blank lines between the two are allowed) is part of the example NAME. Several blocks marked
# with the same name are joined in order into one file, so that prose may interrupt a program.
# The example must be a whole program: this script writes it to NAME.cpp, builds it with
# readme/CMakeLists.txt against the installed mailq in CONSUMER_PREFIX, and runs it in an
# empty directory. The test fails when no block is marked NAME, when the program does not
# build, when it exits non-zero, or when it runs longer than README_EXAMPLE_TIMEOUT seconds.
#
# -DREADME=<README.md> -DREADME_EXAMPLE=<NAME> -DCONSUMER_PREFIX=<install> -DCONSUMER_WORK_DIR=
# -DCONSUMER_GENERATOR= -DCONSUMER_CXX_COMPILER= [-DCONSUMER_MAKE_PROGRAM=] [-DCONSUMER_CONFIG=]
# [-DCONSUMER_CXX_FLAGS=] [-DCONSUMER_LINK_FLAGS=] [-DREADME_EXAMPLE_TIMEOUT=20]
cmake_minimum_required(VERSION 3.16)

foreach(_var README README_EXAMPLE CONSUMER_PREFIX CONSUMER_WORK_DIR CONSUMER_GENERATOR
        CONSUMER_CXX_COMPILER)
  if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
    message(FATAL_ERROR "run_readme_example.cmake: ${_var} is not set")
  endif()
endforeach()
if(NOT README_EXAMPLE_TIMEOUT)
  set(README_EXAMPLE_TIMEOUT 20)
endif()
set(_what "README example '${README_EXAMPLE}'")

# --- extract: plain string searches, no CMake lists (C++ is full of ';') ---
file(READ "${README}" _text)
string(PREPEND _text "\n")
set(_marker "\n<!-- example: ${README_EXAMPLE} -->\n")
string(LENGTH "${_marker}" _marker_length)
set(_code "")
set(_blocks 0)
while(TRUE)
  string(FIND "${_text}" "${_marker}" _at)
  if(_at EQUAL -1)
    break()
  endif()
  math(EXPR _at "${_at} + ${_marker_length}")
  string(SUBSTRING "${_text}" ${_at} -1 _text)
  if(NOT _text MATCHES "^[ \t\n]*```(cpp|c\\+\\+)[ \t]*\n")
    message(FATAL_ERROR "${_what}: the marker in ${README} is not followed by a ```cpp block")
  endif()
  string(LENGTH "${CMAKE_MATCH_0}" _open)
  string(SUBSTRING "${_text}" ${_open} -1 _text)
  # The block ends at the first line that starts with ```.
  string(PREPEND _text "\n")
  string(FIND "${_text}" "\n```" _end)
  if(_end EQUAL -1)
    message(FATAL_ERROR "${_what}: its block in ${README} is not closed")
  endif()
  string(SUBSTRING "${_text}" 1 ${_end} _block)
  string(APPEND _code "${_block}")
  math(EXPR _blocks "${_blocks} + 1")
  math(EXPR _end "${_end} + 4")
  string(SUBSTRING "${_text}" ${_end} -1 _text)
endwhile()
if(_blocks EQUAL 0)
  message(FATAL_ERROR "${_what}: ${README} has no line '<!-- example: ${README_EXAMPLE} -->' "
                      "before a ```cpp block")
endif()

set(_work "${CONSUMER_WORK_DIR}")
file(REMOVE_RECURSE "${_work}")
file(MAKE_DIRECTORY "${_work}/run")
set(_source "${_work}/${README_EXAMPLE}.cpp")
file(WRITE "${_source}" "${_code}")

# --- build against the installed package ---
function(readme_step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _out)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "${_what}: ${what} failed (${_rc}):\n${_out}")
  endif()
endfunction()
set(_build_type "${CONSUMER_CONFIG}")
if(_build_type STREQUAL "")
  set(_build_type RelWithDebInfo)
endif()
set(_configure ${CMAKE_COMMAND} -G "${CONSUMER_GENERATOR}" -S "${CMAKE_CURRENT_LIST_DIR}"
    -B "${_work}/build" -DCMAKE_BUILD_TYPE=${_build_type}
    -DCMAKE_CXX_COMPILER=${CONSUMER_CXX_COMPILER} -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
    "-DCMAKE_PREFIX_PATH=${CONSUMER_PREFIX}" "-DREADME_EXAMPLE_SOURCE=${_source}"
    "-DCMAKE_CXX_FLAGS=${CONSUMER_CXX_FLAGS}" "-DCMAKE_EXE_LINKER_FLAGS=${CONSUMER_LINK_FLAGS}"
    "-DCMAKE_RUNTIME_OUTPUT_DIRECTORY=${_work}/bin")
if(CONSUMER_MAKE_PROGRAM)
  list(APPEND _configure -DCMAKE_MAKE_PROGRAM=${CONSUMER_MAKE_PROGRAM})
endif()
readme_step("configure" ${_configure})
readme_step("build of ${_source}" ${CMAKE_COMMAND} --build "${_work}/build" --config ${_build_type})
file(GLOB _exe "${_work}/bin/readme_example" "${_work}/bin/*/readme_example")

# --- run, in an empty directory ---
execute_process(COMMAND "${_exe}" WORKING_DIRECTORY "${_work}/run"
                TIMEOUT ${README_EXAMPLE_TIMEOUT}
                RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _out)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "${_what}: the program failed (${_rc}; a timeout is "
                      "${README_EXAMPLE_TIMEOUT} s):\n${_out}")
endif()
message(STATUS "${_what}: ${_blocks} block(s) built and run; it printed:\n${_out}")
