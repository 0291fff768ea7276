// SmtpServerSession: the receiving side of SMTP as a state machine fed with bytes.
//
// Input is consumed in order and only while no message waits for the host's `done`, so
// replies to pipelined commands always come out in the order of the commands. In DATA the
// bytes are scanned once: dot-unstuffed into the body, with bare CR / bare LF / NUL / long
// lines and the size limit recorded as flags that reject the whole message at the final dot.

#include "mailq/smtp_server.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/smtp/ascii.h"
#include "core/smtp/params.h"

namespace mailq {
namespace {

using detail::iequals;
using detail::istarts_with;
using detail::non_ascii;
using detail::upper;
using detail::xtext_decode;

// RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets with its CRLF.
constexpr std::size_t kMaxTextLine = 998;
// RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets with its CRLF.
constexpr std::size_t kMaxReplyLine = 510;
// Parameter names echoed in replies are cut to this length.
constexpr std::size_t kMaxEchoedKey = 32;
// Input already consumed is dropped from the front of the buffer once it is this large.
constexpr std::size_t kCompactAt = 4096;
// At most this much is reserved for a body on the strength of the client's SIZE parameter.
constexpr std::uint64_t kMaxReserve = 1u << 20;

// Replies of the host or of a policy callback must not break the protocol: a well-formed
// code of class 2, 4 or 5, an enhanced status code of the same class, text without controls.
Reply sanitize(Reply r) {
  const int klass = r.code / 100;
  if (r.code < 200 || r.code > 599 || klass == 3) {
    return Reply(451, "4.3.0", "Internal error: the host gave no valid reply");
  }
  bool enhanced_ok = false;
  if (!r.enhanced.empty() && r.enhanced[0] == static_cast<char>('0' + klass)) {
    // class "." subject "." detail, each 1-3 digits
    int parts = 0;
    std::size_t digits = 0;
    enhanced_ok = true;
    for (char c : r.enhanced) {
      if (c == '.') {
        if (digits == 0) enhanced_ok = false;
        ++parts;
        digits = 0;
      } else if (c >= '0' && c <= '9' && digits < 3) {
        ++digits;
      } else {
        enhanced_ok = false;
      }
    }
    if (parts != 2 || digits == 0) enhanced_ok = false;
  }
  if (!enhanced_ok) r.enhanced = fmt::format("{}.0.0", klass);
  for (char& c : r.text) {
    const auto u = static_cast<unsigned char>(c);
    if (c != '\n' && (u < 0x20 || u == 0x7f)) c = '?';
  }
  if (r.text.empty()) r.text = klass == 2 ? "Ok" : "Error";
  return r;
}

struct Param {
  std::string key;  // upper-cased
  std::string value;
  bool has_value = false;
};

}  // namespace

struct SmtpServerSession::Impl : std::enable_shared_from_this<Impl> {
  enum class Mode : std::uint8_t { idle, command, data, closed };
  // Where the data scanner stands in the current line.
  enum class DataState : std::uint8_t {
    bol,      // at the beginning of a line
    dot,      // a '.' at the beginning of a line
    dot_cr,   // ".\r" at the beginning of a line: one LF away from the end
    text,     // inside a line
    text_cr,  // a CR inside a line, waiting for its LF
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

  // The message being received.
  DataState data_state = DataState::bol;
  std::string body;
  std::uint64_t body_size = 0;
  std::uint64_t declared_size = 0;  // MAIL FROM SIZE=, 0 when not given
  std::size_t line_length = 0;
  std::uint64_t line_number = 1;
  bool too_big = false;
  std::uint64_t bare_lf_line = 0, bare_cr_line = 0, nul_line = 0, long_line = 0;

  bool waiting = false;
  std::uint64_t message_serial = 0;
  bool processing = false;
  bool eof = false;
  bool shutdown_requested = false;
  std::string shutdown_text;
  std::string close_reason;

