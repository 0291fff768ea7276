// mailq — the Queue's implementation: the rooms it joins. Internal.
//
// The store holds the messages, the schedule their jobs, the notices say what outcomes mean;
// the core keeps them consistent with the Storage (the storage first: what the storage did
// not record is not changed in memory either), emits the events, sends the DSNs, and is the
// Deliverer's port.
#pragma once

#include <functional>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/queue/notices.h"
#include "core/queue/port.h"
#include "core/queue/schedule.h"
#include "core/queue/store.h"
#include "mailq/queue.h"

namespace mailq::detail {

class QueueCore final : public DeliveryPort {
 public:
  QueueCore(Storage& storage, const RouteTable& routes, Clock& clock, EventSink* sink,
            QueueConfig config);
  ~QueueCore() override;

  // --- the host's side (Queue) ---
  MessageId reserve_id() { return new_id(); }
  void enqueue(const Envelope& envelope, std::string body, Queue::EnqueueDone done,
               const EnqueueOptions& options);
  Result<void> recover(RecoveryReport* report);
  Result<void> hold(MessageId id);
  Result<void> release(MessageId id);
  std::size_t hold_destination(std::string_view destination);
  std::size_t release_destination(std::string_view destination);
  Result<void> remove(MessageId id);
  Result<void> bounce(MessageId id, std::string_view reason);
  std::size_t make_all_due() override;
  std::optional<MessageRecord> find(MessageId id) const;
  bool contains(MessageId id) const;
  std::vector<MessageId> list(const QueueFilter& filter) const;
  QueueStats stats() const;
  std::vector<std::pair<std::string, std::size_t>> depth_by_destination() const;
  std::string destination_of(const RecipientRecord& r) const;
  std::size_t size() const noexcept { return store_.count(); }
  Storage& storage() noexcept { return storage_; }
  const QueueConfig& config() const noexcept { return config_; }
  const RouteTable& routes() const noexcept { return routes_; }

  // --- the Deliverer's side (DeliveryPort) ---
  Clock& clock() override { return clock_; }
  void emit(Event&& event) override;
  ErrorReporter& reporter() override { return *reporter_; }
  void set_listener(DeliveryListener* listener) override { listener_ = listener; }
  std::vector<std::string> due_destinations(TimePoint now, std::size_t max) const override;
  TimePoint next_due() const override { return schedule_.next_due(); }
  std::vector<Job> take_due(std::string_view destination, TimePoint now, std::size_t max) override;
  std::vector<Job> take_message(MessageId id) override;
  std::optional<Job> take_again(const Job& job) override;
  void untake(const Job& job) override;
  std::optional<Result<JobMessage>> load(const Job& job) override;
  void complete(const Job& job, const std::vector<RecipientOutcome>& outcomes,
                bool attempted) override;
  void set_not_before(std::string_view destination, TimePoint until) override;
  void clear_not_before() override { schedule_.clear_not_before(); }
  std::size_t pending_jobs(std::string_view destination) const override;
  bool in_flight(MessageId id) const override;

 private:
  struct PendingDsn {
    Envelope envelope;
    std::string body;
    MessageId about;
    bool remove_original = false;
  };

  MessageId new_id();
  /// `requested` when no message holds it and none being stored does, else a new id.
  MessageId take_id(MessageId requested);
  std::string destination_of(std::string_view address, std::string_view route) const;
  Event make_event(EventKind k, const MessageRecord& m, const RecipientRecord& r,
                   std::uint32_t attempts_before) const;
  Job job_of(TakenJob&& taken) const;
  void notify_new_work(MessageId id);
  /// Messages (held or not) with a pending recipient for a destination or route name.
  std::vector<MessageId> pending_for(std::string_view destination, bool held) const;
  /// Withdraws a message's jobs and frees it, or leaves a tombstone while a job is in flight.
  void erase_message(SlotId s);
  /// A job came back: lands it; true when the message is still there to be changed.
  bool land(const Job& job, SlotId s);
  /// Reports a failed write (the reporter and a notice event), with when it is tried again.
  void storage_trouble(const std::string& what, MessageId id, const Error& error,
                       Duration retry = Duration{0});
  /// Writes a change of a message, merged into what is still unwritten of it; a failure is
  /// kept, reported and retried (never dropped: the storage must not stay behind the queue).
  void write_change(RecordChange change);
  /// Removes a message from the storage; a failure is kept, reported and retried. The first
  /// attempt's result.
  Result<void> remove_stored(MessageId id);
  /// The unwritten change of a message merged with `change` (`change` alone when none).
  RecordChange with_unwritten(RecordChange change) const;
  /// A write of message `id` failed: keeps `change` (or the removal) and arms the retry.
  void keep_unwritten(MessageId id, const Error& error, RecordChange change, bool removal);
  void retry_unwritten(MessageId id);
  /// The storage holds what the queue holds of `id` (written, or removed): nothing to retry.
  void written(MessageId id);
  void finish_record(MessageRecord& m, const Applied& a);
  void arm_expiry_timer();
  void expire_due();
  void expire_message(SlotId s, TimePoint now);
  /// A message left the queue with every recipient final: tells the host.
  void message_done(const MessageRecord& m);
  /// Queues a DSN about `rcpts`; with `remove_original` the message's storage goes once the
  /// DSN is durable (at once when no DSN is due: that removal's error is returned).
  Result<void> send_dsn(const MessageRecord& m, const std::vector<std::size_t>& rcpts,
                        DsnAction action, bool remove_original = false);
  void queue_dsn(std::shared_ptr<PendingDsn> pending);

  Storage& storage_;
  const RouteTable& routes_;
  Clock& clock_;
  EventSink* sink_;
  QueueConfig config_;
  ErrorReporter own_reporter_;
  ErrorReporter* reporter_;  // own_reporter_ or QueueConfig::error_reporter
  std::mt19937_64 rng_;
  std::uint64_t last_id_ = 0;
  std::unordered_set<std::uint64_t> inserting_;  // ids of messages being stored
  MessageStore store_;
  Schedule schedule_;
  TimerId expiry_timer_ = kNoTimer;
  TimePoint expiry_timer_at_ = TimePoint::max();
  std::set<TimerId> dsn_timers_;  // DSNs the storage refused, tried again
  // What the storage could not record yet, per message: the merged change, or its removal.
  struct Unwritten {
    RecordChange change;
    bool removal = false;
    Duration backoff{0};    // the wait before the pending retry
    bool reported = false;  // a failure was reported in this backoff step
    TimerId timer = kNoTimer;
  };
  std::unordered_map<std::uint64_t, Unwritten> unwritten_;
  DeliveryListener* listener_ = nullptr;
  QueueStats counters_;
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);
};

}  // namespace mailq::detail
