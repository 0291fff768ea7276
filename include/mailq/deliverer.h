// mailq — the Deliverer: the queue cycle, destination by destination.
//
// For each due destination: consult the DomainStateTable (a down destination gets
// `451 4.4.1 [internal] connection was not attempted: domain is marked down (too many
// connection failures)` and no connection), resolve (MX or the static hosts), try hosts and
// addresses in order until one gives a usable session, run one SMTP transaction per message
// (all its due recipients for that destination), apply the per-recipient replies, reschedule,
// bounce, log. New messages are attempted at once; deferred ones at the first queue cycle at
// or after their retry time.
//
// The Deliverer takes its routes, clock, event sink and error reporting from its Queue, and
// owns the table of down destinations (hosts read it; only `reset_domains` clears it, and
// that releases the mail the marks held back).
//
// Threading and ownership: single-threaded on the clock's loop. The Queue, Resolver and
// Transport must outlive the Deliverer. Destroying it closes its connections and cancels its
// timers and queries: jobs in flight go back to the queue unattempted.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mailq/clock.h"
#include "mailq/domain_state.h"
#include "mailq/events.h"
#include "mailq/mta_sts.h"
#include "mailq/queue.h"
#include "mailq/resolver.h"
#include "mailq/signer.h"
#include "mailq/transport.h"

namespace mailq {

struct DelivererConfig {
  std::string helo_name = "localhost";  ///< default EHLO name (a route may override)
  /// Names and addresses of this host: an MX list whose best usable host is one of them is a
  /// mail loop (554 5.4.6), never delivered to ourselves.
  std::vector<std::string> local_names;
  std::vector<std::string> local_addresses;
  Duration cycle{std::chrono::minutes(15)};        ///< the queue cycle
  std::uint32_t max_connections = 200;             ///< total, all destinations
  Duration idle_timeout{std::chrono::seconds(5)};  ///< close a reusable idle connection
  Duration max_connection_age{std::chrono::minutes(5)};
  /// Remember a host whose STARTTLS handshake failed (opportunistic policy) this long and
  /// talk plaintext to it meanwhile.
  Duration broken_tls_memory{std::chrono::hours(1)};
  /// A host (address and port) that failed at the connection level (refused, unreachable,
  /// timed out, no greeting; not a session that had greeted, nor one to a host that other
  /// sessions are using) is passed over for this long by every attempt that has another
  /// host not in its backoff (a later MX, another address): a black-holed MX costs one
  /// connect timeout, not one per message or per destination. An attempt whose remaining
  /// hosts are all in their backoff connects as before (the destination is judged on real
  /// connections: seed 000's down mark). `flush()` and `reset_domains()` end every backoff.
  /// Zero: no memory.
  Duration host_backoff{std::chrono::minutes(5)};
  /// Jobs taken from one destination per cycle, so that a returning backlog is spread out.
  std::uint32_t max_jobs_per_destination_per_cycle = 10000;
  /// When a destination is marked down (seed 000) and for how long.
  DomainStateConfig domain_state;
  /// Signs every message sent (DKIM: `mailq::dkim::Signer`), over the bytes that go out,
  /// unless the route has its own `Route::signer`. Null: nothing is signed.
  std::shared_ptr<const MessageSigner> signer;
  /// Where recipient domains' MTA-STS policies come from (`mailq::uv::MtaStsSource`); null:
  /// none are honoured. Shared: it must outlive the Deliverer.
  std::shared_ptr<sts::PolicySource> mta_sts;
};

struct DelivererStats {
  std::uint64_t cycles = 0;
  std::uint64_t connections_opened = 0;
  std::uint64_t connection_failures = 0;
  std::uint64_t transactions = 0;
  std::uint64_t dns_failures = 0;
  std::uint64_t skipped_down = 0;  ///< jobs deferred because the destination was down
  std::size_t connections_open = 0;
  std::size_t jobs_in_flight = 0;
};

class Deliverer {
 public:
  Deliverer(Queue& queue, Resolver& resolver, Transport& transport);
  Deliverer(Queue& queue, Resolver& resolver, Transport& transport, const DelivererConfig& config);
  ~Deliverer();
  Deliverer(const Deliverer&) = delete;
  Deliverer& operator=(const Deliverer&) = delete;

  /// Starts the queue cycle timer and attempts what is due now.
  void start();
  /// Stops taking new work; calls `done` when in-flight transactions have finished and the
  /// connections are closed.
  void stop(std::function<void()> done = nullptr);

  /// Runs one queue cycle now: every due destination not marked down.
  void run_cycle();
  /// Makes every deferred recipient due and runs a cycle. Down destinations are still not
  /// tried before their mark expires.
  void flush();
  /// From now on, take only jobs due by `due_by` (a cycle's "now" never passes it): one pass
  /// over what was due then. Recipients deferred during the pass wait for a later run; new
  /// messages (a DSN the pass produced) are still tried. `mailq-relay --once --single-pass`.
  void limit_to_due_by(TimePoint due_by);
  /// Clears all down marks (what a restart does): messages held back only by a mark are
  /// tried at once; messages with a real failed attempt keep their retry time.
  void reset_domains();
  /// Which destinations are down, and why.
  const DomainStateTable& domains() const noexcept;

  bool idle() const noexcept;  ///< nothing in flight, nothing open
  /// Jobs taken from the queue and not yet completed: waiting for DNS or a session, or in a
  /// transaction. 0 with idle connections still open.
  std::size_t jobs() const noexcept;
  /// When the queue next has a job this Deliverer would take: the earliest due time of a
  /// destination, its down mark's end when later; max() when nothing is waiting.
  TimePoint next_due() const;
  DelivererStats stats() const;
  const DelivererConfig& config() const noexcept { return config_; }

 private:
  struct Impl;
  DelivererConfig config_;  // before impl_: Impl refers to it
  std::unique_ptr<Impl> impl_;
};

}  // namespace mailq
