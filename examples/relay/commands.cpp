// mailq-relay / mailq-queue — the operator verbs and the queue reports (see commands.h).
#include "examples/relay/commands.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <ctime>
#include <map>
#include <optional>
#include <set>
#include <string_view>

namespace mailq::relay {

namespace {

using namespace std::chrono_literals;

constexpr std::array<const char*, 7> kDays = {"Sunday",   "Monday", "Tuesday", "Wednesday",
                                              "Thursday", "Friday", "Saturday"};
constexpr std::array<const char*, 12> kMonths = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

// The summary's age buckets (qshape doubles its buckets the same way).
struct Bucket {
  const char* label;
  Duration upper;  // exclusive; max() for the last one
};
constexpr std::array<Bucket, 8> kBuckets = {{
    {"0-5m", 5min},
    {"5-10m", 10min},
    {"10-20m", 20min},
    {"20-40m", 40min},
    {"40-80m", 80min},
    {"80-160m", 160min},
    {"160-320m", 320min},
    {"320m+", Duration::max()},
}};

constexpr const char* kHelp =
    "verbs:\n"
    "  list [--destination D] [--min-age DUR] [--error TEXT] [--held]\n"
    "  summary\n"
    "  show ID\n"
    "  hold ID|DESTINATION\n"
    "  release ID|DESTINATION\n"
    "  delete ID\n"
    "  bounce ID\n"
    "  flush\n"
    "  reset-domains\n"
    "  status\n";

Duration between(TimePoint later, TimePoint earlier) {
  return std::chrono::duration_cast<Duration>(later - earlier);
}

std::string plural(std::size_t n, std::string_view one, std::string_view many) {
  return fmt::format("{} {}", n, n == 1 ? one : many);
}

std::string sender_of(const MessageRecord& m) {
  return m.reverse_path.empty() ? std::string("<>") : m.reverse_path;
}

std::optional<MessageId> parse_id(std::string_view s) {
  MessageId id;
  if (s.size() != 13 || !MessageId::parse(s, &id) || !id) return std::nullopt;
  return id;
}

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool has_control(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

// Durations as the configuration writes them: "250ms", "30s", "15m", "4h", "5d", "1h30m".
// Kept here (not config.h's parse_duration) so that the verbs need nothing but the library.
std::optional<Duration> parse_age(std::string_view text) {
  if (text.empty()) return std::nullopt;
  Duration total{0};
  std::size_t i = 0;
  while (i < text.size()) {
    if (!std::isdigit(static_cast<unsigned char>(text[i]))) return std::nullopt;
    std::uint64_t n = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
      n = n * 10 + static_cast<unsigned>(text[i] - '0');
      if (n > 1'000'000'000ull) return std::nullopt;
      ++i;
    }
    std::size_t u = i;
    while (i < text.size() && std::isalpha(static_cast<unsigned char>(text[i]))) ++i;
    std::string_view unit = text.substr(u, i - u);
    std::int64_t ms = 0;
    if (unit == "ms")
      ms = 1;
    else if (unit == "s")
      ms = 1000;
    else if (unit == "m")
      ms = 60'000;
    else if (unit == "h")
      ms = 3'600'000;
    else if (unit == "d")
      ms = 86'400'000;
    else
      return std::nullopt;
    total += Duration(static_cast<std::int64_t>(n) * ms);
  }
  return total;
}

// "%20" and friends: control-socket arguments cannot carry spaces.
std::optional<std::string> percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    int hi = hex(s[i + 1]), lo = hex(s[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

// Left-aligned columns separated by two spaces; the last column is not padded.
std::string render_table(const std::vector<std::vector<std::string>>& rows,
                         const std::vector<bool>& right_aligned = {}) {
  std::vector<std::size_t> width;
  for (const auto& row : rows) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (std::size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t c = 0; c < row.size(); ++c) {
      bool right = c < right_aligned.size() && right_aligned[c];
      bool last = c + 1 == row.size();
      std::size_t pad = width[c] - row[c].size();
      if (c) line += "  ";
      if (right) line.append(pad, ' ');
      line += row[c];
      if (!right && !last) line.append(pad, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line;
    out += '\n';
  }
  return out;
}

// Distinct destinations of a message's pending recipients, in recipient order.
std::vector<std::string> pending_destinations(const Queue& q, const MessageRecord& m) {
  std::vector<std::string> out;
  for (const auto& r : m.recipients) {
    if (is_final(r.state)) continue;
    std::string d = q.destination_of(r);
    if (std::find(out.begin(), out.end(), d) == out.end()) out.push_back(std::move(d));
  }
  return out;
}

std::string join(const std::vector<std::string>& v, std::string_view sep) {
  std::string out;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i) out += sep;
    out += v[i];
  }
  return out;
}

ControlResponse usage(std::string_view verb, std::string_view args) {
  return ControlResponse::failure(fmt::format("usage: {} {}", verb, args));
}

// --- list --------------------------------------------------------------------------------

ControlResponse cmd_list(CommandContext& ctx, const std::vector<std::string>& argv) {
  QueueFilter filter;
  for (std::size_t i = 1; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    auto value = [&](std::string* out) -> bool {
      if (i + 1 >= argv.size()) return false;
      *out = argv[++i];
      return true;
    };
    std::string v;
    if (a == "--destination") {
      if (!value(&v) || v.empty())
        return ControlResponse::failure("list: --destination needs a value");
      filter.destination = v;
    } else if (a == "--min-age") {
      if (!value(&v)) return ControlResponse::failure("list: --min-age needs a value");
      auto age = parse_age(v);
      if (!age)
        return ControlResponse::failure(
            fmt::format("list: --min-age: '{}' is not a duration (use ms, s, m, h or d)", v));
      filter.min_age = *age;
    } else if (a == "--error") {
      if (!value(&v) || v.empty()) return ControlResponse::failure("list: --error needs a value");
      auto text = percent_decode(v);
      if (!text)
        return ControlResponse::failure(
            fmt::format("list: --error: bad percent-encoding in '{}'", v));
      filter.error_contains = *text;
    } else if (a == "--held") {
      filter.held_only = true;
    } else {
      return ControlResponse::failure(fmt::format(
          "list: unknown argument '{}' (use --destination D, --min-age DUR, --error TEXT, "
          "--held)",
          a));
    }
  }

  const Queue& q = ctx.queue;
  const TimePoint now = ctx.clock.now();
  auto ids = q.list(filter);
  if (ids.empty() && !filter.destination.empty()) {
    // Destination keys of MX routes are lowercased domains.
    std::string lower = to_lower(filter.destination);
    if (lower != filter.destination) {
      filter.destination = lower;
      ids = q.list(filter);
    }
  }
  std::vector<std::vector<std::string>> rows;
  rows.push_back(
      {"ID", "AGE", "SIZE", "STATE", "SENDER", "RECIPIENTS", "DESTINATION", "LAST ERROR"});
  std::size_t pending = 0;
  for (MessageId id : ids) {
    const auto m = q.find(id);
    if (!m) continue;
    std::vector<std::string> rcpts;
    std::string last_error;
    bool deferred = false;
    for (const auto& r : m->recipients) {
      if (is_final(r.state)) continue;
      rcpts.push_back(r.address);
      ++pending;
      if (r.state == RecipientState::deferred) deferred = true;
      // The first pending recipient with a transient reply speaks for the message.
      if (last_error.empty() && !r.last_reply.empty()) last_error = r.last_reply.to_string();
    }
    rows.push_back({id.to_string(), format_age(between(now, m->arrival)), std::to_string(m->size),
                    m->held ? "held" : (deferred ? "deferred" : "queued"), sender_of(*m),
                    join(rcpts, ","), join(pending_destinations(q, *m), ","),
                    last_error.empty() ? "-" : last_error});
  }
  if (rows.size() == 1) {
    return ControlResponse::success(q.size() == 0 ? "queue is empty\n" : "no message matches\n");
  }
  std::string out = render_table(rows, {false, true, true});
  out += fmt::format("{}, {} pending\n", plural(rows.size() - 1, "message", "messages"),
                     plural(pending, "recipient", "recipients"));
  return ControlResponse::success(std::move(out));
}

// --- summary -----------------------------------------------------------------------------

ControlResponse cmd_summary(CommandContext& ctx, const std::vector<std::string>& argv) {
  if (argv.size() != 1) return usage("summary", "(no arguments)");
  const Queue& q = ctx.queue;
  const TimePoint now = ctx.clock.now();
  constexpr std::size_t kCols = kBuckets.size();
  struct Row {
    std::size_t total = 0;
    std::array<std::size_t, kCols> buckets{};
    std::size_t held = 0;
  };
  std::map<std::string, Row> by_dest;
  Row all;
  for (MessageId id : q.list()) {
    const auto m = q.find(id);
    if (!m) continue;
    Duration age = std::max(Duration{0}, std::chrono::duration_cast<Duration>(now - m->arrival));
    std::size_t b = 0;
    while (b + 1 < kCols && age >= kBuckets[b].upper) ++b;
    auto count = [&](Row& row) {
      ++row.total;
      if (m->held)
        ++row.held;
      else
        ++row.buckets[b];
    };
    count(all);
    for (const auto& d : pending_destinations(q, *m)) count(by_dest[d]);
  }
  std::vector<std::pair<std::string, Row>> sorted(by_dest.begin(), by_dest.end());
  // The biggest backlog first, as qshape does; names break ties.
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const auto& a, const auto& b) { return a.second.total > b.second.total; });

  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> header{"DESTINATION", "T"};
  for (const auto& b : kBuckets) header.emplace_back(b.label);
  header.emplace_back("HELD");
  rows.push_back(std::move(header));
  auto add = [&](const std::string& name, const Row& r) {
    std::vector<std::string> row{name, std::to_string(r.total)};
    for (auto n : r.buckets) row.push_back(std::to_string(n));
    row.push_back(std::to_string(r.held));
    rows.push_back(std::move(row));
  };
  add("TOTAL", all);
  for (const auto& [name, r] : sorted) add(name, r);
  std::vector<bool> right(rows[0].size(), true);
  right[0] = false;
  return ControlResponse::success(render_table(rows, right));
}

// --- show --------------------------------------------------------------------------------

ControlResponse cmd_show(CommandContext& ctx, const std::vector<std::string>& argv) {
  if (argv.size() != 2) return usage("show", "ID");
  auto id = parse_id(argv[1]);
  if (!id) return ControlResponse::failure(fmt::format("'{}' is not a queue id", argv[1]));
  const Queue& q = ctx.queue;
  const auto m = q.find(*id);
  if (!m) return ControlResponse::failure("no message " + argv[1]);
  const TimePoint now = ctx.clock.now();

  std::string out;
  out += fmt::format("id: {}\n", id->to_string());
  out += fmt::format("queue file: {}\n", q.queue_file(*m));
  out += fmt::format("arrival: {} ({} ago)\n", format_time(m->arrival, ctx.utc),
                     format_age(between(now, m->arrival)));
  out += fmt::format("size: {} octets\n", m->size);
  out += fmt::format("sender: {}\n", sender_of(*m));
  out += fmt::format("source channel: {}\n", m->source_channel);
  out += fmt::format("message-id: {}\n", m->message_id.empty() ? "-" : m->message_id);
  out += fmt::format("held: {}\n", m->held ? "yes" : "no");
  out += fmt::format("delivery attempts: {}\n", m->attempts);
  out += "recipients:\n";
  for (const auto& r : m->recipients) {
    out += fmt::format("  {}: {}, {}, destination {} via {}\n", r.address, to_string(r.state),
                       plural(r.attempts, "attempt", "attempts"), q.destination_of(r), r.route);
    if (!is_final(r.state)) {
      const std::string dest = q.destination_of(r);
      if (m->held)
        out += "    next attempt: when released\n";
      else if (r.next_attempt > now)
        out += fmt::format("    next attempt: {}\n", format_time(r.next_attempt, ctx.utc));
      else if (r.state == RecipientState::queued)
        out += "    next attempt: due now\n";
      else
        out += "    next attempt: at the next queue cycle\n";
      if (ctx.domains && ctx.domains->is_down(dest, now))
        out += fmt::format("    destination down until {}\n",
                           format_time(ctx.domains->down_until(dest, now), ctx.utc));
    }
    if (!r.last_reply.empty()) out += fmt::format("    last reply: {}\n", r.last_reply.to_string());
    if (!r.remote_mta.empty()) out += fmt::format("    remote: {}\n", r.remote_mta);
  }
  // Seed 000's table, with its exact header.
  out += "Transient Delivery Attempts | Failure Time | Details | Recipient |\n";
  auto attempts = q.transient_attempts(*id);
  if (!attempts) {
    out += fmt::format("(the attempt history cannot be read: {})\n", attempts.error().message);
  } else if (attempts->empty()) {
    out += "(no transient delivery attempts)\n";
  } else {
    for (const auto& a : *attempts) {
      out += fmt::format("Attempted Delivery to: {} | {} | {} | {} |\n", a.route,
                         format_time(a.time, ctx.utc), a.reply.to_string(), a.recipient);
    }
  }
  return ControlResponse::success(std::move(out));
}

// --- hold / release / delete / bounce ----------------------------------------------------

ControlResponse cmd_hold_release(CommandContext& ctx, const std::vector<std::string>& argv,
                                 bool hold) {
  const char* verb = hold ? "hold" : "release";
  if (argv.size() != 2 || argv[1].empty()) return usage(verb, "ID|DESTINATION");
  const std::string& target = argv[1];
  Queue& q = ctx.queue;
  if (auto id = parse_id(target)) {
    const auto m = q.find(*id);
    if (!m) return ControlResponse::failure("no message " + target);
    if (m->held == hold)
      return ControlResponse::success(
          fmt::format("{} is already {}\n", target, hold ? "held" : "not held"));
    auto changed = hold ? q.hold(*id) : q.release(*id);
    if (!changed) return ControlResponse::failure(changed.error().message);
    return ControlResponse::success(fmt::format("{} {}\n", hold ? "held" : "released", target));
  }
  if (has_control(target) || target.find(' ') != std::string::npos)
    return ControlResponse::failure(fmt::format("{}: bad destination '{}'", verb, target));
  auto apply = [&](std::string_view d) {
    return hold ? q.hold_destination(d) : q.release_destination(d);
  };
  std::size_t n = apply(target);
  std::string name = target;
  if (n == 0) {
    // Destination keys of MX routes are lowercased domains.
    std::string lower = to_lower(target);
    if (lower != target) {
      n = apply(lower);
      if (n) name = lower;
    }
  }
  return ControlResponse::success(fmt::format("{} {} for {}\n", hold ? "held" : "released",
                                              plural(n, "message", "messages"), name));
}

ControlResponse cmd_delete_bounce(CommandContext& ctx, const std::vector<std::string>& argv,
                                  bool bounce) {
  const char* verb = bounce ? "bounce" : "delete";
  if (argv.size() != 2) return usage(verb, "ID");
  auto id = parse_id(argv[1]);
  if (!id)
    return ControlResponse::failure(fmt::format(
        "{}: '{}' is not a queue id (a 13-character id as `list` shows)", verb, argv[1]));
  Queue& q = ctx.queue;
  const auto m = q.find(*id);
  if (!m) return ControlResponse::failure("no message " + argv[1]);
  std::size_t pending = 0;
  for (const auto& r : m->recipients)
    if (!is_final(r.state)) ++pending;
  if (bounce) {
    bool dsn = !m->reverse_path.empty();
    std::string to = sender_of(*m);
    if (auto bounced = q.bounce(*id); !bounced)
      return ControlResponse::failure(bounced.error().message);
    return ControlResponse::success(fmt::format(
        "bounced {} ({}){}\n", argv[1], plural(pending, "recipient", "recipients"),
        dsn ? ", delivery status notification to " + to : ", no notification (null sender)"));
  }
  if (auto removed = q.remove(*id); !removed)
    return ControlResponse::failure(removed.error().message);
  return ControlResponse::success(fmt::format("deleted {} ({} not notified)\n", argv[1],
                                              plural(pending, "recipient", "recipients")));
}

// --- flush / reset-domains / status ------------------------------------------------------

ControlResponse needs_relay(std::string_view verb) {
  return ControlResponse::failure(
      fmt::format("{} needs a running mailq-relay (it acts on the relay's delivery state)", verb));
}

std::vector<DomainState> down_now(const DomainStateTable& table, TimePoint now) {
  std::vector<DomainState> out;
  for (auto& s : table.snapshot())
    if (s.down_until > now) out.push_back(std::move(s));
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.destination < b.destination; });
  return out;
}

