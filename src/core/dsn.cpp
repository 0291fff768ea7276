#include "mailq/dsn.h"

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <ctime>

#include "core/text.h"

namespace mailq {
namespace {

using detail::has_8bit;
using detail::header_section;

constexpr std::size_t kFoldAt = 78;    // RFC 5322 §2.1.1 "SHOULD"
constexpr std::size_t kMaxLine = 998;  // RFC 5322 §2.1.1 "MUST", without the CRLF
constexpr std::size_t kWrapText = 76;  // the human-readable part

bool is_control(unsigned char c) {
  return c < 0x20 || c == 0x7f;
}

// One line of text from an untrusted value: every control character (CR and LF above all,
// which would let a value add header fields or MIME parts) becomes a space, runs of spaces
// collapse, and the ends are trimmed.
std::string single_line(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    const char ch = is_control(u) ? ' ' : c;
    if (ch == ' ' && (out.empty() || out.back() == ' ')) continue;
    out += ch;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

// "Name: value" folded (RFC 5322 §2.2.3) before a space so that lines stay near 78 columns;
// a run of more than 997 octets without a space is split by inserting a fold, so that no
// line ever exceeds 998 octets.
std::string header(std::string_view name, std::string_view value) {
  const std::string line = fmt::format("{}: {}", name, single_line(value));
  std::string out;
  std::size_t pos = 0;
  while (line.size() - pos > kFoldAt) {
    const std::size_t min_break = pos == 0 ? name.size() + 2 : pos + 1;
    std::size_t b = line.rfind(' ', pos + kFoldAt);
    if (b == std::string::npos || b < min_break) {
      b = line.find(' ', pos + kFoldAt);
      if (b == std::string::npos || b - pos > kMaxLine - 1) {
        if (line.size() - pos <= kMaxLine) break;  // the rest fits on this line
        out.append(line, pos, kMaxLine - 1);
        out += "\r\n ";
        pos += kMaxLine - 1;
        continue;
      }
    }
    out.append(line, pos, b - pos);
    out += "\r\n";
    pos = b;  // the continuation line starts with the space folded before
  }
  out.append(line, pos, std::string::npos);
  out += "\r\n";
  return out;
}

// Word-wraps `text` (made single-line first) for the human-readable part: the first line
// starts with `first`, the others with `indent`.
std::string wrap(std::string_view first, std::string_view indent, std::string_view text) {
  const std::string t = single_line(text);
  std::string out(first);
  std::size_t col = first.size();
  bool line_has_words = false;
  std::size_t i = 0;
  while (i < t.size()) {
    std::size_t end = t.find(' ', i);
    if (end == std::string::npos) end = t.size();
    std::string_view word(t.data() + i, end - i);
    i = end + 1;
    if (line_has_words && col + 1 + word.size() > kWrapText) {
      out += "\r\n";
      out += indent;
      col = indent.size();
      line_has_words = false;
    }
    if (line_has_words) {
      out += ' ';
      ++col;
    }
    // A word that cannot fit on any line (a server reply can be one 4 KiB run) is cut.
    while (col + word.size() > kMaxLine) {
      const std::size_t n = kMaxLine - col;
      out.append(word.substr(0, n));
      word.remove_prefix(n);
      out += "\r\n";
      out += indent;
      col = indent.size();
    }
    out += word;
    col += word.size();
    line_has_words = true;
  }
  out += "\r\n";
  return out;
}

// Keeps the characters a token may have (a host name, a boundary, a msg-id part).
std::string token(std::string_view s, std::string_view extra) {
  std::string out;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if ((u >= '0' && u <= '9') || (u >= 'A' && u <= 'Z') || (u >= 'a' && u <= 'z') ||
        (c != 0 && extra.find(c) != std::string_view::npos)) {
      out += c;
    }
  }
  return out;
}

// The original with CRLF line endings (bare CR and bare LF become CRLF), NUL octets dropped
// (SMTP cannot carry them), and any line over 998 octets broken, so the notification itself
// always passes the checks it will meet at enqueue and on the wire.
std::string normalise(std::string_view text) {
  std::string out;
  out.reserve(text.size() + text.size() / 32 + 2);
  std::size_t line_len = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\r' || c == '\n') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      out += "\r\n";
      line_len = 0;
      continue;
    }
    if (c == '\0') continue;
    if (line_len == kMaxLine) {
      out += "\r\n";
      line_len = 0;
    }
    out += c;
    ++line_len;
  }
  if (!out.empty() && (out.size() < 2 || out.compare(out.size() - 2, 2, "\r\n") != 0)) {
    out += "\r\n";
  }
  return out;
}

