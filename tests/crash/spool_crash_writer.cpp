// Writes to a spool until it is killed, telling its stdout what the spool has acknowledged:
//
//     L <recovered> <quarantined>   start-up recovery done
//     I <id>                        insert completed durably (done(ok) ran)
//     D <id>                        update recording recipient 0 delivered returned ok
//     X <id>                        about to remove (it may be gone after a kill from here on)
//     R <id>                        remove returned ok
//     C <created> <deleted> <compacted>
//                                   compact_now() returned ok (segment spool; the segments
//                                   created and deleted and the messages copied forward since
//                                   start-up)
//     E <text>                      a failure (the test treats it as fatal)
//
// Ids are hexadecimal. Each line is one write(2) to a pipe, so a kill never splits one.
// Usage: spool_crash_writer [--layout files|segments] [--segment-size BYTES]
//                           [--compact-below FRACTION]
//                           <spool-directory> <run-number> [max-messages]
// --layout picks the file spool (the default) or the segment spool. For the segment spool,
// --segment-size and --compact-below set `segment_size` and `compact_below_live_fraction`
// (small segments and a high fraction make kills land in rollover, segment deletion and
// compaction, which the writer also runs now and then).
#include <uv.h>

#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "crash_body.h"
#include "crash_io.h"
#include "crash_storage.h"
#include "mailq/uv/loop_clock.h"
#include "mailq/uv/transport.h"

using mailq_crash::say;

