// Writes to a spool until it is killed, telling its stdout what the spool has acknowledged:
//
//     L <recovered> <quarantined>   start-up recovery done
//     I <id>                        insert completed durably (done(ok) ran)
//     D <id>                        update recording recipient 0 delivered returned ok
//     X <id>                        about to remove (it may be gone after a kill from here on)
//     R <id>                        remove returned ok
//     E <text>                      a failure (the test treats it as fatal)
//
// Ids are hexadecimal. Each line is one write(2) to a pipe, so a kill never splits one.
// Usage: spool_crash_writer <spool-directory> <run-number> [max-messages]
#include <uv.h>

#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "crash_body.h"
#include "crash_io.h"
#include "mailq/spool.h"
#include "mailq/uv.h"

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

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s <spool-directory> <run-number> [max-messages]\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const std::uint64_t run = std::strtoull(argv[2], nullptr, 10);
  const std::uint64_t max_messages = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 1500;
  std::mt19937_64 rng(run * 7919 + 1);

  uv_loop_t loop;
  uv_loop_init(&loop);
  int rc = 0;
  {
    mailq::uv::LoopClock clock(&loop);
    mailq::spool::SpoolOptions options;
    options.deferred_sync_delay = mailq::Duration{20};
    mailq::spool::SpoolStorage spool(dir, clock, options);
    if (spool.open_error()) {
      say("E " + spool.last_error().message);
      return 1;
    }
    std::unordered_map<std::uint64_t, mailq::MessageRecord> live;
    std::vector<std::uint64_t> ids;
    mailq::RecoveryReport report;
    auto ec = spool.load(
        [&](mailq::MessageRecord&& m) {
          ids.push_back(m.id.value);
          live.emplace(m.id.value, std::move(m));
        },
        &report);
    if (ec) {
      say("E load: " + spool.last_error().message);
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
        spool.insert(m, body, [&, m](std::error_code e) {
          if (e) {
            say("E insert " + hex(m.id.value) + ": " + spool.last_error().message);
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
          if (spool.update(m)) {
            say("E update " + hex(id) + ": " + spool.last_error().message);
            std::_Exit(1);
          }
          mailq::AttemptRecord a;
          a.route = r.route;
          a.time = clock.now();
          a.reply = r.last_reply;
          a.recipient = r.address;
          if (spool.append_attempt(m.id, a)) {
            say("E append " + hex(id) + ": " + spool.last_error().message);
            std::_Exit(1);
          }
        } else if (what < 7) {
          // Recipient 0 delivered: on disk before update returns.
          m.recipients[0].state = mailq::RecipientState::delivered;
          m.recipients[0].last_reply = mailq::Reply(250, "2.0.0", "Ok");
          if (spool.update(m)) {
            say("E update " + hex(id) + ": " + spool.last_error().message);
            std::_Exit(1);
          }
          say("D " + hex(id));
        } else {
          say("X " + hex(id));
          if (spool.remove(m.id)) {
            say("E remove " + hex(id) + ": " + spool.last_error().message);
            std::_Exit(1);
          }
          say("R " + hex(id));
          live.erase(it);
          ids[pick] = ids.back();
          ids.pop_back();
        }
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