  Impl(SmtpServerConfig c, Callbacks cb, std::string addr)
      : config(std::move(c)), callbacks(std::move(cb)), client_address(std::move(addr)) {}

  // --- output ------------------------------------------------------------------------------

  void line(std::string text) {
    if (text.size() > kMaxReplyLine) text.resize(kMaxReplyLine);
    out += text;
    out += "\r\n";
  }

  void reply(int code, std::string_view enhanced, std::string_view text) {
    if (enhanced.empty()) {
      line(fmt::format("{} {}", code, text));
    } else {
      line(fmt::format("{} {} {}", code, enhanced, text));
    }
  }

  void send(const Reply& r) {
    std::string_view text = r.text;
    for (;;) {
      const std::size_t nl = text.find('\n');
      const bool last = nl == std::string_view::npos;
      line(fmt::format("{}{}{} {}", r.code, last ? ' ' : '-', r.enhanced, text.substr(0, nl)));
      if (last) break;
      text.remove_prefix(nl + 1);
    }
  }

  // A client error: counted, and too many of them end the session.
  void error(int code, std::string_view enhanced, std::string_view text) {
    reply(code, enhanced, text);
    count_error();
  }

  void count_error() {
    if (mode == Mode::closed) return;
    if (++errors > config.limits.max_errors) {
      reply(421, "4.7.0", fmt::format("{} Too many errors, closing connection", config.hostname));
      close("too many errors");
    }
  }

  void close(std::string reason) {
    mode = Mode::closed;
    close_reason = std::move(reason);
    reset_transaction();
    in.clear();
    in_pos = 0;
  }

  void reset_transaction() {
    in_transaction = false;
    envelope = Envelope{};
    eight_bit = false;
    body = std::string{};
  }

  // --- input -------------------------------------------------------------------------------

  void feed(std::string_view bytes) {
    if (mode == Mode::closed || eof) return;
    in.append(bytes);
    process();
  }

  void process() {
    if (processing) return;  // `done` called from inside on_message: the loop below goes on
    processing = true;
    for (;;) {
      if (waiting || mode == Mode::closed || mode == Mode::idle) break;
      if (mode == Mode::data) {
        if (!scan_data()) break;  // needs more bytes
        continue;
      }
      if (shutdown_requested && !in_transaction) {
        reply(421, "4.3.2",
              fmt::format("{} {}", config.hostname,
                          shutdown_text.empty() ? "Service shutting down" : shutdown_text));
        close("shutdown");
        break;
      }
      if (!next_command()) break;
    }
    processing = false;
    if (in_pos >= kCompactAt || in_pos == in.size()) {
      in.erase(0, in_pos);
      in_pos = 0;
    }
    if (eof && mode != Mode::closed && !waiting) {
      // Everything the client sent before closing has been answered.
      close(in_transaction || mode == Mode::data ? "client closed during a transaction"
                                                 : "client closed");
    }
  }

  // Takes one command line from the input and handles it. False when no complete line is
  // buffered.
  bool next_command() {
    const std::size_t max = std::max<std::size_t>(config.limits.max_command_line, 8);
    for (;;) {
      const std::size_t lf = in.find('\n', in_pos);
      if (skipping_line) {
        if (lf == std::string::npos) {
          in_pos = in.size();
          return false;
        }
        in_pos = lf + 1;
        skipping_line = false;
        continue;
      }
      if (lf == std::string::npos) {
        // Whatever ends this line, it will be longer than the limit (its LF is still to come).
        if (in.size() - in_pos >= max) {
          in_pos = in.size();
          skipping_line = true;
          error(500, "5.5.2", "Line too long");
          return true;
        }
        return false;
      }
      const std::string_view line(in.data() + in_pos, lf - in_pos);
      in_pos = lf + 1;
      if (line.size() + 1 > max) {
        error(500, "5.5.2", "Line too long");
        return true;
      }
      if (line.empty() || line.back() != '\r') {
        error(500, "5.5.2", "Syntax error: bare LF in command (lines must end with CRLF)");
        return true;
      }
      const std::string_view command = line.substr(0, line.size() - 1);
      if (command.find('\r') != std::string_view::npos) {
        error(500, "5.5.2", "Syntax error: bare CR in command (lines must end with CRLF)");
        return true;
      }
      // Copy: handling may append to `in` (never today, but `out` callbacks could feed).
      handle_command(std::string(command));
      return true;
    }
  }

