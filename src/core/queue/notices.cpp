#include "core/queue/notices.h"

#include "mailq/log.h"

namespace mailq::detail {

Applied apply_outcomes(MessageRecord& m, const std::vector<RecipientOutcome>& outcomes,
                       bool attempted, TimePoint now, const QueueConfig& config,
                       std::mt19937_64& rng) {
  Applied a;
  if (attempted) m.attempts++;
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (const auto& o : outcomes) {
    if (o.index >= m.recipients.size()) continue;
    RecipientRecord& r = m.recipients[o.index];
    if (is_final(r.state)) continue;
    r.last_reply = o.reply;
    r.remote_mta = o.hop ? o.hop->host : std::string();
    Applied::Touched t;
    t.index = o.index;
    t.hop = o.hop;
    t.diagnostic = diagnostic_lines(o.notes);
    if (o.reply.positive()) {
      r.state = RecipientState::delivered;
      if (o.counts_as_attempt) r.attempts++;
      t.kind = EventKind::delivered;
      a.delivered_count++;
      if (o.relayed_without_dsn) a.relayed.push_back(o.index);
    } else if (o.reply.permanent()) {
      r.state = RecipientState::bounced;
      if (o.counts_as_attempt) r.attempts++;
      t.kind = EventKind::returned;
      a.bounced.push_back(o.index);
      a.bounced_count++;
    } else {
      r.state = RecipientState::deferred;
      t.kind = EventKind::deferred;
      a.deferred_count++;
      if (o.counts_as_attempt) {
        r.attempts++;
        r.next_attempt = now + config.retry.delay(r.attempts, unit(rng));
      }
      // A "delayed" notice, once per recipient, when it has waited long enough (real or
      // self-imposed deferral alike: the sender's mail is late either way).
      if (config.delay_notice_after > Duration{0} && !r.delay_notified &&
          now - m.arrival >= config.delay_notice_after) {
        r.delay_notified = true;
        a.delayed.push_back(o.index);
      }
      AttemptRecord row;
      row.route = r.route;
      row.time = now;
      row.reply = o.reply;
      row.recipient = r.address;
      for (const auto& line : t.diagnostic) {
        if (!row.diagnostic.empty()) row.diagnostic += "; ";
        row.diagnostic += line;
      }
      a.attempt_rows.push_back(std::move(row));
    }
    if (t.diagnostic.empty()) t.diagnostic.push_back(o.reply.to_string());
    a.touched.push_back(std::move(t));
  }
  return a;
}

std::string no_dsn_reason(const MessageRecord& m, const RecipientRecord& r) {
  if (m.reverse_path.empty())
    return "no delivery status notification: the sender is <> (RFC 5321 section 4.5.5)";
  if (r.notify & kNotifyNever) return "no delivery status notification: NOTIFY=NEVER";
  if (r.notify != kNotifyDefault && !(r.notify & kNotifyFailure))
    return "no delivery status notification: NOTIFY without FAILURE";
  return std::string();
}

std::optional<DsnInput> dsn_due(const MessageRecord& m, const std::vector<std::size_t>& rcpts,
                                DsnAction action, const QueueConfig& config, TimePoint now) {
  if (m.reverse_path.empty() || rcpts.empty()) return std::nullopt;
  DsnInput in;
  in.reporting_mta = config.reporting_mta;
  in.from_address = "MAILER-DAEMON@" + config.reporting_mta;
  in.to_address = m.reverse_path;
  in.envid = m.envid;
  in.ret = m.ret;
  in.arrival = m.arrival;
  in.now = now;
  in.original_message_id = m.message_id;
  in.boundary_seed = m.id.to_string();
  const std::uint8_t want = action == DsnAction::delayed   ? kNotifyDelay
                            : action == DsnAction::relayed ? kNotifySuccess
                                                           : kNotifyFailure;
  for (auto i : rcpts) {
    const RecipientRecord& r = m.recipients[i];
    if (r.notify & kNotifyNever) continue;
    // Without NOTIFY: failures (and delays, see QueueConfig) are reported, successes not.
    if (r.notify == kNotifyDefault ? action == DsnAction::relayed : !(r.notify & want)) continue;
    DsnRecipient d;
    d.final_recipient = r.address;
    d.original_recipient = r.orcpt;
    d.action = action;
    d.reply = r.last_reply;
    d.remote_mta = r.remote_mta;
    d.last_attempt = now;
    if (action == DsnAction::delayed) d.will_retry_until = m.arrival + config.max_lifetime;
    in.recipients.push_back(std::move(d));
  }
  if (in.recipients.empty()) return std::nullopt;
  return in;
}

Event message_event(EventKind kind, const MessageRecord& m, const RecipientRecord& r, TimePoint now,
                    std::string queue_file, std::string destination) {
  Event ev;
  ev.kind = kind;
  ev.time = now;
  ev.size = m.size;
  ev.sender = m.reverse_path;
  ev.original_recipient = r.orcpt.empty() ? "rfc822;" + r.address : r.orcpt;
  ev.recipient = r.address;
  ev.queue_file = std::move(queue_file);
  ev.message_id = m.message_id;
  ev.id = m.id;
  ev.arrival = m.arrival;
  ev.reply = r.last_reply;
  ev.destination = std::move(destination);
  if (kind == EventKind::enqueued) {
    ev.source_channel = m.source_channel;
    ev.dest_channel = r.route;
  } else {
    ev.source_channel = r.route;
  }
  return ev;
}

}  // namespace mailq::detail
