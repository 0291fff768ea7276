// mailq-send — submit a message like sendmail.
//
//   mailq-send --spool DIR [--config FILE] [--control PATH] [-f SENDER] [-t] [RCPT...] < message
//
// Reads an RFC 5322 message from standard input, takes its recipients from the arguments
// and/or (-t) its To, Cc and Bcc headers, and queues it durably: through the running relay's
// control socket when a mailq-relay holds the spool, else straight into the spool (a relay
// started later delivers it). Prints the queue id. See usage() for the exit statuses.
#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "examples/relay/config.h"
#include "examples/relay/control.h"
#include "examples/relay/tools.h"
#include "mailq/address.h"
#include "mailq/log.h"
#include "mailq/queue.h"
#include "mailq/route.h"
#include "mailq/spool/file_spool.h"

namespace {

using namespace mailq;

// sysexits.h
constexpr int kExOk = 0;
constexpr int kExUsage = 64;
constexpr int kExDataErr = 65;
constexpr int kExTempFail = 75;
constexpr int kExConfig = 78;

constexpr std::uint64_t kDefaultMaxSize = 50ull << 20;
constexpr std::size_t kMaxLine = 998;  // RFC 5322 2.1.1, without the CRLF

const char* const kUsage =
    "usage: mailq-send --spool DIR [--config FILE] [--control PATH] [-f SENDER] [-t] [RCPT...]"
    " < message\n"
    "\n"
    "Queues the RFC 5322 message read from standard input and prints its queue id.\n"
    "\n"
    "  --spool DIR      the relay's spool (default: the config's `spool`)\n"
    "  --config FILE    the relay's configuration: spool, control socket, routes, size limit\n"
    "  --control PATH   the relay's control socket (default: the config's `control`, else\n"
    "                   DIR/control.sock)\n"
    "  -f SENDER        the envelope sender; \"<>\" or \"\" for the null reverse path\n"
    "                   (default: the From header's address, else USER@HOSTNAME)\n"
    "  -t               take recipients from the To, Cc and Bcc headers too (Bcc is always\n"
    "                   removed from the queued message)\n"
    "  -i, -oi, -oX     accepted and ignored for sendmail compatibility (input always ends\n"
    "                   at EOF)\n"
    "\n"
    "LF or CRLF line ends are accepted (stored as CRLF). When a mailq-relay holds the spool the\n"
    "message goes through its control socket; otherwise it is written to the spool directly.\n"
    "\n"
    "exit status: 0 queued; 64 usage error or bad address; 65 bad message (empty, NUL octet,\n"
    "line over 998 octets, too large); 75 the queue cannot take it now (spool unusable, disk\n"
    "full, relay unreachable), try again later; 78 configuration error.\n";

int fail(int status, const std::string& message) {
  std::fprintf(stderr, "mailq-send: %s\n", message.c_str());
  return status;
}

struct Options {
  std::string spool;
  std::string config;
  std::string control;
  std::optional<std::string> sender;
  bool from_headers = false;
  std::vector<std::string> recipients;
};

// --- the message -------------------------------------------------------------------------

struct HeaderField {
  std::string name;  // as written
  std::string raw;   // the whole field, folded lines included, each ending in CRLF
  std::string value() const {
    // Unfolded: CRLF followed by whitespace is whitespace (RFC 5322 2.2.3).
    std::string v = raw.substr(raw.find(':') + 1);
    std::string out;
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (v[i] == '\r' || v[i] == '\n') continue;
      out += v[i];
    }
    return out;
  }
};

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

