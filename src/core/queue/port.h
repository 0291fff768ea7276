// mailq — the Queue's side for the Deliverer: the one seam between them. Internal.
//
// The Deliverer sees its Queue only through this port: it takes due jobs, hands back their
// outcomes, and says when a destination may not be tried. It takes the routes (in each job),
// the clock, the error reporter and the event sink from here, so a host wires them once. The
// Queue calls back through a `DeliveryListener` the Deliverer registers: new work, a flush.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/queue/destinations.h"
#include "mailq/clock.h"
#include "mailq/events.h"
#include "mailq/hop.h"
#include "mailq/message.h"
#include "mailq/reply.h"

namespace mailq {
class Queue;
namespace detail {

/// One (message, destination) pair due for delivery.
struct Job {
  MessageId id;
  std::shared_ptr<const Destination> destination;  ///< its key, route and MX domain
  std::vector<std::size_t> recipients;             ///< indices into MessageRecord::recipients
};

/// The outcome of one recipient of a job.
struct RecipientOutcome {
  std::size_t index = 0;
  Reply reply;
  /// The server that gave `reply`, when one did (its host becomes the DSN's Remote-MTA).
  std::optional<Hop> hop;
  std::vector<Note> notes;  ///< what the log and the transient-attempt row show
  /// false for deferrals the engine imposed on itself (destination down, throttling): they
  /// are recorded and logged but are not delivery attempts.
  bool counts_as_attempt = true;
  /// Accepted by a next hop that does not offer DSN: NOTIFY=SUCCESS could not be passed on,
  /// so the queue sends the sender a "relayed" notice itself (RFC 3461).
  bool relayed_without_dsn = false;
};

/// What a job needs to be sent: the message's envelope data and its body.
struct JobMessage {
  MessageRecord record;
  std::string body;
};

class DeliveryListener {
 public:
  virtual ~DeliveryListener() = default;
  /// A message was enqueued or released (called on a later loop turn, never from inside the
  /// Queue call that made it).
  virtual void on_new_work(MessageId id) = 0;
  /// Deferred jobs were made due by a flush (on a later loop turn).
  virtual void on_due_now() = 0;
};

class DeliveryPort {
 public:
  virtual ~DeliveryPort() = default;

  virtual Clock& clock() = 0;
  /// Emits an engine event (destination down / up, notices) through the Queue's sink.
  virtual void emit(Event&& event) = 0;
  virtual ErrorReporter& reporter() = 0;
  /// At most one listener; null detaches it.
  virtual void set_listener(DeliveryListener* listener) = 0;

  /// Destination keys with a due job and no not-before time in the future, earliest first.
  virtual std::vector<std::string> due_destinations(TimePoint now,
                                                    std::size_t max = SIZE_MAX) const = 0;
  /// Earliest time any destination becomes due (considering not-before); max() when none.
  virtual TimePoint next_due() const = 0;
  /// Takes up to `max` due jobs of a destination (they are in flight until `complete`).
  virtual std::vector<Job> take_due(std::string_view destination, TimePoint now,
                                    std::size_t max) = 0;
  /// Takes the jobs of one message (new work), whatever their due time, if not in flight.
  virtual std::vector<Job> take_message(MessageId id) = 0;
  /// Takes the message's job at the same destination again, if recipients of it are still
  /// pending there (what a server's recipient limit left for the next transaction).
  virtual std::optional<Job> take_again(const Job& job) = 0;
  /// Returns a job not attempted at all (put back unchanged).
  virtual void untake(const Job& job) = 0;
  /// The record and body of a job's message; nullopt when it was removed meanwhile, an error
  /// when the body cannot be read. May throw std::bad_alloc.
  virtual std::optional<Result<JobMessage>> load(const Job& job) = 0;
  /// Applies the outcomes of a job: delivered / deferred (next attempt by the retry policy)
  /// / bounced (DSN) per recipient; records transient attempts; emits Q/D/R events; removes
  /// the message when every recipient is final. `attempted` says whether this was a real
  /// attempt (drives the ZZ/ZY/ZX counter).
  virtual void complete(const Job& job, const std::vector<RecipientOutcome>& outcomes,
                        bool attempted) = 0;
  /// A destination may not be tried before `until` (down); `TimePoint{}` clears it.
  virtual void set_not_before(std::string_view destination, TimePoint until) = 0;
  /// Clears every destination's not-before time.
  virtual void clear_not_before() = 0;
  /// Makes every deferred job due now (a flush); returns how many messages it changed.
  virtual std::size_t make_all_due() = 0;
  virtual std::size_t pending_jobs(std::string_view destination) const = 0;
  virtual bool in_flight(MessageId id) const = 0;
};

/// The port of a Queue.
DeliveryPort& delivery_port(Queue& queue);

}  // namespace detail
}  // namespace mailq
