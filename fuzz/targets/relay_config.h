// Fuzz target: the relay's TOML configuration loader (examples/relay/config.h parse_config),
// plus the value parsers it uses (durations, networks).
//
// Input: the text of a configuration file (the seeds are the example configuration and
// variants of it: fuzz/corpus/relay_config/*).
// Checks: nothing escapes (toml++ throws on syntax errors: an exception getting out is a
// crash here); an error names the file ("fuzz.toml:LINE: ..." or "fuzz.toml: ...") on one
// line; a configuration that loads has a spool, builds its route table without crashing,
// and keeps the listener to known networks (never an empty allow list, which would be an
// open relay); every non-empty line of the text also goes through parse_duration and
// Network::parse.
#pragma once

#include <string>
#include <string_view>

#include "examples/relay/config.h"
#include "fuzz_support.h"

namespace mailq::fuzz {

inline void run_relay_config(std::string_view data) {
  using namespace mailq::relay;
  auto cfg = parse_config(data, "fuzz.toml");
  if (!cfg) {
    const std::string& m = cfg.error().message;
    MAILQ_FUZZ_CHECK(m.rfind("fuzz.toml", 0) == 0, "the error does not name the file: " + m);
  } else {
    MAILQ_FUZZ_CHECK(!cfg->spool.empty(), "a configuration without a spool loaded");
    if (!cfg->listen.address.empty())
      MAILQ_FUZZ_CHECK(!cfg->listen.networks.empty(), "a listener open to no network list");
    auto table = cfg->route_table();
    (void)table;
  }
  // The value parsers on each line.
  std::size_t lines = 0;
  for (std::size_t p = 0; p < data.size() && lines < 64; ++lines) {
    std::size_t e = data.find('\n', p);
    if (e == std::string_view::npos) e = data.size();
    const std::string_view line = data.substr(p, e - p);
    p = e + 1;
    if (line.empty()) continue;
    if (auto d = parse_duration(line)) MAILQ_FUZZ_CHECK(d->count() >= 0, "negative duration");
    if (auto n = Network::parse(line)) {
      MAILQ_FUZZ_CHECK(n->prefix <= (n->ipv6 ? 128u : 32u), "prefix out of range");
      (void)n->contains("127.0.0.1");
      (void)n->contains("::1");
      (void)n->contains(line);
    }
  }
}

}  // namespace mailq::fuzz