// Splits the input into lines, checking NUL, bare CR and line length. LF and CRLF end a line;
// a CR not followed by LF is refused: read as a line end it would let a header value go on
// as a new header line (and the receiving side of SMTP refuses it as well).
std::optional<std::string> split_lines(std::string_view in, std::vector<std::string>* lines) {
  std::string cur;
  std::size_t number = 1;
  for (std::size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '\0') return "the message contains a NUL octet on line " + std::to_string(number);
    if (c == '\r' && (i + 1 == in.size() || in[i + 1] != '\n'))
      return "line " + std::to_string(number) +
             " of the message holds a bare CR (a CR not followed by LF); lines end with LF or "
             "CRLF";
    if (c == '\r' || c == '\n') {
      if (c == '\r') ++i;
      lines->push_back(std::move(cur));
      cur.clear();
      ++number;
      continue;
    }
    cur += c;
    if (cur.size() > kMaxLine)
      return "line " + std::to_string(number) +
             " of the message is longer than 998 octets (RFC 5322 2.1.1); encode the body "
             "(quoted-printable or base64)";
  }
  if (!cur.empty()) lines->push_back(std::move(cur));
  return std::nullopt;
}

struct Message {
  std::vector<HeaderField> headers;
  std::vector<std::string> body;  // lines after the empty line, without CRLF
  bool has_separator = false;

  const HeaderField* find(std::string_view name) const {
    for (const auto& h : headers)
      if (iequals(h.name, name)) return &h;
    return nullptr;
  }
  std::vector<std::string> values(std::string_view name) const {
    std::vector<std::string> out;
    for (const auto& h : headers)
      if (iequals(h.name, name)) out.push_back(h.value());
    return out;
  }
  void remove(std::string_view name) {
    std::erase_if(headers, [&](const HeaderField& h) { return iequals(h.name, name); });
  }
  std::string render() const {
    std::string out;
    for (const auto& h : headers) out += h.raw;
    if (has_separator || !body.empty()) out += "\r\n";
    for (const auto& l : body) {
      out += l;
      out += "\r\n";
    }
    return out;
  }
};

// A header whose addresses are used (From for the sender, To / Cc / Bcc with -t) may hold no
// control character once unfolded (a horizontal tab aside): such a value is no address list.
std::optional<std::string> check_address_header(const HeaderField& h) {
  const std::string v = h.value();
  for (char c : v) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f)
      return "the " + h.name + " header holds a control character (\"" + relay::escape_controls(v) +
             "\"): refused, nothing was queued";
  }
  return std::nullopt;
}

bool is_field_name(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (static_cast<unsigned char>(c) <= 32 || static_cast<unsigned char>(c) >= 127 || c == ':')
      return false;
  return true;
}

Message parse_message(std::vector<std::string> lines) {
  Message m;
  std::size_t i = 0;
  // An mbox "From " line before the headers is not part of the message (sendmail drops it).
  if (!lines.empty() && lines[0].rfind("From ", 0) == 0) ++i;
  for (; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    if (l.empty()) {
      m.has_separator = true;
      ++i;
      break;
    }
    if ((l[0] == ' ' || l[0] == '\t') && !m.headers.empty()) {
      m.headers.back().raw += l + "\r\n";
      continue;
    }
    std::size_t colon = l.find(':');
    std::string name = colon == std::string::npos ? std::string() : l.substr(0, colon);
    while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.pop_back();
    if (!is_field_name(name)) break;  // not a header: the body starts here (no separator)
    m.headers.push_back({name, l + "\r\n"});
  }
  for (; i < lines.size(); ++i) m.body.push_back(std::move(lines[i]));
  return m;
}

// --- delivery ----------------------------------------------------------------------------

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

std::string user_name() {
  if (const passwd* pw = ::getpwuid(::geteuid()); pw && pw->pw_name && *pw->pw_name)
    return pw->pw_name;
  if (const char* u = std::getenv("USER"); u && *u) return u;
  return "root";
}

std::string rfc5322_date(std::time_t t) {
  std::tm tm{};
  localtime_r(&t, &tm);
  static const char* const kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char* const kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  long off = tm.tm_gmtoff / 60;
  char sign = off < 0 ? '-' : '+';
  if (off < 0) off = -off;
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%s, %02d %s %04d %02d:%02d:%02d %c%02ld%02ld",
                kDays[tm.tm_wday % 7], tm.tm_mday, kMonths[tm.tm_mon % 12], tm.tm_year + 1900,
                tm.tm_hour, tm.tm_min, tm.tm_sec, sign, off / 60, off % 60);
  return buf;
}