  void handle_command(const std::string& line) {
    for (char c : line) {
      const auto u = static_cast<unsigned char>(c);
      if (u < 0x20 || u == 0x7f) {
        error(500, "5.5.2", "Syntax error: control character in command");
        return;
      }
    }
    const std::size_t sp = line.find(' ');
    const std::string verb = upper(std::string_view(line).substr(0, sp));
    const std::string_view args =
        sp == std::string::npos ? std::string_view{} : std::string_view(line).substr(sp + 1);
    const bool has_args = sp != std::string::npos;

    if (verb == "EHLO" || verb == "HELO") {
      cmd_hello(verb == "EHLO", args, has_args);
    } else if (verb == "MAIL") {
      cmd_mail(args);
    } else if (verb == "RCPT") {
      cmd_rcpt(args);
    } else if (verb == "DATA") {
      cmd_data(has_args);
    } else if (verb == "RSET") {
      if (has_args) return error(501, "5.5.4", "Syntax: RSET");
      reset_transaction();
      reply(250, "2.0.0", "Ok");
    } else if (verb == "NOOP") {
      reply(250, "2.0.0", "Ok");  // RFC 5321 §4.1.1.9: an argument is allowed and ignored
    } else if (verb == "QUIT") {
      if (has_args) return error(501, "5.5.4", "Syntax: QUIT");
      reply(221, "2.0.0", fmt::format("{} Bye", config.hostname));
      close("QUIT");
    } else if (verb == "VRFY") {
      if (args.empty()) return error(501, "5.5.4", "Syntax: VRFY address");
      // RFC 5321 §3.5.3: 252 says nothing about whether the mailbox exists.
      reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery");
    } else if (verb == "EXPN") {
      error(502, "5.5.1", "EXPN not available");
    } else if (verb == "HELP" || verb == "STARTTLS" || verb == "AUTH" || verb == "BDAT" ||
               verb == "ETRN" || verb == "TURN" || verb == "ATRN" || verb == "SEND" ||
               verb == "SOML" || verb == "SAML") {
      error(502, "5.5.1", "Command not implemented");
    } else {
      error(500, "5.5.2", "Syntax error: command not recognized");
    }
  }

  void cmd_hello(bool extended, std::string_view arg, bool has_args) {
    const char* name = extended ? "EHLO" : "HELO";
    if (!has_args || arg.empty() || arg.find(' ') != std::string_view::npos) {
      return error(501, "5.5.4", fmt::format("Syntax: {} hostname", name));
    }
    // A domain or an address literal, as in a mailbox's domain part.
    auto checked = Address::parse(fmt::format("postmaster@{}", arg));
    if (!checked) {
      return error(501, "5.5.4", fmt::format("Invalid {} hostname", name));
    }
    reset_transaction();  // RFC 5321 §4.1.4: EHLO/HELO ends any transaction
    helo = std::string(arg);
    greeted = true;
    esmtp = extended;
    if (!extended) {
      reply(250, {}, config.hostname);
      return;
    }
    out += fmt::format(
        "250-{}\r\n"
        "250-PIPELINING\r\n"
        "250-SIZE {}\r\n"
        "250-8BITMIME\r\n"
        "250-ENHANCEDSTATUSCODES\r\n"
        "250 DSN\r\n",
        config.hostname, config.limits.max_message_size);
  }

