// mailq — the queue: messages, recipients, schedule, operator actions.
//
// A message has one body and many recipients; each recipient has its own state. Recipients
// are grouped by destination (the domain for an MX route, the route for a static route); one
// SMTP transaction carries all due recipients of one message for one destination. A job is
// that pair (message, destination); the queue orders jobs by due time per destination, and
// destinations by their earliest due job, so a queue cycle touches only what is due and a
// down destination costs nothing per message.
//
// Threading: single-threaded, on the loop thread. The Queue must outlive the Deliverer that
// uses it; Storage, RouteTable, Clock and EventSink must outlive the Queue.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
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

namespace detail {
class SinkGuard;
}

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
  /// Where an exception thrown by the EventSink is reported (rate limited); default stderr.
  ErrorHandler error_handler;
};

struct EnqueueOptions {
  std::string source_channel = "api";  ///< the E record's source channel
  bool hold = false;                   ///< enqueue held (released later by an operator)
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
  std::uint64_t enqueued = 0, delivered = 0, deferred = 0, bounced = 0, expired = 0;
};

/// One (message, destination) pair due for delivery, handed to the Deliverer.
struct Job {
  MessageId id;
  std::string destination;
  std::vector<std::size_t> recipients;  ///< indices into MessageRecord::recipients
};

/// The outcome of one recipient of a job.
struct RecipientOutcome {
  std::size_t index = 0;
  Reply reply;
  std::string remote;                   ///< "dns;mx.example.org (TCP|127.0.0.1|40312|127.0.0.1|25)"
  std::vector<std::string> diagnostic;  ///< log lines
  /// false for deferrals the engine imposed on itself (destination down, throttling): they
  /// are recorded and logged but are not delivery attempts.
  bool counts_as_attempt = true;
  /// Accepted by a next hop that does not offer DSN: NOTIFY=SUCCESS could not be passed on,
  /// so the queue sends the sender a "relayed" notice itself (RFC 3461).
  bool relayed_without_dsn = false;
};

class Queue {
 public:
  Queue(Storage& storage, const RouteTable& routes, Clock& clock, EventSink* sink = nullptr,
        QueueConfig config = {});
  ~Queue();
  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;

  using EnqueueDone = std::function<void(Result<MessageId>)>;

  /// Validates the envelope and body, routes every recipient, stores the message and calls
  /// `done` once it is durable (when the storage is durable). Each recipient gets an 'E'
  /// event. On any error nothing is queued and `done` gets the error (`errc::invalid_address`,
  /// `errc::forbidden_character`, `errc::too_long`, `errc::no_recipients`,
  /// `errc::message_too_large`, `errc::storage_failure`, ...). `done` may run before
  /// `enqueue` returns.
  void enqueue(const Envelope& envelope, std::string body, EnqueueDone done,
               const EnqueueOptions& options = {});

  /// Loads what the storage holds (start-up). Recipients keep their next attempt times.
  std::error_code recover(RecoveryReport* report = nullptr);

  // --- operator actions ---
  std::error_code hold(MessageId id);
  std::error_code release(MessageId id);
  /// Holds / releases every message with a pending recipient for `destination`. Returns how
  /// many changed (a message whose storage update failed is left as it was).
  std::size_t hold_destination(std::string_view destination);
  std::size_t release_destination(std::string_view destination);
  /// Deletes a message without notification.
  std::error_code remove(MessageId id);
  /// Bounces every pending recipient (550 5.0.0 deleted by the operator) with a DSN.
  std::error_code bounce(MessageId id, std::string_view reason = "deleted by the operator");
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
  Result<std::string> read_body(MessageId id) const { return storage_.read_body(id); }
  std::size_t size() const noexcept;
  const QueueConfig& config() const noexcept { return config_; }
  std::string destination_of(const RecipientRecord& r) const;
  /// The queue file name the log shows: "queue/<channel>/ZZ<id>.00".
  std::string queue_file(const MessageRecord& m) const;

