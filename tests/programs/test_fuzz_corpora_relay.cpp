// The seed corpora of the relay's fuzz targets (configuration loader, control protocol),
// replayed through the entry points libFuzzer drives (fuzz/targets/*.h). See
// tests/unit/test_fuzz_regressions.cpp for how a crash becomes a regression input.
#include <catch2/catch.hpp>

#include <string>

#include "../../fuzz/targets/corpus.h"
#include "../../fuzz/targets/relay_config.h"
#include "../../fuzz/targets/relay_control.h"

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

TEST_CASE("Fuzz corpus replay: relay configuration", "[fuzz][relay][config]") {
  CHECK(replay("relay_config", mailq::fuzz::run_relay_config) >= 5);
}

TEST_CASE("Fuzz corpus replay: control protocol", "[fuzz][relay][control]") {
  CHECK(replay("relay_control", mailq::fuzz::run_relay_control) >= 5);
}
