// libFuzzer entry point; the target itself is in targets/dns_answer.h (shared with the corpus
// replay tests).
#include "targets/dns_answer.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  mailq::fuzz::run_dns_answer(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
