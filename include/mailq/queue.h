// mailq — the queue: messages, recipients, schedule, operator actions.
//
// A message has one body and many recipients; each recipient has its own state. Recipients
// are grouped by destination (the domain for an MX route, the route for a static route); one
// SMTP transaction carries all due recipients of one message for one destination. A job is
// that pair (message, destination); the queue orders jobs by due time per destination, and
// destinations by their earliest due job, so a queue cycle touches only what is due and a
// down destination costs nothing per message. A recipient's destination is fixed when its
// message enters the queue (enqueue or recovery).
//
// Threading: single-threaded, on the loop thread. The Queue must outlive the Deliverer that
// uses it; Storage, RouteTable, Clock and EventSink must outlive the Queue.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mailq/address.h"
#include "mailq/clock.h"
#include "mailq/dsn.h"
#include "mailq/error.h"
#include "mailq/events.h"
#include "mailq/message.h"
#include "mailq/route.h"
#include "mailq/storage.h"

namespace mailq {

class Queue;
namespace detail {
class QueueCore;
class DeliveryPort;
DeliveryPort& delivery_port(Queue& queue);
}  // namespace detail

/// When to try again after the n-th failed attempt.
///
/// With `schedule` empty: `floor * factor^(n-1)`, capped at `ceiling`, then spread by up to
/// ±`jitter` (a fraction) so that a backlog does not come back all at once. With `schedule`
/// set: its n-th entry (the last one repeated).
struct RetryPolicy {
  Duration floor{std::chrono::minutes(15)};
  Duration ceiling{std::chrono::hours(4)};
  double factor = 2.0;
  double jitter = 0.1;
  std::vector<Duration> schedule;

  /// Delay after the `failures`-th failed attempt (1-based). `unit` in [0,1) drives jitter.
  Duration delay(std::uint32_t failures, double unit) const;
};

struct QueueConfig {
  RetryPolicy retry;
  Duration max_lifetime{std::chrono::hours(24 * 5)};
  std::uint64_t max_message_size = 0;       ///< 0 = no limit
  std::string reporting_mta = "localhost";  ///< name in DSNs
  /// Send a "delayed" DSN (once per recipient) when a recipient is deferred after having
  /// waited this long since arrival (0 = never). Sent for NOTIFY=DELAY and for recipients
  /// without a NOTIFY parameter (RFC 3461 §4.1 leaves that to the MTA), never for
  /// NOTIFY=NEVER or a NOTIFY list without DELAY, never for a <> sender.
  Duration delay_notice_after{0};
  std::uint64_t random_seed = 0;  ///< 0 = from std::random_device
  /// Called when a message leaves the queue because every recipient reached a final state
  /// (delivered, bounced, expired; an operator's bounce too, not an operator's remove), with
  /// its final record: each recipient's state, reply and remote MTA. On the loop thread, after
  /// the message is gone from the queue (its DSN, if any, is queued); the handler may call the
  /// Queue but must not destroy it.
  std::function<void(const MessageRecord& done)> on_message_done;
  /// Where problems that cannot be handed back are reported (an EventSink that threw, a
  /// state write that failed during delivery), rate limited; default stderr. The Deliverer
  /// attached to the queue reports through the same handler.
  ErrorHandler error_handler;
  /// When set, the queue and its Deliverer report through this reporter instead (and
  /// `error_handler` is not used): the one the host's adapters report through, so that every
  /// part is rate limited together. It must outlive the queue. The Engine sets it.
  ErrorReporter* error_reporter = nullptr;
};

struct EnqueueOptions {
  std::string source_channel = "api";  ///< the E record's source channel
  bool hold = false;                   ///< enqueue held (released later by an operator)
  /// A queue id the submitter reserved and already told its client (mailq-send's maildrop):
  /// used when no message of the queue has it, none being stored does, and its time part is
  /// at most 10 minutes ahead of the queue's clock; else the message gets a new id (`done`
  /// receives the id it got). Zero: a new id.
  MessageId id{};
  /// When the message was submitted, if earlier than now (a file that waited in a maildrop):
  /// its queue lifetime counts from then. Unset or later than now: now.
  std::optional<TimePoint> arrival;
};

/// A selection for `Queue::list`.
struct QueueFilter {
  std::string destination;     ///< "" = any; else a destination key or route name
  Duration min_age{0};         ///< older than this
  std::string error_contains;  ///< "" = any; else a substring of a recipient's last reply
  std::optional<RecipientState> state;
  bool held_only = false;
};

/// Counters for status displays and metrics.
struct QueueStats {
  std::size_t messages = 0;
  std::size_t recipients_pending = 0;  ///< not final
  std::size_t held = 0;
  std::size_t destinations = 0;  ///< destinations with a pending recipient (held ones too)
  /// Messages whose latest change (or removal) the storage could not record yet: kept and
  /// written again with a backoff (1 s, doubling up to a minute), each failure reported.
  std::size_t unwritten = 0;
  std::uint64_t enqueued = 0, delivered = 0, deferred = 0, bounced = 0, expired = 0;
};

class Queue {
 public:
  Queue(Storage& storage, const RouteTable& routes, Clock& clock, EventSink* sink = nullptr);
  Queue(Storage& storage, const RouteTable& routes, Clock& clock, EventSink* sink,
        const QueueConfig& config);
  ~Queue();
  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;

