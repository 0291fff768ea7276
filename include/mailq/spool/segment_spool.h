// mailq — the segment spool: a durable `Storage` that appends every message and every change
// to a few large segment files instead of one file per message.
//
//     <spool>/segments/0000000000000001.seg   append-only segment files, oldest first
//     <spool>/quarantine/                      damaged segment tails kept for a human
//     <spool>/lock                             flock()ed by the one process owning the spool
//
// Why: creating, renaming and unlinking one file per message costs the file system a
// metadata update each (and, on ext4, journal work that stalls behind every sync). Appending
// records to one open file and making a whole batch durable with one `fdatasync` costs a
// sequential write per message. This is the default layout for a new spool (layout.h); the
// file spool (`SpoolStorage`, file_spool.h) keeps the Messaging Server layout (a ZZ/ZY/ZX file
// per message an operator can look at with ls) for those who ask for it. Both give the same
// guarantees:
//
// - `insert` reports success only once the message's records are on disk: inserts of one loop
//   turn are appended and share one `fdatasync` (group commit; completion runs from a
//   zero-delay timer of the Clock).
// - `update` syncs before returning when a recipient reaches a final state (delivered, bounced,
//   expired) or the message is held or released: a recipient recorded delivered is never sent
//   again after a crash. Other changes, `append_attempt` rows and `remove` are written at once
//   (they survive the process being killed) and synced within `deferred_sync_delay`; a power
//   loss inside that window rolls a deferral back or brings a removed message back (delivered
//   again, never lost).
// - Every record carries a CRC-32C (the record framing of docs/spool-format.md); a torn write
//   at the end of the newest segment is cut off at start-up, a damaged record elsewhere ends
//   its segment's replay there and the rest of that segment goes to quarantine/ with a
//   `problems` line.
//
// Space: a segment is deleted once it is not the active one, no message inserted in it is
// still stored, and every older segment is gone (so no record a replay needs ever
// disappears). Messages that outlive their neighbours (long deferrals) are copied forward into
// the active segment in the background, a bounded amount per loop turn, so that a handful of
// old messages never pins gigabytes of delivered ones.
//
// Threading: single-threaded, on the clock's (loop) thread, like every Storage. The Clock must
// outlive the SegmentStorage; the SegmentStorage must outlive the Queue that uses it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "mailq/clock.h"
#include "mailq/error.h"
#include "mailq/spool/durable_storage.h"
#include "mailq/storage.h"

namespace mailq {
namespace spool {

struct SegmentOptions {
  /// A new segment is started once the active one reaches this size (a single message larger
  /// than this gets a segment of its own size). At most 4 GiB - 1 (record offsets are kept in
  /// 32 bits); larger values are clamped.
  std::uint64_t segment_size = 64ull << 20;
  /// Upper bound on the time a deferral, attempt row or removal may stay unsynced (it is
  /// written at once; this is only about power loss). Zero: synced at the end of the loop turn.
  Duration deferred_sync_delay{1000};
  /// Compaction copies the still-stored messages of the oldest segment forward when less than
  /// this fraction of the segments' bytes belongs to stored messages.
  double compact_below_live_fraction = 0.5;
  /// Bytes copied forward per loop turn at most (compaction never stalls the loop longer).
  std::uint64_t compact_bytes_per_turn = 4ull << 20;
  /// Start-up recovery verifies every body's checksum (reads every body): slower, for audits.
  /// Without it, bodies are checked when read (`read_body`).
  bool verify_bodies_on_load = false;
  /// Permissions of created files and directories (before the umask).
  unsigned file_mode = 0600;
  unsigned directory_mode = 0700;
  /// Receives every failure with a message saying what failed and where ("write
  /// segments/0000000000000003.seg: No space left on device"), including failures that have
  /// no caller to return to (a background sync or compaction). Runs on the loop thread.
  std::function<void(const Error&)> on_error;
};

/// Counters since construction (the `last_load_*` ones describe the last `load`).
struct SegmentStats {
  std::uint64_t inserts = 0;          ///< inserts completed durably
  std::uint64_t insert_failures = 0;  ///< inserts completed with an error
  std::uint64_t batches = 0;          ///< group commits
  std::uint64_t syncs = 0;            ///< fdatasync calls on segments
  std::uint64_t dir_syncs = 0;        ///< fsync calls on the segments directory
  std::uint64_t updates = 0;          ///< update records appended
  std::uint64_t synced_updates = 0;   ///< of which were synced before `update` returned
  std::uint64_t attempts = 0;         ///< attempt rows appended
  std::uint64_t removes = 0;          ///< removal records appended
  std::uint64_t bytes_written = 0;
  std::uint64_t segments = 0;            ///< segment files now
  std::uint64_t segments_created = 0;    ///< since construction
  std::uint64_t segments_deleted = 0;    ///< since construction
  std::uint64_t compacted_messages = 0;  ///< messages copied forward by compaction
  std::uint64_t compacted_bytes = 0;
  std::uint64_t live_bytes = 0;   ///< bytes of the records of stored messages
  std::uint64_t total_bytes = 0;  ///< bytes of all segment files

