# mailq.pc, the pkg-config file of an installed mailq (included by CMakeLists.txt when
# MAILQ_INSTALL is ON). Build systems other than CMake use it:
#
#   pkg-config --cflags --libs --static mailq
#
# Libs names every mailq library built, in static link order (each needs only the ones after
# it); Requires, Requires.private and Libs.private name what they link in turn, as .pc modules
# where the dependency ships one (libuv, libcares, fmt on Debian) and as -l flags where it
# does not (mbedTLS 2.x).

# libuv is public: the uv and ares headers include <uv.h> and their API takes a uv_loop_t.
# c-ares, fmt and mbedTLS are private: only a static link needs them.
set(_mailq_pc_public "")
set(_mailq_pc_private "")
if(MAILQ_WITH_UV OR MAILQ_WITH_ARES)
  list(APPEND _mailq_pc_public "libuv:-luv")
endif()
if(MAILQ_WITH_ARES)
  list(APPEND _mailq_pc_private "libcares:-lcares")
endif()
list(APPEND _mailq_pc_private "fmt:-lfmt")

# A dependency found without a .pc file of its own becomes -l flags (pkg-config stops on a
# Requires module it cannot find).
find_package(PkgConfig QUIET)
function(_mailq_pc_split entries requires_var libs_var)
  set(_requires "")
  set(_libs "")
  foreach(_entry ${entries})
    string(REPLACE ":" ";" _entry "${_entry}")
    list(GET _entry 0 _module)
    list(GET _entry 1 _flags)
    set(_has_pc FALSE)
    if(PKG_CONFIG_FOUND)
      execute_process(COMMAND ${PKG_CONFIG_EXECUTABLE} --exists ${_module}
                      RESULT_VARIABLE _rc OUTPUT_QUIET ERROR_QUIET)
      if(_rc EQUAL 0)
        set(_has_pc TRUE)
      endif()
    endif()
    if(_has_pc)
      list(APPEND _requires ${_module})
    else()
      list(APPEND _libs ${_flags})
    endif()
  endforeach()
  string(REPLACE ";" ", " _requires "${_requires}")
  set(${requires_var} "${_requires}" PARENT_SCOPE)
  set(${libs_var} "${_libs}" PARENT_SCOPE)
endfunction()
_mailq_pc_split("${_mailq_pc_public}" MAILQ_PC_REQUIRES _mailq_pc_public_libs)
_mailq_pc_split("${_mailq_pc_private}" MAILQ_PC_REQUIRES_PRIVATE _mailq_pc_private_libs)

# The mailq libraries, in link order.
set(MAILQ_PC_LIBS "")
foreach(_t mailq_engine mailq_uv mailq_ares mailq_spool mailq_core)
  if(TARGET ${_t})
    get_target_property(_name ${_t} OUTPUT_NAME)
    list(APPEND MAILQ_PC_LIBS "-l${_name}")
  endif()
endforeach()
list(APPEND MAILQ_PC_LIBS ${_mailq_pc_public_libs})

# mbedTLS (no .pc file in 2.x) for mailq-uv, with the pthreads its threading layer uses, and
# libcrypt for the listener's password hashes.
set(MAILQ_PC_LIBS_PRIVATE "")
if(MAILQ_WITH_UV)
  list(APPEND MAILQ_PC_LIBS_PRIVATE -lmbedtls -lmbedx509 -lmbedcrypto -lpthread -lcrypt
       -lhogweed -lnettle -lgmp)
endif()
list(APPEND MAILQ_PC_LIBS_PRIVATE ${_mailq_pc_private_libs})
string(REPLACE ";" " " MAILQ_PC_LIBS "${MAILQ_PC_LIBS}")
string(REPLACE ";" " " MAILQ_PC_LIBS_PRIVATE "${MAILQ_PC_LIBS_PRIVATE}")

# Everything but the prefix is known now; the prefix only at install time (`cmake --install
# --prefix` may choose another one), so the file is finished then. A relative libdir or
# includedir is written relative to ${prefix}.
foreach(_dir LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${_dir}}")
    set(MAILQ_PC_${_dir} "${CMAKE_INSTALL_${_dir}}")
  else()
    set(MAILQ_PC_${_dir} "\${prefix}/${CMAKE_INSTALL_${_dir}}")
  endif()
endforeach()
set(MAILQ_PC_PREFIX "@MAILQ_PC_PREFIX@")  # left for the install step
configure_file(${CMAKE_CURRENT_LIST_DIR}/mailq.pc.in ${PROJECT_BINARY_DIR}/pkgconfig/mailq.pc.in
               @ONLY)
install(CODE "
  set(MAILQ_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
  configure_file(\"${PROJECT_BINARY_DIR}/pkgconfig/mailq.pc.in\"
                 \"${PROJECT_BINARY_DIR}/pkgconfig/mailq.pc\" @ONLY)
")
install(FILES ${PROJECT_BINARY_DIR}/pkgconfig/mailq.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
unset(_mailq_pc_public)
unset(_mailq_pc_private)
unset(_mailq_pc_public_libs)
unset(_mailq_pc_private_libs)
