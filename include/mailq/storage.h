// mailq — the storage seam: where queued messages live.
//
// The Queue keeps an index in memory and asks the Storage to make every change durable.
// `MemoryStorage` (here) keeps everything in memory: nothing survives the process. The
// durable default is the file spool (`mailq::spool::SpoolStorage`).
#pragma once

#include <functional>
#include <map>
#include <string>
#include <system_error>
#include <vector>

#include "mailq/error.h"
#include "mailq/message.h"

namespace mailq {

struct RecoveryReport {
  std::size_t recovered = 0;          ///< messages loaded
  std::size_t quarantined = 0;        ///< files moved aside as corrupt or partial
  std::vector<std::string> problems;  ///< one line per quarantined file
};

/// Durable home of messages, single-threaded (loop thread).
class Storage {
 public:
  using Done = std::function<void(std::error_code)>;
  virtual ~Storage() = default;

  /// Stores a new message and its body. `done` runs exactly once, when the data is durable
  /// (empty code) or could not be stored (nothing is left behind then). It may run before
  /// `insert` returns (in-memory storage) or later (a spool batching fsyncs).
  virtual void insert(const MessageRecord& record, std::string_view body, Done done) = 0;
  /// Records the new state of a stored message (recipients, attempts, held).
  virtual std::error_code update(const MessageRecord& record) = 0;
  /// Appends a row of the message's transient-attempt history.
  virtual std::error_code append_attempt(MessageId id, const AttemptRecord& attempt) = 0;
  /// Removes a message whose recipients are all final (or that an operator deleted).
  virtual std::error_code remove(MessageId id) = 0;

  virtual Result<std::string> read_body(MessageId id) const = 0;
  virtual Result<std::vector<AttemptRecord>> read_attempts(MessageId id) const = 0;
  /// Calls `each` for every stored message (start-up recovery).
  virtual std::error_code load(const std::function<void(MessageRecord&&)>& each,
                               RecoveryReport* report) = 0;
  /// What the storage calls a message, for the log's queue file line and operators:
  /// "queue/<channel>/ZZ<id>.00" by default (seed 002: the attempt letter counts the attempts
  /// made before, `attempts_before`), the route of the first recipient as the channel.
  virtual std::string locator(const MessageRecord& record, std::uint32_t attempts_before) const;
  /// What the last failure was, in words ("write /var/spool/mailq/tmp/X.tmp: No space left on
  /// device"), for the errors the queue reports; empty when the storage keeps no such text.
  virtual std::string last_error_text() const { return {}; }
};

/// Everything in memory; `insert` completes synchronously.
class MemoryStorage final : public Storage {
 public:
  void insert(const MessageRecord& record, std::string_view body, Done done) override;
  std::error_code update(const MessageRecord& record) override;
  std::error_code append_attempt(MessageId id, const AttemptRecord& attempt) override;
  std::error_code remove(MessageId id) override;
  Result<std::string> read_body(MessageId id) const override;
  Result<std::vector<AttemptRecord>> read_attempts(MessageId id) const override;
  std::error_code load(const std::function<void(MessageRecord&&)>& each,
                       RecoveryReport* report) override;

  std::size_t size() const noexcept { return items_.size(); }
  /// Test hook: make the next inserts fail with this code (empty = succeed again).
  void fail_inserts(std::error_code ec) { fail_ = ec; }

 private:
  struct Item {
    MessageRecord record;
    std::string body;
    std::vector<AttemptRecord> attempts;
  };
  std::map<std::uint64_t, Item> items_;
  std::error_code fail_;
};

}  // namespace mailq
