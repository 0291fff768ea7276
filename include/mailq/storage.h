// mailq — the storage seam: where queued messages live.
//
// The Queue keeps an index in memory and asks the Storage to make every change durable.
// `MemoryStorage` (here) keeps everything in memory: nothing survives the process. The
// durable ones are in include/mailq/spool/: the segment spool (the default for a new spool)
// and the file spool (`mailq::spool::SpoolStorage`, seed 002's file per message).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "mailq/error.h"
#include "mailq/message.h"

namespace mailq {

struct RecoveryReport {
  std::size_t recovered = 0;          ///< messages loaded
  std::size_t quarantined = 0;        ///< files moved aside as corrupt or partial
  std::vector<std::string> problems;  ///< one line per quarantined file
  /// Filled by `Queue::recover`: recipients still to deliver whose stored route is not in the
  /// route table any more (a configuration changed), routed again by the table, and the names
  /// of those routes.
  std::size_t rerouted = 0;
  std::vector<std::string> gone_routes;
};

/// The whole mutable state of one recipient after a change: what an update carries for it.
struct RecipientChange {
  std::uint32_t index = 0;  ///< into MessageRecord::recipients
  RecipientState state = RecipientState::queued;
  std::uint32_t attempts = 0;
  TimePoint next_attempt{};
  Reply last_reply;
  std::string remote_mta;
  bool delay_notified = false;

  /// Recipient `index` of a record as it stands.
  static RecipientChange of(std::size_t index, const RecipientRecord& recipient);
  /// Sets the mutable fields of `recipient` (address, ORCPT, NOTIFY and route never change).
  void apply_to(RecipientRecord& recipient) const;
};

/// A change to a stored message: its attempt count and held flag after the change, and the
/// whole mutable state of each recipient the change touched (ascending index, each once).
/// Recipients not listed keep their state.
struct RecordChange {
  MessageId id;
  std::uint32_t attempts = 0;  ///< the message's attempt count after the change
  bool held = false;           ///< held after the change
  std::vector<RecipientChange> recipients;

  /// Whether a listed recipient is in a final state (delivered, bounced, expired): such a
  /// change made it final (a final recipient never changes again).
  bool makes_final() const noexcept;
};

/// Whether `change` fits a message of `recipients` recipients: every index below the count
/// (else `errc::bad_state`: the recipient list is immutable), ascending, none twice (else
/// `errc::invalid_parameter`). The error names the message and the index.
Result<void> check_change(const RecordChange& change, std::size_t recipients);
/// Applies `change` to `record` (the same message), for storages that keep whole records.
/// Changes nothing when the change does not fit (the error of `check_change`, or
/// `errc::invalid_parameter` for another message's change).
Result<void> apply_change(const RecordChange& change, MessageRecord& record);
/// The change that turns `before` into `after` (the same message): the message's attempts
/// and held flag, and every recipient whose mutable state differs (for tests and simple
/// hosts that keep the previous record).
RecordChange change_between(const MessageRecord& before, const MessageRecord& after);
/// The change that records the message's attempts and held flag and recipients `recipients`
/// (indices; sorted and made unique here) as they are in `record`.
RecordChange change_of(const MessageRecord& record, std::vector<std::size_t> recipients = {});
/// Folds `later` into `earlier`: the change whose effect is applying `earlier`, then `later`.
void merge_change(RecordChange& earlier, RecordChange later);

/// Durable home of messages. The Queue keeps its index in memory and relies on this contract;
/// `mailq/testing/storage_conformance.h` checks a storage against it (run it in your tests).
///
/// Threading and re-entrancy
/// - Single-threaded: every call is made on the loop thread (the Clock's), and every callback
///   runs there.
/// - `insert`'s `done` runs exactly once per insert: from inside `insert` (an in-memory
///   storage) or later (a spool that batches its syncs). It never runs after the storage's
///   destruction has begun: a storage destroyed with inserts pending drops their callbacks
///   (what it made durable by then may come back at the next load: unacknowledged, never
///   lost). The Queue must be destroyed before its Storage; a `done` that runs after its
///   Queue is gone is harmless (the Queue tells its own caller `errc::shutting_down`).
/// - `load`'s `each` runs once per stored message, in no particular order, after the message
///   is fully there: it may call `update`, `append_attempt`, `remove`, `read_body` and
///   `read_attempts` for the message it was given, not `insert` or `load`.
///
/// Durability (of a durable storage; MemoryStorage keeps nothing past the process)
/// - `insert`: `done(success)` only once the message and its body are durable. On failure
///   nothing is left behind: the id may be inserted again.
/// - `update`: recorded when it returns success. A change that makes a recipient final
///   (lists a recipient in a final state: a final recipient never changes again) or changes
///   `held` is durable by then (at least once: a recipient recorded delivered is never sent
///   again after a crash); any other change is durable within a bounded delay, and a power
///   loss inside it rolls the message back to its previous recorded state (retried earlier,
///   never lost).
/// - `append_attempt`: recorded when it returns; durable like a non-final update.
/// - `remove`: gone when it returns (not read, loaded or updated again); a power loss inside
///   the bounded delay may bring it back (delivered again, never lost).
/// - A failure changes nothing: a failed update leaves the previous state (in memory and on
///   disk), a failed removal the message, a failed insert nothing.
///
/// What is stored, and in what order
/// - Every field of a MessageRecord and of an AttemptRecord is given back exactly (times to
///   the nanosecond, strings byte for byte, NUL included); the body exactly as inserted. The
///   record codec (record_codec.h) does this for a storage that keeps bytes.
/// - A message has at least one recipient, and its recipient list (addresses, ORCPT,
///   NOTIFY, routes, their order) never changes after insert: an update carries the mutable
///   state of recipients by index (RecordChange, check_change).
/// - Operations take effect in the order they are made: a message can be updated once its
///   insert succeeded, the latest update of a field wins, attempt rows are read back in the
///   order they were appended.
///
/// Errors: every failure is a Result carrying words a human can act on ("write
/// /var/spool/mailq/tmp/X.tmp: No space left on device"), with one of these codes:
/// - `errc::not_found`: no such message (update, append_attempt, remove, read_body,
///   read_attempts);
/// - `errc::bad_state`: insert of an id already stored; update naming a recipient the message
///   does not have; insert into a durable storage that holds messages before its `load`
///   ran (they would be invisible to the queue: the spools refuse it);
/// - `errc::invalid_parameter`: insert of id 0 or without recipients; update listing indices
///   out of order or twice;
/// - `errc::message_too_large`: a body or record larger than the storage can hold;
/// - `errc::corrupt_record`: stored data that fails validation (a body's checksum; load sets
///   damaged data aside with a RecoveryReport problem line instead of failing);
/// - `errc::storage_failure`: the medium failed (I/O error, permissions, read-only);
/// - `errc::storage_full`: the medium has no space left (ENOSPC, EDQUOT); the spools say so,
///   a storage that cannot tell may give `errc::storage_failure`;
/// - `errc::in_use`: another process holds the storage (when it is opened).
class Storage {
 public:
  using Done = std::function<void(Result<void>)>;
  virtual ~Storage() = default;

