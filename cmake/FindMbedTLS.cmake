# FindMbedTLS — locates mbedTLS 2.x or 3.x from a plain install (Debian 12's 2.28 ships neither
# pkg-config nor CMake files).
#
# Imported targets (the names mbedTLS's own CMake package uses, so code works with either):
#   MbedTLS::mbedtls     TLS; links MbedTLS::mbedx509
#   MbedTLS::mbedx509    certificates; links MbedTLS::mbedcrypto
#   MbedTLS::mbedcrypto  primitives
# Result variables:
#   MbedTLS_FOUND, MbedTLS_VERSION, MbedTLS_INCLUDE_DIRS, MbedTLS_LIBRARIES
# Cache variables (set them to point at a non-standard install):
#   MbedTLS_INCLUDE_DIR, MbedTLS_LIBRARY, MbedTLS_X509_LIBRARY, MbedTLS_CRYPTO_LIBRARY
if(TARGET MbedTLS::mbedtls)
  set(MbedTLS_FOUND TRUE)
  return()
endif()

find_path(MbedTLS_INCLUDE_DIR NAMES mbedtls/ssl.h)
find_library(MbedTLS_LIBRARY NAMES mbedtls)
find_library(MbedTLS_X509_LIBRARY NAMES mbedx509)
find_library(MbedTLS_CRYPTO_LIBRARY NAMES mbedcrypto)

# 3.x moved the version macros to build_info.h; 2.x has them in version.h.
unset(MbedTLS_VERSION)
if(MbedTLS_INCLUDE_DIR)
  foreach(_h mbedtls/build_info.h mbedtls/version.h)
    if(EXISTS "${MbedTLS_INCLUDE_DIR}/${_h}")
      file(STRINGS "${MbedTLS_INCLUDE_DIR}/${_h}" _mbedtls_version_line
           REGEX "^#define MBEDTLS_VERSION_STRING +\"[0-9.]+\"")
      if(_mbedtls_version_line)
        string(REGEX REPLACE ".*\"([0-9.]+)\".*" "\\1" MbedTLS_VERSION "${_mbedtls_version_line}")
        break()
      endif()
    endif()
  endforeach()
  unset(_mbedtls_version_line)
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(MbedTLS
  REQUIRED_VARS MbedTLS_LIBRARY MbedTLS_X509_LIBRARY MbedTLS_CRYPTO_LIBRARY MbedTLS_INCLUDE_DIR
  VERSION_VAR MbedTLS_VERSION)

if(MbedTLS_FOUND)
  set(MbedTLS_INCLUDE_DIRS "${MbedTLS_INCLUDE_DIR}")
  # In link order: each library needs the ones after it.
  set(MbedTLS_LIBRARIES "${MbedTLS_LIBRARY}" "${MbedTLS_X509_LIBRARY}" "${MbedTLS_CRYPTO_LIBRARY}")
  add_library(MbedTLS::mbedcrypto UNKNOWN IMPORTED)
  set_target_properties(MbedTLS::mbedcrypto PROPERTIES
                        IMPORTED_LOCATION "${MbedTLS_CRYPTO_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${MbedTLS_INCLUDE_DIR}")
  add_library(MbedTLS::mbedx509 UNKNOWN IMPORTED)
  set_target_properties(MbedTLS::mbedx509 PROPERTIES
                        IMPORTED_LOCATION "${MbedTLS_X509_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${MbedTLS_INCLUDE_DIR}"
                        INTERFACE_LINK_LIBRARIES MbedTLS::mbedcrypto)
  add_library(MbedTLS::mbedtls UNKNOWN IMPORTED)
  set_target_properties(MbedTLS::mbedtls PROPERTIES
                        IMPORTED_LOCATION "${MbedTLS_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${MbedTLS_INCLUDE_DIR}"
                        INTERFACE_LINK_LIBRARIES MbedTLS::mbedx509)
endif()

mark_as_advanced(MbedTLS_INCLUDE_DIR MbedTLS_LIBRARY MbedTLS_X509_LIBRARY MbedTLS_CRYPTO_LIBRARY)
