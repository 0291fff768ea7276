// mailq — what both durable spools offer beyond `Storage` (CMake target `mailq::spool`): the
// file spool (file_spool.h) and the segment spool (segment_spool.h); layout.h opens either.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "mailq/error.h"
#include "mailq/storage.h"

namespace mailq {
namespace spool {
namespace detail {
class SpoolBase;  // the implementation both spools share (internal)
}  // namespace detail

/// A durable spool: the file spool of file_spool.h or the segment spool of segment_spool.h.
/// Both keep the Storage contract of storage.h; what they add is below. Errors carry what
/// failed and where ("write /var/spool/mailq/tmp/01J9ZK3D2ZP7F.tmp: No space left on device").
class DurableStorage : public Storage {
 public:
  /// Makes pending inserts durable without running their callbacks (the Queue that gave them
  /// is gone by now: it must be destroyed first), syncs what is still unsynced, and releases
  /// the lock. Call `flush()` before destroying the Queue to have the callbacks run.
  ~DurableStorage() override;
  DurableStorage(const DurableStorage&) = delete;
  DurableStorage& operator=(const DurableStorage&) = delete;

  /// Why the spool could not be opened (permissions, a read-only file system, a directory
  /// holding the other layout; `errc::in_use` when another process holds its lock); an empty
  /// code when it is usable. Every operation of a spool that did not open fails with
  /// `errc::storage_failure` and this text.
  const Error& open_error() const noexcept;

  // --- Storage ---
  /// Errors through `done`, never before `insert` returns: `errc::storage_full` (no space
  /// left, ENOSPC or EDQUOT) or `errc::storage_failure` (permission denied, read-only file
  /// system, I/O error): nothing is left behind and nothing already stored is touched;
  /// `errc::bad_state` (the id is already stored, or
  /// the spool held messages when it was opened and `load` has not run yet:
  /// `Queue::recover` comes before the first enqueue, or they would never be delivered),
  /// `errc::invalid_parameter` (id 0 or no recipient), `errc::message_too_large` (body of
  /// 4 GiB or more).
  void insert(const MessageRecord& record, std::string_view body, Done done) final;
  /// Errors: `errc::not_found`, `errc::bad_state` (an index beyond the recipient list: it is
  /// immutable), `errc::invalid_parameter` (indices out of order or twice),
  /// `errc::storage_full` or `errc::storage_failure` (the previous state is kept).
  Result<void> update(const RecordChange& change) final;
  /// Errors: `errc::not_found`, `errc::storage_full`, `errc::storage_failure`.
  Result<void> append_attempt(MessageId id, const AttemptRecord& attempt) final;
  /// Errors: `errc::not_found`, `errc::storage_full`, `errc::storage_failure`.
  Result<void> remove(MessageId id) final;
  /// Errors: `errc::not_found`, `errc::corrupt_record` (the body fails its checksum),
  /// `errc::storage_failure`.
  Result<std::string> read_body(MessageId id) const final;
  Result<std::vector<AttemptRecord>> read_attempts(MessageId id) const final;
  /// Rebuilds every stored message with its latest valid state and calls `each` once per
  /// message, after the message is indexed (so `each` may update or remove it). Damage is
  /// set aside with one `problems` line each (see each spool). Completes any pending batch
  /// first. Errors: `errc::storage_failure` (a directory cannot be read: the messages already
  /// found were given to `each`; a segment of a newer format: nothing was).
  Result<void> load(const std::function<void(MessageRecord&&)>& each, RecoveryReport* report) final;

  /// Completes the pending batch now (its callbacks run before this returns) and syncs every
  /// change not yet synced.
  void flush();
  /// Messages stored (complete inserts, not removed).
  std::size_t size() const noexcept;
  /// Inserts written but not yet durable (their callbacks have not run).
  std::size_t pending_inserts() const noexcept;
  /// The spool directory as given.
  const std::string& directory() const noexcept;

 protected:
  explicit DurableStorage(std::unique_ptr<detail::SpoolBase> impl);

  std::unique_ptr<detail::SpoolBase> impl_;
};

}  // namespace spool
}  // namespace mailq
