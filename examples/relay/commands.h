// mailq-relay / mailq-queue — the operator verbs and the queue reports.
//
// One implementation serves both the running relay (through the control socket) and
// `mailq-queue` on a spool no relay holds. Verbs (argv[0]):
//   list [--destination D] [--min-age DUR] [--error TEXT] [--held]
//                   one line per message: id, age, size, sender, recipients, destination,
//                   last error
//   summary         a qshape-like table: destinations × age buckets (0-5m 5-10m 10-20m
//                   20-40m 40-80m 80-160m 160-320m 320m+), totals, held
//   show ID         the message, its recipients and their states, and seed 000's
//                   "Transient Delivery Attempts" table (route, failure time, details,
//                   recipient)
//   hold ID|DOMAIN, release ID|DOMAIN, delete ID, bounce ID
//   flush, reset-domains, status          (need the relay: `deliverer` set)
// Every reply text is deterministic given the clock (tests compare whole outputs).
#pragma once

#include <string>
#include <vector>

#include "mailq/deliverer.h"
#include "mailq/domain_state.h"
#include "mailq/queue.h"
#include "examples/relay/control.h"

namespace mailq::relay {

/// What the verbs act on. `domains` and `deliverer` are null when no relay runs (offline
/// mailq-queue): `flush`, `reset-domains` then fail with a clear error, `status` shows the
/// queue part only.
struct CommandContext {
  Queue& queue;
  Clock& clock;
  DomainStateTable* domains = nullptr;
  Deliverer* deliverer = nullptr;
  /// Extra lines for `status` (listener sessions, ...), appended as given.
  std::function<std::string()> extra_status;
};

/// Runs one verb. Unknown verbs and bad arguments: a failure naming what is wrong.
ControlResponse execute_command(CommandContext& ctx, const std::vector<std::string>& argv);

/// "3m", "2h", "5d" style age for the reports.
std::string format_age(Duration age);

}  // namespace mailq::relay
