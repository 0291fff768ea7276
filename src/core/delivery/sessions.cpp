// The Deliverer's side of its sessions: connections that fail, sessions that become ready,
// jobs started, transactions done, sessions that fail or end.
#include <algorithm>
#include <new>

#include "core/delivery/orchestrator.h"
#include "mailq/log.h"
#include "mailq/net.h"

namespace mailq {

void Deliverer::Impl::connection_failed(Session& s, const Note& note, bool counts) {
  auto run = s.run().lock();
  stats.connection_failures++;
  if (run) {
    bool others_ready = std::any_of(run->sessions.begin(), run->sessions.end(),
                                    [&](auto& o) { return o.get() != &s && !o->dead && o->ready; });
    if (others_ready) {
      // An extra parallel session was refused: the destination is up, we were too eager.
      run->parallel_cap = std::max<std::size_t>(1, run->live_sessions() - 1);
    } else {
      // The attempt goes on with the next host; the destination is judged when it has no
      // host left (fail_run), so one working MX host gets its mail.
      run->last_failure = {true, note, Reply{}};
      run->counted_failure = run->counted_failure || counts;
      // Not connected to again before its backoff ends (a black-holed host costs one
      // connect timeout, not one per message or per destination) — unless it is only busy:
      // a session that got as far as the greeting, or another one to it that did.
      if (counts && !s.ready && config.host_backoff.count() > 0 && !has_ready_session(s.target()))
        back_off(s.target(), note);
      run->skip(s.target(), true);
      host_failed(*run, s.target(), note);
    }
  }
  end_session(s);
}

void Deliverer::Impl::on_certificate_check_failed(Session& s, const TlsInfo& info) {
  auto run = s.run().lock();
  if (!run) return;
  const detail::Target& t = s.target();
  notice(EventKind::notice, run->key(),
         "MX host " + t.host + " (" + HostPort{t.address, t.port}.to_string() +
             ") fails the certificate check of " + t.tls_tested_by + ": " +
             (info.verify_problem.empty() ? std::string("not verified") : info.verify_problem) +
             "; delivered all the same, as the policy only tests");
}

void Deliverer::Impl::host_failed(const Run& run, const detail::Target& target, const Note& note) {
  // The last host's failure is what the jobs get (their Q or R records); the ones before it
  // would leave no trace otherwise.
  if (run.out_of_targets()) return;
  notice(EventKind::notice, run.key(),
         "host " + target.host + " (" + HostPort{target.address, target.port}.to_string() +
             ") failed: " + diagnostic_lines({note}).front() + "; trying the next host");
}

bool Deliverer::Impl::has_ready_session(const detail::Target& target) const {
  for (const auto& [key, run] : runs) {
    for (const auto& o : run->sessions) {
      if (!o->dead && o->ready && o->target().address == target.address &&
          o->target().port == target.port)
        return true;
    }
  }
  return false;
}

void Deliverer::Impl::back_off(const detail::Target& target, const Note& note) {
  const TimePoint now = clock.now();
  // Ended backoffs go as new ones come: the map holds the hosts failing now, not every host
  // that ever failed.
  for (auto it = host_backoff.begin(); it != host_backoff.end();)
    it = it->second.until <= now ? host_backoff.erase(it) : std::next(it);
  host_backoff[HostPort{target.address, target.port}.to_string()] = {now + config.host_backoff,
                                                                     note};
}

const Deliverer::Impl::HostBackoff* Deliverer::Impl::backoff_of(const detail::Target& target) {
  auto it = host_backoff.find(HostPort{target.address, target.port}.to_string());
  if (it == host_backoff.end()) return nullptr;
  if (it->second.until <= clock.now()) {
    host_backoff.erase(it);
    return nullptr;
  }
  return &it->second;
}

bool Deliverer::Impl::skip_backed_off(Run& run) {
  if (host_backoff.empty() || run.out_of_targets()) return false;
  const detail::Target target = run.targets[run.next_target];
  const HostBackoff* found = backoff_of(target);
  if (!found) return false;
  const HostBackoff backoff = *found;  // a copy: the look-ups below may forget ended ones
  // Skipped only for a host of the same attempt that is not in its backoff: when every host
  // left is, the attempt connects (the destination is judged by real connections, seed 000).
  bool other = false;
  for (std::size_t i = run.next_target + 1; i < run.targets.size() && !other; ++i)
    other = backoff_of(run.targets[i]) == nullptr;
  if (!other) return false;
  const std::string key = HostPort{target.address, target.port}.to_string();
  const auto left = std::chrono::duration_cast<std::chrono::seconds>(backoff.until - clock.now());
  notice(EventKind::notice, run.key(),
         "host " + target.host + " (" + key + ") not tried: in its connection backoff for " +
             std::to_string(left.count()) + " s more after " +
             diagnostic_lines({backoff.note}).front() + "; trying the next host");
  run.skip(target, true);
  return true;
}

void Deliverer::Impl::on_connect_failed(Session& s, std::error_code ec) {
  connection_failed(s, Note::words(connect_failure_text(ec)),
                    detail::counts_against_destination(ec));
}

void Deliverer::Impl::on_session_event(Session& s, SmtpEvent&& ev) {
  if (std::holds_alternative<smtp_event::Ready>(ev)) {
    session_ready(s);
  } else if (auto* done = std::get_if<smtp_event::TransactionDone>(&ev)) {
    transaction_done(s, *done);
  } else if (auto* failed = std::get_if<smtp_event::Failed>(&ev)) {
    session_failed(s, *failed);
  } else if (std::holds_alternative<smtp_event::Closed>(ev)) {
    end_session(s);
  }
}

void Deliverer::Impl::session_ready(Session& s) {
  auto run = s.run().lock();
  s.ready = true;
  if (!host_backoff.empty())
    host_backoff.erase(HostPort{s.target().address, s.target().port}.to_string());
  if (run) {
    domains.record_success(run->key());
    run->parallel_cap = SIZE_MAX;
    if (auto it = up_timers.find(run->key()); it != up_timers.end()) {
      clock.cancel(it->second);
      up_timers.erase(it);
      notice(EventKind::destination_up, run->key(),
             "destination " + run->key() + ": a connection succeeded, no longer down");
    }
  }
  if (run && !run->jobs.empty())
    start_job(s);
  else
    idle_or_quit(s);
  if (run) open_sessions(run);
}

SmtpTransaction Deliverer::Impl::transaction_of(const Job& job, detail::JobMessage&& m) {
  SmtpTransaction tx;
  tx.reverse_path = std::move(m.record.reverse_path);
  tx.ret = m.record.ret;
  tx.envid = std::move(m.record.envid);
  // SMTPUTF8 and BODY=8BITMIME: the client finds non-ASCII addresses and 8-bit bodies
  // itself (SmtpClient::send), so the body is scanned once.
  for (auto idx : job.recipients) {
    auto& r = m.record.recipients[idx];
    tx.recipients.push_back({std::move(r.address), r.notify, std::move(r.orcpt)});
  }
  tx.body = std::make_shared<const std::string>(std::move(m.body));
  return tx;
}

void Deliverer::Impl::start_job(Session& s) {
  auto run = s.run().lock();
  if (!run || run->jobs.empty()) return;
  Job job = std::move(run->jobs.front());
  run->jobs.pop_front();
  // Unpacking the record, reading the body and building the transaction allocate: when
  // memory runs out the job goes back to the queue (deferred, not an attempt) instead of
  // being stranded in flight.
  const Reply out_of_memory(451, "4.3.0", "[internal] out of memory while preparing the message");
  SmtpTransaction tx;
  try {
    auto loaded = port.load(job);
    if (!loaded) {  // deleted meanwhile
      port.untake(job);
      kick(run);
      return;
    }
    if (!*loaded) {
      // The body is unreadable: defer with the storage error rather than lose the message.
      finish_job(job,
                 Reply(451, "4.3.0",
                       "[internal] cannot read the queued message: " + loaded->error().message),
                 {}, true);  // counted: the retry schedule spaces the next try
      kick(run);
      return;
    }
    tx = transaction_of(job, std::move(loaded->value()));
    const auto& route_signer = job.destination->route->signer;
    tx.signer = route_signer ? route_signer : config.signer;
  } catch (const std::bad_alloc&) {
    finish_job(job, out_of_memory, {Note::words(out_of_memory.to_string())}, false);
    kick(run);
    return;
  }
  stats.jobs_in_flight++;
  bool sent = false;
  try {
    sent = s.start_job(std::move(job), std::move(tx));
  } catch (const std::bad_alloc&) {
    // The client's state is unknown after a failed allocation: end the session too.
    Job j = std::move(*s.job);
    s.job.reset();
    stats.jobs_in_flight--;
    finish_job(j, out_of_memory, {Note::words(out_of_memory.to_string())}, false);
    end_session(s);
    return;
  }
  if (!sent) {
    Job j = std::move(*s.job);
    s.job.reset();
    stats.jobs_in_flight--;
    finish_job(j, Reply(554, "5.6.0", "[internal] envelope refused by the SMTP client"), {}, false);
  }
  s.pump();
}

void Deliverer::Impl::transaction_done(Session& s, const smtp_event::TransactionDone& done) {
  if (!s.job) return;
  Job job = std::move(*s.job);
  s.job.reset();
  stats.jobs_in_flight--;
  stats.transactions++;
  Hop hop = s.hop().value_or(Hop{});
  hop.intermediate = done.data_intermediate;
  if (closed_by_server(s, done)) {
    // A 421 from the server is the server closing the channel, whatever command it answered
    // (RFC 5321 §3.8): the session failed, and the job goes to the next host of this attempt;
    // when there is none, its recipients get the 421. The host did answer: not a connection
    // failure of the destination (seed 000 counts those).
    if (auto run = s.run().lock()) {
      const Reply& closing = done.replies.front();
      run->last_failure = {true, Note::of_session(hop, closing), closing};
      run->skip(s.target(), true);
      host_failed(*run, s.target(), run->last_failure.note);
      run->jobs.push_front(std::move(job));
      return;  // the client's Failed follows and ends the session; then the run goes on
    }
  }
  std::vector<RecipientOutcome> outcomes;
  // The server took the message for some recipients and refused others with 452 to RCPT
  // (its recipient limit): those are no failure, they go in the next transaction, at once.
  bool more = false;
  for (std::size_t i = 0; i < job.recipients.size(); ++i) {
    if (i < done.replies.size() && done.replies[i].code == 452 && done.data_reply.positive()) {
      more = true;
      continue;
    }
    RecipientOutcome o;
    o.index = job.recipients[i];
    o.reply = i < done.replies.size() ? done.replies[i]
                                      : replies::connection_lost("no reply for this recipient");
    o.hop = hop;
    o.relayed_without_dsn = o.reply.positive() && !s.client().capabilities().dsn;
    if (done.converted_to_7bit)
      o.notes.push_back(
          Note::words("converted to 7 bit (the server does not offer 8BITMIME, RFC 6152)"));
    o.notes.push_back(Note::of_transaction(hop, o.reply));
    outcomes.push_back(std::move(o));
  }
  port.complete(job, outcomes, true);
  auto run = s.run().lock();
  if (more && run) {
    // What is left of the message for this destination, before anything else.
    if (auto rest = port.take_again(job); rest && !rest->recipients.empty())
      run->jobs.push_front(std::move(*rest));
    else if (rest)
      port.untake(*rest);
  }
  if (!run || s.dead || !s.client().ready()) return;
  refill(*run);
  const bool too_old = clock.now() - s.opened >= config.max_connection_age;
  if (s.messages >= run->route().max_messages_per_connection || too_old || stopping) {
    s.client().quit(clock.now());
    if (!run->jobs.empty()) open_sessions(run);
    return;
  }
  if (!run->jobs.empty())
    start_job(s);
  else
    idle_or_quit(s);
}

bool Deliverer::Impl::closed_by_server(const Session& s, const smtp_event::TransactionDone& done) {
  if (!s.client().finished() || done.replies.empty()) return false;
  return std::all_of(done.replies.begin(), done.replies.end(), [&](const Reply& r) {
    return r.code == 421 && r == done.replies.front() && r.text.rfind("[internal]", 0) != 0;
  });
}

void Deliverer::Impl::session_failed(Session& s, const smtp_event::Failed& f) {
  auto run = s.run().lock();
  if (!run) {
    end_session(s);
    return;
  }
  const SessionVerdict v = detail::judge_session_failure(
      f, s.ready, s.target().tls_required_by.empty() ? run->route().tls : TlsPolicy::verify,
      s.plaintext_retry());
  const Hop hop = s.hop().value_or(Hop{});
  switch (v.action) {
    case SessionVerdict::Action::retry_plaintext: {
      // Opportunistic TLS failed: retry this host once in plaintext on a new connection and
      // remember it as broken-TLS for a while.
      const detail::Target target = s.target();
      broken_tls[target.address + ":" + std::to_string(target.port)] =
          clock.now() + config.broken_tls_memory;
      end_session(s);
      if (!stopping) open_session(run, target, true);
      return;
    }
    case SessionVerdict::Action::unreachable:
      connection_failed(s, Note::of_session(hop, v.reply), true);
      return;
    case SessionVerdict::Action::next_host:
      run->last_failure = {true, Note::of_session(hop, v.reply), v.reply};
      run->skip(s.target(), false);
      host_failed(*run, s.target(), run->last_failure.note);
      break;
    case SessionVerdict::Action::none:
      break;
  }
  end_session(s);
}

void Deliverer::Impl::idle_or_quit(Session& s) {
  if (s.dead || s.job) return;
  if (stopping) {
    s.client().quit(clock.now());
    return;
  }
  s.arm_idle(config.idle_timeout);
}

void Deliverer::Impl::end_session(Session& s) {
  if (s.dead) return;
  const std::optional<Hop> hop = s.hop();
  std::optional<Job> job = s.end();
  --sessions_open;
  auto run = s.run().lock();
  if (job) {
    // The client always reports a transaction before the session ends; this is a guard.
    stats.jobs_in_flight--;
    std::vector<RecipientOutcome> outcomes;
    for (auto idx : job->recipients) {
      RecipientOutcome o;
      o.index = idx;
      o.reply = replies::connection_lost("session ended");
      o.hop = hop;
      outcomes.push_back(std::move(o));
    }
    port.complete(*job, outcomes, true);
  }
  // Drop the session object after the current call stack unwinds.
  std::weak_ptr<Run> weak = run;
  const Session* raw = &s;
  std::weak_ptr<int> life = alive;
  clock.schedule(Duration{0}, [this, weak, raw, life] {
    if (life.expired()) return;
    auto r = weak.lock();
    if (!r) return;
    r->forget(raw);
    if (!r->jobs.empty())
      kick(r);
    else
      maybe_finish(r);
    wake_waiting();
  });
}

}  // namespace mailq
