// libFuzzer entry point; the target itself is in targets/relay_control.h (shared with the corpus
// replay tests).
#include "targets/relay_control.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  mailq::fuzz::run_relay_control(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