  /// Stores a new message and its body; `done` runs exactly once, when the data is durable
  /// (success) or could not be stored.
  virtual void insert(const MessageRecord& record, std::string_view body, Done done) = 0;
  /// Records a change of a stored message: its attempts, held flag and the recipients the
  /// change lists (`check_change` says what fits).
  virtual Result<void> update(const RecordChange& change) = 0;
  /// Appends a row of the message's transient-attempt history.
  virtual Result<void> append_attempt(MessageId id, const AttemptRecord& attempt) = 0;
  /// Removes a message whose recipients are all final (or that an operator deleted).
  virtual Result<void> remove(MessageId id) = 0;

  virtual Result<std::string> read_body(MessageId id) const = 0;
  virtual Result<std::vector<AttemptRecord>> read_attempts(MessageId id) const = 0;
  /// Calls `each` for every stored message (start-up recovery). An error says the storage
  /// could not read everything (the messages given to `each` before it are queued).
  virtual Result<void> load(const std::function<void(MessageRecord&&)>& each,
                            RecoveryReport* report) = 0;
  /// What the storage calls a message, for the log's queue file line and operators:
  /// "queue/<channel>/ZZ<id>.00" by default (seed 002: the attempt letter counts the attempts
  /// made before, `attempts_before`), the route of the first recipient as the channel.
  virtual std::string locator(const MessageRecord& record, std::uint32_t attempts_before) const;
};

/// Everything in memory, nothing durable; `insert` completes synchronously (from inside
/// `insert`). Otherwise it keeps the contract above, durability aside.
class MemoryStorage final : public Storage {
 public:
  void insert(const MessageRecord& record, std::string_view body, Done done) override;
  Result<void> update(const RecordChange& change) override;
  Result<void> append_attempt(MessageId id, const AttemptRecord& attempt) override;
  Result<void> remove(MessageId id) override;
  Result<std::string> read_body(MessageId id) const override;
  Result<std::vector<AttemptRecord>> read_attempts(MessageId id) const override;
  Result<void> load(const std::function<void(MessageRecord&&)>& each,
                    RecoveryReport* report) override;

  std::size_t size() const noexcept { return items_.size(); }
  /// Test hook: make the next inserts fail with this code (empty = succeed again).
  void fail_inserts(std::error_code ec) { fail_ = ec; }
  /// Test hook: make the next `count` updates fail with `ec` and change nothing (`SIZE_MAX`:
  /// every update until this is called again with 0).
  void fail_updates(std::size_t count, std::error_code ec) { fail_updates_ = {count, ec}; }
  /// Test hook: the same for removals.
  void fail_removes(std::size_t count, std::error_code ec) { fail_removes_ = {count, ec}; }

 private:
  struct Item {
    MessageRecord record;
    std::string body;
    std::vector<AttemptRecord> attempts;
  };
  struct Failures {
    std::size_t count = 0;
    std::error_code ec;
  };
  /// The injected failure of an operation on `id`, when one is due.
  static Result<void> injected(Failures& f, const char* op, MessageId id);

  std::map<std::uint64_t, Item> items_;
  std::error_code fail_;
  Failures fail_updates_, fail_removes_;
};

}  // namespace mailq
