// The seed corpora of the relay's fuzz targets (configuration loader, control protocol,
// maildrop files), replayed through the entry points libFuzzer drives (fuzz/targets/*.h).
// See tests/unit/test_fuzz_regressions.cpp for how a crash becomes a regression input.
#include <catch2/catch.hpp>

#include <string>

#include "../../fuzz/targets/corpus.h"
#include "../../fuzz/targets/maildrop.h"
#include "../../fuzz/targets/relay_config.h"
#include "../../fuzz/targets/relay_control.h"

TEST_CASE("Fuzz corpus replay: relay configuration", "[fuzz][relay][config]") {
  CHECK(mailq::fuzz::replay_corpus(__FILE__, "relay_config", mailq::fuzz::run_relay_config) >= 5);
}

TEST_CASE("Fuzz corpus replay: control protocol", "[fuzz][relay][control]") {
  CHECK(mailq::fuzz::replay_corpus(__FILE__, "relay_control", mailq::fuzz::run_relay_control) >= 5);
}

TEST_CASE("Fuzz corpus replay: maildrop files", "[fuzz][relay][maildrop]") {
  CHECK(mailq::fuzz::replay_corpus(__FILE__, "maildrop", mailq::fuzz::run_maildrop) >= 5);
}
