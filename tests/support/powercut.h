// The power-cut file system (tests/crash/powercut_fs.cpp, FUSE) mounted on a fresh directory
// for the length of a test: a spool put under `path()` loses, at each `cut()`, everything that
// was not made durable (file data not fsynced, entries of directories not fsynced), as a power
// cut and a remount would.
#pragma once

#include <cstdint>
#include <string>

#include "support/servers.h"

namespace mailq {
namespace test {

class PowerCutMount {
 public:
  /// Mounts (fails the test, saying why, when libfuse3 or /dev/fuse is missing).
  PowerCutMount();
  ~PowerCutMount();  ///< unmounts
  PowerCutMount(const PowerCutMount&) = delete;
  PowerCutMount& operator=(const PowerCutMount&) = delete;

  const std::string& path() const { return mount_; }
  /// The power cut: what was not durable is gone when this returns.
  void cut();
  /// Makes the file system a disk of `bytes` (0: no limit): statfs says what is left, and a
  /// write beyond it fails with ENOSPC.
  void set_capacity(std::uint64_t bytes);
  /// "cuts N lost_writes W lost_entries E fsyncs F dirsyncs D used U capacity C"
  std::string stats() const;

 private:
  void command(const std::string& text);

  TempDir dir_;
  std::string mount_;
  ChildProcess process_;
};

}  // namespace test
}  // namespace mailq
