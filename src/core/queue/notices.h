// mailq — what outcomes mean for a message: recipient changes, events, the DSNs due.
// Internal and pure: no storage, no clock, no sink.
//
// The NOTIFY rules (RFC 3461) live here: failures are reported unless NOTIFY says otherwise,
// delays when QueueConfig::delay_notice_after says so and NOTIFY allows, successes only for
// NOTIFY=SUCCESS recipients accepted by a next hop without DSN ("relayed"), and never a
// notification about a notification (the null reverse path).
#pragma once

#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/queue/port.h"
#include "mailq/dsn.h"
#include "mailq/events.h"
#include "mailq/message.h"
#include "mailq/queue.h"

namespace mailq::detail {

/// What applying a job's outcomes did to a record.
struct Applied {
  struct Touched {
    std::size_t index = 0;  ///< the recipient
    EventKind kind = EventKind::deferred;
    std::vector<std::string> diagnostic;  ///< the event's lines
    std::optional<Hop> hop;
  };
  std::vector<Touched> touched;             ///< in outcome order, one event each
  std::vector<AttemptRecord> attempt_rows;  ///< the transient attempts to record
  std::vector<std::size_t> bounced, delayed, relayed;
  std::uint64_t delivered_count = 0, bounced_count = 0, deferred_count = 0;
};

/// Applies `outcomes` to `m` at `now`: states, replies, the remote MTA, attempts and the next
/// attempt time (the retry policy with `rng`'s jitter) of each recipient not yet final.
Applied apply_outcomes(MessageRecord& m, const std::vector<RecipientOutcome>& outcomes,
                       bool attempted, TimePoint now, const QueueConfig& config,
                       std::mt19937_64& rng);

/// The notification about `rcpts` of `m` that the NOTIFY rules call for (without the original
/// message text, which the caller reads from its storage); nullopt when none is due.
/// Why a returned recipient gets no "failed" DSN, as a log line, or "" when it gets one: the
/// sender is <> (RFC 5321 section 4.5.5: no notification about a notification), or its
/// NOTIFY parameter excludes failures.
std::string no_dsn_reason(const MessageRecord& m, const RecipientRecord& r);

std::optional<DsnInput> dsn_due(const MessageRecord& m, const std::vector<std::size_t>& rcpts,
                                DsnAction action, const QueueConfig& config, TimePoint now);

/// A message event ('E', 'Q', 'D', 'R') about one recipient. `queue_file` is what the
/// storage calls the message, `destination` the recipient's destination key.
Event message_event(EventKind kind, const MessageRecord& m, const RecipientRecord& r, TimePoint now,
                    std::string queue_file, std::string destination);

}  // namespace mailq::detail
