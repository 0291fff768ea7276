# FindLlhttp — locates the C sources of llhttp, Node.js's HTTP parser, as Debian's node-llhttp
# ships them (/usr/share/llhttp/{llhttp,api,http}.c, /usr/share/include/llhttp/llhttp.h; no
# library is built from them). mailq compiles them into mailq::uv, which parses MTA-STS policy
# responses with them: nothing of llhttp is needed at run time or by a consumer.
#
# Result variables:
#   Llhttp_FOUND, Llhttp_SOURCES (the three .c files), Llhttp_INCLUDE_DIR
# Cache variables (set them to point at another copy of the sources):
#   Llhttp_SOURCE_DIR, Llhttp_INCLUDE_DIR
find_path(Llhttp_SOURCE_DIR NAMES llhttp.c api.c http.c PATHS /usr/share/llhttp NO_DEFAULT_PATH)
find_path(Llhttp_INCLUDE_DIR NAMES llhttp.h PATHS /usr/share/include/llhttp NO_DEFAULT_PATH)
find_path(Llhttp_SOURCE_DIR NAMES llhttp.c api.c http.c PATH_SUFFIXES llhttp)
find_path(Llhttp_INCLUDE_DIR NAMES llhttp.h PATH_SUFFIXES llhttp)

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(Llhttp REQUIRED_VARS Llhttp_SOURCE_DIR Llhttp_INCLUDE_DIR
  FAIL_MESSAGE "llhttp's C sources not found (Debian: apt-get install node-llhttp)")
if(Llhttp_FOUND)
  set(Llhttp_SOURCES ${Llhttp_SOURCE_DIR}/llhttp.c ${Llhttp_SOURCE_DIR}/api.c
      ${Llhttp_SOURCE_DIR}/http.c)
endif()
mark_as_advanced(Llhttp_SOURCE_DIR Llhttp_INCLUDE_DIR)
