# FindNettle — locates Nettle and its public-key half, hogweed, which sign DKIM's Ed25519
# (mbedTLS 2.28 has none) and RSA (on GMP, faster than mbedTLS's), and GMP, whose mpz_t
# hogweed's RSA functions take.
#
# Imported targets:
#   Nettle::hogweed     public-key algorithms; links Nettle::nettle and Nettle::gmp
#   Nettle::nettle      hashes and ciphers
#   Nettle::gmp         GMP
# Result variables:
#   Nettle_FOUND, Nettle_INCLUDE_DIRS, Nettle_LIBRARIES
# Cache variables (set them to point at a non-standard install):
#   Nettle_INCLUDE_DIR, Nettle_LIBRARY, Nettle_HOGWEED_LIBRARY, Nettle_GMP_LIBRARY
if(TARGET Nettle::hogweed)
  set(Nettle_FOUND TRUE)
  return()
endif()

find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(PC_HOGWEED QUIET hogweed)
endif()

find_path(Nettle_INCLUDE_DIR NAMES nettle/eddsa.h
          HINTS ${PC_HOGWEED_INCLUDEDIR} ${PC_HOGWEED_INCLUDE_DIRS})
find_library(Nettle_LIBRARY NAMES nettle HINTS ${PC_HOGWEED_LIBDIR} ${PC_HOGWEED_LIBRARY_DIRS})
find_library(Nettle_HOGWEED_LIBRARY NAMES hogweed
             HINTS ${PC_HOGWEED_LIBDIR} ${PC_HOGWEED_LIBRARY_DIRS})
find_path(Nettle_GMP_INCLUDE_DIR NAMES gmp.h)
find_library(Nettle_GMP_LIBRARY NAMES gmp)

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(Nettle
  REQUIRED_VARS Nettle_HOGWEED_LIBRARY Nettle_LIBRARY Nettle_INCLUDE_DIR Nettle_GMP_LIBRARY
                Nettle_GMP_INCLUDE_DIR)

if(Nettle_FOUND)
  set(Nettle_INCLUDE_DIRS "${Nettle_INCLUDE_DIR}")
  set(Nettle_LIBRARIES "${Nettle_HOGWEED_LIBRARY}" "${Nettle_LIBRARY}" "${Nettle_GMP_LIBRARY}")
  add_library(Nettle::gmp UNKNOWN IMPORTED)
  set_target_properties(Nettle::gmp PROPERTIES IMPORTED_LOCATION "${Nettle_GMP_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${Nettle_GMP_INCLUDE_DIR}")
  add_library(Nettle::nettle UNKNOWN IMPORTED)
  set_target_properties(Nettle::nettle PROPERTIES IMPORTED_LOCATION "${Nettle_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${Nettle_INCLUDE_DIR}")
  add_library(Nettle::hogweed UNKNOWN IMPORTED)
  set_target_properties(Nettle::hogweed PROPERTIES IMPORTED_LOCATION "${Nettle_HOGWEED_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${Nettle_INCLUDE_DIR}"
                        INTERFACE_LINK_LIBRARIES "Nettle::nettle;Nettle::gmp")
endif()

mark_as_advanced(Nettle_INCLUDE_DIR Nettle_LIBRARY Nettle_HOGWEED_LIBRARY Nettle_GMP_LIBRARY
                 Nettle_GMP_INCLUDE_DIR)