  // Parses "<path>" at the start of `s` (after "FROM:" / "TO:"). Returns the text between the
  // brackets and sets `rest` to what follows the '>'. A quoted local part may hold '>'.
  static std::optional<std::string_view> take_path(std::string_view s, std::string_view* rest) {
    if (s.empty() || s.front() != '<') return std::nullopt;
    bool quoted = false;
    for (std::size_t i = 1; i < s.size(); ++i) {
      const char c = s[i];
      if (quoted) {
        if (c == '\\') {
          ++i;
        } else if (c == '"') {
          quoted = false;
        }
      } else if (c == '"') {
        quoted = true;
      } else if (c == '>') {
        *rest = s.substr(i + 1);
        return s.substr(1, i - 1);
      }
    }
    return std::nullopt;
  }

  // "KEY=VALUE KEY ..." after the path. Returns the error text on a syntax error.
  static std::optional<std::string> parse_params(std::string_view s, std::vector<Param>* out) {
    if (s.empty()) return std::nullopt;
    if (s.front() != ' ') return std::string("Syntax error after the address");
    while (!s.empty()) {
      if (s.front() != ' ') return std::string("Syntax error in parameters");
      s.remove_prefix(1);
      if (s.empty()) break;  // a trailing space is tolerated
      const std::size_t end = std::min(s.find(' '), s.size());
      const std::string_view item = s.substr(0, end);
      s.remove_prefix(end);
      const std::size_t eq = item.find('=');
      Param p;
      const std::string_view key = item.substr(0, eq);
      if (key.empty()) return std::string("Syntax error in parameters");
      for (char c : key) {
        const bool ok =
            (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
        if (!ok) return std::string("Syntax error in parameters");
      }
      p.key = upper(key.substr(0, kMaxEchoedKey));
      if (key.size() > kMaxEchoedKey) p.key += "...";
      if (eq != std::string_view::npos) {
        p.value = std::string(item.substr(eq + 1));
        p.has_value = true;
        if (p.value.empty()) return fmt::format("Empty value of the {} parameter", p.key);
        for (char c : p.value) {
          const auto u = static_cast<unsigned char>(c);
          if (u < 0x21 || u > 0x7e || c == '=') {
            return fmt::format("Invalid value of the {} parameter", p.key);
          }
        }
      }
      for (const Param& q : *out) {
        if (q.key == p.key) return fmt::format("Duplicate {} parameter", p.key);
      }
      out->push_back(std::move(p));
    }
    return std::nullopt;
  }

  void cmd_mail(std::string_view args) {
    if (!greeted) return error(503, "5.5.1", "Error: send EHLO or HELO first");
    if (in_transaction) return error(503, "5.5.1", "Error: nested MAIL command");
    if (!istarts_with(args, "FROM:")) return error(501, "5.5.4", "Syntax: MAIL FROM:<address>");
    std::string_view rest;
    const auto path = take_path(args.substr(5), &rest);
    if (!path) return error(501, "5.5.4", "Syntax: MAIL FROM:<address>");
    std::vector<Param> params;
    if (auto why = parse_params(rest, &params)) return error(501, "5.5.4", *why);
    if (!params.empty() && !esmtp) {
      return error(555, "5.5.4", "MAIL parameters are not recognized after HELO");
    }
    if (non_ascii(*path)) {
      return error(553, "5.6.7", "Non-ASCII sender address requires SMTPUTF8 (not supported)");
    }
    std::optional<Address> sender;
    if (!path->empty()) {
      auto a = Address::parse(strip_source_route(*path));
      if (!a) return error(501, "5.1.7", "Bad sender address syntax: " + a.error().message);
      sender = std::move(a.value());
    }

    Envelope env;
    env.reverse_path = std::move(sender);
    bool body_8bit = false;
    std::uint64_t size_param = 0;
    for (const Param& p : params) {
      if (p.key == "SIZE") {
        std::uint64_t size = 0;
        bool ok = p.has_value && p.value.size() <= 20;
        for (char c : p.value) {
          if (c < '0' || c > '9') ok = false;
        }
        if (ok) {
          for (char c : p.value) {
            const auto d = static_cast<std::uint64_t>(c - '0');
            if (size > (UINT64_MAX - d) / 10) {
              size = UINT64_MAX;  // larger than any limit
              break;
            }
            size = size * 10 + d;
          }
        }
        if (!ok) return error(501, "5.5.4", "Bad SIZE parameter");
        if (size > config.limits.max_message_size) {
          reply(552, "5.3.4", "Message size exceeds fixed maximum message size");
          return;
        }
        size_param = size;
      } else if (p.key == "BODY") {
        if (iequals(p.value, "8BITMIME")) {
          body_8bit = true;
        } else if (!iequals(p.value, "7BIT")) {
          return error(
              p.has_value ? 555 : 501, "5.5.4",
              p.has_value ? "Unsupported BODY type (7BIT or 8BITMIME)" : "Bad BODY parameter");
        }
      } else if (p.key == "RET") {
        if (iequals(p.value, "FULL")) {
          env.ret = DsnRet::full;
        } else if (iequals(p.value, "HDRS")) {
          env.ret = DsnRet::headers;
        } else {
          return error(501, "5.5.4", "Bad RET parameter (FULL or HDRS)");
        }
      } else if (p.key == "ENVID") {
        auto decoded = p.has_value ? xtext_decode(p.value) : std::nullopt;
        if (!decoded || decoded->empty()) return error(501, "5.5.4", "Bad ENVID parameter");
        env.envid = std::move(*decoded);
        // Envelope::validate is the gate in front of the wire; it needs one recipient.
        Envelope probe;
        probe.envid = env.envid;
        probe.recipients.emplace_back(*Address::parse("postmaster@localhost"));
        std::string why;
        if (probe.validate(&why)) return error(501, "5.5.4", "Bad ENVID parameter: " + why);
      } else {
        return error(555, "5.5.4", fmt::format("Unsupported parameter {}", p.key));
      }
    }

    if (transactions >= config.limits.max_transactions) {
      reply(421, "4.7.0",
            fmt::format("{} Too many transactions in one session, closing connection",
                        config.hostname));
      close("too many transactions");
      return;
    }
    ++transactions;
    reset_transaction();
    in_transaction = true;
    envelope = std::move(env);
    eight_bit = body_8bit;
    declared_size = size_param;
    reply(250, "2.1.0", "Ok");
  }

  // RFC 5321 §4.1.2: an old-style source route "@a,@b:user@d" must be accepted and ignored.
  static std::string_view strip_source_route(std::string_view path) {
    if (!path.empty() && path.front() == '@') {
      const std::size_t colon = path.find(':');
      if (colon != std::string_view::npos) return path.substr(colon + 1);
    }
    return path;
  }

  void cmd_rcpt(std::string_view args) {
    if (!in_transaction) return error(503, "5.5.1", "Error: need MAIL command");
    if (!istarts_with(args, "TO:")) return error(501, "5.5.4", "Syntax: RCPT TO:<address>");
    std::string_view rest;
    const auto path = take_path(args.substr(3), &rest);
    if (!path) return error(501, "5.5.4", "Syntax: RCPT TO:<address>");
    std::vector<Param> params;
    if (auto why = parse_params(rest, &params)) return error(501, "5.5.4", *why);
    if (!params.empty() && !esmtp) {
      return error(555, "5.5.4", "RCPT parameters are not recognized after HELO");
    }
    if (path->empty()) return error(501, "5.1.3", "Bad recipient address syntax: empty path");
    if (non_ascii(*path)) {
      return error(553, "5.6.7", "Non-ASCII recipient address requires SMTPUTF8 (not supported)");
    }
    std::string mailbox(strip_source_route(*path));
    // RFC 5321 §4.5.1: <Postmaster> without a domain must be accepted.
    if (iequals(mailbox, "postmaster")) mailbox = "postmaster@" + config.hostname;
    auto a = Address::parse(mailbox);
    if (!a) return error(501, "5.1.3", "Bad recipient address syntax: " + a.error().message);

    Recipient rcpt(std::move(a.value()));
    for (const Param& p : params) {
      if (p.key == "NOTIFY") {
        const auto flags = p.has_value ? detail::notify_decode(p.value) : std::nullopt;
        if (!flags) {
          return error(501, "5.5.4", "Bad NOTIFY parameter (NEVER, or SUCCESS,FAILURE,DELAY)");
        }
        rcpt.notify = *flags;
      } else if (p.key == "ORCPT") {
        auto orcpt = detail::orcpt_decode(p.value);
        if (!orcpt) return error(501, "5.5.4", "Bad ORCPT parameter (addr-type;xtext)");
        rcpt.orcpt = std::move(*orcpt);
      } else {
        return error(555, "5.5.4", fmt::format("Unsupported parameter {}", p.key));
      }
    }
    {
      Envelope probe;
      probe.recipients.push_back(rcpt);
      std::string why;
      if (probe.validate(&why)) {
        constexpr std::string_view kPrefix = "recipient 1: ";
        if (why.compare(0, kPrefix.size(), kPrefix) == 0) why.erase(0, kPrefix.size());
        return error(501, "5.5.4", "Bad recipient parameters: " + why);
      }
    }
    if (envelope.recipients.size() >= config.limits.max_recipients) {
      reply(452, "4.5.3", "Error: too many recipients");
      return;
    }
    if (callbacks.check_recipient) {
      Reply verdict;
      try {
        verdict = sanitize(callbacks.check_recipient(rcpt));
      } catch (...) {
        verdict = Reply(451, "4.3.0", "Internal error, try again later");
      }
      if (!verdict.positive()) {
        send(verdict);
        if (verdict.permanent()) count_error();
        return;
      }
      envelope.recipients.push_back(std::move(rcpt));
      send(verdict);
      return;
    }
    envelope.recipients.push_back(std::move(rcpt));
    reply(250, "2.1.5", "Ok");
  }

  void cmd_data(bool has_args) {
    if (has_args) return error(501, "5.5.4", "Syntax: DATA");
    if (!in_transaction) return error(503, "5.5.1", "Error: need MAIL command");
    // RFC 2920 §3.1: with pipelining, DATA after only failed RCPTs gets 554.
    if (envelope.recipients.empty()) return error(554, "5.5.1", "Error: no valid recipients");
    reply(354, {}, "End data with <CR><LF>.<CR><LF>");
    mode = Mode::data;
    data_state = DataState::bol;
    body.clear();
    // The declared size (bounded: it is the client's word) saves growing the body by copies.
    if (declared_size > 0)
      body.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(declared_size, kMaxReserve)));
    body_size = 0;
    line_length = 0;
    line_number = 1;
    too_big = false;
    bare_lf_line = bare_cr_line = nul_line = long_line = 0;
  }

