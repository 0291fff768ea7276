// The seed corpora of the spool and DNS fuzz targets, replayed through the entry points
// libFuzzer drives (fuzz/targets/*.h) in the normal, ASan and valgrind builds. The core
// targets are replayed in tests/unit/test_fuzz_regressions.cpp, which says how a crash found
// by scripts/fuzz.sh becomes a regression input.
#include <catch2/catch.hpp>

#include <string>

#include "../../fuzz/targets/corpus.h"
#include "../../fuzz/targets/dns_answer.h"
#include "../../fuzz/targets/segment_file.h"
#include "../../fuzz/targets/spool_file.h"
#include "../../fuzz/targets/spool_records.h"

TEST_CASE("Fuzz corpus replay: spool file recovery", "[fuzz][spool]") {
  CHECK(mailq::fuzz::replay_corpus(__FILE__, "spool_file", mailq::fuzz::run_spool_file) >= 10);
}

TEST_CASE("Fuzz corpus replay: segment spool recovery", "[fuzz][segment]") {
  CHECK(mailq::fuzz::replay_corpus(__FILE__, "segment_file", mailq::fuzz::run_segment_file) >= 20);
}

TEST_CASE("Fuzz corpus replay: spool record decoders", "[fuzz][spool]") {
  CHECK(mailq::fuzz::replay_corpus(__FILE__, "spool_records", mailq::fuzz::run_spool_records) >= 5);
}

// Over UDP on 127.0.0.1, through the c-ares resolver.
TEST_CASE("Fuzz corpus replay: DNS answers", "[fuzz][ares]") {
  CHECK(mailq::fuzz::replay_corpus(__FILE__, "dns_answer", mailq::fuzz::run_dns_answer) >= 10);
}
