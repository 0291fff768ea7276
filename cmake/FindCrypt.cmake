# FindCrypt — locates libcrypt (libxcrypt on Debian: crypt_r, crypt_gensalt_rn), which checks
# the hashed passwords of SMTP AUTH.
#
# Imported target:
#   Crypt::Crypt        the library, with its include directory
# Result variables:
#   Crypt_FOUND, Crypt_INCLUDE_DIRS, Crypt_LIBRARIES
# Cache variables (set them to point at a non-standard install):
#   Crypt_INCLUDE_DIR, Crypt_LIBRARY
if(TARGET Crypt::Crypt)
  set(Crypt_FOUND TRUE)
  return()
endif()

find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(PC_CRYPT QUIET libcrypt)
endif()

find_path(Crypt_INCLUDE_DIR NAMES crypt.h HINTS ${PC_CRYPT_INCLUDEDIR} ${PC_CRYPT_INCLUDE_DIRS})
find_library(Crypt_LIBRARY NAMES crypt HINTS ${PC_CRYPT_LIBDIR} ${PC_CRYPT_LIBRARY_DIRS})

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(Crypt REQUIRED_VARS Crypt_LIBRARY Crypt_INCLUDE_DIR)

if(Crypt_FOUND)
  set(Crypt_INCLUDE_DIRS "${Crypt_INCLUDE_DIR}")
  set(Crypt_LIBRARIES "${Crypt_LIBRARY}")
  add_library(Crypt::Crypt UNKNOWN IMPORTED)
  set_target_properties(Crypt::Crypt PROPERTIES IMPORTED_LOCATION "${Crypt_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${Crypt_INCLUDE_DIR}")
endif()

mark_as_advanced(Crypt_INCLUDE_DIR Crypt_LIBRARY)
