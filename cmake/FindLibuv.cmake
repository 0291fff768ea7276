# FindLibuv — locates libuv (Debian ships a pkg-config file but no CMake package).
#
# Imported target:
#   Libuv::Libuv        the library, with its include directory (and, for a static libuv, the
#                       threads/dl/rt libraries it needs)
# Result variables:
#   Libuv_FOUND, Libuv_VERSION, Libuv_INCLUDE_DIRS, Libuv_LIBRARIES
# Cache variables (set them to point at a non-standard install):
#   Libuv_INCLUDE_DIR, Libuv_LIBRARY
#
# The version is read from uv/version.h, so it describes the header actually found even when
# pkg-config knows of another installation.
if(TARGET Libuv::Libuv)
  set(Libuv_FOUND TRUE)
  return()
endif()

find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(PC_LIBUV QUIET libuv)
endif()

find_path(Libuv_INCLUDE_DIR NAMES uv.h HINTS ${PC_LIBUV_INCLUDEDIR} ${PC_LIBUV_INCLUDE_DIRS})
find_library(Libuv_LIBRARY NAMES uv libuv uv_a HINTS ${PC_LIBUV_LIBDIR} ${PC_LIBUV_LIBRARY_DIRS})

unset(Libuv_VERSION)
if(Libuv_INCLUDE_DIR AND EXISTS "${Libuv_INCLUDE_DIR}/uv/version.h")
  file(STRINGS "${Libuv_INCLUDE_DIR}/uv/version.h" _libuv_version_lines
       REGEX "^#define UV_VERSION_(MAJOR|MINOR|PATCH) +[0-9]+")
  foreach(_part MAJOR MINOR PATCH)
    string(REGEX REPLACE ".*#define UV_VERSION_${_part} +([0-9]+).*" "\\1" _libuv_${_part}
           "${_libuv_version_lines}")
  endforeach()
  set(Libuv_VERSION "${_libuv_MAJOR}.${_libuv_MINOR}.${_libuv_PATCH}")
  unset(_libuv_version_lines)
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(Libuv REQUIRED_VARS Libuv_LIBRARY Libuv_INCLUDE_DIR
                                  VERSION_VAR Libuv_VERSION)

if(Libuv_FOUND)
  set(Libuv_INCLUDE_DIRS "${Libuv_INCLUDE_DIR}")
  set(Libuv_LIBRARIES "${Libuv_LIBRARY}")
  add_library(Libuv::Libuv UNKNOWN IMPORTED)
  set_target_properties(Libuv::Libuv PROPERTIES IMPORTED_LOCATION "${Libuv_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${Libuv_INCLUDE_DIR}")
  # A shared libuv records its own dependencies; a static archive does not.
  if(Libuv_LIBRARY MATCHES "\\${CMAKE_STATIC_LIBRARY_SUFFIX}$" AND UNIX)
    find_package(Threads REQUIRED)
    set(_libuv_deps Threads::Threads ${CMAKE_DL_LIBS})
    if(CMAKE_SYSTEM_NAME STREQUAL "Linux")
      list(APPEND _libuv_deps rt)
    endif()
    set_property(TARGET Libuv::Libuv PROPERTY INTERFACE_LINK_LIBRARIES "${_libuv_deps}")
    unset(_libuv_deps)
  endif()
endif()

mark_as_advanced(Libuv_INCLUDE_DIR Libuv_LIBRARY)
