# Header hygiene (included by run_consumer.cmake, mode "headers"). A host that builds with
# -std=c++17 -Wall -Wextra -Wpedantic -Werror must be able to include any installed mailq
# header. For every compiler of CONSUMER_HEADER_COMPILERS found (g++ and clang++; one that is
# missing is skipped with a message, all missing fails), it compiles against CONSUMER_PREFIX:
#
# - each installed header mailq/**/*.h alone, in a translation unit that includes it twice
#   (the header is self-contained and guarded),
# - one translation unit including every installed header (they fit together),
# - defaults.cpp at -O2 and -O3: Queue and Deliverer built with their default
#   configurations, where warnings of the optimiser (-Wmaybe-uninitialized, ...) about the
#   headers' inline code and default arguments would reach the host.
#
# Every failure is collected; the test fails listing them all.
set(_flags -std=c++17 -Wall -Wextra -Wpedantic -Werror "-I${CONSUMER_PREFIX}/include")
# Dependencies' headers (<uv.h>) not in a default place, as the build found them.
separate_arguments(CONSUMER_HEADER_INCLUDES UNIX_COMMAND "${CONSUMER_HEADER_INCLUDES}")
foreach(_dir ${CONSUMER_HEADER_INCLUDES})
  list(APPEND _flags "-isystem${_dir}")
endforeach()

set(_work "${CONSUMER_WORK_DIR}/headers")
file(REMOVE_RECURSE "${_work}")
file(MAKE_DIRECTORY "${_work}")

file(GLOB_RECURSE _headers RELATIVE "${CONSUMER_PREFIX}/include"
     "${CONSUMER_PREFIX}/include/mailq/*.h")
list(SORT _headers)
list(LENGTH _headers _count)
if(_count LESS 10)
  consumer_fail("only ${_count} headers under ${CONSUMER_PREFIX}/include/mailq: '${_headers}'")
endif()

set(_units "")
set(_all "// Every installed mailq header at once.\n")
foreach(_h ${_headers})
  string(REGEX REPLACE "[/.]" "_" _name "${_h}")
  file(WRITE "${_work}/${_name}.cpp"
       "// ${_h} alone, twice.\n#include <${_h}>\n#include <${_h}>\n")
  list(APPEND _units "${_work}/${_name}.cpp")
  string(APPEND _all "#include <${_h}>\n")
endforeach()
file(WRITE "${_work}/all_headers.cpp" "${_all}")
list(APPEND _units "${_work}/all_headers.cpp")

# defaults.cpp is compiled once per level (hosts build with -O2, CMake's Release with -O3).
# GCC 12 at -O3 under a sanitizer once warned -Wmaybe-uninitialized about a default argument
# `QueueConfig config = {}`: the last entry keeps that from coming back.
set(_defaults_optimisations "-O2" "-O3" "-O3 -fsanitize=undefined")

separate_arguments(CONSUMER_HEADER_COMPILERS UNIX_COMMAND "${CONSUMER_HEADER_COMPILERS}")
set(_failures "")
set(_used "")
foreach(_compiler ${CONSUMER_HEADER_COMPILERS})
  find_program(_path_${_compiler} NAMES ${_compiler})
  if(NOT _path_${_compiler})
    message(STATUS "consumer (headers): ${_compiler} not found: the headers are not checked "
                   "with it")
    continue()
  endif()
  set(_cxx "${_path_${_compiler}}")
  list(APPEND _used ${_compiler})
  foreach(_unit ${_units})
    execute_process(COMMAND "${_cxx}" ${_flags} -fsyntax-only "${_unit}"
                    RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _out)
    if(NOT _rc EQUAL 0)
      get_filename_component(_unit_name "${_unit}" NAME)
      string(APPEND _failures "\n--- ${_compiler}: ${_unit_name}\n${_out}")
    endif()
  endforeach()
  foreach(_opt ${_defaults_optimisations})
    separate_arguments(_opt_flags UNIX_COMMAND "${_opt}")
    string(MAKE_C_IDENTIFIER "${_opt}" _opt_name)
    execute_process(COMMAND "${_cxx}" ${_flags} ${_opt_flags} -c
                            "${CMAKE_CURRENT_LIST_DIR}/defaults.cpp"
                            -o "${_work}/defaults-${_compiler}${_opt_name}.o"
                    RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _out)
    if(NOT _rc EQUAL 0)
      string(APPEND _failures "\n--- ${_compiler} ${_opt}: defaults.cpp\n${_out}")
    endif()
  endforeach()
endforeach()

if(NOT _used)
  consumer_fail("none of the compilers '${CONSUMER_HEADER_COMPILERS}' was found")
endif()
list(LENGTH _units _n)
string(REPLACE ";" " " _flags_text "${_flags}")
if(_failures)
  consumer_fail("with ${_flags_text}:${_failures}")
endif()
string(REPLACE ";" ", " _used "${_used}")
string(REPLACE ";" " and " _levels "${_defaults_optimisations}")
message(STATUS "consumer (headers): ${_count} headers alone, all together, and defaults.cpp at "
               "${_levels} compile cleanly with ${_used} (${_flags_text})")