  // --- the Deliverer's side ---
  /// Called (through a zero-delay timer) whenever a message is enqueued or released.
  void set_new_work_listener(std::function<void(MessageId)> fn) { listener_ = std::move(fn); }
  /// Called (through a zero-delay timer) when make_all_due made jobs due: a flush.
  void set_due_now_listener(std::function<void()> fn) { due_now_listener_ = std::move(fn); }
  /// Destinations with a due job and no `not_before` in the future, earliest first.
  std::vector<std::string> due_destinations(TimePoint now, std::size_t max = SIZE_MAX) const;
  /// Earliest time any destination becomes due (considering not_before); max() when none.
  TimePoint next_due() const;
  /// Takes up to `max` due jobs of a destination (they are in flight until `complete`).
  std::vector<Job> take_due(std::string_view destination, TimePoint now, std::size_t max);
  /// Takes the jobs of one message (new work), whatever their due time, if not in flight.
  std::vector<Job> take_message(MessageId id);
  /// Returns jobs not attempted at all (put back unchanged).
  void untake(const Job& job);
  /// Applies the outcomes of a job: delivered / deferred (next attempt by the retry policy)
  /// / bounced (DSN) per recipient; records transient attempts; emits Q/D/R events;
  /// removes the message when every recipient is final. `attempted` says whether this was
  /// a real attempt (drives the ZZ/ZY/ZX counter).
  void complete(const Job& job, const std::vector<RecipientOutcome>& outcomes, bool attempted);
  /// A destination may not be tried before `until` (down); `TimePoint{}` clears it.
  void set_not_before(std::string_view destination, TimePoint until);
  /// Clears every destination's not_before (reset of the domain state).
  void clear_not_before();
  std::size_t pending_jobs(std::string_view destination) const;
  bool in_flight(MessageId id) const;

 private:
  struct Slot;
  struct DestQueue;
  struct Store;  // the messages and the schedule (queue.cpp)

  DestQueue& dest(const std::string& key);
  /// Messages (held or not) with a pending recipient for a destination or route name.
  std::vector<MessageId> pending_for(std::string_view destination, bool held) const;
  /// The destinations a message has a job waiting at, with its due time there: a function of
  /// its recipients, its held/removed flags and its jobs in flight. Every change to one of
  /// those is bracketed by unschedule_jobs (before) and schedule_jobs (after).
  std::vector<std::pair<std::string, TimePoint>> jobs_of(std::uint32_t slot) const;
  void schedule_jobs(std::uint32_t slot);
  void unschedule_jobs(std::uint32_t slot);
  void touch_destination(DestQueue& d);
  std::string destination_of(std::string_view address, std::string_view route) const;
  void emit(Event&& e);
  std::uint32_t find_slot(MessageId id) const;
  std::uint32_t add_slot(const MessageRecord& m);
  void free_slot(std::uint32_t slot);
  MessageRecord unpack(std::uint32_t slot) const;
  void repack(std::uint32_t slot, const MessageRecord& m);
  void erase_message(std::uint32_t slot);
  void expire_due();
  void expire_message(std::uint32_t slot, TimePoint now);
  void arm_expiry_timer();
  /// Queues a DSN about `rcpts`; with `remove_original` the message's storage goes once the
  /// DSN is durable (at once when no DSN is due: that removal's error is returned).
  std::error_code send_dsn(const MessageRecord& m, const std::vector<std::size_t>& rcpts,
                           DsnAction action, bool remove_original = false);
  struct PendingDsn {
    Envelope envelope;
    std::string body;
    MessageId about;
    bool remove_original = false;
  };
  void queue_dsn(std::shared_ptr<PendingDsn> pending);
  Event make_event(EventKind k, const MessageRecord& m, const RecipientRecord& r,
                   std::uint32_t attempts_before) const;
  void notify_new_work(MessageId id);
  MessageId new_id();

  Storage& storage_;
  const RouteTable& routes_;
  Clock& clock_;
  EventSink* sink_;
  QueueConfig config_;
  std::mt19937_64 rng_;
  std::uint64_t last_id_ = 0;
  std::unique_ptr<Store> st_;
  TimerId expiry_timer_ = kNoTimer;
  std::set<TimerId> dsn_timers_;  // DSNs the storage refused, tried again
  TimePoint expiry_timer_at_ = TimePoint::max();
  std::function<void(MessageId)> listener_;
  std::function<void()> due_now_listener_;
  QueueStats counters_;
  std::unique_ptr<detail::SinkGuard> sink_guard_;
};

}  // namespace mailq
