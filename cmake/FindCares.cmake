# FindCares — locates c-ares (Debian 12's 1.18 ships a pkg-config file but no CMake package).
#
# Imported target:
#   Cares::Cares        the library, with its include directory
# Result variables:
#   Cares_FOUND, Cares_VERSION, Cares_INCLUDE_DIRS, Cares_LIBRARIES
# Cache variables (set them to point at a non-standard install):
#   Cares_INCLUDE_DIR, Cares_LIBRARY
#
# The version is read from ares_version.h, so it describes the header actually found.
if(TARGET Cares::Cares)
  set(Cares_FOUND TRUE)
  return()
endif()

find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(PC_CARES QUIET libcares)
endif()

find_path(Cares_INCLUDE_DIR NAMES ares.h HINTS ${PC_CARES_INCLUDEDIR} ${PC_CARES_INCLUDE_DIRS})
find_library(Cares_LIBRARY NAMES cares HINTS ${PC_CARES_LIBDIR} ${PC_CARES_LIBRARY_DIRS})

unset(Cares_VERSION)
if(Cares_INCLUDE_DIR AND EXISTS "${Cares_INCLUDE_DIR}/ares_version.h")
  file(STRINGS "${Cares_INCLUDE_DIR}/ares_version.h" _cares_version_line
       REGEX "^#define ARES_VERSION_STR +\"[0-9.]+\"")
  string(REGEX REPLACE ".*\"([0-9.]+)\".*" "\\1" Cares_VERSION "${_cares_version_line}")
  unset(_cares_version_line)
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(Cares REQUIRED_VARS Cares_LIBRARY Cares_INCLUDE_DIR
                                  VERSION_VAR Cares_VERSION)

if(Cares_FOUND)
  set(Cares_INCLUDE_DIRS "${Cares_INCLUDE_DIR}")
  set(Cares_LIBRARIES "${Cares_LIBRARY}")
  add_library(Cares::Cares UNKNOWN IMPORTED)
  set_target_properties(Cares::Cares PROPERTIES IMPORTED_LOCATION "${Cares_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${Cares_INCLUDE_DIR}")
  if(Cares_LIBRARY MATCHES "\\${CMAKE_STATIC_LIBRARY_SUFFIX}$")
    # ares.h marks its functions dllimport unless told the library is static (Windows).
    set_property(TARGET Cares::Cares PROPERTY INTERFACE_COMPILE_DEFINITIONS CARES_STATICLIB)
  endif()
endif()

mark_as_advanced(Cares_INCLUDE_DIR Cares_LIBRARY)
