// Catch2 checks on a TestLoop, shared by the integration tests.
#pragma once

#include <catch2/catch.hpp>

#include <string>

#include "support/test_loop.h"

namespace mailq {
namespace test {

/// Closes the loop and requires that no handle was left open (the adapters free their memory
/// only in close callbacks, so a leftover handle is a leak or a missing close).
inline void require_clean_close(TestLoop& loop) {
  std::string leftovers;
  const int r = loop.close(&leftovers);
  INFO("handles left open: " << leftovers);
  REQUIRE(r == 0);
}

}  // namespace test
}  // namespace mailq
