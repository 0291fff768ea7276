// SmtpServerSession::Impl: the state of one server session, shared by the files of the
// server: server.cpp (replies, input framing, the public operations), server_commands.cpp
// (the commands and their parameters) and server_data.cpp (the message data). Internal.
//
// Input is consumed in order and only while no message waits for the host's `done`, so
// replies to pipelined commands always come out in the order of the commands. In DATA the
// bytes are scanned once: dot-unstuffed into the body, with bare CR / bare LF / NUL / long
// lines and the size limit recorded as flags that reject the whole message at the final dot.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mailq/smtp_server.h"

namespace mailq {

struct SmtpServerSession::Impl : std::enable_shared_from_this<Impl> {
  // `tls`: after the 220 to STARTTLS, until the host's `tls_started`; `auth`: the next line
  // is a SASL response, not a command.
  enum class Mode : std::uint8_t { idle, command, data, tls, auth, closed };
  // Which response an AUTH exchange waits for.
  enum class AuthStep : std::uint8_t { plain, login_user, login_password };
  // Where the data scanner stands in the current line.
  enum class DataState : std::uint8_t {
    bol,      // at the beginning of a line
    dot,      // a '.' at the beginning of a line
    dot_cr,   // ".\r" at the beginning of a line: one LF away from the end
    text,     // inside a line
    text_cr,  // a CR inside a line, waiting for its LF
  };

  struct Param {
    std::string key;  // upper-cased
    std::string value;
    bool has_value = false;
  };
  struct PathArgs {
    std::string_view path;  // between the angle brackets
    std::vector<Param> params;
  };
  // What the parameters of MAIL set.
  struct MailParams {
    Envelope envelope;
    bool body_8bit = false;
    bool smtputf8 = false;
    std::uint64_t size = 0;  // SIZE=, 0 when not given
  };

  SmtpServerConfig config;
  Callbacks callbacks;
  std::string client_address;

  Mode mode = Mode::idle;
  std::string in;
  std::size_t in_pos = 0;
  bool skipping_line = false;  // discarding the rest of an over-long command line
  std::string out;

  std::string helo;
  bool greeted = false;
  bool esmtp = false;
  std::uint32_t errors = 0;
  std::uint32_t transactions = 0;

  // The transaction.
  bool in_transaction = false;
  Envelope envelope;
  bool eight_bit = false;
  bool smtputf8 = false;  // the transaction's MAIL carried SMTPUTF8

  // The message being received.
  DataState data_state = DataState::bol;
  std::string body;
  std::uint64_t body_size = 0;
  std::uint64_t declared_size = 0;  // MAIL FROM SIZE=, 0 when not given
  std::size_t line_length = 0;
  std::uint64_t line_number = 1;
  bool too_big = false;
  std::uint64_t bare_lf_line = 0, bare_cr_line = 0, nul_line = 0, long_line = 0;

  // TLS and AUTH.
  bool tls = false;
  std::string tls_description;
  std::string auth_user;
  std::uint32_t auth_failures = 0;
  AuthStep auth_step = AuthStep::plain;
  std::string auth_login_user;  // LOGIN: the user name, while the password is asked for

  bool waiting = false;
  std::uint64_t message_serial = 0;  // of the last request to the host (a message or an AUTH)
  bool processing = false;
  bool eof = false;
  bool shutdown_requested = false;
  std::string shutdown_text;
  std::string close_reason;

  Impl(SmtpServerConfig c, Callbacks cb, std::string addr)
      : config(std::move(c)), callbacks(std::move(cb)), client_address(std::move(addr)) {}

  // --- output (server.cpp) ---

  // Replies of the host or of a policy callback made fit for the protocol.
  static Reply sanitize(Reply r);
  void line(std::string text);
  void reply(int code, std::string_view enhanced, std::string_view text);
  void send(const Reply& r);
  // A client error: counted, and too many of them end the session.
  void error(int code, std::string_view enhanced, std::string_view text);
  void count_error();
  void close(std::string reason);
  void reset_transaction();

  // --- input (server.cpp) ---

  void feed(std::string_view bytes);
  void process();
  // Takes one command line from the input and handles it. False when no complete line is
  // buffered.
  bool next_command();
  void on_done(std::uint64_t serial, Reply r);

  // --- commands (server_commands.cpp) ---

  void handle_command(const std::string& line);
  void cmd_hello(bool extended, std::string_view arg, bool has_args);
  /// The 553 5.6.7 text for a non-ASCII `what` ("sender") address without SMTPUTF8.
  std::string utf8_needed(std::string_view what) const;
  static std::optional<std::string_view> take_path(std::string_view s, std::string_view* rest);
  static std::optional<std::string> parse_params(std::string_view s, std::vector<Param>* out);
  static std::string_view strip_source_route(std::string_view path);
  // The path and the parameters of MAIL or RCPT ("FROM:<path> KEY=VALUE ...", keyword
  // "FROM:" or "TO:"). Nullopt when refused (the reply is sent).
  std::optional<PathArgs> path_args(std::string_view args, std::string_view verb,
                                    std::string_view keyword);
  void cmd_mail(std::string_view args);
  // Takes one MAIL parameter into `m`. False when it is refused (the reply is sent).
  bool mail_param(const Param& p, MailParams* m);
  bool envid_param(const Param& p, Envelope* envelope);
  void start_transaction(MailParams m);
  void cmd_rcpt(std::string_view args);
  // Takes one RCPT parameter into `rcpt`. False when it is refused (the reply is sent).
  bool rcpt_param(const Param& p, Recipient* rcpt);
  bool valid_rcpt_params(const Recipient& rcpt);
  void add_recipient(Recipient rcpt);
  // A host policy's verdict, made fit for the protocol; 451 4.3.0 when the policy threw.
  static Reply ask_policy(const std::function<Reply()>& ask);
  // Sends a policy's refusal; a permanent one counts as a client error.
  void refuse(const Reply& verdict);
  void cmd_data(bool has_args);
  void cmd_starttls(bool has_args);

  // --- AUTH (server_auth.cpp) ---

  // Whether AUTH is offered now (in EHLO) and accepted.
  bool auth_offered() const noexcept;
  void cmd_auth(std::string_view args);
  // A line answering a 334 challenge.
  void auth_response(std::string_view line);
  // Hands the credentials to the host; the reply waits for its verdict.
  void authenticate(std::string mechanism, std::string user, std::string password);
  void on_auth_done(std::uint64_t serial, std::string user, AuthVerdict verdict);
  // 535 5.7.8 `text`, counted; the last allowed failure ends the session (421 4.7.0).
  void auth_rejected(std::string_view text);

  // --- message data (server_data.cpp) ---

  struct DataScan;  // one pass of the data scanner over the buffered input
  bool rejected() const noexcept;
  void flag(std::uint64_t* which);
  void append(std::string_view bytes);
  void add_to_line(std::size_t n);
  // Consumes buffered message data. True when the final dot was reached (and handled).
  bool scan_data();
  void end_of_data();
};

}  // namespace mailq