  std::uint64_t last_load_recovered = 0;  ///< messages recovered
  std::uint64_t last_load_segments = 0;   ///< segment files read
  /// Torn tails cut off: the newest segment's after a crash, or an older one's that a power
  /// loss left unsynced behind a rollover; also segment files cut short in their preamble.
  std::uint64_t last_load_repaired = 0;
  std::uint64_t last_load_quarantined = 0;  ///< damaged segment tails moved to quarantine/
  double last_load_seconds = 0;
};

/// The segment spool. Construct it, check `open_error()`, then `load()` (through
/// `Queue::recover`) before the first insert. The Storage operations, their errors and the
/// destructor are DurableStorage's (durable_storage.h).
class SegmentStorage final : public DurableStorage {
 public:
  /// Creates `directory` (and its parents) and the layout above when missing, and takes the
  /// spool's lock. Never throws: a failure (permissions, a read-only file system, the lock
  /// held by another process, a directory holding a file spool's `queue/`) is kept in
  /// `open_error()`.
  SegmentStorage(std::string directory, Clock& clock, SegmentOptions options = {});

  /// Constructs and returns the spool, or the open error.
  static Result<std::unique_ptr<SegmentStorage>> open(std::string directory, Clock& clock,
                                                      SegmentOptions options = {});

  // `load` (DurableStorage) replays the segments oldest first: rebuilds every stored message
  // with its latest valid state, cuts a torn tail (a damaged or incomplete record with no
  // valid record after it) off a segment, quarantines the rest of a segment after a damaged
  // record (one `problems` line each). A segment of a newer format version fails the load
  // (storage_failure) rather than be ignored. It calls `each` once per message, after every
  // message is indexed.

  /// Runs compaction until no segment qualifies (tests and tools; normally it runs a bounded
  /// amount per loop turn).
  Result<void> compact_now();
  SegmentStats stats() const;
  /// The segment holding a message's body, relative to the spool directory
  /// ("segments/0000000000000003.seg"); "" when not stored.
  std::string segment_of(MessageId id) const;
  /// The log's queue file field and `mailq-queue show`: the segment file holding the message
  /// and, after '#', its seed-002 name ("segments/0000000000000003.seg#ZY01J9ZK3D2ZP7F.00": the
  /// attempt letter counts the attempts made before, as in the file spool). The part before
  /// '#' is a file that exists on disk while the message is stored (compaction may move the
  /// message to a newer segment; later records name that one).
  std::string locator(const MessageRecord& record, std::uint32_t attempts_before) const override;

 private:
  struct Impl;
  Impl& impl() const;
};

}  // namespace spool
}  // namespace mailq
