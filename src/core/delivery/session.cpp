#include "core/delivery/session.h"

#include <algorithm>

namespace mailq::detail {

Session::Session(SessionOwner& owner, Clock& clock, std::weak_ptr<DestinationRun> run,
                 Target target, SmtpClientOptions options, bool plaintext_retry)
    : owner_(owner),
      clock_(clock),
      run_(std::move(run)),
      target_(std::move(target)),
      client_(std::move(options)),
      plaintext_retry_(plaintext_retry) {}

Session::~Session() {
  cancel_timers();
}

void Session::connect(Transport& transport, const ConnectOptions& options) {
  opened = clock_.now();
  conn_ = transport.connect(Endpoint{target_.address, target_.port}, options, *this);
}

void Session::cancel_timers() {
  if (deadline_timer_ != kNoTimer) clock_.cancel(deadline_timer_);
  if (idle_timer_ != kNoTimer) clock_.cancel(idle_timer_);
  deadline_timer_ = idle_timer_ = kNoTimer;
}

std::optional<Job> Session::end() {
  dead = true;
  cancel_timers();
  conn_.reset();
  std::optional<Job> j = std::move(job);
  job.reset();
  return j;
}

std::optional<Hop> Session::hop() const {
  if (!hop_) return std::nullopt;
  Hop h = *hop_;
  h.tls = client_.tls();
  return h;
}

void Session::on_connect(const Result<void>& result) {
  if (dead) return;
  if (!result) {
    owner_.on_connect_failed(*this, result.code());
    return;
  }
  hop_ = Hop{target_.host, conn_->local_endpoint(), conn_->remote_endpoint(), std::nullopt, {}};
  client_.on_connected(clock_.now());
  pump();
}

void Session::on_read(std::string_view data) {
  if (dead) return;
  client_.on_data(data, clock_.now());
  pump();
}

void Session::on_tls(const Result<TlsInfo>& result) {
  if (dead) return;
  if (!result) {
    // The transport's words when it has some ("certificate verification failed: ...").
    const Error& e = result.error();
    client_.on_tls_failed(e.message.empty() ? e.code.message() : e.message, clock_.now());
  } else {
    if (!target_.tls_tested_by.empty() && !result->verified)
      owner_.on_certificate_check_failed(*this, *result);
    if (dead) return;
    client_.on_tls_established(*result, clock_.now());
  }
  pump();
}

void Session::on_close(const Result<void>& result) {
  if (dead) return;
  client_.on_closed(
      result ? std::string("connection closed by the server") : result.code().message(),
      clock_.now());
  pump();
  if (!dead) owner_.on_session_closed(*this);
}

void Session::on_write_progress(bool idle) {
  if (dead) return;
  const TimePoint now = clock_.now();
  client_.on_output_progress(now);
  if (idle) client_.on_output_drained(now);
  pump();
}

void Session::pump() {
  if (in_pump_) return;            // the outer pump writes what this call would have written
  auto self = shared_from_this();  // events may end the session
  in_pump_ = true;
  while (!dead) {
    if (client_.has_output() && conn_) {
      conn_->write(client_.take_output());
      // Taken at once (the usual case): the final dot, if it was in there, is out now.
      if (conn_->write_idle()) client_.on_output_drained(clock_.now());
    }
    auto ev = client_.next_event();
    if (!ev) break;
    if (auto* st = std::get_if<smtp_event::StartTls>(&*ev)) {
      if (conn_) conn_->start_tls(st->options);
      continue;
    }
    owner_.on_session_event(*this, std::move(*ev));
  }
  in_pump_ = false;
  if (!dead) arm_deadline();
}

void Session::arm_deadline() {
  TimePoint d = client_.deadline();
  if (d == deadline_at_) return;
  if (deadline_timer_ != kNoTimer) clock_.cancel(deadline_timer_);
  deadline_timer_ = kNoTimer;
  deadline_at_ = d;
  if (d == TimePoint::max()) return;
  auto wait = std::chrono::duration_cast<Duration>(d - clock_.now());
  std::weak_ptr<Session> weak = shared_from_this();
  deadline_timer_ = clock_.schedule(std::max(wait, Duration{0}), [weak] {
    auto s = weak.lock();
    if (!s || s->dead) return;
    s->deadline_timer_ = kNoTimer;
    s->deadline_at_ = TimePoint::max();
    s->client_.on_timeout(s->clock_.now());
    s->pump();
  });
}

void Session::arm_idle(Duration after) {
  if (dead || job || idle_timer_ != kNoTimer) return;
  std::weak_ptr<Session> weak = shared_from_this();
  idle_timer_ = clock_.schedule(after, [weak] {
    auto p = weak.lock();
    if (!p || p->dead) return;
    p->idle_timer_ = kNoTimer;
    if (!p->job && p->client_.ready()) {
      p->client_.quit(p->clock_.now());
      p->pump();
    }
  });
}

bool Session::start_job(Job j, SmtpTransaction transaction) {
  if (idle_timer_ != kNoTimer) {
    clock_.cancel(idle_timer_);
    idle_timer_ = kNoTimer;
  }
  job = std::move(j);
  messages++;
  return client_.send(std::move(transaction), clock_.now());
}

}  // namespace mailq::detail