ControlResponse cmd_flush(CommandContext& ctx, const std::vector<std::string>& argv) {
  if (argv.size() != 1) return usage("flush", "(no arguments)");
  if (!ctx.deliverer) return needs_relay("flush");
  const TimePoint now = ctx.clock.now();
  std::size_t made_due = ctx.queue.make_all_due();
  ctx.deliverer->flush();
  std::string out = fmt::format("flush: {} made due\n", plural(made_due, "message", "messages"));
  if (ctx.domains) {
    // Seed 000: a flush does not retry a down destination before its mark expires.
    for (const auto& s : down_now(*ctx.domains, now))
      out +=
          fmt::format("  {} is down until {} ({} left): not retried before\n", s.destination,
                      format_time(s.down_until, ctx.utc), format_age(between(s.down_until, now)));
  }
  return ControlResponse::success(std::move(out));
}

ControlResponse cmd_reset_domains(CommandContext& ctx, const std::vector<std::string>& argv) {
  if (argv.size() != 1) return usage("reset-domains", "(no arguments)");
  if (!ctx.deliverer || !ctx.domains) return needs_relay("reset-domains");
  auto was_down = down_now(*ctx.domains, ctx.clock.now());
  ctx.deliverer->reset_domains();
  if (was_down.empty()) return ControlResponse::success("reset-domains: no destination was down\n");
  std::vector<std::string> names;
  for (const auto& s : was_down) names.push_back(s.destination);
  return ControlResponse::success(fmt::format("reset-domains: {} no longer down: {}\n",
                                              plural(names.size(), "destination", "destinations"),
                                              join(names, ", ")));
}