std::string new_message_id(const std::string& host) {
  std::random_device rd;
  std::uint64_t r = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  auto now = std::chrono::duration_cast<std::chrono::microseconds>(
                 std::chrono::system_clock::now().time_since_epoch())
                 .count();
  char buf[96];
  std::snprintf(buf, sizeof(buf), "<%llx.%llx.%d@", static_cast<unsigned long long>(now),
                static_cast<unsigned long long>(r), static_cast<int>(::getpid()));
  return buf + host + ">";
}

bool read_all(std::FILE* in, std::uint64_t limit, std::string* out, bool* too_large) {
  char buf[65536];
  while (true) {
    std::size_t n = std::fread(buf, 1, sizeof(buf), in);
    if (n > 0) {
      if (out->size() + n > limit) {
        *too_large = true;
        return true;
      }
      out->append(buf, n);
    }
    if (n < sizeof(buf)) return !std::ferror(in);
  }
}

int exit_for(const Error& e) {
  if (e.code == errc::invalid_address || e.code == errc::no_recipients) return kExUsage;
  if (e.code == errc::forbidden_character || e.code == errc::too_long ||
      e.code == errc::message_too_large || e.code == errc::invalid_parameter)
    return kExDataErr;
  return kExTempFail;
}

}  // namespace

int main(int argc, char** argv) {
  // Before any argument is read: a CR or LF in a recipient argument must never become a
  // second recipient (or anything else).
  if (auto why = relay::check_arguments(argc, argv)) return fail(kExUsage, *why);
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* name, std::string* out) -> bool {
      std::string prefix = std::string(name) + "=";
      if (a.rfind(prefix, 0) == 0) {
        *out = a.substr(prefix.size());
        return true;
      }
      if (a != name) return false;
      if (i + 1 >= argc) {
        std::exit(fail(kExUsage, std::string("missing value for ") + name + "\n" + kUsage));
      }
      *out = argv[++i];
      return true;
    };
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return kExOk;
    }
    if (value("--spool", &opt.spool) || value("--config", &opt.config) ||
        value("--control", &opt.control))
      continue;
    if (a == "-f") {
      if (i + 1 >= argc) return fail(kExUsage, std::string("missing value for -f\n") + kUsage);
      opt.sender = argv[++i];
    } else if (a.rfind("-f", 0) == 0 && a.size() > 2 && a[2] != '-') {
      opt.sender = a.substr(2);
    } else if (a == "-t") {
      opt.from_headers = true;
    } else if (a == "-i" || (a.size() > 2 && a.rfind("-o", 0) == 0)) {
      // -i / -oi: input always ends at EOF (a lone dot is content). Other sendmail -oX
      // options (-odi, -oem, ...) tune a sendmail daemon that is not there: ignored.
    } else if (a == "--") {
      for (++i; i < argc; ++i) opt.recipients.push_back(argv[i]);
    } else if (!a.empty() && a[0] == '-') {
      return fail(kExUsage, "unknown option " + a + "\n" + kUsage);
    } else {
      opt.recipients.push_back(a);
    }
  }

  // Configuration: where the spool and the socket are, the routes, the size limit.
  auto target = relay::resolve_tool_target(opt.spool, opt.config, opt.control);
  if (!target) {
    if (target.error().code == errc::bad_state)
      return fail(kExUsage, target.error().message + "\n" + kUsage);
    return fail(kExConfig, target.error().message);
  }
  const std::optional<relay::RelayConfig>& config = target->config;
  const std::string spool_dir = target->spool;
  const std::string control = target->control;  // of the relay that would hold this spool
  std::uint64_t max_size = config ? config->listen.max_message_size : kDefaultMaxSize;
  if (config && config->queue.max_message_size)
    max_size = std::min(max_size, config->queue.max_message_size);
  if (max_size == 0) max_size = kDefaultMaxSize;

  // The message.
  std::string input;
  bool too_large = false;
  if (!read_all(stdin, max_size, &input, &too_large))
    return fail(kExTempFail, std::string("reading standard input: ") + std::strerror(errno));
  if (too_large)
    return fail(kExDataErr,
                "the message exceeds the limit of " + std::to_string(max_size) + " octets");
  std::vector<std::string> lines;
  if (auto why = split_lines(input, &lines)) return fail(kExDataErr, *why);
  bool blank = true;
  for (const auto& l : lines)
    if (l.find_first_not_of(" \t") != std::string::npos) blank = false;
  if (blank) return fail(kExDataErr, "empty message: nothing was read from standard input");
  Message msg = parse_message(std::move(lines));

  // Recipients: the arguments, then (-t) To, Cc and Bcc, each an address list.
  for (const auto& h : msg.headers) {
    const bool used = (!opt.sender && iequals(h.name, "From")) ||
                      (opt.from_headers &&
                       (iequals(h.name, "To") || iequals(h.name, "Cc") || iequals(h.name, "Bcc")));
    if (!used) continue;
    if (auto why = check_address_header(h)) return fail(kExDataErr, *why);
  }
  std::vector<std::string> lists = opt.recipients;
  if (opt.from_headers) {
    for (const char* h : {"To", "Cc", "Bcc"})
      for (auto& v : msg.values(h)) lists.push_back(std::move(v));
  }
  std::vector<std::string> rcpts;
  std::set<std::string> seen;  // local part as written, domain lowercased
  for (const auto& list : lists) {
    auto addresses = parse_address_list(list);
    if (!addresses) return fail(kExUsage, "bad recipient address " + addresses.error().message);
    for (const Address& a : *addresses)
      if (seen.insert(a.local_part() + "@" + a.routing_domain()).second)
        rcpts.push_back(a.to_string());
  }
  if (rcpts.empty())
    return fail(kExUsage, opt.from_headers
                              ? "no recipients: the To, Cc and Bcc headers name nobody and no "
                                "address was given"
                              : "no recipients: give addresses as arguments, or -t to read them "
                                "from the headers");

  // Sender.
  std::string sender;  // "" = the null reverse path
  if (opt.sender) {
    std::string s = *opt.sender;
    if (s.size() >= 2 && s.front() == '<' && s.back() == '>') s = s.substr(1, s.size() - 2);
    if (!s.empty()) {
      auto a = Address::parse(s);
      if (!a) return fail(kExUsage, "bad sender address \"" + s + "\": " + a.error().message);
      sender = a->to_string();
    }
  } else if (auto from = msg.find("From")) {
    auto list = split_address_list(from->value());
    if (list.empty()) return fail(kExUsage, "the From header has no address; give one with -f");
    auto a = Address::parse(list[0]);
    if (!a)
      return fail(kExUsage, "bad sender address \"" + list[0] + "\" in the From header: " +
                                a.error().message + " (give one with -f)");
    sender = a->to_string();
  } else {
    std::string s = user_name() + "@" + host_name();
    auto a = Address::parse(s);
    if (!a)
      return fail(kExUsage, "cannot make a sender address from \"" + s + "\" (" +
                                a.error().message + "); give one with -f");
    sender = a->to_string();
  }

  // What RFC 5322 requires and a submitter adds; Bcc never leaves the submitter.
  msg.remove("Bcc");
  const std::string host = config && !config->helo.empty() ? config->helo : host_name();
  if (!msg.find("From") && !sender.empty())
    msg.headers.push_back({"From", "From: " + sender + "\r\n"});
  if (!msg.find("Date"))
    msg.headers.push_back({"Date", "Date: " + rfc5322_date(std::time(nullptr)) + "\r\n"});
  if (!msg.find("Message-ID"))
    msg.headers.push_back({"Message-ID", "Message-ID: " + new_message_id(host) + "\r\n"});
  msg.has_separator = true;
  std::string body = msg.render();
  if (body.size() > max_size)
    return fail(kExDataErr,
                "the message exceeds the limit of " + std::to_string(max_size) + " octets");

  auto envelope = make_envelope(sender, rcpts);
  if (!envelope) return fail(exit_for(envelope.error()), envelope.error().message);

  // Into the queue: the spool directly, or the relay that holds it.
  ManualClock clock(std::chrono::system_clock::now());
  auto spool = relay::open_tool_spool(*target, clock);
  if (!spool) {
    if (!relay::spool_in_use(spool.error()))
      return fail(kExTempFail, "cannot open the spool: " + spool.error().message);
    relay::ControlRequest req;
    req.argv = {"submit", std::to_string(body.size()), sender.empty() ? "<>" : sender};
    for (const auto& r : rcpts) {
      if (r.find_first_of(" \t") != std::string::npos)
        return fail(kExUsage, "the address \"" + r +
                                  "\" has a space, which the relay's control socket cannot "
                                  "carry");
      req.argv.push_back(r);
    }
    // control.h bounds the request line at 64 KiB.
    std::size_t line = 0;
    for (const auto& arg : req.argv) line += arg.size() + 1;
    if (line > 64 * 1024)
      return fail(kExUsage,
                  "too many recipients for one submission through the relay's control "
                  "socket (its request line is limited to 64 KiB): split the list");
    req.body = std::move(body);
    auto res = relay::control_call(control, req, std::chrono::minutes(2));
    if (!res)
      return fail(kExTempFail,
                  "the spool is held by a running relay, but its control socket "
                  "cannot be reached: " +
                      res.error().message);
    if (!res->ok) return fail(kExTempFail, "the relay did not take the message: " + res->error);
    std::string id = res->payload.substr(0, res->payload.find('\n'));
    MessageId parsed;
    if (!MessageId::parse(id, &parsed))
      return fail(kExTempFail, "the relay answered an unexpected payload: \"" + id + "\"");
    std::printf("%s\n", id.c_str());
    return std::fflush(stdout) == 0 ? kExOk : kExTempFail;
  }

  RouteTable routes;
  if (config) {
    auto t = config->route_table();
    if (!t) return fail(kExConfig, t.error().message);
    routes = std::move(t.value());
  }
  QueueConfig qc = config ? config->queue : QueueConfig{};
  // The E record goes to the relay's log when there is one to append to.
  std::FILE* logf = nullptr;
  std::unique_ptr<MessagingServerLog> log;
  if (config && !config->log.empty() && config->log != "-") {
    logf = std::fopen(config->log.c_str(), "a");
    if (logf) log = std::make_unique<MessagingServerLog>(logf);
  }
  int status = kExTempFail;
  {
    Queue queue(**spool, routes, clock, log.get(), qc);
    RecoveryReport report;
    if (auto recovered = queue.recover(&report); !recovered) {
      if (logf) std::fclose(logf);
      return fail(kExTempFail, "cannot read the spool: " + recovered.error().message);
    }
    std::optional<Result<MessageId>> result;
    queue.enqueue(
        envelope.value(), std::move(body),
        [&](Result<MessageId> r) { result.emplace(std::move(r)); }, EnqueueOptions{"local", false});
    (*spool)->flush();  // the group commit: durable before we say so
    if (!result) {
      status = fail(kExTempFail, "the spool did not confirm the message");
    } else if (!result->ok()) {
      // The queue's words include the spool's ("could not store the message: write ...").
      const Error& e = result->error();
      status = fail(exit_for(e), e.message);
    } else {
      std::printf("%s\n", result->value().to_string().c_str());
      status = std::fflush(stdout) == 0 ? kExOk : kExTempFail;
    }
  }
  if (logf) std::fclose(logf);
  return status;
}
