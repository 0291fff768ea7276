// mailq-relay / mailq-queue — the operator verbs and the queue reports.
//
// One implementation serves both the running relay (through the control socket) and
// `mailq-queue` on a spool no relay holds. Verbs (argv[0]):
//   list [--destination D] [--min-age DUR] [--error TEXT] [--held]
//                   one line per message: id, age, size, state, sender, pending recipients,
//                   destinations, last error. TEXT may be percent-encoded ("%20" for a space:
//                   control-socket arguments cannot contain spaces; mailq-queue encodes it).
//   summary         a qshape-like table: destinations × age buckets (0-5m 5-10m 10-20m
//                   20-40m 40-80m 80-160m 160-320m 320m+), totals, held. T counts every
//                   message with a pending recipient there, the buckets those not held (by
//                   age since arrival), HELD the held ones; a message for several
//                   destinations counts in each of their rows and once in TOTAL.
//   show ID         the message, its recipients and their states, and seed 000's
//                   "Transient Delivery Attempts" table (route, failure time, details,
//                   recipient)
//   hold ID|DOMAIN, release ID|DOMAIN, delete ID, bounce ID
//   flush, reset-domains, status          (need the relay: `deliverer` set)
//   help            the verbs and their arguments
// An argument that parses as a 13-character queue id (MessageId::parse) is an id; anything
// else given to hold / release is a destination (a domain for MX routes, the route name for
// a static route).
// Every reply text is deterministic given the clock (tests compare whole outputs).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "examples/relay/control.h"
#include "mailq/deliverer.h"
#include "mailq/domain_state.h"
#include "mailq/queue.h"

namespace mailq::relay {

/// What the verbs act on. `domains` and `deliverer` are null when no relay runs (offline
/// mailq-queue): `flush`, `reset-domains` then fail with a clear error, `status` shows the
/// queue part only.
struct CommandContext {
  Queue& queue;
  Clock& clock;
  const DomainStateTable* domains = nullptr;
  Deliverer* deliverer = nullptr;
  /// Extra lines for `status` (listener sessions, ...), appended as given.
  std::function<std::string()> extra_status;
  /// Times in UTC instead of local time (tests, or a relay configured so).
  bool utc = false;
};

/// Runs one verb. Unknown verbs and bad arguments: a failure naming what is wrong.
ControlResponse execute_command(CommandContext& ctx, const std::vector<std::string>& argv);

/// "3m", "2h", "5d" style age for the reports: the largest whole unit of m, h, d ("0m"
/// under a minute, negative ages count as zero).
std::string format_age(Duration age);

/// Seed 000's failure time: "Thursday, Jan 03, 2023 03:48:55 PM CET" (local time with the
/// zone abbreviation, or "UTC" with `utc`).
std::string format_time(TimePoint time, bool utc = false);

}  // namespace mailq::relay