ControlResponse cmd_status(CommandContext& ctx, const std::vector<std::string>& argv) {
  if (argv.size() != 1) return usage("status", "(no arguments)");
  const Queue& q = ctx.queue;
  const TimePoint now = ctx.clock.now();
  QueueStats st = q.stats();
  std::set<std::string> dests;
  for (MessageId id : q.list()) {
    if (const auto m = q.find(id))
      for (auto& d : pending_destinations(q, *m)) dests.insert(std::move(d));
  }
  std::string out;
  out += fmt::format("queue: {}, {} pending, {} held, {}\n",
                     plural(st.messages, "message", "messages"),
                     plural(st.recipients_pending, "recipient", "recipients"), st.held,
                     plural(dests.size(), "destination", "destinations"));
  if (!ctx.deliverer) {
    out += "relay: not running (domain states and connections need a running mailq-relay)\n";
    return ControlResponse::success(std::move(out));
  }
  out +=
      fmt::format("since start: {} enqueued, {} delivered, {} deferred, {} bounced, {} expired\n",
                  st.enqueued, st.delivered, st.deferred, st.bounced, st.expired);
  DelivererStats ds = ctx.deliverer->stats();
  out += fmt::format(
      "connections: {} open, {} opened, {} failed; {} in flight; {} cycles, {} transactions, "
      "{} DNS failures, {} deferred while down\n",
      ds.connections_open, ds.connections_opened, ds.connection_failures,
      plural(ds.jobs_in_flight, "job", "jobs"), ds.cycles, ds.transactions, ds.dns_failures,
      ds.skipped_down);
  if (ctx.domains) {
    auto states = ctx.domains->snapshot();
    std::sort(states.begin(), states.end(),
              [](const auto& a, const auto& b) { return a.destination < b.destination; });
    std::vector<std::string> lines;
    std::size_t down = 0;
    for (const auto& s : states) {
      bool is_down = s.down_until > now;
      if (!is_down && s.consecutive_failures == 0) continue;
      if (is_down) ++down;
      std::string line = is_down ? fmt::format("  {}: down until {} ({} left), ", s.destination,
                                               format_time(s.down_until, ctx.utc),
                                               format_age(between(s.down_until, now)))
                                 : fmt::format("  {}: up, ", s.destination);
      line += plural(s.consecutive_failures, "consecutive connection failure",
                     "consecutive connection failures");
      if (!s.last_failure.empty()) line += ", last: " + s.last_failure;
      lines.push_back(std::move(line) + "\n");
    }
    if (lines.empty()) {
      out += "domains: no connection failures\n";
    } else {
      out += fmt::format("domains: {} down\n", down);
      for (auto& l : lines) out += l;
    }
  }
  if (ctx.extra_status) out += ctx.extra_status();
  return ControlResponse::success(std::move(out));
}

}  // namespace

