// What both durable spools share (src/spool/spool_storage.cpp, segment_storage.cpp): the
// Storage operations each implements, and the parts they have in common — opening and locking
// the directory, failures reported with their text, the group-commit and deferred-sync timers,
// running insert callbacks. `DurableStorage` (include/mailq/spool/durable_storage.h) forwards
// to it. Internal to the spool.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "mailq/clock.h"
#include "mailq/error.h"
#include "mailq/storage.h"
#include "spool/file_io.h"

namespace mailq {
namespace spool {
namespace detail {

/// The options both spools have.
struct BaseOptions {
  Duration deferred_sync_delay{1000};
  unsigned file_mode = 0600;
  unsigned directory_mode = 0700;
  std::function<void(const Error&)> on_error;
};

/// The options both spools have, out of either spool's own.
template <class Options>
BaseOptions base_options_of(const Options& o) {
  return {o.deferred_sync_delay, o.file_mode, o.directory_mode, o.on_error};
}

/// An insert waiting for its group commit (a spool may add its own fields).
template <class Entry>
struct PendingInsert {
  MessageId id;
  Entry entry;  ///< its index entry, indexed once durable
  Storage::Done done;
  Result<void> result;
};

/// The other layout, which a spool refuses to open over (its messages would be ignored).
struct OtherLayout {
  const char* kind;    ///< "segment" / "file"
  const char* sub;     ///< the subdirectory holding it: "segments" / "queue"
  const char* layout;  ///< its Layout name: "segments" / "files"
  int (*found)(int spool_fd, bool* found);
};

class SpoolBase {
 public:
  SpoolBase(std::string directory, Clock& clock, BaseOptions options);
  virtual ~SpoolBase();
  SpoolBase(const SpoolBase&) = delete;
  SpoolBase& operator=(const SpoolBase&) = delete;

  // --- what each spool implements ---
  virtual void insert(const MessageRecord& record, std::string_view body, Storage::Done done) = 0;
  virtual Result<void> update(const RecordChange& change) = 0;
  virtual Result<void> append_attempt(MessageId id, const AttemptRecord& attempt) = 0;
  virtual Result<void> remove(MessageId id) = 0;
  virtual Result<std::string> read_body(MessageId id) = 0;
  virtual Result<std::vector<AttemptRecord>> read_attempts(MessageId id) = 0;
  virtual Result<void> load(const std::function<void(MessageRecord&&)>& each,
                            RecoveryReport* report) = 0;
  /// The group commit: makes the pending inserts durable, then (when `run_callbacks`) runs
  /// their callbacks.
  virtual void flush_batch(bool run_callbacks) = 0;
  /// Syncs what was written and left for later (deferred_sync_delay).
  virtual void sync_lazy() = 0;
  virtual std::size_t size() const noexcept = 0;
  virtual std::size_t pending_inserts() const noexcept = 0;
  /// Cancels every timer (destruction).
  virtual void cancel_timers();

  // --- shared ---
  bool ready() const noexcept { return !open_error.code; }
  /// Whether `load` ran, and whether the spool held anything when it was opened: an insert
  /// into a spool that holds messages before `load` is refused (they would be invisible to
  /// the queue, never delivered and never expired).
  bool loaded = false;
  bool held_at_open = false;
  /// Completes the pending batch and syncs everything (DurableStorage::flush).
  void flush();
  /// Makes pending inserts durable without their callbacks and syncs (destruction).
  void shutdown();

  /// Reports a failure to `on_error` and returns it.
  Error fail(std::error_code code, std::string message);
  Error fail(errc code, std::string message) {
    return fail(make_error_code(code), std::move(message));
  }
  /// A failed system call: "<what> <dir>/<where>: <errno text>", storage_failure.
  Error sys_fail(std::string_view what, std::string_view where, int err);
  /// What every operation of a spool that did not open returns: storage_failure with the open
  /// error's text.
  Error not_ready() const { return Error(errc::storage_failure, open_error.message); }
  /// A damaged or unreadable part found by `load`: a `problems` line and an on_error report.
  void problem(RecoveryReport* report, std::string line);
  /// The checks every insert passes: an id, a recipient, not stored yet (`known`: stored or
  /// pending).
  Result<void> check_insert(const MessageRecord& record, bool known);
  /// An operation on a message the spool does not hold: "<op>: no message <id>", not_found.
  Error no_message(std::string_view op, MessageId id);
  /// The checks an update passes first: the message is stored (`recipients` is its recipient
  /// count, null when it is not) and the change fits it (check_change).
  Result<void> check_update(const RecordChange& change, const std::uint32_t* recipients);

  /// Creates the directory (and its parents) and `subdirs` in it, takes the lock, refuses a
  /// directory holding `other`; the subdirectories' descriptors go to `fds` (in order), and
  /// `dir_syncs` counts the sync of a directory that gained one. On failure `open_error` says
  /// why (`errc::in_use` when another process holds the lock) and false is returned.
  /// Creates and locks the spool directory and its `subdirs`, refuses one holding the `other`
  /// layout, and sets `held_at_open` from `own` (what the spool's own layout finds).
  bool open_directory(std::initializer_list<const char*> subdirs, const OtherLayout& other,
                      int (*own)(int spool_fd, bool* found), std::vector<Fd>* fds,
                      std::uint64_t* dir_syncs);

  void schedule_batch();
  void schedule_lazy();
  /// Cancels `timer` when it is set.
  void stop_timer(TimerId& timer);
  /// Runs an insert's callback with its result; an exception it throws is reported, never
  /// propagated through the storage.
  void complete_insert(Storage::Done& done, Result<void> result);

  std::string dir;
  Clock& clock;
  BaseOptions base_options;
  Error open_error;
  Fd spool_fd, lock_fd;
  TimerId batch_timer = kNoTimer;
  TimerId lazy_timer = kNoTimer;
};

/// The static `open` of a spool class: constructs it and returns it, or its open error.
template <class Spool, class Options>
Result<std::unique_ptr<Spool>> open_spool_as(std::string directory, Clock& clock, Options options) {
  auto s = std::make_unique<Spool>(std::move(directory), clock, std::move(options));
  if (s->open_error().code) return s->open_error();
  return s;
}

}  // namespace detail
}  // namespace spool
}  // namespace mailq
