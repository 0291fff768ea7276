// mailq — the schedule: which jobs are due, destination by destination. Internal.
//
// A job is a (message, destination) pair: all pending recipients of one message for one
// destination. Per destination the schedule keeps a min-heap of (due, slot, generation);
// destinations are ordered by their earliest due job (or their not-before time, when later),
// so a queue cycle touches only what is due and a destination that may not be tried costs
// nothing per message. Withdrawing a message's jobs bumps its generation: stale heap entries
// are dropped when met, and a heap is rebuilt when they outnumber its live jobs. A message's
// jobs are a function of its recipients, its flags and its jobs in flight: every change to
// one of those is bracketed by `withdraw` (before) and `add` (after).
//
// Expiry (arrival + lifetime) is a second, lazily cleaned heap of message ids.
#pragma once

#include <optional>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/queue/store.h"
#include "mailq/time.h"

namespace mailq::detail {

/// A job taken out of the schedule: the recipients are indices into the message's record.
struct TakenJob {
  MessageId id;
  DestinationId destination = 0;
  std::vector<std::size_t> recipients;
};

class Schedule {
 public:
  explicit Schedule(MessageStore& store) : store_(store) {}

  /// Puts the slot's waiting jobs into the heaps (no-op when they are there).
  void add(SlotId s);
  /// Takes them out (no-op when they are not there).
  void withdraw(SlotId s);

  /// Destinations with a due job and no not-before time in the future, earliest first.
  std::vector<DestinationId> due(TimePoint now, std::size_t max) const;
  /// Earliest time any destination becomes due (considering not-before); max() when none.
  TimePoint next_due() const;
  /// Takes up to `max` due jobs of a destination: they are in flight until `land`.
  std::vector<TakenJob> take_due(DestinationId d, TimePoint now, std::size_t max);
  /// Takes every waiting job of a message, whatever its due time (new work).
  std::vector<TakenJob> take_message(SlotId s);
  /// Takes a message's job at one destination, if it has one waiting; its other jobs stay.
  std::optional<TakenJob> take_job(SlotId s, DestinationId d);
  /// One job of a message came back (completed or untaken). Its slot's in-flight flag is
  /// cleared when it was the last.
  void land(SlotId s, DestinationId d);
  /// A destination may not be tried before `until`; `TimePoint{}` clears it.
  void set_not_before(DestinationId d, TimePoint until);
  void clear_not_before();
  /// Jobs waiting at a destination (the live heap entries).
  std::size_t pending(DestinationId d) const;
  /// Destinations a slot has a job in flight at.
  const std::vector<DestinationId>* flying(SlotId s) const;

  // --- expiry ---
  void push_expiry(TimePoint when, MessageId id);
  /// Pops the ids whose time has come (some may be gone since).
  std::vector<MessageId> pop_expired(TimePoint now);
  /// Drops entries of messages that are gone; returns the earliest remaining time.
  TimePoint next_expiry();

 private:
  struct Waiting {
    TimePoint due;
    SlotId slot;
    std::uint32_t gen;
  };
  struct DestQueue {
    std::vector<Waiting> waiting;  // a min-heap by (due, slot); stale entries dropped lazily
    std::size_t live = 0;          // entries in `waiting` that are not stale
    TimePoint not_before{};
    TimePoint order_key = TimePoint::max();  // its key in order_, max() = not there
    bool referenced = false;                 // holds a reference on its destination while in use
  };
  using Expiry = std::pair<TimePoint, std::uint64_t>;  // (arrival + lifetime, id)

  DestQueue& queue_of(DestinationId d);
  bool stale(const Waiting& w) const { return store_.at(w.slot).gen != w.gen; }
  /// Drops stale entries at the top, reorders the destination, forgets it when empty.
  void touch(DestinationId d);
  /// The destinations a slot has a job waiting at, with its due time there.
  std::vector<std::pair<DestinationId, TimePoint>> jobs_of(SlotId s) const;

  MessageStore& store_;
  std::vector<DestQueue> queues_;  // by destination number
  std::set<std::pair<TimePoint, DestinationId>> order_;
  // Destinations with a job taken by the Deliverer, per message id (few: bounded by the
  // deliveries in progress).
  std::unordered_map<std::uint64_t, std::vector<DestinationId>> in_flight_;
  std::vector<Expiry> expiry_;  // a min-heap; entries of messages gone are dropped when met
};

}  // namespace mailq::detail
