// Test support: a private Postfix 3.7 instance (Debian's postfix package) in a temporary
// directory, with its own main.cf, queue and log file, started with `postfix -c` and stopped
// by the destructor. It runs its daemons as root (the tests that use it require root), never
// chrooted, and listens (when asked) on one 127.0.0.1 port only.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "support/servers.h"

namespace mailq::test {

class PostfixInstance {
 public:
  struct Options {
    /// An smtpd listening on 127.0.0.1:`smtpd_port`; 0: no listener (a sending-only Postfix).
    std::uint16_t smtpd_port = 0;
    /// main.cf settings ("key=value"), after the ones that make the instance private.
    std::vector<std::string> settings;
  };

  PostfixInstance() = default;
  ~PostfixInstance() { stop(); }
  PostfixInstance(const PostfixInstance&) = delete;
  PostfixInstance& operator=(const PostfixInstance&) = delete;

  /// Writes the configuration and starts Postfix. False and `error` (with postfix's words)
  /// when it cannot.
  bool start(const Options& options, std::string* error);
  void stop();

  const std::string& config_dir() const noexcept { return etc_; }
  std::string maillog() const;
  /// Waits until the log holds `needle` (at most `limit`).
  bool wait_for_log(std::string_view needle, std::chrono::milliseconds limit = 30s) const;

 private:
  TempDir dir_;
  std::string etc_;
  bool started_ = false;
};

}  // namespace mailq::test
