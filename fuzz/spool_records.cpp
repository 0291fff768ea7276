// libFuzzer entry point; the target itself is in targets/spool_records.h (shared with the corpus
// replay tests).
#include "targets/spool_records.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  mailq::fuzz::run_spool_records(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
