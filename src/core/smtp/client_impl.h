// SmtpClient::Impl: the state of one client session, shared by the files of the client:
// client.cpp (the public operations), client_session.cpp (the plumbing, the session set-up
// and the transaction commands) and client_replies.cpp (what each reply leads to). Internal.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/smtp/reply_parse.h"
#include "mailq/smtp_client.h"

namespace mailq {

struct SmtpClient::Impl {
  explicit Impl(SmtpClientOptions o)
      : opt(std::move(o)), parser(opt.max_reply_line, opt.max_reply_lines) {}

  // The commands whose replies are awaited (the greeting counts as one).
  enum class Cmd : std::uint8_t {
    greeting,
    ehlo,
    helo,
    starttls,
    auth_plain,
    auth_login,
    auth_login_user,
    auth_login_pass,
    mail,
    rcpt,
    data,
    data_term,
    rset,
    quit,
  };

  struct Pending {
    Cmd cmd;
    std::size_t index = 0;  // recipient index for RCPT
    bool sent = false;      // taken by the host with take_output()
    bool body = false;      // data_term after the whole body: the body may still be going out
  };

  struct Txn {
    SmtpTransaction t;
    std::string data;           // the encoded body, terminator included
    std::size_t data_size = 0;  // of `data`, kept once the data is handed to the output
    std::uint64_t size = 0;
    bool eight_bit = false;
    bool downgraded = false;   // converted to 7 bit for a server without 8BITMIME
    bool utf8 = false;         // a non-ASCII address: SMTPUTF8 or nothing
    bool utf8_header = false;  // UTF-8 header fields and a server with SMTPUTF8: it is said
    std::vector<std::optional<Reply>> refused;  // RCPT refusals, per recipient
    std::size_t accepted = 0;
    std::optional<Reply> mail_failure;
    bool data_discarded = false;  // 354 with nobody to deliver to: a lone "." was sent
    std::string data_intermediate;
  };

  SmtpClientOptions opt;
  detail::ReplyParser parser;
  SmtpPhase phase = SmtpPhase::connect;
  std::string out;
  std::deque<SmtpEvent> events;
  std::deque<Pending> pending;
  TimePoint deadline = TimePoint::max();
  SmtpCapabilities caps;
  bool size_offered = false;  // SIZE announced, with or without a limit
  std::optional<TlsInfo> tls;
  Reply greeting;
  bool connected = false;
  bool starttls_tried = false;
  bool authenticated = false;
  bool ready_emitted = false;
  bool finished = false;
  bool need_rset = false;
  std::size_t transactions = 0;
  std::optional<Txn> txn;

  // --- plumbing (client_session.cpp) ---

  static SmtpPhase phase_of(Cmd c);
  static const char* awaited_name(Cmd c);
  Duration timeout_of(const Pending& p) const;
  // Sets the phase and the deadline from the command whose reply is awaited now.
  void arm(TimePoint now);
  void queue(Cmd cmd, std::string_view line, std::size_t index = 0);
  void emit(SmtpEvent ev) { events.push_back(std::move(ev)); }
  std::string awaited() const;
  // Ends a transaction: recipient i gets the MAIL refusal, else its RCPT refusal, else
  // `others`.
  /// " (required by the MTA-STS policy of ...)" when a policy, not the route, asked for TLS.
  std::string required_by() const {
    return opt.tls_required_by.empty() ? std::string()
                                       : " (required by " + opt.tls_required_by + ")";
  }
  void finish_txn(const Reply& others, const Reply& data_reply);
  void go_idle() {
    phase = SmtpPhase::idle;
    deadline = TimePoint::max();
  }
  // The session ends. A transaction under way ends first, its undecided recipients getting
  // `for_recipients` (or `reply`). `polite_quit`: the stream is in step and the server said
  // something we cannot go on with; a QUIT is left in the output for the host to write.
  void fail(SmtpPhase where, Reply reply, bool connection_level, bool tls_failure,
            const Reply* for_recipients = nullptr, bool polite_quit = false);
  void fail_here(Reply reply, bool connection_level, bool polite_quit) {
    fail(phase, std::move(reply), connection_level, false, nullptr, polite_quit);
  }
  void protocol_error(const std::string& what);
  void close_session();

  // --- session set-up (client_session.cpp) ---

  void send_hello(Cmd cmd, TimePoint now);
  void parse_capabilities(const detail::ParsedReply& pr);
  void after_hello(TimePoint now);
  void start_auth(TimePoint now);

  // --- transactions (client_session.cpp) ---

  std::string mail_command() const;
  std::string rcpt_command(std::size_t i) const;
  void start_mail(TimePoint now);
  // A transaction ended with the stream in step: back to idle.
  void end_txn(const Reply& others, const Reply& data_reply) {
    finish_txn(others, data_reply);
    go_idle();
  }

  // --- replies (client_replies.cpp) ---

  void on_reply(detail::ParsedReply& pr, TimePoint now);
  void on_greeting_reply(const Reply& r, TimePoint now);
  void on_ehlo_reply(const detail::ParsedReply& pr, TimePoint now);
  void on_helo_reply(const Reply& r, TimePoint now);
  void on_starttls_reply(const Reply& r, TimePoint now);
  void on_auth_reply(Cmd cmd, const Reply& r, TimePoint now);
  void on_rset_reply(const Reply& r, TimePoint now);
  void on_mail_reply(const Reply& r, TimePoint now);
  void on_rcpt_reply(std::size_t index, const Reply& r, TimePoint now);
  void on_data_reply(const Reply& r, TimePoint now);
  void on_data_term_reply(const Reply& r);
};

}  // namespace mailq
