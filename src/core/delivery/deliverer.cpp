// The Deliverer: its queue cycle, destination runs, resolution and outcomes (the sessions'
// side is in sessions.cpp).
#include <algorithm>
#include <new>

#include "core/delivery/orchestrator.h"
#include "mailq/log.h"

namespace mailq {

Deliverer::Impl::~Impl() {
  if (cycle_timer != kNoTimer) clock.cancel(cycle_timer);
  for (auto& [d, t] : up_timers) clock.cancel(t);
  port.set_listener(nullptr);
  // Jobs in flight go back to the queue unattempted; connections close silently.
  for (auto& [key, run] : runs) {
    for (auto& s : run->sessions)
      if (auto job = s->end()) port.untake(*job);
    for (auto& j : run->jobs) port.untake(j);
  }
  runs.clear();
}

void Deliverer::Impl::notice(EventKind kind, const std::string& destination, std::string text) {
  Event ev;
  ev.kind = kind;
  ev.time = clock.now();
  ev.destination = destination;
  ev.diagnostic.push_back(std::move(text));
  port.emit(std::move(ev));
}

void Deliverer::Impl::arm_cycle() {
  if (cycle_timer != kNoTimer) clock.cancel(cycle_timer);
  std::weak_ptr<int> life = alive;
  cycle_timer = clock.schedule(config.cycle, [this, life] {
    if (life.expired()) return;
    cycle_timer = kNoTimer;
    run_cycle();
    arm_cycle();
  });
}

void Deliverer::Impl::run_cycle() {
  if (stopping) return;
  stats.cycles++;
  const TimePoint now = due_limit();
  for (const auto& key : port.due_destinations(now)) {
    auto jobs = port.take_due(key, now, config.max_jobs_per_destination_per_cycle);
    bool full = jobs.size() >= config.max_jobs_per_destination_per_cycle;
    for (auto& j : jobs) add_job(std::move(j));
    if (auto it = runs.find(key); it != runs.end()) it->second->more_due = full;
  }
  kick_all();
}

void Deliverer::Impl::on_new_work(MessageId id) {
  if (stopping || !started) return;
  for (auto& j : port.take_message(id)) add_job(std::move(j));
  kick_all();
}

void Deliverer::Impl::on_due_now() {
  if (started) run_cycle();
}

void Deliverer::Impl::add_job(Job job) {
  if (job.recipients.empty()) {
    port.untake(job);
    return;
  }
  const std::string& key = job.destination->key;
  auto it = runs.find(key);
  if (it == runs.end()) {
    auto run = std::make_shared<Run>();
    run->destination = job.destination;
    it = runs.emplace(key, std::move(run)).first;
  }
  it->second->jobs.push_back(std::move(job));
  pending_kicks.push_back(it->second);
}

void Deliverer::Impl::kick_all() {
  auto kicks = std::move(pending_kicks);
  pending_kicks.clear();
  for (auto& r : kicks) kick(r);
}

bool Deliverer::Impl::current(const std::shared_ptr<Run>& run) const {
  auto it = runs.find(run->key());
  return it != runs.end() && it->second == run;
}

void Deliverer::Impl::kick(const std::shared_ptr<Run>& run) {
  if (!current(run)) return;
  const TimePoint now = clock.now();
  if (!run->jobs.empty() && domains.is_down(run->key(), now) && run->live_sessions() == 0)
    defer_down(*run);
  if (run->jobs.empty()) {
    maybe_finish(run);
    return;
  }
  if (run->phase == Run::Phase::resolving) return;
  // Resolved over a minute ago and idle: resolve again, unless an attempt is under way (a host
  // failed): it goes on through its hosts and ends, instead of starting over at the first.
  if (run->phase == Run::Phase::fresh ||
      (run->live_sessions() == 0 && !run->attempt_failed() &&
       now - run->resolved_at > Duration(std::chrono::minutes(1)))) {
    resolve(run);
    return;
  }
  // Hand jobs to idle sessions first.
  for (auto& s : run->sessions) {
    if (run->jobs.empty()) break;
    if (!s->dead && s->ready && !s->job && s->client().ready()) start_job(*s);
  }
  open_sessions(run);
}

void Deliverer::Impl::open_sessions(const std::shared_ptr<Run>& run) {
  if (stopping) return;
  while (!run->jobs.empty() && run->live_sessions() < run->sessions_wanted()) {
    if (sessions_open >= config.max_connections) {
      waiting_for_slot.push_back(run);
      break;
    }
    if (skip_backed_off(*run)) continue;
    if (run->out_of_targets()) {
      if (run->live_sessions() == 0) fail_run(run);
      break;
    }
    open_session(run, run->targets[run->next_target], false);
  }
}

SmtpClientOptions Deliverer::Impl::client_options(const Run& run, const detail::Target& target,
                                                  bool plaintext) {
  const Route& route = run.route();
  SmtpClientOptions o;
  o.reports_output_progress = true;  // the Session passes the transport's write progress on
  o.helo_name = route.helo.empty() ? config.helo_name : route.helo;
  o.tls = route.tls;
  const std::string tls_key = target.address + ":" + std::to_string(target.port);
  auto bt = broken_tls.find(tls_key);
  if (bt != broken_tls.end() && bt->second <= clock.now()) {
    broken_tls.erase(bt);
    bt = broken_tls.end();
  }
  if (o.tls == TlsPolicy::opportunistic && (plaintext || bt != broken_tls.end()))
    o.tls = TlsPolicy::none;
  if (target.dane && target.tlsa.empty()) {
    // DANE with no usable TLSA record: encrypted, never plaintext (RFC 7672 section 2.2).
    if (o.tls != TlsPolicy::verify) o.tls = TlsPolicy::required;
    o.tls_required_by = target.tls_required_by;
  } else if (!target.tls_required_by.empty()) {
    // DANE (the certificate matched against TLSA records) or the recipient domain's MTA-STS
    // policy (verified by the CAs): verified TLS, never plaintext.
    o.tls = TlsPolicy::verify;
    o.tls_required_by = target.tls_required_by;
    o.dane_tlsa = target.tlsa;
    if (!target.tlsa.empty()) o.dane_domain = run.destination->domain;
  }
  if (!target.tls_tested_by.empty() && o.tls != TlsPolicy::verify && o.tls != TlsPolicy::none)
    o.tls_checked_for = target.tls_tested_by;
  o.tls_server_name = target.host;
  o.ca_file = route.ca_file;
  o.auth = route.auth;
  o.auth_over_plaintext = route.auth_over_plaintext;
  o.convert_8bit = route.convert_8bit;
  o.timeouts = route.timeouts;
  return o;
}

void Deliverer::Impl::open_session(const std::shared_ptr<Run>& run, const detail::Target& target,
                                   bool plaintext) {
  auto s = std::make_shared<Session>(*this, clock, run, target,
                                     client_options(*run, target, plaintext), plaintext);
  run->sessions.push_back(s);
  ++sessions_open;
  stats.connections_opened++;
  ConnectOptions co;
  co.connect_timeout = run->route().timeouts.connect;
  co.source_address = run->route().source_address;
  s->connect(transport, co);
}

void Deliverer::Impl::resolve(const std::shared_ptr<Run>& run) {
  run->phase = Run::Phase::resolving;
  run->targets.clear();
  run->next_target = 0;
  std::weak_ptr<Run> weak = run;
  detail::resolve(*run->destination, resolver, config.mta_sts.get(), clock, self, rng(), alive,
                  [this, weak](detail::Resolution r) {
                    if (auto run = weak.lock()) resolved(run, std::move(r));
                  });
}

void Deliverer::Impl::resolved(const std::shared_ptr<Run>& run, detail::Resolution r) {
  if (r.dns_failure) stats.dns_failures++;
  for (auto& warning : r.warnings) notice(EventKind::notice, run->key(), std::move(warning));
  if (r.failed) {
    run->phase = Run::Phase::fresh;
    auto jobs = std::move(run->jobs);
    run->jobs.clear();
    for (auto& job : jobs) finish_job(job, r.reply, {r.note}, true);
    maybe_finish(run);
    return;
  }
  run->targets = std::move(r.targets);
  run->phase = Run::Phase::resolved;
  run->resolved_at = clock.now();
  run->next_target = 0;
  run->last_failure = {};
  run->counted_failure = false;
  kick(run);
}

void Deliverer::Impl::finish_job(const Job& job, const Reply& reply, std::vector<Note> notes,
                                 bool counts) {
  std::vector<RecipientOutcome> outcomes;
  outcomes.reserve(job.recipients.size());
  for (auto idx : job.recipients) {
    RecipientOutcome o;
    o.index = idx;
    o.reply = reply;
    o.notes = notes;
    o.counts_as_attempt = counts;
    outcomes.push_back(std::move(o));
  }
  port.complete(job, outcomes, counts);
}

void Deliverer::Impl::defer_down(Run& run) {
  // Seed 000: no connection, each message queued at once with the exact 451 4.4.1 text;
  // not a delivery attempt.
  const TimePoint until = domains.down_until(run.key(), clock.now());
  auto jobs = std::move(run.jobs);
  run.jobs.clear();
  const Reply down = replies::domain_marked_down();
  for (auto& job : jobs) {
    stats.skipped_down++;
    finish_job(job, down, {Note::words(down.to_string())}, false);
  }
  port.set_not_before(run.key(), until);
}

void Deliverer::Impl::fail_run(const std::shared_ptr<Run>& run) {
  // Every target failed at the connection level (or refused to talk): the jobs waiting for
  // a connection get the last failure. A real attempt.
  const Reply reply = detail::exhausted_reply(run->last_failure);
  const Note note = detail::exhausted_note(run->last_failure, reply);
  auto jobs = std::move(run->jobs);
  run->jobs.clear();
  for (auto& job : jobs) finish_job(job, reply, {note}, true);
  run->phase = Run::Phase::fresh;  // resolve again next time
  // One failure of the destination per attempt that ran out of hosts (not one per host):
  // KumoMTA counts the same way. The jobs above got the real failure; only later messages
  // get the "domain is marked down" deferral.
  if (run->counted_failure) {
    run->counted_failure = false;
    const std::string diagnostic = diagnostic_lines({note}).front();
    if (domains.record_failure(run->key(), clock.now(), diagnostic))
      marked_down(run->key(), diagnostic);
  }
  if (domains.is_down(run->key(), clock.now()))
    port.set_not_before(run->key(), domains.down_until(run->key(), clock.now()));
  maybe_finish(run);
}

bool Deliverer::Impl::refill(Run& run) {
  // Only a cycle's backlog continues: a new message must not pull a waiting backlog along
  // (seed 000: after a down period the backlog waits for the next cycle).
  if (stopping || !started || !run.more_due || !run.jobs.empty()) return false;
  auto more = port.take_due(run.key(), due_limit(), config.max_jobs_per_destination_per_cycle);
  run.more_due = more.size() >= config.max_jobs_per_destination_per_cycle;
  for (auto& j : more) {
    if (j.recipients.empty())
      port.untake(j);
    else
      run.jobs.push_back(std::move(j));
  }
  return !run.jobs.empty();
}

void Deliverer::Impl::maybe_finish(const std::shared_ptr<Run>& run) {
  if (!run->jobs.empty()) return;
  if (refill(*run)) {
    kick(run);
    return;
  }
  for (auto& s : run->sessions)
    if (!s->dead) {
      if (s->ready && !s->job) idle_or_quit(*s);
      return;
    }
  if (current(run)) runs.erase(run->key());
  wake_waiting();
  check_stopped();
}

void Deliverer::Impl::marked_down(const std::string& key, const std::string& diagnostic) {
  notice(EventKind::destination_down, key,
         "destination " + key + " marked down: too many connection failures (" + diagnostic + ")");
  const TimePoint until = domains.down_until(key, clock.now());
  if (auto it = up_timers.find(key); it != up_timers.end()) clock.cancel(it->second);
  std::weak_ptr<int> life = alive;
  up_timers[key] =
      clock.schedule(std::chrono::duration_cast<Duration>(until - clock.now()), [this, life, key] {
        if (life.expired()) return;
        up_timers.erase(key);
        notice(EventKind::destination_up, key,
               "destination " + key + ": down period ended, the next connection is a probe");
      });
}

void Deliverer::Impl::wake_waiting() {
  while (!waiting_for_slot.empty() && sessions_open < config.max_connections) {
    auto r = waiting_for_slot.front().lock();
    waiting_for_slot.pop_front();
    if (r) kick(r);
  }
}

void Deliverer::Impl::check_stopped() {
  if (!stopping || !runs.empty() || !stop_done) return;
  auto done = std::move(stop_done);
  stop_done = nullptr;
  done();
}

void Deliverer::Impl::stop(std::function<void()> done) {
  stopping = true;
  if (cycle_timer != kNoTimer) clock.cancel(cycle_timer);
  cycle_timer = kNoTimer;
  stop_done = std::move(done);
  // Jobs not yet on a session go back to the queue; idle sessions quit.
  std::vector<std::shared_ptr<Run>> all;
  for (auto& [k, r] : runs) all.push_back(r);
  for (auto& r : all) {
    auto jobs = std::move(r->jobs);
    r->jobs.clear();
    for (auto& j : jobs) port.untake(j);
    for (auto& s : r->sessions) {
      if (!s->dead && !s->job && s->ready && s->client().ready()) {
        s->client().quit(clock.now());
        s->pump();
      }
    }
    maybe_finish(r);
  }
  check_stopped();
}

void Deliverer::Impl::reset_domains() {
  host_backoff.clear();
  for (const auto& d : domains.reset())
    notice(EventKind::destination_up, d, "destination " + d + " reset: no longer down");
  for (auto& [d, t] : up_timers) clock.cancel(t);
  up_timers.clear();
  port.clear_not_before();
  run_cycle();
}

Deliverer::Deliverer(Queue& queue, Resolver& resolver, Transport& transport)
    : Deliverer(queue, resolver, transport, DelivererConfig()) {}

Deliverer::Deliverer(Queue& queue, Resolver& resolver, Transport& transport,
                     const DelivererConfig& config)
    : config_(config), impl_(std::make_unique<Impl>(queue, resolver, transport, config_)) {}

Deliverer::~Deliverer() = default;

void Deliverer::start() {
  impl_->started = true;
  impl_->stopping = false;
  impl_->arm_cycle();
  impl_->run_cycle();
}

void Deliverer::stop(std::function<void()> done) {
  impl_->stop(std::move(done));
}

void Deliverer::run_cycle() {
  impl_->run_cycle();
}

void Deliverer::flush() {
  impl_->host_backoff.clear();  // "try now" means every host too
  impl_->port.make_all_due();
  impl_->run_cycle();
}

void Deliverer::reset_domains() {
  impl_->reset_domains();
}

const DomainStateTable& Deliverer::domains() const noexcept {
  return impl_->domains;
}

bool Deliverer::idle() const noexcept {
  return impl_->runs.empty();
}

std::size_t Deliverer::jobs() const noexcept {
  std::size_t n = impl_->stats.jobs_in_flight;
  for (const auto& [key, run] : impl_->runs) n += run->jobs.size();
  return n;
}

void Deliverer::limit_to_due_by(TimePoint due_by) {
  impl_->horizon = due_by;
}

TimePoint Deliverer::next_due() const {
  return impl_->port.next_due();
}

DelivererStats Deliverer::stats() const {
  DelivererStats s = impl_->stats;
  s.connections_open = impl_->sessions_open;
  return s;
}

}  // namespace mailq
