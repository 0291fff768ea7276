// libFuzzer entry point; the target itself is in targets/smtp_server.h (shared with the corpus
// replay tests).
#include "targets/smtp_server.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  mailq::fuzz::run_smtp_server(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
