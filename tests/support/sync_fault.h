// Fault injection for the spool tests: while a FailDataSyncs exists, every fdatasync the
// spools make fails with EIO (through spool::detail::sync_fault_hook), counted in
// failed_data_syncs; directory fsyncs go through.
#pragma once

#include <cerrno>

#include "spool/file_io.h"

namespace mailq {
namespace spool_test {

inline int failed_data_syncs = 0;

inline int fail_data_syncs(int, bool data_only) {
  if (!data_only) return 0;
  ++failed_data_syncs;
  return EIO;
}

// Installs the hook for a scope, whatever way the test leaves it.
struct FailDataSyncs {
  FailDataSyncs() {
    failed_data_syncs = 0;
    mailq::spool::detail::sync_fault_hook = fail_data_syncs;
  }
  ~FailDataSyncs() { mailq::spool::detail::sync_fault_hook = nullptr; }
  FailDataSyncs(const FailDataSyncs&) = delete;
  FailDataSyncs& operator=(const FailDataSyncs&) = delete;
};

}  // namespace spool_test
}  // namespace mailq