  using EnqueueDone = std::function<void(Result<MessageId>)>;

  /// Validates the envelope and body, routes every recipient, stores the message and calls
  /// `done` once it is durable (when the storage is durable). Each recipient gets an 'E'
  /// event. On any error nothing is queued and `done` gets the error (`errc::invalid_address`,
  /// `errc::forbidden_character`, `errc::too_long`, `errc::no_recipients`,
  /// `errc::message_too_large`, `errc::storage_full` when the storage has no space left,
  /// `errc::storage_failure` for any other storage error, ...). `done` may run before
  /// `enqueue` returns.
  void enqueue(const Envelope& envelope, std::string body, EnqueueDone done,
               const EnqueueOptions& options = {});

  /// A fresh id for a message about to be enqueued, to name it before `enqueue` (in the
  /// Received header a listener adds): give it as `EnqueueOptions::id`. No message made after
  /// gets it.
  MessageId reserve_id();

  /// Loads what the storage holds (start-up). Recipients keep their next attempt times. The
  /// storage's error, with its words, when it could not read everything (the messages it did
  /// read are queued).
  Result<void> recover(RecoveryReport* report = nullptr);

  // --- operator actions ---
  // Each says what stopped it, in words: `errc::not_found` ("hold <id>: no such message in
  // the queue"), or the storage's error when it could not record the change (nothing changes
  // then: a hold the spool did not record would be gone after a restart).
  [[nodiscard]] Result<void> hold(MessageId id);
  [[nodiscard]] Result<void> release(MessageId id);
  /// Holds / releases every message with a pending recipient for `destination`. Returns how
  /// many changed (a message whose storage update failed is left as it was).
  std::size_t hold_destination(std::string_view destination);
  std::size_t release_destination(std::string_view destination);
  /// Deletes a message without notification. A removal the storage refused is still done in
  /// the queue, retried in the storage, and reported in the error.
  [[nodiscard]] Result<void> remove(MessageId id);
  /// Bounces every pending recipient (550 5.0.0 deleted by the operator) with a DSN; the
  /// error says when the DSN could not be queued (the recipients are bounced all the same).
  [[nodiscard]] Result<void> bounce(MessageId id,
                                    std::string_view reason = "deleted by the operator");
  /// Makes every deferred job due now (a flush) and wakes the Deliverer attached to this
  /// queue, which tries them on the next loop turn (down destinations still wait for their
  /// mark to expire). Returns how many messages were made due.
  std::size_t make_all_due();

  // --- inspection ---
  /// A copy of the message's record (the queue keeps messages packed), nullopt when the
  /// message is not queued.
  std::optional<MessageRecord> find(MessageId id) const;
  bool contains(MessageId id) const;
  std::vector<MessageId> list(const QueueFilter& filter = {}) const;
  /// Seed 000's table for a message: route, failure time, details, recipient.
  Result<std::vector<AttemptRecord>> transient_attempts(MessageId id) const;
  QueueStats stats() const;
  /// Recipients not yet final (held ones included) per destination, sorted by destination:
  /// the queue depth a metrics scrape shows. One pass over the queue.
  std::vector<std::pair<std::string, std::size_t>> depth_by_destination() const;
  /// The message body, read from the storage.
  Result<std::string> read_body(MessageId id) const;
  std::size_t size() const noexcept;
  const QueueConfig& config() const noexcept;
  const RouteTable& routes() const noexcept;
  /// The destination key of a recipient: its route's name for a static route, its
  /// lowercased domain for an MX route.
  std::string destination_of(const RecipientRecord& r) const;
  /// What the storage calls the message, as the log shows it ("queue/<channel>/ZZ<id>.00").
  std::string queue_file(const MessageRecord& m) const;

 private:
  friend detail::DeliveryPort& detail::delivery_port(Queue& queue);
  std::unique_ptr<detail::QueueCore> core_;
};

}  // namespace mailq