namespace {

std::string hex(std::uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%" PRIx64, v);
  return buf;
}

mailq::MessageRecord make_record(std::uint64_t id, std::mt19937_64& rng, mailq::TimePoint now) {
  mailq::MessageRecord m;
  m.id = mailq::MessageId{id};
  m.reverse_path = "sender@example.org";
  m.source_channel = "crash";
  m.arrival = now;
  m.size = mailq_crash::body_for(id).size();
  for (int i = 0; i < 2; ++i) {
    mailq::RecipientRecord r;
    r.address = "rcpt" + std::to_string(i) + "@example.net";
    r.route = (rng() % 2 == 0) ? "tcp_local" : "tcp_internal";
    r.next_attempt = now;
    m.recipients.push_back(r);
  }
  return m;
}

[[noreturn]] void usage(const char* argv0, const std::string& why) {
  std::fprintf(stderr,
               "%s: %s\nusage: %s [--layout files|segments] [--segment-size BYTES] "
               "[--compact-below FRACTION] <spool-directory> <run-number> [max-messages]\n",
               argv0, why.c_str(), argv0);
  std::exit(2);
}

std::uint64_t number(const char* argv0, const std::string& what, const char* text) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0') usage(argv0, "bad " + what + ": " + text);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  mailq::spool::Layout layout = mailq::spool::Layout::files;
  std::uint64_t segment_size = 0;
  double compact_below = -1;
  std::vector<const char*> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--layout" || a == "--segment-size" || a == "--compact-below") {
      if (i + 1 >= argc) usage(argv[0], "missing value for " + a);
      const char* v = argv[++i];
      if (a == "--layout") {
        const auto parsed = mailq::spool::parse_layout(v);
        if (!parsed) usage(argv[0], std::string("bad --layout ") + v);
        layout = *parsed;
      } else if (a == "--segment-size") {
        segment_size = number(argv[0], a, v);
        if (segment_size == 0) usage(argv[0], "--segment-size must not be 0");
      } else {
        char* end = nullptr;
        compact_below = std::strtod(v, &end);
        if (end == v || *end != '\0' || !(compact_below >= 0 && compact_below <= 1))
          usage(argv[0], std::string("bad --compact-below ") + v);
      }
    } else if (a.rfind("--", 0) == 0) {
      usage(argv[0], "unknown option " + a);
    } else {
      positional.push_back(argv[i]);
    }
  }
  if (positional.size() < 2 || positional.size() > 3) usage(argv[0], "wrong number of arguments");
  const std::string dir = positional[0];
  const std::uint64_t run = number(argv[0], "run number", positional[1]);
  const std::uint64_t max_messages =
      positional.size() > 2 ? number(argv[0], "max-messages", positional[2]) : 1500;
  std::mt19937_64 rng(run * 7919 + 1);

  uv_loop_t loop;
  uv_loop_init(&loop);
  int rc = 0;
  {
    mailq::uv::LoopClock clock(&loop);
    mailq_crash::StorageTuning tuning;
    tuning.deferred_sync_delay = mailq::Duration{20};
    tuning.segment_size = segment_size;
    tuning.compact_below_live_fraction = compact_below;
    // Every failure ends the run with an "E" line, a background sync's or compaction's too
    // (they have no caller to return an error to).
    tuning.on_error = [](const mailq::Error& e) {
      say("E on_error: " + e.message);
      std::_Exit(1);
    };
    auto opened = mailq_crash::CrashStorage::open(layout, dir, clock, tuning);
    if (!opened) {
      say("E open: " + opened.error().message);
      return 1;
    }
    mailq_crash::CrashStorage& crash_storage = *opened;
    mailq::Storage& spool = crash_storage.storage();
    std::unordered_map<std::uint64_t, mailq::MessageRecord> live;
    std::vector<std::uint64_t> ids;
    mailq::RecoveryReport report;
    auto loaded = spool.load(
        [&](mailq::MessageRecord&& m) {
          ids.push_back(m.id.value);
          live.emplace(m.id.value, std::move(m));
        },
        &report);
    if (!loaded) {
      say("E load: " + loaded.error().message);
      return 1;
    }
    say("L " + std::to_string(report.recovered) + " " + std::to_string(report.quarantined));

    // Ids unique across runs: the run number in the high bits.
    std::uint64_t next_id = (run << 32) | 1;
    std::uint64_t inserted = 0;
    std::function<void()> tick;
    tick = [&] {
      const int batch = 1 + static_cast<int>(rng() % 20);
      for (int i = 0; i < batch && inserted < max_messages; ++i, ++inserted) {
        const std::uint64_t id = next_id++;
        mailq::MessageRecord m = make_record(id, rng, clock.now());
        const std::string body = mailq_crash::body_for(id);
        spool.insert(m, body, [&, m](mailq::Result<void> stored) {
          if (!stored) {
            say("E insert " + hex(m.id.value) + ": " + stored.error().message);
            std::_Exit(1);
          }
          say("I " + hex(m.id.value));
          ids.push_back(m.id.value);
          live.emplace(m.id.value, m);
        });
      }
      // Change some acknowledged messages.
      const int picks = ids.size() > 300 ? 40 : 4;
      for (int k = 0; k < picks && !ids.empty(); ++k) {
        const std::size_t pick = rng() % ids.size();
        const std::uint64_t id = ids[pick];
        auto it = live.find(id);
        if (it == live.end()) continue;
        mailq::MessageRecord& m = it->second;
        // Keep the spool around a few hundred messages, so that rounds stay quick.
        const auto what = ids.size() > 300 ? 2 + rng() % 8 : rng() % 10;
        if (what < 5) {
          // A deferral of recipient 1 and its attempt row (written, synced later).
          m.attempts++;
          auto& r = m.recipients[1];
          r.state = mailq::RecipientState::deferred;
          r.attempts++;
          r.last_reply = mailq::Reply(451, "4.4.1", "try again " + std::to_string(r.attempts));
          r.next_attempt = clock.now() + mailq::Duration{60000};
          if (auto written = spool.update(mailq::change_of(m, {1})); !written) {
            say("E update " + hex(id) + ": " + written.error().message);
            std::_Exit(1);
          }
          mailq::AttemptRecord a;
          a.route = r.route;
          a.time = clock.now();
          a.reply = r.last_reply;
          a.recipient = r.address;
          if (auto appended = spool.append_attempt(m.id, a); !appended) {
            say("E append " + hex(id) + ": " + appended.error().message);
            std::_Exit(1);
          }
        } else if (what < 7) {
          // Recipient 0 delivered: on disk before update returns.
          m.recipients[0].state = mailq::RecipientState::delivered;
          m.recipients[0].last_reply = mailq::Reply(250, "2.0.0", "Ok");
          if (auto written = spool.update(mailq::change_of(m, {0})); !written) {
            say("E update " + hex(id) + ": " + written.error().message);
            std::_Exit(1);
          }
          say("D " + hex(id));
        } else {
          say("X " + hex(id));
          if (auto removed = spool.remove(m.id); !removed) {
            say("E remove " + hex(id) + ": " + removed.error().message);
            std::_Exit(1);
          }
          say("R " + hex(id));
          live.erase(it);
          ids[pick] = ids.back();
          ids.pop_back();
        }
      }
      // Now and then a full compaction, so that kills also land in the middle of one
      // (background compaction runs besides, a bounded amount per loop turn).
      if (crash_storage.layout() == mailq::spool::Layout::segments && rng() % 4 == 0) {
        if (auto compacted = crash_storage.compact_now(); !compacted) {
          say("E compact: " + compacted.error().message);
          std::_Exit(1);
        }
        const auto c = crash_storage.segment_counts();
        say("C " + std::to_string(c.created) + " " + std::to_string(c.deleted) + " " +
            std::to_string(c.compacted_messages));
      }
      clock.schedule(mailq::Duration{1}, tick);
    };
    clock.schedule(mailq::Duration{0}, tick);
    // Runs until killed; the timer chain never ends on its own.
    rc = uv_run(&loop, UV_RUN_DEFAULT);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return rc;
}
