// mailq — the durable file spool: a file per message, seed 002's layout (the segment spool,
// segment_spool.h, is the default for a new spool).
//
// One file per message, in a directory per channel, named as in seed 002:
//
//     <spool>/queue/tcp_local/ZZ01J9ZK3D2ZP7F.00        first attempt pending
//     <spool>/queue/tcp_local/ZY01J9ZK3D2ZP7F.00        after the first attempt
//     <spool>/queue/tcp_local/ZX01J9ZK3D2ZP7F.00.HELD   held by an operator
//     <spool>/tmp/          writes in progress (removed at start-up: never acknowledged)
//     <spool>/quarantine/   files found corrupt or partial at start-up, kept for a human
//     <spool>/lock          flock()ed by the one process that owns the spool
//
// A file holds a format preamble, the message's metadata, the body (written once), and then
// appended records: recipient state changes and rows of the transient-attempt history. Every
// record carries a CRC-32C, so a torn write is detected and only ever costs the torn record.
// docs/spool-format.md describes the bytes.
//
// Durability rules (what survives a crash):
// - `insert` reports success only when the file and its directory entry are on disk (write
//   to tmp/, fsync, rename, fsync the directory). Inserts made in the same loop turn share
//   those flushes (group commit): completion runs from a zero-delay timer of the Clock.
// - `update` syncs before returning when a recipient reaches a final state (delivered,
//   bounced, expired) or the message is held or released: after a crash a recipient recorded
//   delivered is never sent again. Other changes (deferrals, attempt counts, next-attempt
//   times, transient replies) and `append_attempt` rows are written at once (they survive
//   the process being killed) and synced within `SpoolOptions::deferred_sync_delay`; a power
//   loss inside that window only rolls a recipient back to its previous deferral, so it is
//   retried earlier than planned (at-least-once, never a loss).
// - `remove` unlinks at once; the directory is synced within `deferred_sync_delay` (a power
//   loss inside that window brings the message back: delivered again, never lost).
//
// Threading: single-threaded, on the clock's (loop) thread, like every Storage. The Clock must
// outlive the SpoolStorage; the SpoolStorage must outlive the Queue that uses it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

#include "mailq/clock.h"
#include "mailq/error.h"
#include "mailq/spool/durable_storage.h"

namespace mailq {
namespace spool {

/// How a batch of new files is made durable.
enum class SyncMethod : std::uint8_t {
  /// `syncfs` for batches of `syncfs_threshold` files or more, `fdatasync` per file below.
  automatic,
  /// `fdatasync` on every file: touches only our files, but costs one journal commit each.
  per_file,
  /// One `syncfs` per batch: one journal commit for the whole batch (15 to 400 times faster
  /// than `per_file` for 1000 small files on ext4, see docs/spool-format.md), but it also
  /// flushes whatever else is dirty on the same file system.
  syncfs,
};

struct SpoolOptions {
  SyncMethod sync_method = SyncMethod::automatic;
  /// Batch size from which `automatic` uses one syncfs instead of per-file fdatasync.
  std::size_t syncfs_threshold = 4;
  /// Upper bound on the time a deferral, attempt row or rename may stay unsynced (it is
  /// written at once; this is only about power loss). Zero: synced at the end of the loop
  /// turn.
  Duration deferred_sync_delay{1000};
  /// Start-up recovery verifies a body's checksum when the body was read anyway (small files
  /// are read whole). With this set it reads and verifies every body: slower, for audits.
  bool verify_bodies_on_load = false;
  /// Permissions of created files and directories (before the umask).
  unsigned file_mode = 0600;
  unsigned directory_mode = 0700;
  /// Receives every failure with a message saying what failed and where ("write
  /// tmp/01J9ZK3D2ZP7F.tmp: No space left on device"), including failures that have no
  /// caller to return to (a background sync). Runs on the loop thread. Optional.
  std::function<void(const Error&)> on_error;
};

/// Counters since construction (the `last_load_*` ones describe the last `load`).
struct SpoolStats {
  std::uint64_t inserts = 0;          ///< inserts completed durably
  std::uint64_t insert_failures = 0;  ///< inserts completed with an error
  std::uint64_t batches = 0;          ///< group commits (one per loop turn with inserts)
  std::uint64_t file_syncs = 0;       ///< fdatasync calls on message files
  std::uint64_t fs_syncs = 0;         ///< syncfs calls
  std::uint64_t dir_syncs = 0;        ///< fsync calls on directories
  std::uint64_t updates = 0;          ///< state records appended by `update`
  std::uint64_t synced_updates = 0;   ///< of which were synced before `update` returned
  std::uint64_t attempts = 0;         ///< attempt rows appended
  std::uint64_t removes = 0;          ///< files removed by `remove`
  std::uint64_t renames = 0;          ///< ZZ -> ZY -> ... and held/released renames
  std::uint64_t bytes_written = 0;

  std::uint64_t last_load_recovered = 0;    ///< messages recovered
  std::uint64_t last_load_quarantined = 0;  ///< files moved to quarantine/
  std::uint64_t last_load_tmp_removed = 0;  ///< unfinished writes removed from tmp/
  std::uint64_t last_load_repaired = 0;     ///< files whose torn last record was cut off
  std::uint64_t last_load_renamed = 0;      ///< files renamed to match their recorded state
  std::uint64_t last_load_skipped = 0;      ///< files of a newer format left in place
  double last_load_seconds = 0;
};

/// The file spool. Construct it, check `open_error()`, then `load()` (through
/// `Queue::recover`) before the first insert. The Storage operations, their errors and the
/// destructor are DurableStorage's (durable_storage.h).
class SpoolStorage final : public DurableStorage {
 public:
  /// Creates `directory` (and its parents) and the layout above when missing, and takes the
  /// spool's lock. Never throws: a failure (permissions, a read-only file system, the lock
  /// held by another process) is kept in `open_error()`.
  SpoolStorage(std::string directory, Clock& clock, SpoolOptions options = {});

  /// Constructs and returns the spool, or the open error.
  static Result<std::unique_ptr<SpoolStorage>> open(std::string directory, Clock& clock,
                                                    SpoolOptions options = {});

  // `load` (DurableStorage) scans the spool: removes tmp/ leftovers, rebuilds every message
  // with its latest valid state, cuts off a torn last record, renames files whose name lags
  // their recorded state, and moves corrupt, truncated or unknown files to quarantine/ with
  // one `problems` line each. It reads only the small parts of a file (metadata and appended
  // records), never a large body.

  SpoolStats stats() const;
  /// The file of a message relative to the spool directory, "queue/tcp_local/ZY01J9ZK3D2ZP7F.00"
  /// (with ".HELD" when held); "" when not stored.
  std::string file_of(MessageId id) const;
  /// The log's queue file field: the message's file as the event names it, in the channel
  /// directory it is in, ".HELD" when held, the attempt letter counting `attempts_before`.
  std::string locator(const MessageRecord& record, std::uint32_t attempts_before) const override;

  /// The channel directory of a route name: characters outside [A-Za-z0-9_.-] become '_',
  /// "", "." and ".." become "_", at most 200 characters. The channel of a message is the
  /// route of its first recipient.
  static std::string channel_directory(std::string_view route);

 private:
  struct Impl;
  Impl& impl() const;
};

}  // namespace spool
}  // namespace mailq