bool valid_enhanced(std::string_view e) {
  // class "." subject "." detail: 1 digit (2, 4 or 5), then 1-3 digits twice (RFC 3463).
  if (e.size() < 5 || (e[0] != '2' && e[0] != '4' && e[0] != '5') || e[1] != '.') return false;
  std::size_t i = 2;
  for (int part = 0; part < 2; ++part) {
    std::size_t digits = 0;
    while (i < e.size() && e[i] >= '0' && e[i] <= '9') {
      ++digits;
      ++i;
    }
    if (digits == 0 || digits > 3) return false;
    if (part == 0) {
      if (i >= e.size() || e[i] != '.') return false;
      ++i;
    }
  }
  return i == e.size();
}

// The Status field, with its class made to agree with the Action (RFC 3464 §2.3.4): an
// operator bounce of a deferred recipient must not say "4.x.x" next to "Action: failed".
std::string status_for(const DsnRecipient& r) {
  std::string s = dsn_status(r.reply);
  char want = 0;
  switch (r.action) {
    case DsnAction::failed:
      want = '5';
      break;
    case DsnAction::delayed:
      want = '4';
      break;
    case DsnAction::delivered:
    case DsnAction::relayed:
    case DsnAction::expanded:
      want = '2';
      break;
  }
  if (r.reply.empty()) return fmt::format("{}.0.0", want);
  s[0] = want;
  return s;
}

std::string address_type_field(std::string_view address) {
  // RFC 6533: an internationalised address is of type utf-8.
  return fmt::format("{}; {}", has_8bit(address) ? "utf-8" : "rfc822", address);
}

std::string original_recipient_value(std::string_view orcpt) {
  const std::size_t semi = orcpt.find(';');
  if (semi == std::string_view::npos) return address_type_field(orcpt);
  std::string_view type = orcpt.substr(0, semi);
  std::string_view addr = orcpt.substr(semi + 1);
  while (!addr.empty() && addr.front() == ' ') addr.remove_prefix(1);
  return fmt::format("{}; {}", type, addr);
}

std::string describe(DsnAction a) {
  switch (a) {
    case DsnAction::failed:
      return "delivery failed permanently";
    case DsnAction::delayed:
      return "delivery delayed, still being retried";
    case DsnAction::delivered:
      return "delivered";
    case DsnAction::relayed:
      return "relayed to a system that does not send notifications";
    case DsnAction::expanded:
      return "delivered and expanded to further recipients";
  }
  return "unknown";
}

std::string bracketed_msgid(std::string_view id) {
  std::string v = single_line(id);
  if (v.empty()) return v;
  if (v.front() != '<') v = "<" + v + ">";
  return v;
}

}  // namespace

const char* to_string(DsnAction a) noexcept {
  switch (a) {
    case DsnAction::failed:
      return "failed";
    case DsnAction::delayed:
      return "delayed";
    case DsnAction::delivered:
      return "delivered";
    case DsnAction::relayed:
      return "relayed";
    case DsnAction::expanded:
      return "expanded";
  }
  return "failed";
}

std::string dsn_status(const Reply& reply) {
  if (valid_enhanced(reply.enhanced)) return reply.enhanced;
  if (reply.code >= 200 && reply.code < 300) return "2.0.0";
  if (reply.code >= 400 && reply.code < 500) return "4.0.0";
  return "5.0.0";
}

