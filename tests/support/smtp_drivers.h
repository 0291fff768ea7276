// Connection handlers for transport tests:
//   - RecordingHandler writes down every callback as a line of text, with hooks to act in them;
//   - SmtpScript drives raw SMTP (command, expected reply code) step by step, STARTTLS included;
//   - ClientSession runs the core's SmtpClient over a real Connection and a real clock.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mailq/clock.h"
#include "mailq/smtp_client.h"
#include "mailq/transport.h"

namespace mailq {
namespace test {

/// Records "connect: <error or ok>", "read: <bytes>", "tls: ...", "close: ..." lines.
class RecordingHandler : public ConnectionHandler {
 public:
  std::unique_ptr<Connection> connection;
  std::vector<std::string> events;
  std::string received;  ///< every byte delivered by on_read
  std::error_code connect_error, tls_error, close_error;
  std::string error_text;  ///< the words of the last failure reported (connect, TLS or close)
  std::optional<TlsInfo> tls_info;
  bool connected = false, tls_done = false, closed = false;

  std::function<void()> after_connect, after_read, after_tls, after_close;

  void on_connect(const Result<void>& result) override;
  void on_read(std::string_view data) override;
  void on_tls(const Result<TlsInfo>& result) override;
  void on_close(const Result<void>& result) override;
};

/// One step of an SmtpScript: send `command` (nothing for the greeting), expect `reply`.
struct SmtpStep {
  std::string command;
  int reply = 250;
  bool start_tls_after = false;  ///< run start_tls after this reply (the 220 to STARTTLS)
};

/// Raw SMTP, independent of the core: every reply must carry the expected code.
class SmtpScript : public ConnectionHandler {
 public:
  SmtpScript(std::vector<SmtpStep> steps, TlsClientOptions tls = {});

  void start(Transport& transport, const Endpoint& remote, const ConnectOptions& options = {});
  /// All steps passed and the server closed the connection after the last one, or something
  /// went wrong (`failure` says what).
  bool finished() const noexcept { return done_; }

  std::unique_ptr<Connection> connection;
  std::vector<std::string> replies;  ///< each complete reply, lines joined with "\n"
  std::optional<TlsInfo> tls_info;
  std::string failure;  ///< empty when every step passed
  std::string tls_failure_text;

  void on_connect(const Result<void>& result) override;
  void on_read(std::string_view data) override;
  void on_tls(const Result<TlsInfo>& result) override;
  void on_close(const Result<void>& result) override;

 private:
  void fail(std::string why);
  void next();
  std::vector<SmtpStep> steps_;
  TlsClientOptions tls_;
  std::size_t step_ = 0;
  std::string buffer_;
  std::string reply_;
  bool waiting_tls_ = false;
  bool done_ = false;
};

/// A full SMTP session of the core's SmtpClient over a Connection, timers on `clock`:
/// connect, run `transaction`, QUIT. Records the events; counts start_tls calls.
class ClientSession : public ConnectionHandler {
 public:
  ClientSession(Clock& clock, SmtpClientOptions options, SmtpTransaction transaction);
  ~ClientSession() override;

  void start(Transport& transport, const Endpoint& remote, const ConnectOptions& options = {});
  bool finished() const noexcept { return finished_; }

  std::unique_ptr<Connection> connection;
  std::vector<SmtpEvent> events;
  std::optional<smtp_event::TransactionDone> done;
  std::optional<smtp_event::Failed> failed;
  std::optional<TlsInfo> tls_info;
  int start_tls_calls = 0;
  std::error_code connect_error;
  std::string tls_failure_text;

  void on_connect(const Result<void>& result) override;
  void on_read(std::string_view data) override;
  void on_tls(const Result<TlsInfo>& result) override;
  void on_close(const Result<void>& result) override;

 private:
  void pump();
  void arm_timer();
  Clock& clock_;
  SmtpClient client_;
  std::optional<SmtpTransaction> transaction_;
  TimerId timer_ = kNoTimer;
  bool finished_ = false;
};

}  // namespace test
}  // namespace mailq