std::string format_age(Duration age) {
  using std::chrono::duration_cast;
  if (age < Duration{0}) age = Duration{0};
  auto minutes = duration_cast<std::chrono::minutes>(age).count();
  if (minutes < 60) return fmt::format("{}m", minutes);
  auto hours = duration_cast<std::chrono::hours>(age).count();
  if (hours < 24) return fmt::format("{}h", hours);
  return fmt::format("{}d", hours / 24);
}

std::string format_time(TimePoint time, bool utc) {
  std::time_t t = std::chrono::system_clock::to_time_t(time);
  std::tm tm{};
  if (utc)
    gmtime_r(&t, &tm);
  else
    localtime_r(&t, &tm);
  int hour12 = tm.tm_hour % 12 == 0 ? 12 : tm.tm_hour % 12;
  // Names spelled out here rather than by strftime: the output must not depend on the locale.
  const char* zone = utc ? "UTC" : (tm.tm_zone ? tm.tm_zone : "");
  return fmt::format("{}, {} {:02}, {} {:02}:{:02}:{:02} {} {}", kDays[tm.tm_wday % 7],
                     kMonths[tm.tm_mon % 12], tm.tm_mday, tm.tm_year + 1900, hour12, tm.tm_min,
                     tm.tm_sec, tm.tm_hour < 12 ? "AM" : "PM", zone);
}

ControlResponse execute_command(CommandContext& ctx, const std::vector<std::string>& argv) {
  if (argv.empty() || argv[0].empty()) return ControlResponse::failure("no verb given");
  const std::string& verb = argv[0];
  if (verb == "list") return cmd_list(ctx, argv);
  if (verb == "summary") return cmd_summary(ctx, argv);
  if (verb == "show") return cmd_show(ctx, argv);
  if (verb == "hold") return cmd_hold_release(ctx, argv, true);
  if (verb == "release") return cmd_hold_release(ctx, argv, false);
  if (verb == "delete") return cmd_delete_bounce(ctx, argv, false);
  if (verb == "bounce") return cmd_delete_bounce(ctx, argv, true);
  if (verb == "flush") return cmd_flush(ctx, argv);
  if (verb == "reset-domains") return cmd_reset_domains(ctx, argv);
  if (verb == "status") return cmd_status(ctx, argv);
  if (verb == "help") return ControlResponse::success(kHelp);
  std::string shown = verb;
  if (has_control(shown)) shown = "(unprintable)";
  return ControlResponse::failure(fmt::format("unknown verb '{}' (try 'help')", shown));
}

}  // namespace mailq::relay