  // --- message data ------------------------------------------------------------------------

  bool rejected() const noexcept {
    return too_big || bare_lf_line != 0 || bare_cr_line != 0 || nul_line != 0 || long_line != 0;
  }

  void flag(std::uint64_t* which) {
    if (*which == 0) *which = line_number;
    body = std::string{};  // the message is lost anyway: hold no memory for it
  }

  void append(std::string_view bytes) {
    body_size += bytes.size();
    if (body_size > config.limits.max_message_size && !too_big) {
      too_big = true;
      body = std::string{};
    }
    if (!rejected()) body.append(bytes);
  }

  void add_to_line(std::size_t n) {
    line_length += n;
    if (line_length > kMaxTextLine && long_line == 0) flag(&long_line);
  }

  // Consumes buffered message data. True when the final dot was reached (and handled).
  // The body is appended in runs: consecutive octets of the input that stay in the body go
  // in one append, so a well-formed chunk costs one copy, broken only where a stuffed dot is
  // dropped or a line break started in the previous chunk.
  bool scan_data() {
    const std::string_view s(in);
    const std::size_t start = in_pos;
    std::size_t i = in_pos;
    const std::size_t n = s.size();
    std::size_t run = std::string_view::npos, run_end = 0;
    auto keep = [&](std::size_t from, std::size_t to) {
      if (run != std::string_view::npos && run_end != from) {
        append(s.substr(run, run_end - run));
        run = std::string_view::npos;
      }
      if (run == std::string_view::npos) run = from;
      run_end = to;
    };
    auto flush = [&] {
      if (run != std::string_view::npos) append(s.substr(run, run_end - run));
      run = std::string_view::npos;
    };
    // Octets that are not (all) in this chunk: the CR of a line break the previous chunk ended
    // in, or the CR after a dot.
    auto literal = [&](std::string_view text) {
      flush();
      append(text);
    };
    while (i < n) {
      switch (data_state) {
        case DataState::bol:
          line_length = 0;
          if (s[i] == '.') {
            data_state = DataState::dot;
            ++i;
          } else {
            data_state = DataState::text;
          }
          break;
        case DataState::dot:
          if (s[i] == '\r') {
            data_state = DataState::dot_cr;
            ++i;
          } else {
            data_state = DataState::text;  // a stuffed dot: dropped (RFC 5321 §4.5.2)
          }
          break;
        case DataState::dot_cr:
          if (s[i] == '\n') {
            flush();
            in_pos = i + 1;
            end_of_data();
            return true;
          }
          // ".\r" then anything but LF: a bare CR, and not the end of the data.
          flag(&bare_cr_line);
          literal("\r");
          add_to_line(1);
          data_state = DataState::text;
          break;
        case DataState::text_cr:
          if (s[i] == '\n') {
            if (i > start)
              keep(i - 1, i + 1);
            else
              literal("\r\n");
            ++line_number;
            data_state = DataState::bol;
            ++i;
          } else {
            flag(&bare_cr_line);
            if (i > start)
              keep(i - 1, i);
            else
              literal("\r");
            add_to_line(1);
            data_state = DataState::text;
          }
          break;
        case DataState::text: {
          std::size_t j = i;
          while (j < n && s[j] != '\r' && s[j] != '\n' && s[j] != '\0') ++j;
          if (j > i) {
            keep(i, j);
            add_to_line(j - i);
            i = j;
          }
          if (i == n) break;
          if (s[i] == '\r') {
            data_state = DataState::text_cr;  // kept with the octet after it
          } else {
            // A bare LF does not end the line: `<LF>.<CR><LF>` is text, never the end.
            flag(s[i] == '\n' ? &bare_lf_line : &nul_line);
            keep(i, i + 1);
            add_to_line(1);
          }
          ++i;
          break;
        }
      }
    }
    flush();
    in_pos = n;
    return false;
  }