std::string rfc5322_date(TimePoint t) {
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  using namespace std::chrono;
  const std::time_t tt =
      system_clock::to_time_t(time_point_cast<system_clock::duration>(floor<seconds>(t)));
  std::tm tm{};
  gmtime_r(&tt, &tm);
  return fmt::format("{}, {:02} {} {:04} {:02}:{:02}:{:02} +0000", kDays[tm.tm_wday % 7],
                     tm.tm_mday, kMonths[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                     tm.tm_sec);
}

namespace {

// The notice says the worst that happened: a failure, else a delay, else a report.
struct Outcome {
  bool any_failed = false;
  bool any_delayed = false;
};

Outcome outcome_of(const std::vector<DsnRecipient>& recipients) {
  Outcome o;
  for (const auto& r : recipients) {
    o.any_failed = o.any_failed || r.action == DsnAction::failed;
    o.any_delayed = o.any_delayed || r.action == DsnAction::delayed;
  }
  return o;
}

// --- part 1: for people -------------------------------------------------------------------

std::string human_readable_part(const DsnInput& in, const std::string& mta, Outcome outcome,
                                bool full) {
  std::string human;
  human += fmt::format("This is the mail system at {}.\r\n\r\n", mta);
  std::string intro;
  if (outcome.any_failed) {
    intro =
        "Your message could not be delivered to one or more recipients. Each is listed below "
        "with the reason.";
  } else if (outcome.any_delayed) {
    intro =
        "Your message has not been delivered yet to one or more recipients. The mail system "
        "will keep trying; you do not need to send the message again.";
  } else {
    intro = "This is the delivery report you asked for.";
  }
  if (!in.original.empty()) {
    intro += full ? " Your message is attached after the machine-readable report."
                  : " The header of your message is attached after the machine-readable report.";
  }
  human += wrap("", "", intro);
  for (const auto& r : in.recipients) {
    human += "\r\n";
    human +=
        wrap(fmt::format("<{}>: ", single_line(r.final_recipient)), "    ", describe(r.action));
    if (!r.remote_mta.empty()) human += wrap("    Remote server: ", "      ", r.remote_mta);
    if (!r.reply.empty()) human += wrap("    Reply: ", "      ", r.reply.to_string());
    if (r.action == DsnAction::delayed && r.will_retry_until != TimePoint{}) {
      human += wrap("    Will retry until: ", "      ", rfc5322_date(r.will_retry_until));
    }
  }
  return human;
}

// --- part 2: for machines (RFC 3464 §2) ---------------------------------------------------

std::string per_message_fields(const DsnInput& in, const std::string& mta) {
  std::string status;
  status += header("Reporting-MTA", "dns; " + mta);
  if (!in.envid.empty()) status += header("Original-Envelope-Id", in.envid);
  if (in.arrival != TimePoint{}) status += header("Arrival-Date", rfc5322_date(in.arrival));
  return status;
}

std::string per_recipient_fields(const DsnRecipient& r) {
  std::string status;
  if (!r.original_recipient.empty()) {
    status += header("Original-Recipient", original_recipient_value(r.original_recipient));
  }
  status += header("Final-Recipient", address_type_field(r.final_recipient));
  status += header("Action", to_string(r.action));
  status += header("Status", status_for(r));
  if (!r.remote_mta.empty()) status += header("Remote-MTA", "dns; " + r.remote_mta);
  // "smtp" is for what a server said (RFC 3464 §2.3.6); mailq's own replies ("[internal]
  // ...": a connection that failed, a message that expired) are of its own type.
  if (!r.reply.empty()) {
    const bool own = r.reply.text.rfind("[internal]", 0) == 0;
    status += header("Diagnostic-Code", (own ? "X-mailq; " : "smtp; ") + r.reply.to_string());
  }
  if (r.last_attempt != TimePoint{}) {
    status += header("Last-Attempt-Date", rfc5322_date(r.last_attempt));
  }
  if (r.action == DsnAction::delayed && r.will_retry_until != TimePoint{}) {
    status += header("Will-Retry-Until", rfc5322_date(r.will_retry_until));
  }
  return status;
}

// `global`: an address needs RFC 6533 message/global-delivery-status.
std::string delivery_status_part(const DsnInput& in, const std::string& mta, bool* global) {
  std::string status = per_message_fields(in, mta);
  *global = false;
  for (const auto& r : in.recipients) {
    status += "\r\n";
    status += per_recipient_fields(r);
    *global = *global || has_8bit(r.final_recipient) || has_8bit(r.original_recipient);
  }
  return status;
}

// --- the boundary and the message id ------------------------------------------------------

// The seed of the boundary and of the message id: the caller's, else a counter.
std::string unique_seed(const DsnInput& in) {
  static std::atomic<std::uint64_t> counter{0};
  std::string seed = token(in.boundary_seed, "'()+_,-.:=?");
  if (seed.empty()) seed = fmt::format("n{}", counter.fetch_add(1));
  return seed;
}

// From the seed and the time, made longer until no part contains it.
std::string make_boundary(const DsnInput& in, const std::string& seed, const std::string& mta,
                          const std::string& human, const std::string& status,
                          const std::string& original) {
  using namespace std::chrono;
  const auto now_s = duration_cast<seconds>(in.now.time_since_epoch()).count();
  std::string boundary = fmt::format("{}/{}/{}", seed, now_s, token(mta, ".-"));
  if (boundary.size() > 60) boundary.resize(60);  // RFC 2046: at most 70
  for (int n = 1; human.find("--" + boundary) != std::string::npos ||
                  status.find("--" + boundary) != std::string::npos ||
                  original.find("--" + boundary) != std::string::npos;
       ++n) {
    boundary = fmt::format("{}={}", boundary.substr(0, 60), n);
  }
  return boundary;
}

std::string make_message_id(TimePoint now, const std::string& seed, const std::string& mta) {
  using namespace std::chrono;
  std::tm tm{};
  const std::time_t tt =
      system_clock::to_time_t(time_point_cast<system_clock::duration>(floor<seconds>(now)));
  gmtime_r(&tt, &tm);
  return fmt::format("<{:04}{:02}{:02}{:02}{:02}{:02}.{}@{}>", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, token(seed, "-._"),
                     token(mta, ".-"));
}

// --- the message --------------------------------------------------------------------------

// The header section of the notification, up to the MIME preamble.
std::string message_headers(const DsnInput& in, const std::string& mta, const char* subject,
                            const std::string& message_id, const std::string& boundary,
                            bool eight_bit) {
  const std::string from =
      in.from_address.empty() ? "MAILER-DAEMON@" + mta : single_line(in.from_address);
  std::string out;
  out += header("From", fmt::format("Mail Delivery System <{}>", from));
  if (!in.to_address.empty()) out += header("To", fmt::format("<{}>", in.to_address));
  out += header("Subject", subject);
  out += header("Date", rfc5322_date(in.now));
  out += header("Message-ID", message_id);
  const std::string original_id = bracketed_msgid(in.original_message_id);
  if (!original_id.empty()) {
    out += header("In-Reply-To", original_id);
    out += header("References", original_id);
  }
  out += header("Auto-Submitted", "auto-replied");  // RFC 3834 §5: never answer this
  out += "MIME-Version: 1.0\r\n";
  out += "Content-Type: multipart/report; report-type=delivery-status;\r\n";
  out += fmt::format("\tboundary=\"{}\"\r\n", boundary);
  out += fmt::format("Content-Transfer-Encoding: {}\r\n", eight_bit ? "8bit" : "7bit");
  out += "\r\n";
  out += "This is a MIME-encapsulated message.\r\n\r\n";
  return out;
}

// --- part 3: the original, whole (RET=FULL) or its header section -------------------------

std::string returned_content_part(const std::string& original, bool full) {
  // UTF-8 in the header section (RFC 6532): message/global and message/global-headers
  // (RFC 6533 §3, §6) rather than the types whose headers are ASCII only.
  const bool utf8_headers = has_8bit(header_section(original));
  std::string out;
  out += full ? "Content-Description: Undelivered Message\r\n"
              : "Content-Description: Undelivered Message Headers\r\n";
  out += fmt::format("Content-Type: {}\r\n",
                     full ? (utf8_headers ? "message/global" : "message/rfc822")
                          : (utf8_headers ? "message/global-headers" : "text/rfc822-headers"));
  if (has_8bit(original)) out += "Content-Transfer-Encoding: 8bit\r\n";
  out += "\r\n";
  out += original;
  out += "\r\n";
  return out;
}

}  // namespace

std::string build_dsn(const DsnInput& in) {
  const std::string mta = [&] {
    std::string m = token(in.reporting_mta, ".-:[]");
    return m.empty() ? std::string("localhost") : m;
  }();
  const bool full = in.ret == DsnRet::full;
  const Outcome outcome = outcome_of(in.recipients);
  const char* subject = outcome.any_failed    ? "Undelivered Mail Returned to Sender"
                        : outcome.any_delayed ? "Delayed Mail (still being retried)"
                                              : "Successful Mail Delivery Report";

  const std::string human = human_readable_part(in, mta, outcome, full);
  bool global = false;  // RFC 6533 message/global-delivery-status for UTF-8 addresses
  const std::string status = delivery_status_part(in, mta, &global);
  const std::string original = normalise(full ? in.original : header_section(in.original));
  const bool eight_bit = has_8bit(human) || has_8bit(status) || has_8bit(original);

  const std::string seed = unique_seed(in);
  const std::string boundary = make_boundary(in, seed, mta, human, status, original);
  std::string out =
      message_headers(in, mta, subject, make_message_id(in.now, seed, mta), boundary, eight_bit);

  out += fmt::format("--{}\r\n", boundary);
  out += "Content-Description: Notification\r\n";
  out += fmt::format("Content-Type: text/plain; charset={}\r\n",
                     has_8bit(human) ? "utf-8" : "us-ascii");
  if (has_8bit(human)) out += "Content-Transfer-Encoding: 8bit\r\n";
  out += "\r\n";
  out += human;
  out += "\r\n";

  out += fmt::format("--{}\r\n", boundary);
  out += "Content-Description: Delivery report\r\n";
  out += fmt::format("Content-Type: message/{}delivery-status\r\n", global ? "global-" : "");
  if (has_8bit(status)) out += "Content-Transfer-Encoding: 8bit\r\n";
  out += "\r\n";
  out += status;
  out += "\r\n";

  if (!original.empty()) {
    out += fmt::format("--{}\r\n", boundary);
    out += returned_content_part(original, full);
  }
  out += fmt::format("--{}--\r\n", boundary);
  return out;
}

}  // namespace mailq
