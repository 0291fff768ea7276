// The seed corpora of the spool and DNS fuzz targets, replayed through the entry points
// libFuzzer drives (fuzz/targets/*.h) in the normal, ASan and valgrind builds. The core
// targets are replayed in tests/unit/test_fuzz_regressions.cpp, which says how a crash found
// by scripts/fuzz.sh becomes a regression input.
#include <catch2/catch.hpp>

#include <string>

#include "../../fuzz/targets/corpus.h"
#include "../../fuzz/targets/dns_answer.h"
#include "../../fuzz/targets/spool_file.h"
#include "../../fuzz/targets/spool_records.h"

namespace {

template <class Run>
std::size_t replay(std::string_view target, Run run) {
  const auto files = mailq::fuzz::corpus_files(__FILE__, target);
  for (const std::string& f : files) {
    mailq::fuzz::current_input() = f;
    run(mailq::fuzz::read_file(f));
  }
  mailq::fuzz::current_input().clear();
  return files.size();
}

}  // namespace

TEST_CASE("Fuzz corpus replay: spool file recovery", "[fuzz][spool]") {
  CHECK(replay("spool_file", mailq::fuzz::run_spool_file) >= 10);
}

TEST_CASE("Fuzz corpus replay: spool record decoders", "[fuzz][spool]") {
  CHECK(replay("spool_records", mailq::fuzz::run_spool_records) >= 5);
}

// Over UDP on 127.0.0.1, through the c-ares resolver.
TEST_CASE("Fuzz corpus replay: DNS answers", "[fuzz][ares]") {
  CHECK(replay("dns_answer", mailq::fuzz::run_dns_answer) >= 10);
}
