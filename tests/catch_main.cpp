// The Catch2 runner of every test binary.
//
// Not Catch2::Catch2WithMain: its console width is 80, and `--list-test-names-only` wraps a
// longer test name over several lines, which catch_discover_tests then registers as several
// tests that match nothing. Those ran zero assertions and passed. With a wide console every
// name is listed on one line (and `-w NoTests` in tests/CMakeLists.txt fails any that
// still matches nothing).
#define CATCH_CONFIG_CONSOLE_WIDTH 4000
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
