// mailq — one SMTP session to one host: the SMTP client, its connection and its timers.
// Internal.
//
// The session moves bytes between its SmtpClient and its Connection, arms the client's
// deadline and the idle timer, and runs STARTTLS when the client asks for it. Everything else
// it hands to its owner (the Deliverer): the connect failure, the client's events, a close.
// It calls nothing else of the owner, and never into the destination run it serves, whose
// identity it only keeps.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "core/delivery/mx.h"
#include "core/queue/port.h"
#include "mailq/clock.h"
#include "mailq/hop.h"
#include "mailq/smtp_client.h"
#include "mailq/transport.h"

namespace mailq::detail {

struct DestinationRun;
class Session;

class SessionOwner {
 public:
  virtual ~SessionOwner() = default;
  /// The connection could not be made (nothing else follows).
  virtual void on_connect_failed(Session& session, std::error_code ec) = 0;
  /// An event of the client: Ready, TransactionDone, Failed or Closed.
  virtual void on_session_event(Session& session, SmtpEvent&& event) = 0;
  /// The peer closed the connection and the client reported what it meant.
  virtual void on_session_closed(Session& session) = 0;
  /// The certificate of a host an MTA-STS policy in mode testing names did not pass the
  /// check (`info.verify_problem` says why); the session goes on.
  virtual void on_certificate_check_failed(Session& session, const TlsInfo& info) {
    (void)session;
    (void)info;
  }
};

class Session final : public ConnectionHandler, public std::enable_shared_from_this<Session> {
 public:
  Session(SessionOwner& owner, Clock& clock, std::weak_ptr<DestinationRun> run, Target target,
          SmtpClientOptions options, bool plaintext_retry);
  ~Session() override;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  void connect(Transport& transport, const ConnectOptions& options);
  /// Writes what the client has to say and hands its events to the owner until it has none,
  /// then arms the client's deadline. A call from inside an event handler returns at once:
  /// the outer call writes what this one would have.
  void pump();
  /// Quits after `after` of idleness, unless a job comes first (`start_job` cancels it).
  void arm_idle(Duration after);
  /// Sends a transaction for `job` on this ready session (false: the client refused it).
  bool start_job(Job job, SmtpTransaction transaction);
  /// The session is over: timers cancelled, the connection closed silently. Returns the job
  /// that was in flight, if any.
  std::optional<Job> end();

  // ConnectionHandler
  void on_connect(const Result<void>& result) override;
  void on_read(std::string_view data) override;
  void on_tls(const Result<TlsInfo>& result) override;
  void on_close(const Result<void>& result) override;
  void on_write_progress(bool idle) override;

  /// The server, once connected (the TLS facts as the client knows them now).
  std::optional<Hop> hop() const;

  const std::weak_ptr<DestinationRun>& run() const noexcept { return run_; }
  const Target& target() const noexcept { return target_; }
  SmtpClient& client() noexcept { return client_; }
  const SmtpClient& client() const noexcept { return client_; }
  bool plaintext_retry() const noexcept { return plaintext_retry_; }

  bool dead = false;
  bool ready = false;  ///< the client said Ready once
  std::optional<Job> job;
  std::uint32_t messages = 0;  ///< transactions started on this session
  TimePoint opened{};

 private:
  void cancel_timers();
  void arm_deadline();

  SessionOwner& owner_;
  Clock& clock_;
  std::weak_ptr<DestinationRun> run_;
  Target target_;
  SmtpClient client_;
  bool plaintext_retry_;
  std::unique_ptr<Connection> conn_;
  std::optional<Hop> hop_;
  TimerId deadline_timer_ = kNoTimer;
  TimePoint deadline_at_ = TimePoint::max();
  TimerId idle_timer_ = kNoTimer;
  bool in_pump_ = false;
};

}  // namespace mailq::detail
