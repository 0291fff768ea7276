#include "mailq/log.h"

#include <fmt/format.h>

#include <cerrno>
#include <chrono>
#include <ctime>
#include <string_view>
#include <system_error>

namespace mailq {
namespace {

// Column layout of the first line, taken from seed 002:
//   "15-Jan-1998 10:31:05.18 tcp_internal   tcp_local   E 3"
//   "15-Jan-1998 10:31:10.37 tcp_local                  Q 3"
// The source channel takes 15 columns and the destination channel 12, each padded with
// spaces; a longer name still gets one separating space, so the fields stay splittable.
constexpr std::size_t kSourceWidth = 15;
constexpr std::size_t kDestWidth = 12;

constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

// "15-Jan-1998 10:31:05.18": hundredths truncated, never rounded up into the next second.
std::string format_time(TimePoint t, bool utc) {
  using namespace std::chrono;
  const auto secs = floor<seconds>(t);
  const auto centis = duration_cast<milliseconds>(t - secs).count() / 10;
  const std::time_t tt = system_clock::to_time_t(time_point_cast<system_clock::duration>(secs));
  std::tm tm{};
  if (utc) {
    gmtime_r(&tt, &tm);
  } else {
    localtime_r(&tt, &tm);
  }
  return fmt::format("{:02}-{}-{:04} {:02}:{:02}:{:02}.{:02}", tm.tm_mday, kMonths[tm.tm_mon % 12],
                     tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec, centis);
}

void append_padded(std::string& out, std::string_view field, std::size_t width) {
  out += field;
  out.append(field.size() + 1 < width ? width - field.size() : 1, ' ');
}

// A field on one line: control characters (which could forge a record or corrupt a terminal)
// become '?'.
std::string one_line(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    out += (u < 0x20 || u == 0x7f) ? '?' : c;
  }
  return out;
}

// A continuation line starts with one space, so no value, whatever it contains, can start a
// line that looks like a new record. A value with embedded line breaks (a multi-line server
// reply) becomes several continuation lines.
void append_continuation(std::string& out, std::string_view value) {
  std::size_t start = 0;
  while (start <= value.size()) {
    std::size_t end = value.find_first_of("\r\n", start);
    if (end == std::string_view::npos) end = value.size();
    const std::string_view line = value.substr(start, end - start);
    if (!line.empty() || (start == 0 && end == value.size())) {
      out += ' ';
      out += one_line(line);
      out += '\n';
    }
    start = end + 1;
  }
}

std::string original_recipient_field(const Event& e) {
  // Event carries "rfc822;user@some.org"; a bare address is given its address type, and a
  // missing one falls back to the active recipient, as Messaging Server logs it.
  if (e.original_recipient.empty()) return "rfc822;" + e.recipient;
  if (e.original_recipient.find(';') == std::string::npos) return "rfc822;" + e.original_recipient;
  return e.original_recipient;
}

std::string details(const Event& e) {
  std::string text;
  if (!e.reply.empty()) text = e.reply.to_string();
  for (const auto& line : e.diagnostic) {
    if (line.empty()) continue;
    if (!text.empty()) text += "; ";
    text += line;
  }
  return one_line(text);
}

std::string format_notice(const Event& e, const LogFormat& format) {
  std::string out = format_time(e.time, format.utc);
  out += ' ';
  const std::string channel = one_line(e.source_channel.empty() ? "mailq" : e.source_channel);
  append_padded(out, channel, kSourceWidth);
  switch (e.kind) {
    case EventKind::destination_down:
      out += "destination down: ";
      break;
    case EventKind::destination_up:
      out += "destination up: ";
      break;
    default:
      out += "notice: ";
      break;
  }
  const std::string text = details(e);
  if (!e.destination.empty()) {
    out += one_line(e.destination);
    if (!text.empty()) out += ": ";
  }
  out += text;
  // No trailing blanks when there was nothing to say.
  while (!out.empty() && out.back() == ' ') out.pop_back();
  out += '\n';
  return out;
}

}  // namespace

