// A scripted in-memory Transport for deterministic engine tests: each endpoint either refuses
// connections (with a chosen errno), never answers, or runs a small scripted SMTP server.
// Everything is delivered through the ManualClock, asynchronously, like a real loop.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mailq/clock.h"
#include "mailq/transport.h"

namespace mailq::test {

struct ReceivedMessage {
  std::string server;  // endpoint "address:port"
  std::string mail_from;
  std::vector<std::string> rcpt_to;  // accepted recipients
  std::string data;                  // as on the wire, without the final ".\r\n"
};

struct FakeServerScript {
  std::string greeting = "220 fake.example ESMTP";
  std::vector<std::string> ehlo_lines = {"fake.example",        "PIPELINING",    "8BITMIME",
                                         "ENHANCEDSTATUSCODES", "SIZE 10000000", "DSN"};
  bool ehlo_supported = true;
  std::string helo_reply = "250 fake.example";
  /// Reply to RCPT TO by recipient address (default "250 2.1.5 Ok").
  std::map<std::string, std::string> rcpt_replies;
  std::string mail_reply = "250 2.1.0 Ok";
  std::string data_reply = "354 End data with <CR><LF>.<CR><LF>";
  std::string final_reply = "250 2.0.0 Ok: queued";
  /// Closes the connection after this many messages were accepted (0 = never).
  int drop_after_messages = 0;
  /// Recipients accepted per transaction (0 = no limit); the ones beyond get `over_limit`.
  std::size_t max_recipients = 0;
  std::string over_limit = "452 4.5.3 Error: too many recipients";
  /// After its 354 the server takes nothing more: the body's writes never complete.
  bool stall_body = false;
  /// The server takes the whole message and never answers the final dot.
  bool no_final_reply = false;
};

class FakeTransport final : public Transport {
 public:
  enum class Mode { smtp, refuse, silent };
  struct Behaviour {
    Mode mode = Mode::smtp;
    std::errc error = std::errc::connection_refused;
    FakeServerScript script;
  };

  explicit FakeTransport(Clock& clock) : clock_(clock) {}

  /// Default behaviour for endpoints without their own.
  Behaviour& fallback() { return fallback_; }
  Behaviour& at(const std::string& address, std::uint16_t port = 25) {
    return behaviours_[address + ":" + std::to_string(port)];
  }

  std::unique_ptr<Connection> connect(const Endpoint& remote, const ConnectOptions& options,
                                      ConnectionHandler& handler) override;

  // Observations.
  std::vector<std::string> connects;  // "address:port" per connect() call
  std::vector<ReceivedMessage> received;
  std::size_t starttls_commands = 0;  // STARTTLS commands seen (the handshake always fails)
  std::size_t open_connections() const { return *open_; }
  std::size_t max_open_connections() const { return *max_open_; }

 private:
  class Conn;
  Clock& clock_;
  Behaviour fallback_;
  std::map<std::string, Behaviour> behaviours_;
  std::shared_ptr<std::size_t> open_ = std::make_shared<std::size_t>(0);
  std::shared_ptr<std::size_t> max_open_ = std::make_shared<std::size_t>(0);
};

}  // namespace mailq::test
