// mailq-queue — look inside the queue and act on it.
//
//   mailq-queue --spool DIR [--config FILE] [--control PATH] [--utc] VERB [ARGS]
//
// With a mailq-relay running (it holds the spool's lock) the verb goes over the relay's
// control socket and runs on the live queue; otherwise the tool opens the spool itself and
// runs the verb there (examples/relay/commands.h). See kUsage for the verbs and exit statuses.
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "examples/relay/commands.h"
#include "examples/relay/config.h"
#include "examples/relay/control.h"
#include "examples/relay/maildrop.h"
#include "examples/relay/tools.h"
#include "mailq/queue.h"
#include "mailq/route.h"
#include "mailq/spool/file_spool.h"

namespace {

using namespace mailq;

constexpr int kExOk = 0;
constexpr int kExFailed = 1;
constexpr int kExUsage = 64;
constexpr int kExNoInput = 66;
constexpr int kExUnavailable = 69;
constexpr int kExTempFail = 75;
constexpr int kExConfig = 78;

const char* const kUsage =
    "usage: mailq-queue --spool DIR [--config FILE] [--control PATH] [--utc] VERB [ARGS]\n"
    "\n"
    "verbs:\n"
    "  list [--destination D] [--min-age DUR] [--error TEXT] [--held]\n"
    "                   queued messages: id, age, size, state, sender, recipients,\n"
    "                   destinations, last error (DUR: 30s, 15m, 4h, 5d)\n"
    "  summary          messages by destination and age bucket, held apart\n"
    "  show ID          a message, its recipients and its transient delivery attempts\n"
    "  hold ID|DEST     hold a message, or every message for a destination\n"
    "  release ID|DEST  release them\n"
    "  delete ID        remove a message without notification\n"
    "  bounce ID        return a message to its sender (delivery status notification)\n"
    "  flush            retry every deferred message now (down destinations excepted)\n"
    "  reset-domains    clear every down mark, as a restart does\n"
    "  status           queue counts; with a running relay also domain states with their\n"
    "                   down-until times and connections\n"
    "flush and reset-domains need a running mailq-relay.\n"
    "\n"
    "  --spool DIR      the spool (default: the config's `spool`)\n"
    "  --config FILE    the relay's configuration (spool, control socket, routes: without\n"
    "                   it messages of a static route show under their domains)\n"
    "  --control PATH   the relay's control socket (default: the config's `control`, else\n"
    "                   DIR/control.sock)\n"
    "  --utc            times in UTC (when the spool is read directly)\n"
    "\n"
    "exit status: 0 done; 1 the verb failed (the reason is on standard error); 64 usage\n"
    "error; 66 no spool at DIR; 69 a relay holds the spool but its control socket cannot be\n"
    "reached; 75 the spool cannot be opened or read; 78 configuration error.\n";

int fail(int status, const std::string& message) {
  std::fprintf(stderr, "mailq-queue: %s\n", message.c_str());
  return status;
}

// Control-socket arguments cannot hold spaces: `list --error TEXT` is percent-encoded
// (commands.h decodes it).
std::string percent_encode(std::string_view s) {
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '%' || u <= 0x20 || u == 0x7f) {
      char buf[4];
      std::snprintf(buf, sizeof(buf), "%%%02X", u);
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

int print(const relay::ControlResponse& r) {
  if (!r.ok) return fail(kExFailed, r.error);
  std::fwrite(r.payload.data(), 1, r.payload.size(), stdout);
  return std::fflush(stdout) == 0 ? kExOk : kExFailed;
}

// What waits in the maildrop (mailq-send's files no relay has picked up yet): a count for
// summary and status, the messages for an unfiltered list, one message for show. Empty when
// the maildrop is empty or the verb does not report it.
std::string maildrop_report(const std::string& spool, const std::vector<std::string>& args,
                            bool* shown) {
  *shown = false;
  const std::string& verb = args[0];
  const bool reports = verb == "summary" || verb == "status" ||
                       (verb == "list" && args.size() == 1) || (verb == "show" && args.size() == 2);
  if (!reports) return {};  // the directory is not read for the other verbs
  auto ids = relay::list_maildrop(spool);
  if (!ids || ids->empty()) return {};
  const std::size_t n = ids->size();
  const std::string count = fmt::format("{} {} in the maildrop, waiting for a relay to pick {} up",
                                        n, n == 1 ? "message" : "messages", n == 1 ? "it" : "them");
  const auto now = std::chrono::system_clock::now();
  auto line = [&](const relay::MaildropEntry& e) {
    std::string rcpts;
    for (const auto& r : e.envelope.recipients)
      rcpts += (rcpts.empty() ? "" : ",") + r.address.to_string();
    const auto age = std::chrono::duration_cast<std::chrono::minutes>(now - e.submitted).count();
    return fmt::format(
        "{}  {:>3}m  {:>4}  {}  {}\n", e.id.to_string(), std::max<long>(0, age), e.body.size(),
        e.envelope.reverse_path ? e.envelope.reverse_path->to_string() : "<>", rcpts);
  };
  if (verb == "summary" || verb == "status") return "maildrop: " + count + "\n";
  if (verb == "list" && args.size() == 1) {
    std::string out = "maildrop: " + count + ":\n";
    constexpr std::size_t kShown = 1000;
    for (std::size_t i = 0; i < n && i < kShown; ++i) {
      auto e = relay::read_maildrop(spool, (*ids)[i]);
      out += e ? line(e.value()) : (*ids)[i].to_string() + "  (" + e.error().message + ")\n";
    }
    if (n > kShown) out += fmt::format("... and {} more\n", n - kShown);
    return out;
  }
  if (verb == "show" && args.size() == 2) {
    MessageId id;
    if (!MessageId::parse(args[1], &id)) return {};
    auto e = relay::read_maildrop(spool, id);
    if (!e) return {};
    *shown = true;
    std::string out =
        "id: " + id.to_string() + "\nin the maildrop: waiting for a relay to pick it up\n";
    out += "sender: " + (e->envelope.reverse_path ? e->envelope.reverse_path->to_string() : "<>") +
           "\n";
    out += fmt::format("size: {} octets\nrecipients:\n", e->body.size());
    for (const auto& r : e->envelope.recipients) out += "  " + r.address.to_string() + "\n";
    return out;
  }
  return {};
}

// Prints the verb's answer, with what waits in the maildrop after it.
int print_with_maildrop(const relay::ControlResponse& r, const std::string& spool,
                        const std::vector<std::string>& args) {
  bool shown = false;
  const std::string extra = maildrop_report(spool, args, &shown);
  if (shown) return print(relay::ControlResponse::success(extra));
  if (!r.ok || extra.empty()) return print(r);
  return print(relay::ControlResponse::success(r.payload + extra));
}

}  // namespace

int main(int argc, char** argv) {
  // An argument is one value (an id, a destination, a duration): a line break or other control
  // in it is refused before it reaches the spool or the control socket.
  if (auto why = relay::check_arguments(argc, argv)) return fail(kExUsage, *why);
  std::string spool_opt, config_path, control_opt;
  bool utc = false;
  std::vector<std::string> verb;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (!verb.empty()) {
      verb.push_back(a);
      continue;
    }
    auto value = [&](const char* name, std::string* out) -> bool {
      std::string prefix = std::string(name) + "=";
      if (a.rfind(prefix, 0) == 0) {
        *out = a.substr(prefix.size());
        return true;
      }
      if (a != name) return false;
      if (i + 1 >= argc)
        std::exit(fail(kExUsage, std::string("missing value for ") + name + "\n" + kUsage));
      *out = argv[++i];
      return true;
    };
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return kExOk;
    }
    if (value("--spool", &spool_opt) || value("--config", &config_path) ||
        value("--control", &control_opt))
      continue;
    if (a == "--utc") {
      utc = true;
    } else if (!a.empty() && a[0] == '-') {
      return fail(kExUsage, "unknown option " + a + "\n" + kUsage);
    } else {
      verb.push_back(a);
    }
  }
  if (verb.empty()) return fail(kExUsage, std::string("no verb given\n") + kUsage);

  auto target = relay::resolve_tool_target(spool_opt, config_path, control_opt);
  if (!target) {
    if (target.error().code == errc::bad_state)
      return fail(kExUsage, target.error().message + "\n" + kUsage);
    return fail(kExConfig, target.error().message);
  }
  const std::optional<relay::RelayConfig>& config = target->config;
  const std::string spool_dir = target->spool;
  const std::string control = target->control;

  // `--key=value` is spelled out as two arguments, the form the verbs take.
  std::vector<std::string> args;
  for (const auto& a : verb) {
    std::size_t eq = a.find('=');
    if (a.rfind("--", 0) == 0 && eq != std::string::npos) {
      args.push_back(a.substr(0, eq));
      args.push_back(a.substr(eq + 1));
    } else {
      args.push_back(a);
    }
  }

  // Opening a spool creates it: a mistyped path must not leave an empty spool behind.
  struct stat st {};
  if (::stat(spool_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return fail(kExNoInput, "no spool at " + spool_dir);

  ManualClock clock(std::chrono::system_clock::now());
  std::string spool_error;  // the last failure the spool reported
  auto spool =
      relay::open_tool_spool(*target, clock, [&](const Error& e) { spool_error = e.message; });
  if (!spool) {
    if (!relay::spool_in_use(spool.error()))
      return fail(kExTempFail, "cannot open the spool: " + spool.error().message);
    // A relay owns the spool: the verb runs there, on the live queue.
    relay::ControlRequest req;
    req.argv = args;
    for (std::size_t i = 1; i < req.argv.size(); ++i) {
      std::string& arg = req.argv[i];
      if (req.argv[i - 1] == "--error" && req.argv[0] == "list") {
        arg = percent_encode(arg);
      } else if (arg.empty() || arg.find_first_of(" \t\r\n") != std::string::npos) {
        return fail(kExUsage, "argument \"" + arg +
                                  "\" is empty or has spaces, which the control socket cannot "
                                  "carry");
      }
    }
    auto res = relay::control_call(control, req, std::chrono::minutes(2));
    if (!res)
      return fail(kExUnavailable,
                  "the spool is held by a running relay, but its control "
                  "socket cannot be reached: " +
                      res.error().message);
    return print_with_maildrop(*res, spool_dir, args);
  }

  // No relay: the verb runs on the spool itself.
  RouteTable routes;
  if (config) {
    auto t = config->route_table();
    if (!t) return fail(kExConfig, t.error().message);
    routes = std::move(t.value());
  }
  QueueConfig qc = config ? config->queue : QueueConfig{};
  int status = kExFailed;
  {
    // The clock is never advanced: no retry or expiry happens while the tool looks.
    Queue queue(**spool, routes, clock, nullptr, qc);
    RecoveryReport report;
    if (auto recovered = queue.recover(&report); !recovered)
      return fail(kExTempFail, "cannot read the spool: " + recovered.error().message);
    for (const auto& p : report.problems)
      std::fprintf(stderr, "mailq-queue: spool: %s\n", p.c_str());
    if (!config && report.rerouted) {
      // Without the configuration a static route is unknown, and its messages show under
      // their domains rather than under the route (their destination in the relay).
      std::string names;
      for (const auto& n : report.gone_routes) names += (names.empty() ? "" : ", ") + n;
      std::fprintf(stderr,
                   "mailq-queue: note: route%s %s not known without --config: destinations "
                   "show as domains\n",
                   report.gone_routes.size() == 1 ? "" : "s", names.c_str());
    }
    relay::CommandContext ctx{queue, clock, nullptr, nullptr, {}, utc};
    spool_error.clear();  // what recovery reported is in report.problems
    auto r = execute_command(ctx, args);
    // Writes a bounce's DSN durably (the group commit) before the queue goes away.
    (*spool)->flush();
    if (r.ok && !spool_error.empty()) {
      r = relay::ControlResponse::failure(args[0] + ": the spool reported: " + spool_error);
    }
    status = print_with_maildrop(r, spool_dir, args);
  }
  return status;
}