std::string hop_line(const Hop& hop) {
  return "dns;" + hop.host + " (TCP|" + hop.local.address + "|" + std::to_string(hop.local.port) +
         "|" + hop.remote.address + "|" + std::to_string(hop.remote.port) + ")";
}

std::vector<std::string> diagnostic_lines(const std::vector<Note>& notes) {
  std::vector<std::string> lines;
  for (const Note& n : notes) {
    switch (n.kind) {
      case Note::Kind::text:
        lines.push_back(n.text);
        break;
      case Note::Kind::dns:
        lines.push_back("dns; " + n.text);
        break;
      case Note::Kind::session:
        lines.push_back(n.hop.host.empty() ? n.reply.to_string()
                                           : hop_line(n.hop) + " " + n.reply.to_string());
        break;
      case Note::Kind::transaction:
        lines.push_back(hop_line(n.hop));
        if (n.reply.positive() && !n.hop.intermediate.empty())
          lines.push_back("(" + n.hop.intermediate + ")");
        if (n.hop.tls)
          lines.push_back("tls; " + n.hop.tls->version + " " + n.hop.tls->cipher +
                          (!n.hop.tls->dane.empty()
                               ? " verified by DANE TLSA " + n.hop.tls->dane
                               : (n.hop.tls->verified ? " verified" : " unverified")));
        lines.push_back("smtp; " + n.reply.to_string());
        break;
    }
  }
  return lines;
}

std::string format_log_record(const Event& event, const LogFormat& format) {
  const char action = action_letter(event.kind);
  if (action == ' ') return format_notice(event, format);

  std::string out = format_time(event.time, format.utc);
  out += ' ';
  append_padded(out, one_line(event.source_channel), kSourceWidth);
  append_padded(out, one_line(event.dest_channel), kDestWidth);
  out += action;
  out += ' ';
  const std::uint64_t blocks = event.size == 0 ? 1 : (event.size + 1023) / 1024;
  out += std::to_string(blocks);
  out += '\n';

  // The empty reverse path renders as "<>" so the line always has three fields.
  const std::string sender = event.sender.empty() ? std::string("<>") : one_line(event.sender);
  out += fmt::format(" {} {} {}\n", sender, one_line(original_recipient_field(event)),
                     one_line(event.recipient));
  if (format.log_filename && !event.queue_file.empty()) {
    append_continuation(out, event.queue_file);
  }
  if (format.log_message_id && !event.message_id.empty()) {
    append_continuation(out, event.message_id);
  }
  // A record explained by a DNS outcome ("dns; nx.test: NXDOMAIN") also says the reply the
  // recipient got, after it; the seed's records (a connection's, a transaction's) carry it in
  // their own lines, or show the reply alone when there is nothing to explain it.
  const std::string reply = event.reply.empty() ? std::string() : event.reply.to_string();
  bool any_diagnostic = false, dns_outcome = false, reply_said = false;
  for (const auto& line : event.diagnostic) {
    if (line.empty()) continue;
    append_continuation(out, line);
    any_diagnostic = true;
    dns_outcome = dns_outcome || line.rfind("dns; ", 0) == 0;
    reply_said = reply_said || (!reply.empty() && line.find(reply) != std::string::npos);
  }
  const bool say_reply = !any_diagnostic || (dns_outcome && !reply_said);
  if (say_reply && !reply.empty() && event.kind != EventKind::enqueued)
    append_continuation(out, reply);
  return out;
}

void MessagingServerLog::on_event(const Event& event) {
  const std::string record = format_log_record(event, format_);
  if (write_) {
    write_(record);
    return;
  }
  if (out_ == nullptr) return;
  // One fwrite per record: with the stream's lock held for the whole call, records from
  // several logs sharing a FILE* never interleave. A failure is thrown so that the engine's
  // error handler reports it (EventSink contract); it does not unwind the engine.
  errno = 0;
  const std::size_t written = std::fwrite(record.data(), 1, record.size(), out_);
  if (written != record.size() || std::fflush(out_) != 0) {
    const int err = errno != 0 ? errno : EIO;
    throw std::system_error(err, std::generic_category(), "mailq: writing the log failed");
  }
}

}  // namespace mailq
