// mailq — what both durable spools offer beyond `Storage` (CMake target `mailq::spool`): the
// file spool (file_spool.h) and the segment spool (segment_spool.h); layout.h opens either.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <system_error>

#include "mailq/error.h"
#include "mailq/storage.h"

namespace mailq {
namespace spool {

/// What both durable spools (the file spool of file_spool.h, the segment spool of segment_spool.h)
/// offer beyond `Storage`: what a host or a tool needs to run either one.
class DurableStorage : public Storage {
 public:
  /// Empty code when the spool is usable; else what went wrong (`last_error()` has the text).
  virtual std::error_code open_error() const noexcept = 0;
  /// The last failure with its text; empty when none happened.
  virtual const Error& last_error() const noexcept = 0;
  std::string last_error_text() const override { return last_error().message; }
  /// Completes the pending batch now (its callbacks run before this returns) and syncs every
  /// change not yet synced.
  virtual void flush() = 0;
  /// Messages stored (complete inserts, not removed).
  virtual std::size_t size() const noexcept = 0;
  /// Inserts written but not yet durable (their callbacks have not run).
  virtual std::size_t pending_inserts() const noexcept = 0;
  /// The spool directory as given.
  virtual const std::string& directory() const noexcept = 0;
};

/// The words of the open error when another process holds the spool's lock ("spool DIR is in
/// use by another process (DIR/lock is locked)"): how tools tell a running relay apart.
inline constexpr std::string_view kSpoolInUse = "is in use by another process";

}  // namespace spool
}  // namespace mailq