  void end_of_data() {
    mode = Mode::command;
    if (too_big) {
      reply(552, "5.3.4",
            fmt::format("Message size exceeds fixed maximum message size ({} octets)",
                        config.limits.max_message_size));
      reset_transaction();
      return;
    }
    std::string why;
    if (bare_lf_line != 0) {
      why = fmt::format("bare LF in line {} (lines must end with CRLF)", bare_lf_line);
    } else if (bare_cr_line != 0) {
      why = fmt::format("bare CR in line {} (lines must end with CRLF)", bare_cr_line);
    } else if (nul_line != 0) {
      why = fmt::format("NUL octet in line {}", nul_line);
    } else if (long_line != 0) {
      why = fmt::format("line {} is longer than {} octets", long_line, kMaxTextLine);
    }
    if (!why.empty()) {
      reset_transaction();
      error(550, "5.6.0", "Message rejected: " + why);
      return;
    }
    if (auto ec = envelope.validate(&why)) {
      reset_transaction();
      reply(554, "5.5.0", "Transaction failed: " + why);
      return;
    }

    ReceivedMessage message;
    message.envelope = std::move(envelope);
    message.body = std::move(body);
    message.helo = helo;
    message.client_address = client_address;
    message.eight_bit = eight_bit;
    reset_transaction();
    if (!callbacks.on_message) {
      reply(451, "4.3.0", "Error: no queue to accept the message, try again later");
      return;
    }
    waiting = true;
    const std::uint64_t serial = ++message_serial;
    std::weak_ptr<Impl> weak = weak_from_this();
    auto done = [weak, serial](Reply r) {
      if (auto self = weak.lock()) self->on_done(serial, std::move(r));
    };
    try {
      callbacks.on_message(std::move(message), std::move(done));
    } catch (...) {
      // The host failed before answering: a transient error, the client will try again.
      on_done(serial, Reply(451, "4.3.0", "Internal error, try again later"));
    }
  }

