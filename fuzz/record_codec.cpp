// libFuzzer entry point; the target itself is in targets/record_codec.h (shared with the corpus
// replay tests).
#include "targets/record_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  mailq::fuzz::run_record_codec(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
