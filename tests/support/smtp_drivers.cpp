#include "support/smtp_drivers.h"

#include <type_traits>

namespace mailq {
namespace test {

namespace {
std::string describe(std::error_code ec) {
  return ec ? ec.message() : "ok";
}
}  // namespace

// --- RecordingHandler ----------------------------------------------------------------------

void RecordingHandler::on_connect(const Result<void>& result) {
  const std::error_code ec = result.code();
  events.push_back("connect: " + describe(ec));
  connect_error = ec;
  if (!result) error_text = result.error().message;
  connected = !ec;
  if (after_connect) after_connect();
}

void RecordingHandler::on_read(std::string_view data) {
  events.push_back("read: " + std::string(data));
  received.append(data);
  if (after_read) after_read();
}

void RecordingHandler::on_tls(const Result<TlsInfo>& result) {
  const std::error_code ec = result ? std::error_code() : result.error().code;
  events.push_back("tls: " + describe(ec));
  tls_error = ec;
  tls_done = true;
  if (result)
    tls_info = *result;
  else
    error_text = result.error().message;
  if (after_tls) after_tls();
}

void RecordingHandler::on_close(const Result<void>& result) {
  const std::error_code ec = result.code();
  events.push_back("close: " + describe(ec));
  close_error = ec;
  if (!result) error_text = result.error().message;
  closed = true;
  if (after_close) after_close();
}

// --- SmtpScript ----------------------------------------------------------------------------

SmtpScript::SmtpScript(std::vector<SmtpStep> steps, TlsClientOptions tls)
    : steps_(std::move(steps)), tls_(std::move(tls)) {}

void SmtpScript::start(Transport& transport, const Endpoint& remote,
                       const ConnectOptions& options) {
  connection = transport.connect(remote, options, *this);
}

void SmtpScript::fail(std::string why) {
  if (done_) return;
  failure = std::move(why);
  done_ = true;
  connection.reset();
}

void SmtpScript::on_connect(const Result<void>& result) {
  if (!result) fail("connect: " + result.code().message());
  // The first step is the greeting: nothing to send.
}

void SmtpScript::on_read(std::string_view data) {
  if (done_) return;
  if (waiting_tls_) {
    fail("plaintext received after the 220 to STARTTLS: " + std::string(data));
    return;
  }
  buffer_.append(data);
  for (;;) {
    const auto eol = buffer_.find("\r\n");
    if (eol == std::string::npos) return;
    const std::string line = buffer_.substr(0, eol);
    buffer_.erase(0, eol + 2);
    if (!reply_.empty()) reply_ += "\n";
    reply_ += line;
    if (line.size() >= 4 && line[3] == '-') continue;  // a continuation line
    const std::string reply = std::move(reply_);
    reply_.clear();
    replies.push_back(reply);
    if (step_ >= steps_.size()) {
      fail("unexpected reply after the last step: " + reply);
      return;
    }
    const SmtpStep& step = steps_[step_];
    if (reply.size() < 3 || std::stoi(reply.substr(0, 3)) != step.reply) {
      fail("step " + std::to_string(step_) + " (" + step.command.substr(0, 40) + "): expected " +
           std::to_string(step.reply) + ", got: " + reply);
      return;
    }
    if (step.start_tls_after) {
      if (!buffer_.empty()) {
        fail("plaintext after the 220 to STARTTLS: " + buffer_);
        return;
      }
      waiting_tls_ = true;
      connection->start_tls(tls_);
      return;
    }
    next();
    if (done_) return;
  }
}

void SmtpScript::next() {
  ++step_;
  if (step_ < steps_.size()) connection->write(steps_[step_].command);
  // After the last step (QUIT) the server closes: on_close finishes the script.
}

void SmtpScript::on_tls(const Result<TlsInfo>& result) {
  waiting_tls_ = false;
  if (!result) {
    tls_failure_text = result.error().message;
    fail("tls: " + result.error().code.message() + ": " + tls_failure_text);
    return;
  }
  tls_info = *result;
  next();
}

void SmtpScript::on_close(const Result<void>& result) {
  const std::error_code ec = result.code();
  if (done_) return;
  if (step_ + 1 < steps_.size() || (step_ + 1 == steps_.size() && replies.size() < steps_.size())) {
    fail("connection closed at step " + std::to_string(step_) + ": " + describe(ec));
    return;
  }
  if (ec) {
    fail("connection ended with an error after QUIT: " + ec.message());
    return;
  }
  done_ = true;
  connection.reset();
}

// --- ClientSession -------------------------------------------------------------------------

ClientSession::ClientSession(Clock& clock, SmtpClientOptions options, SmtpTransaction transaction)
    : clock_(clock), client_(std::move(options)), transaction_(std::move(transaction)) {}

ClientSession::~ClientSession() {
  if (timer_ != kNoTimer) clock_.cancel(timer_);
}

void ClientSession::start(Transport& transport, const Endpoint& remote,
                          const ConnectOptions& options) {
  connection = transport.connect(remote, options, *this);
}

void ClientSession::on_connect(const Result<void>& result) {
  if (!result) {
    connect_error = result.code();
    finished_ = true;
    connection.reset();
    return;
  }
  client_.on_connected(clock_.now());
  pump();
}

void ClientSession::on_read(std::string_view data) {
  client_.on_data(data, clock_.now());
  pump();
}

void ClientSession::on_tls(const Result<TlsInfo>& result) {
  if (!result) {
    tls_failure_text = result.error().message;
    client_.on_tls_failed(tls_failure_text, clock_.now());
  } else {
    tls_info = *result;
    client_.on_tls_established(*result, clock_.now());
  }
  pump();
}

void ClientSession::on_close(const Result<void>& result) {
  client_.on_closed(result ? "connection closed by the server" : result.code().message(),
                    clock_.now());
  pump();
  // The server is gone: whatever the client says, nothing more can happen.
  finished_ = true;
  connection.reset();
}

void ClientSession::pump() {
  for (;;) {
    if (connection && client_.has_output()) connection->write(client_.take_output());
    auto ev = client_.next_event();
    if (!ev) break;
    events.push_back(*ev);
    std::visit(
        [&](auto& e) {
          using T = std::decay_t<decltype(e)>;
          if constexpr (std::is_same_v<T, smtp_event::Ready>) {
            if (transaction_) {
              client_.send(std::move(*transaction_), clock_.now());
              transaction_.reset();
            } else {
              client_.quit(clock_.now());
            }
          } else if constexpr (std::is_same_v<T, smtp_event::StartTls>) {
            ++start_tls_calls;
            connection->start_tls(e.options);
          } else if constexpr (std::is_same_v<T, smtp_event::TransactionDone>) {
            done = e;
          } else if constexpr (std::is_same_v<T, smtp_event::Failed>) {
            failed = e;
            finished_ = true;
          } else if constexpr (std::is_same_v<T, smtp_event::Closed>) {
            finished_ = true;
          }
        },
        *ev);
  }
  if (connection && client_.has_output()) connection->write(client_.take_output());
  if (client_.ready() && !transaction_ && done) client_.quit(clock_.now());
  if (connection && client_.has_output()) connection->write(client_.take_output());
  if (finished_) {
    connection.reset();
    if (timer_ != kNoTimer) clock_.cancel(timer_);
    timer_ = kNoTimer;
    return;
  }
  arm_timer();
}

void ClientSession::arm_timer() {
  if (timer_ != kNoTimer) clock_.cancel(timer_);
  timer_ = kNoTimer;
  const TimePoint deadline = client_.deadline();
  if (deadline == TimePoint::max()) return;
  const auto delay = std::chrono::duration_cast<Duration>(deadline - clock_.now());
  timer_ = clock_.schedule(delay, [this] {
    timer_ = kNoTimer;
    client_.on_timeout(clock_.now());
    pump();
  });
}

}  // namespace test
}  // namespace mailq
