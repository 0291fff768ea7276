// mailq — resolution: a destination's route and DNS answers -> the hosts to try, in order,
// or the reply its jobs get. Internal.
//
// Postfix's smtp_addr.c, as mailq does it: a static route's hosts in order (names looked up,
// address literals as they are); an MX route's MX records by preference with a random order
// among equals (RFC 5321 §5.1), the implicit MX when there is none, the null MX (RFC 7505),
// and the MX list cut where it reaches this host (by name or by address: a mail loop). What
// DNS gives for an MX route is the recipient domain's word: an MX host written as an address
// is not used (RFC 5321 §5.1: it names a host), and an internal address (loopback, private,
// link-local) is not dialled unless the route allows its network.
#pragma once

#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/delivery/mx.h"
#include "core/queue/destinations.h"
#include "mailq/clock.h"
#include "mailq/hop.h"
#include "mailq/mta_sts.h"
#include "mailq/reply.h"
#include "mailq/resolver.h"

namespace mailq::detail {

/// Names and addresses of this host: an MX list whose best usable host is one of them is a
/// mail loop.
struct LocalIdentity {
  std::vector<std::string> names;
  std::vector<std::string> addresses;
};

struct Resolution {
  std::vector<Target> targets;  ///< the hosts to try in order; empty when failed
  bool failed = false;
  Reply reply;               ///< when failed: what the jobs get
  Note note;                 ///< when failed: what the log shows
  bool dns_failure = false;  ///< a transient DNS failure (counted in the statistics)
  /// What the operator should hear about, failed or not: an MX host that is an address, an
  /// internal address not dialled, an MX host that is an alias.
  std::vector<std::string> warnings;
};

/// Starts resolving `destination`; `done` runs exactly once, on a later loop turn (never from
/// inside this call), unless `owner` has expired by then: then the resolution stops where it
/// is (no further queries) and `done` is not called. `seed` drives the shuffle among MX hosts
/// of equal preference.
/// `sts`, when not null, is asked for the MTA-STS policy of an MX route's domain (a route
/// with `mta_sts` on) at the same time as its MX records (mailq/mta_sts.h).
void resolve(const Destination& destination, Resolver& resolver, sts::PolicySource* sts,
             Clock& clock, const LocalIdentity& self, std::uint64_t seed,
             std::weak_ptr<const void> owner, std::function<void(Resolution)> done);

}  // namespace mailq::detail
