// Test support: a daemon under test (mailq-relay) whose exit status matters.
//
// Like `ChildProcess` (servers.h), but the test sends it signals of its choice and collects
// its exit status: "SIGTERM, then exit 0" is a behaviour under test, not a clean-up step.
// The destructor kills a daemon still running (SIGKILL after a bounded SIGTERM wait), and the
// daemon dies with the test process (PR_SET_PDEATHSIG).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace mailq::test {

class Daemon {
 public:
  Daemon() = default;
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  /// Starts `argv` (argv[0] a path or searched in PATH), stdin from /dev/null, stdout and
  /// stderr appended to `output_file`.
  bool start(const std::vector<std::string>& argv, const std::string& output_file,
             std::string* error);
  /// Sends a signal; false when the daemon is not running.
  bool signal(int signum);
  /// Waits up to `limit` for the daemon to exit: its exit status, 128 + signal when killed
  /// by one, or -1 when it is still running.
  int wait(std::chrono::milliseconds limit);
  bool running();
  pid_t pid() const noexcept { return pid_; }

 private:
  pid_t pid_ = -1;
  int status_ = -1;
};

}  // namespace mailq::test
