// mailq — the Deliverer's orchestrator: the one class that joins the delivery rooms. Internal.
//
// It takes due jobs from its Queue's port, groups them into destination runs, has each run
// resolved, opens sessions within the connection limits, hands jobs to sessions, and turns
// what sessions and resolutions report into outcomes for the queue. The rooms below it hand
// back values (resolution, trouble) or call it through the owner interface (sessions); none
// calls into the queue.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/delivery/resolution.h"
#include "core/delivery/run.h"
#include "core/delivery/session.h"
#include "core/delivery/trouble.h"
#include "core/queue/port.h"
#include "mailq/deliverer.h"

namespace mailq {

using detail::DestinationRun;
using detail::Job;
using detail::RecipientOutcome;
using detail::Session;
using detail::SessionVerdict;

struct Deliverer::Impl final : detail::SessionOwner, detail::DeliveryListener {
  using Run = DestinationRun;

  detail::DeliveryPort& port;
  Resolver& resolver;
  Transport& transport;
  Clock& clock;
  const DelivererConfig& config;
  DomainStateTable domains;
  detail::LocalIdentity self;
  std::mt19937_64 rng{std::random_device{}()};
  std::unordered_map<std::string, std::shared_ptr<Run>> runs;
  std::map<std::string, TimePoint> broken_tls;  // "address:port" -> until
  // Hosts that failed at the connection level: "address:port" -> until when, and why.
  struct HostBackoff {
    TimePoint until;
    Note note;
  };
  std::map<std::string, HostBackoff> host_backoff;
  // Whether a session to the host got as far as its greeting and is still there.
  bool has_ready_session(const detail::Target& target) const;
  // Starts the host's backoff (forgetting the ended ones).
  void back_off(const detail::Target& target, const Note& note);
  // The host's backoff when one runs (an ended one is forgotten).
  const HostBackoff* backoff_of(const detail::Target& target);
  // Skips the next target of `run` when it is in its backoff and a later host of the attempt
  // is not (with a notice); true when it skipped.
  bool skip_backed_off(Run& run);
  std::map<std::string, TimerId> up_timers;  // the end of a down period, per destination
  TimerId cycle_timer = kNoTimer;
  bool started = false;
  bool stopping = false;
  TimePoint horizon = TimePoint::max();  // limit_to_due_by
  /// The time jobs must be due by to be taken now.
  TimePoint due_limit() const { return std::min(clock.now(), horizon); }
  std::function<void()> stop_done;
  std::size_t sessions_open = 0;
  std::deque<std::weak_ptr<Run>> waiting_for_slot;
  std::vector<std::shared_ptr<Run>> pending_kicks;
  DelivererStats stats;
  std::shared_ptr<int> alive = std::make_shared<int>(0);

  Impl(Queue& q, Resolver& r, Transport& t, const DelivererConfig& c)
      : port(detail::delivery_port(q)),
        resolver(r),
        transport(t),
        clock(port.clock()),
        config(c),
        domains(c.domain_state),
        self{c.local_names, c.local_addresses} {
    port.set_listener(this);
  }

  ~Impl() override;
  void notice(EventKind kind, const std::string& destination, std::string text);

  // --- scheduling ---------------------------------------------------------------------

  void arm_cycle();
  void run_cycle();
  void on_new_work(MessageId id) override;
  void on_due_now() override;
  void add_job(Job job);
  void kick_all();
  bool current(const std::shared_ptr<Run>& run) const;

  // Moves a run forward: domain state, resolution, sessions.
  void kick(const std::shared_ptr<Run>& run);
  void open_sessions(const std::shared_ptr<Run>& run);
  SmtpClientOptions client_options(const Run& run, const detail::Target& target, bool plaintext);
  void open_session(const std::shared_ptr<Run>& run, const detail::Target& target, bool plaintext);

  // --- resolution ---------------------------------------------------------------------

  void resolve(const std::shared_ptr<Run>& run);
  void resolved(const std::shared_ptr<Run>& run, detail::Resolution r);

  // --- outcomes -----------------------------------------------------------------------

  void finish_job(const Job& job, const Reply& reply, std::vector<Note> notes, bool counts);
  void defer_down(Run& run);
  void fail_run(const std::shared_ptr<Run>& run);

  // More of this destination's backlog may be due (a cycle takes at most
  // max_jobs_per_destination_per_cycle): keep the sessions busy instead of waiting for the next
  // cycle. Only due jobs come back, so this ends.
  bool refill(Run& run);
  void maybe_finish(const std::shared_ptr<Run>& run);

  // --- the down mark ------------------------------------------------------------------

  void marked_down(const std::string& key, const std::string& diagnostic);

  // --- sessions -----------------------------------------------------------------------

  void connection_failed(Session& s, const Note& note, bool counts);
  /// A host of an attempt failed and another will be tried: the log hears of it.
  void host_failed(const Run& run, const detail::Target& target, const Note& note);
  void on_connect_failed(Session& s, std::error_code ec) override;
  void on_session_closed(Session& s) override { end_session(s); }
  void on_certificate_check_failed(Session& s, const TlsInfo& info) override;

  void on_session_event(Session& s, SmtpEvent&& ev) override;
  void session_ready(Session& s);

  // The transaction of a job: its envelope and body from the queue.
  static SmtpTransaction transaction_of(const Job& job, detail::JobMessage&& m);
  void start_job(Session& s);
  void transaction_done(Session& s, const smtp_event::TransactionDone& done);
  /// The server ended the session with a 421 before the transaction finished (every
  /// recipient got that reply).
  static bool closed_by_server(const Session& s, const smtp_event::TransactionDone& done);
  void session_failed(Session& s, const smtp_event::Failed& f);
  void idle_or_quit(Session& s);
  void end_session(Session& s);
  void wake_waiting();
  void check_stopped();
  void stop(std::function<void()> done);
  void reset_domains();
};

}  // namespace mailq