  void on_done(std::uint64_t serial, Reply r) {
    if (!waiting || serial != message_serial) return;  // a second call: ignored
    waiting = false;
    if (mode == Mode::closed) return;
    send(sanitize(std::move(r)));
    process();
  }
};

SmtpServerSession::SmtpServerSession(SmtpServerConfig config, Callbacks callbacks,
                                     std::string client_address)
    : impl_(std::make_shared<Impl>(std::move(config), std::move(callbacks),
                                   std::move(client_address))) {}

SmtpServerSession::~SmtpServerSession() = default;

void SmtpServerSession::start() {
  if (impl_->mode != Impl::Mode::idle) return;
  impl_->mode = Impl::Mode::command;
  impl_->reply(220, {}, fmt::format("{} {}", impl_->config.hostname, impl_->config.greeting_text));
  impl_->process();
}

void SmtpServerSession::feed(std::string_view bytes) {
  impl_->feed(bytes);
}

void SmtpServerSession::on_eof() {
  if (impl_->eof || impl_->mode == Impl::Mode::closed) return;
  impl_->eof = true;
  if (impl_->mode == Impl::Mode::idle) {
    impl_->close("client closed");
    return;
  }
  impl_->process();
}

void SmtpServerSession::shutdown(std::string_view text) {
  if (impl_->mode == Impl::Mode::closed || impl_->shutdown_requested) return;
  impl_->shutdown_requested = true;
  impl_->shutdown_text = std::string(text);
  impl_->process();
}

std::string SmtpServerSession::take_output() {
  return std::exchange(impl_->out, {});
}

bool SmtpServerSession::has_output() const noexcept {
  return !impl_->out.empty();
}

bool SmtpServerSession::closed() const noexcept {
  return impl_->mode == Impl::Mode::closed;
}

bool SmtpServerSession::waiting_for_host() const noexcept {
  return impl_->waiting;
}

const std::string& SmtpServerSession::close_reason() const noexcept {
  return impl_->close_reason;
}

std::size_t SmtpServerSession::buffered_input() const noexcept {
  return impl_->in.size() - impl_->in_pos;
}

Reply enqueue_refusal(const Error& e) {
  if (e.code == errc::message_too_large)
    return Reply(552, "5.3.4", "Message too big for system: " + e.message);
  // Which file and which system error are for the operator (the log), not for the client.
  if (e.code == errc::storage_failure)
    return Reply(451, "4.3.0", "Requested action aborted: local storage failure, try again later");
  if (e.code == errc::shutting_down || e.code == errc::bad_state)
    return Reply(451, "4.3.0", "Requested action aborted: " + e.message);
  if (e.code == errc::no_recipients || e.code == errc::invalid_address ||
      e.code == errc::forbidden_character || e.code == errc::too_long)
    return Reply(550, "5.1.3", "Bad address: " + e.message);
  return Reply(554, "5.6.0", "Message refused: " + e.message);
}

}  // namespace mailq
