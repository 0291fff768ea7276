// Test helper: runs a command-line tool to completion with a given standard input, keeping
// its standard output and standard error apart (servers.h's run_program merges them and
// gives no input).
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

namespace mailq {
namespace test {

struct ToolRun {
  int status = -1;  ///< exit status; -1 when it could not run, was killed or ran past the limit
  std::string out;  ///< standard output
  std::string err;  ///< standard error
};

/// Runs `argv` (argv[0] is a path, not searched in PATH) with `input` on its standard input
/// and `env` ("NAME=value") added to the environment. Killed after `limit`.
ToolRun run_tool(const std::vector<std::string>& argv, std::string_view input = {},
                 const std::vector<std::string>& env = {},
                 std::chrono::milliseconds limit = std::chrono::seconds(60));

}  // namespace test
}  // namespace mailq
