// mailq-send — submit a message like sendmail (and be `sendmail` when a host links it so).
//
//   mailq-send [--spool DIR | --config FILE] [-f SENDER] [-t] [-N DSN] [-R RET] [-V ENVID]
//              [-F NAME] [RCPT...] < message
//
// Reads an RFC 5322 message from standard input, takes its recipients from the arguments
// and/or (-t) its To, Cc and Bcc headers, and writes it durably into the spool's maildrop,
// where a running relay picks it up at once (one that is not running finds it at start).
// Prints the queue id the message will have. -bs speaks SMTP on standard input, -bp lists the
// queue, -q retries it. See kUsage for everything and the exit statuses.
#include <fmt/format.h>
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
#include "examples/relay/maildrop.h"
#include "examples/relay/tools.h"
#include "mailq/address.h"
#include "mailq/dsn.h"
#include "mailq/smtp_server.h"

namespace {

using namespace mailq;

// sysexits.h
constexpr int kExOk = 0;
constexpr int kExUsage = 64;
constexpr int kExDataErr = 65;
constexpr int kExUnavailable = 69;
constexpr int kExTempFail = 75;
constexpr int kExIoErr = 74;
constexpr int kExConfig = 78;

constexpr std::uint64_t kDefaultMaxSize = 50ull << 20;
constexpr std::size_t kMaxLine = 998;  // RFC 5322 2.1.1, without the CRLF

const char* const kUsage =
    "usage: mailq-send [--spool DIR | --config FILE] [options] [RCPT...] < message\n"
    "       mailq-send -bs | -bp | -q       (also as `sendmail`, `mailq`, `newaliases`)\n"
    "\n"
    "Queues the RFC 5322 message read from standard input and prints its queue id. The message\n"
    "is written into the spool's maildrop (DIR/maildrop): durable when mailq-send exits 0, picked\n"
    "up at once by a running mailq-relay, or by the next one to start. No lock is taken and\n"
    "nothing of the queue is read: any number of mailq-send run at once, at the same cost\n"
    "whatever the queue holds. Submitters need write access to DIR/maildrop and its tmp/.\n"
    "\n"
    "  --spool DIR      the relay's spool (default: the config's `spool`)\n"
    "  --config FILE, -C FILE\n"
    "                   the relay's configuration: spool, size limit, host name. Without\n"
    "                   --spool and --config: $MAILQ_CONFIG, else /etc/mailq/mailq-relay.toml\n"
    "  --control PATH   submit through the running relay's control socket instead: queued\n"
    "                   when mailq-send exits (75 when no relay answers); no -N, -R, -V\n"
    "  -f SENDER, -r SENDER\n"
    "                   the envelope sender; \"<>\" or \"\" for the null reverse path\n"
    "                   (default: the From header's address, else USER@HOSTNAME)\n"
    "  -F NAME          the full name in the From header mailq-send adds when there is none\n"
    "  -t               take recipients from the To, Cc and Bcc headers too (Bcc is always\n"
    "                   removed from the queued message)\n"
    "  -N DSN           delivery status notifications: never, or a comma-separated list of\n"
    "                   success, failure, delay (RFC 3461 NOTIFY; default: failure)\n"
    "  -R RET           what a notification returns: full or hdrs (RFC 3461 RET)\n"
    "  -V ENVID         the envelope id notifications carry (RFC 3461 ENVID)\n"
    "  -bm              submit (the default)\n"
    "  -bs              speak SMTP on standard input and output; each message accepted goes\n"
    "                   into the maildrop (250 ... queued as ID)\n"
    "  -bp              list the queue (runs `mailq-queue list`; also when called as mailq)\n"
    "  -q               retry every deferred message now (runs `mailq-queue flush`)\n"
    "  -bi, -I          no alias database to rebuild: says so, exits 0 (newaliases)\n"
    "  -i, -oX, -qINTERVAL, -v, -n, -m, -U, -G, -Am, -Ac, -B TYPE, -L LABEL, -X FILE,\n"
    "  -h HOPS, -O OPT, -o X VALUE\n"
    "                   accepted and ignored for sendmail compatibility (input always ends\n"
    "                   at EOF; mailq-relay retries on its own schedule)\n"
    "\n"
    "LF or CRLF line ends are accepted (stored as CRLF).\n"
    "\n"
    "exit status: 0 queued; 64 usage error or bad address; 65 bad message (empty, NUL octet,\n"
    "line over 998 octets, too large); 69 mailq-queue cannot be run (-bp, -q); 74 standard\n"
    "output failed (-bs); 75 the message cannot be stored now (maildrop not writable, disk\n"
    "full; with --control: no relay answers), try again later; 78 configuration error.\n";

int fail(int status, const std::string& message) {
  std::fprintf(stderr, "mailq-send: %s\n", message.c_str());
  return status;
}

enum class Mode { deliver, smtp, list, flush, newaliases, nothing };

struct Options {
  Mode mode = Mode::deliver;
  std::string spool;
  std::string config;
  std::string control;
  bool through_control = false;  // --control given
  std::optional<std::string> sender;
  std::string full_name;  // -F
  bool from_headers = false;
  std::optional<std::uint8_t> notify;  // -N
  std::optional<DsnRet> ret;           // -R
  std::string envid;                   // -V
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

// --- the command line ----------------------------------------------------------------------

// The value of an option written attached ("-Nnever") or as the next argument ("-N never").
// Null when missing (the caller says so).
const char* option_value(int argc, char** argv, int* i, std::size_t letters) {
  const std::string_view a = argv[*i];
  if (a.size() > letters) return argv[*i] + letters;
  if (*i + 1 >= argc) return nullptr;
  return argv[++*i];
}

std::optional<std::uint8_t> parse_notify(std::string_view v) {
  std::uint8_t flags = 0;
  bool never = false;
  while (!v.empty()) {
    const std::size_t comma = v.find(',');
    const std::string_view word = v.substr(0, comma);
    if (iequals(word, "never"))
      never = true;
    else if (iequals(word, "success"))
      flags |= kNotifySuccess;
    else if (iequals(word, "failure"))
      flags |= kNotifyFailure;
    else if (iequals(word, "delay"))
      flags |= kNotifyDelay;
    else
      return std::nullopt;
    if (comma == std::string_view::npos) break;
    v.remove_prefix(comma + 1);
  }
  if (never && flags) return std::nullopt;  // RFC 3461 4.1: NEVER stands alone
  if (never) return kNotifyNever;
  if (!flags) return std::nullopt;
  return flags;
}

// Parses the command line into `opt`; a status to exit with when it is wrong (or done).
std::optional<int> parse_command_line(int argc, char** argv, Options* opt) {
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
    // -X VALUE or -XVALUE.
    auto letter_value = [&](std::size_t letters, std::string* out) -> std::optional<int> {
      const std::string name = a.substr(0, letters);
      const char* v = option_value(argc, argv, &i, letters);
      if (!v) return fail(kExUsage, "missing value for " + name + "\n" + kUsage);
      *out = v;
      return std::nullopt;
    };
    if (a == "-h" && i + 1 >= argc) a = "--help";
    if (a == "--help") {
      std::fputs(kUsage, stdout);
      return kExOk;
    }
    if (value("--spool", &opt->spool) || value("--config", &opt->config)) continue;
    if (value("--control", &opt->control)) {
      opt->through_control = true;
      continue;
    }
    if (a.rfind("--", 0) == 0 && a.size() > 2)
      return fail(kExUsage, "unknown option " + a + "\n" + kUsage);
    std::string v;
    if (a.rfind("-f", 0) == 0 || a.rfind("-r", 0) == 0) {
      if (auto st = letter_value(2, &v)) return st;
      opt->sender = v;
    } else if (a == "-t") {
      opt->from_headers = true;
    } else if (a.rfind("-N", 0) == 0) {
      if (auto st = letter_value(2, &v)) return st;
      opt->notify = parse_notify(v);
      if (!opt->notify)
        return fail(kExUsage, "-N " + v +
                                  ": give \"never\" or a comma-separated list of success, "
                                  "failure and delay");
    } else if (a.rfind("-R", 0) == 0) {
      if (auto st = letter_value(2, &v)) return st;
      if (iequals(v, "full"))
        opt->ret = DsnRet::full;
      else if (iequals(v, "hdrs"))
        opt->ret = DsnRet::headers;
      else
        return fail(kExUsage, "-R " + v + ": give \"full\" or \"hdrs\"");
    } else if (a.rfind("-V", 0) == 0) {
      if (auto st = letter_value(2, &v)) return st;
      opt->envid = v;
    } else if (a.rfind("-F", 0) == 0) {
      if (auto st = letter_value(2, &v)) return st;
      opt->full_name = v;
    } else if (a.rfind("-C", 0) == 0) {
      if (auto st = letter_value(2, &v)) return st;
      opt->config = v;
    } else if (a.rfind("-B", 0) == 0 || a.rfind("-L", 0) == 0 || a.rfind("-X", 0) == 0 ||
               a.rfind("-h", 0) == 0 || a.rfind("-O", 0) == 0) {
      // Body type, syslog label, log file, hop count, daemon option: a sendmail daemon's.
      if (auto st = letter_value(2, &v)) return st;
    } else if (a == "-bm") {
      opt->mode = Mode::deliver;
    } else if (a == "-bs") {
      opt->mode = Mode::smtp;
    } else if (a == "-bp") {
      opt->mode = Mode::list;
    } else if (a == "-bi" || a == "-I") {
      opt->mode = Mode::newaliases;
    } else if (a.rfind("-b", 0) == 0) {
      return fail(kExUsage, "unsupported mode " + a +
                                ": mailq-send submits (-bm), speaks SMTP on standard input "
                                "(-bs) and lists the queue (-bp); run mailq-relay for a daemon");
    } else if (a == "-q") {
      opt->mode = Mode::flush;
    } else if (a.rfind("-qR", 0) == 0 || a.rfind("-qS", 0) == 0 || a.rfind("-qI", 0) == 0) {
      return fail(kExUsage, a.substr(0, 3) +
                                ": mailq retries by destination with mailq-queue release and "
                                "flush, not by a site pattern; use -q to retry everything");
    } else if (a.rfind("-q", 0) == 0) {
      // -q30m: run the queue every 30 minutes, a sendmail daemon's job: mailq-relay retries on
      // its own schedule. Accepted like Postfix does, nothing to do.
      opt->mode = Mode::nothing;
    } else if (a == "-i" || a == "-v" || a == "-n" || a == "-U" || a == "-G" || a == "-m" ||
               a == "-Am" || a == "-Ac" || (a.size() > 2 && a.rfind("-o", 0) == 0)) {
      // -i / -oi: input always ends at EOF (a lone dot is content). The others tune a
      // sendmail daemon that is not there (-odi, -oem, -v, ...): ignored, as Postfix does.
    } else if (a == "-o") {
      if (i + 2 < argc) i += 2;  // "-o x value"
    } else if (a == "--") {
      for (++i; i < argc; ++i) opt->recipients.push_back(argv[i]);
    } else if (!a.empty() && a[0] == '-') {
      return fail(kExUsage, "unknown option " + a + "\n" + kUsage);
    } else {
      opt->recipients.push_back(a);
    }
  }
  return std::nullopt;
}

// --- what -bp and -q run -------------------------------------------------------------------

// Runs mailq-queue (beside this program, else on PATH) with the same spool and a verb.
int run_queue_tool(const Options& opt, const char* verb) {
  std::string self(4096, '\0');
  ssize_t n = ::readlink("/proc/self/exe", self.data(), self.size() - 1);
  std::string tool = "mailq-queue";
  if (n > 0) {
    self.resize(static_cast<std::size_t>(n));
    const std::string beside = self.substr(0, self.rfind('/') + 1) + "mailq-queue";
    if (::access(beside.c_str(), X_OK) == 0) tool = beside;
  }
  std::vector<std::string> args{tool};
  if (!opt.spool.empty()) args.insert(args.end(), {"--spool", opt.spool});
  if (!opt.config.empty()) args.insert(args.end(), {"--config", opt.config});
  if (opt.through_control) args.insert(args.end(), {"--control", opt.control});
  args.push_back(verb);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(stdout);
  ::execvp(argv[0], argv.data());
  return fail(kExUnavailable, "cannot run " + tool + ": " + std::strerror(errno));
}

// --- into the queue ------------------------------------------------------------------------

// The display name -F gives a From header mailq-send adds: a quoted string, or RFC 2047
// encoded words when it is not ASCII.
std::string display_name(std::string_view name) {
  bool ascii = true;
  for (char c : name)
    if (static_cast<unsigned char>(c) >= 0x80) ascii = false;
  if (!ascii) {
    static const char* const k64 =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    // Encoded words of at most 45 octets of text each (60 in base64), UTF-8 sequences whole.
    std::size_t i = 0;
    while (i < name.size()) {
      std::size_t end = std::min(name.size(), i + 45);
      while (end < name.size() && end > i && (static_cast<unsigned char>(name[end]) & 0xc0) == 0x80)
        --end;
      std::string_view chunk = name.substr(i, end - i);
      std::string b64;
      for (std::size_t k = 0; k < chunk.size(); k += 3) {
        std::uint32_t v = static_cast<unsigned char>(chunk[k]) << 16;
        if (k + 1 < chunk.size()) v |= static_cast<unsigned char>(chunk[k + 1]) << 8;
        if (k + 2 < chunk.size()) v |= static_cast<unsigned char>(chunk[k + 2]);
        b64 += k64[(v >> 18) & 63];
        b64 += k64[(v >> 12) & 63];
        b64 += k + 1 < chunk.size() ? k64[(v >> 6) & 63] : '=';
        b64 += k + 2 < chunk.size() ? k64[v & 63] : '=';
      }
      if (!out.empty()) out += "\r\n ";
      out += "=?UTF-8?B?" + b64 + "?=";
      i = end;
    }
    return out;
  }
  std::string out = "\"";
  for (char c : name) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// Through a running relay's control socket (--control): the message is queued when this
// returns 0. DSN parameters cannot cross it.
int submit_through_control(const Options& opt, const std::string& control,
                           const std::string& sender, const std::vector<std::string>& rcpts,
                           std::string body) {
  if (opt.notify || opt.ret || !opt.envid.empty())
    return fail(kExUsage,
                "-N, -R and -V cannot cross the relay's control socket: submit without "
                "--control (through the maildrop)");
  relay::ControlRequest req;
  req.argv = {"submit", std::to_string(body.size()), sender.empty() ? "<>" : sender};
  for (const auto& r : rcpts) {
    if (r.find_first_of(" \t") != std::string::npos)
      return fail(kExUsage, "the address \"" + r +
                                "\" has a space, which the relay's control socket cannot "
                                "carry: submit without --control (through the maildrop)");
    req.argv.push_back(r);
  }
  // control.h bounds the request line at 64 KiB.
  std::size_t line = 0;
  for (const auto& arg : req.argv) line += arg.size() + 1;
  if (line > 64 * 1024)
    return fail(kExUsage,
                "too many recipients for one submission through the relay's control socket (its "
                "request line is limited to 64 KiB): submit without --control");
  req.body = std::move(body);
  auto res = relay::control_call(control, req, std::chrono::minutes(2));
  if (!res)
    return fail(kExTempFail, "no relay answers on its control socket: " + res.error().message);
  if (!res->ok) return fail(kExTempFail, "the relay did not take the message: " + res->error);
  std::string id = res->payload.substr(0, res->payload.find('\n'));
  MessageId parsed;
  if (!MessageId::parse(id, &parsed))
    return fail(kExTempFail, "the relay answered an unexpected payload: \"" + id + "\"");
  std::printf("%s\n", id.c_str());
  return std::fflush(stdout) == 0 ? kExOk : kExTempFail;
}

// Into the maildrop: durable when this returns 0; a relay queues it (at once when one runs).
int submit_to_maildrop(const std::string& spool, const Envelope& envelope, std::string_view body) {
  auto id = relay::write_maildrop(spool, envelope, body);
  if (!id) return fail(kExTempFail, "cannot write into the maildrop: " + id.error().message);
  std::printf("%s\n", id.value().to_string().c_str());
  return std::fflush(stdout) == 0 ? kExOk : kExTempFail;
}

// -bs: an SMTP session on standard input and output; every message into the maildrop.
int serve_smtp_on_stdio(const std::string& spool, const std::string& host, std::uint64_t max_size) {
  SmtpServerConfig sc;
  sc.hostname = host;
  // Room for the Received header added to each message: what SIZE promises is queued.
  constexpr std::uint64_t kTraceRoom = 1024;
  sc.limits.max_message_size = max_size > 2 * kTraceRoom ? max_size - kTraceRoom : max_size;
  SmtpServerSession::Callbacks cb;
  int status = kExOk;
  cb.on_message = [&](ReceivedMessage m, std::function<void(Reply)> done) {
    // The trace field of a server that accepted the message (RFC 5321 §4.4); the client is
    // a local user, named by its uid as Postfix's sendmail does.
    std::string body = fmt::format(
        "Received: from {} (uid {})\r\n\tby {} (mailq-send) with {};\r\n\t{}\r\n", m.helo,
        static_cast<unsigned long>(::getuid()), host, m.esmtp ? "ESMTP" : "SMTP",
        mailq::rfc5322_date(std::chrono::system_clock::now()));
    body += m.body;
    auto id = relay::write_maildrop(spool, m.envelope, body);
    if (!id) {
      status = kExTempFail;
      std::fprintf(stderr, "mailq-send: cannot write into the maildrop: %s\n",
                   id.error().message.c_str());
      if (id.error().code == mailq::errc::storage_full)
        return done(Reply(452, "4.3.1", "Insufficient system storage"));
      return done(Reply(451, "4.3.0", "Local error: the message cannot be stored now"));
    }
    done(Reply(250, "2.0.0", "Ok: queued as " + id.value().to_string()));
  };
  SmtpServerSession session(sc, cb, "127.0.0.1");
  auto drain = [&]() -> bool {
    std::string out = session.take_output();
    if (out.empty()) return true;
    return std::fwrite(out.data(), 1, out.size(), stdout) == out.size() && std::fflush(stdout) == 0;
  };
  session.start();
  if (!drain()) return kExIoErr;
  char buf[65536];
  while (!session.closed()) {
    const ssize_t n = ::read(STDIN_FILENO, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      session.on_eof();
      drain();
      break;
    }
    session.feed(std::string_view(buf, static_cast<std::size_t>(n)));
    if (!drain()) return kExIoErr;
  }
  return status;
}

int submit(const Options& opt, const relay::ToolTarget& target, std::uint64_t max_size) {
  const std::optional<relay::RelayConfig>& config = target.config;

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
  if (!msg.find("From") && !sender.empty()) {
    const std::string from =
        opt.full_name.empty() ? sender : display_name(opt.full_name) + " <" + sender + ">";
    msg.headers.push_back({"From", "From: " + from + "\r\n"});
  }
  if (!msg.find("Date"))
    msg.headers.push_back({"Date", "Date: " + rfc5322_date(std::time(nullptr)) + "\r\n"});
  if (!msg.find("Message-ID"))
    msg.headers.push_back({"Message-ID", "Message-ID: " + new_message_id(host) + "\r\n"});
  msg.has_separator = true;
  std::string body = msg.render();
  // What mailq-send added must hold to the limits the queue checks (a long -F name).
  for (std::size_t pos = 0, n = 1; pos < body.size(); ++n) {
    const std::size_t eol = body.find("\r\n", pos);
    if (eol == std::string::npos) break;
    if (eol - pos > kMaxLine)
      return fail(kExDataErr, "line " + std::to_string(n) +
                                  " of the message to queue is longer than 998 octets (a header "
                                  "mailq-send adds: is the -F name that long?)");
    pos = eol + 2;
  }
  if (body.size() > max_size)
    return fail(kExDataErr,
                "the message exceeds the limit of " + std::to_string(max_size) + " octets");

  auto envelope = make_envelope(sender, rcpts);
  if (!envelope) return fail(exit_for(envelope.error()), envelope.error().message);
  Envelope& env = envelope.value();
  if (opt.notify)
    for (auto& r : env.recipients) r.notify = *opt.notify;
  if (opt.ret) env.ret = *opt.ret;
  env.envid = opt.envid;
  std::string why;
  if (auto ec = env.validate(&why)) return fail(exit_for(Error(ec, why)), "-V: " + why);

  if (opt.through_control)
    return submit_through_control(opt, target.control, sender, rcpts, std::move(body));
  return submit_to_maildrop(target.spool, env, body);
}

}  // namespace

int main(int argc, char** argv) {
  // Before any argument is read: a CR or LF in a recipient argument must never become a
  // second recipient (or anything else).
  if (auto why = relay::check_arguments(argc, argv)) return fail(kExUsage, *why);
  Options opt;
  // The names a host links to this program by.
  const std::string_view name = std::string_view(argv[0]).substr(
      std::string_view(argv[0]).rfind('/') == std::string_view::npos
          ? 0
          : std::string_view(argv[0]).rfind('/') + 1);
  if (name == "mailq") opt.mode = Mode::list;
  if (name == "newaliases") opt.mode = Mode::newaliases;
  if (auto status = parse_command_line(argc, argv, &opt)) return *status;

  switch (opt.mode) {
    case Mode::list:
      return run_queue_tool(opt, "list");
    case Mode::flush:
      return run_queue_tool(opt, "flush");
    case Mode::newaliases:
      std::fputs("mailq-send: mailq keeps no alias database: nothing to rebuild\n", stderr);
      return kExOk;
    case Mode::nothing:
      return kExOk;
    case Mode::deliver:
    case Mode::smtp:
      break;
  }

  // Configuration: where the spool is, the size limit.
  auto target = relay::resolve_tool_target(opt.spool, opt.config, opt.control);
  if (!target) {
    if (target.error().code == errc::bad_state)
      return fail(kExUsage, target.error().message + "\n" + kUsage);
    return fail(kExConfig, target.error().message);
  }
  const std::optional<relay::RelayConfig>& config = target->config;
  std::uint64_t max_size = config ? config->listen.max_message_size : kDefaultMaxSize;
  if (config && config->queue.max_message_size)
    max_size = std::min(max_size, config->queue.max_message_size);
  if (max_size == 0) max_size = kDefaultMaxSize;

  if (opt.mode == Mode::smtp) {
    const std::string host = config && !config->helo.empty() ? config->helo : host_name();
    return serve_smtp_on_stdio(target->spool, host, max_size);
  }
  return submit(opt, target.value(), max_size);
}
