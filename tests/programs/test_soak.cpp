// The soak run: mailq-relay under a steady stream of SMTP submissions to a mix of destinations
// (live, slow, 4xx, 5xx, refusing), SIGKILLed at random moments and started again, its spool on
// a disk that is filled to a few MB of free space and freed again. At the end every
// acknowledged message is accounted for: delivered, bounced to its sender, or still queued with
// a reason; nothing is lost. Resident memory and open descriptors are sampled every second and
// printed. 45 s of submissions per spool layout in CI; MAILQ_LONG_TESTS=1 runs an hour
// (MAILQ_SOAK_SECONDS sets the time).
#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "examples/relay/control.h"
#include "support/daemon.h"
#include "support/opened_spool.h"
#include "support/powercut.h"
#include "support/servers.h"
#include "support/tool_runner.h"

#if defined(MAILQ_RELAY_BIN) && defined(MAILQ_QUEUE_BIN)

using namespace mailq;
using namespace mailq::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

// The destinations, by the recipient's domain: message n goes to kDomains[n % 5].
const std::vector<std::string> kDomains = {"live.test", "slow.test", "tempfail.test",
                                           "hardfail.test", "refused.test"};

// Submits numbered messages at about `rate` a second through one session at a time; prints
// "ACK n queue-id" for each 250, "TEMP n reply" for a refusal. A session broken off (the relay
// killed) is opened again; the message in flight is never reused.
const char* kClient = R"(import smtplib, sys, time
port, n, rate = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
domains = sys.argv[4].split(',')
start, sent = time.monotonic(), 0
while True:
    try:
        s = smtplib.SMTP('127.0.0.1', port, local_hostname='soak.mailq.test', timeout=10)
        s.ehlo()
        while True:
            ahead = start + sent / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            sent += 1
            rcpt = 'r%d@%s' % (n, domains[n % len(domains)])
            body = ('From: soak@sender.test\r\nTo: %s\r\nSubject: soak %d\r\n'
                    'X-Soak-Seq: %d\r\n\r\nmessage %d\r\n%s\r\nX-Soak-End: %d\r\n'
                    % (rcpt, n, n, n, 'x' * (n % 900), n))
            code, reply = s.mail('soak@sender.test')
            if code == 250:
                code, reply = s.rcpt(rcpt)
            if code == 250:
                code, reply = s.data(body.encode())
            if code == 250:
                print('ACK %d %s' % (n, reply.decode().split()[-1]), flush=True)
            else:
                print('TEMP %d %d %s' % (n, code, reply.decode()), flush=True)
                s.rset()
            n += 1
    except Exception as e:
        print('ERROR %d %r' % (n, e), flush=True)
        n += 1
        time.sleep(0.05)
)";

// What /proc says of a process: resident memory (KiB) and open descriptors; 0 when gone.
struct Sample {
  long rss_kib = 0;
  long fds = 0;
};

Sample sample(pid_t pid) {
  Sample s;
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmRSS:", 0) == 0) s.rss_kib = std::atol(line.c_str() + 6);
  if (DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/fd").c_str())) {
    while (const dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') ++s.fds;
    ::closedir(d);
  }
  return s;
}

std::uint64_t free_bytes(const std::string& path) {
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0) return 0;
  return static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
}

// One relay process's life: when it started, its samples.
struct Lifetime {
  double seconds = 0;
  std::vector<Sample> samples;
  std::string ended;  // "killed", "stopped"
};

std::string lifetime_line(std::size_t i, const Lifetime& l) {
  long rss_first = 0, rss_max = 0, rss_last = 0, fds_max = 0, fds_last = 0;
  if (!l.samples.empty()) {
    rss_first = l.samples.front().rss_kib;
    rss_last = l.samples.back().rss_kib;
    fds_last = l.samples.back().fds;
  }
  for (const Sample& s : l.samples) {
    rss_max = std::max(rss_max, s.rss_kib);
    fds_max = std::max(fds_max, s.fds);
  }
  std::ostringstream o;
  o << "  run " << i + 1 << ": " << static_cast<int>(l.seconds) << " s, " << l.ended
    << ", RSS first/max/last " << rss_first / 1024 << "/" << rss_max / 1024 << "/"
    << rss_last / 1024 << " MiB, descriptors max/last " << fds_max << "/" << fds_last;
  return o.str();
}

// Resident memory means little under a sanitizer (shadow memory, quarantined frees).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

void run_soak(const std::string& layout) {
  const char* long_tests = std::getenv("MAILQ_LONG_TESTS");
  const bool long_mode = long_tests && std::string(long_tests) == "1";
  int total_seconds = long_mode ? 3600 : 45;
  if (const char* s = std::getenv("MAILQ_SOAK_SECONDS")) total_seconds = std::atoi(s);
  REQUIRE(total_seconds >= 30);  // room for a kill and a full disk
  // A kill every 12 s in the short form (every 2 minutes in an hour's run: a thirtieth of the
  // run, 12 s at least), give or take a third; the disk is full for 10 s out of every 30 (15 s
  // out of every 5 minutes: a twelfth of the run, 30 s at least).
  const double kill_every = long_mode ? std::clamp(total_seconds / 30.0, 12.0, 120.0) : 12;
  const double fill_every = long_mode ? std::clamp(total_seconds / 12.0, 30.0, 300.0) : 30;
  const double fill_for = long_mode && fill_every >= 150 ? 15 : 10;
  const double rate = long_mode ? 60 : 120;

  std::random_device rd;
  const unsigned seed = rd();
  INFO(layout << " spool, random seed " << seed);
  std::mt19937 rng(seed);

  PowerCutMount disk;
  constexpr std::uint64_t kDisk = 256ull << 20;
  disk.set_capacity(kDisk);
  TempDir dir;
  std::string error;
  // The destinations outlive the run (a sink's default life is 10 minutes).
  const std::chrono::seconds sink_life(total_seconds + 900);
  SmtpSink live({}, sink_life), slow({"-w", "1"}, sink_life), tempfail({"-r", "RCPT"}, sink_life),
      hardfail({"-f", "RCPT"}, sink_life), bounces({}, sink_life);
  for (SmtpSink* s : {&live, &slow, &tempfail, &hardfail, &bounces}) REQUIRE(s->start(&error));
  const std::uint16_t refused_port = free_tcp_port();  // nothing listens there
  const std::uint16_t listen_port = free_tcp_port();
  const std::string spool = disk.path() + "/spool";
  const std::string control = dir.file("control.sock");
  const std::string log = dir.file("mail.log");
  // The file spool keeps the default reserve of free space (MAIL refused below it); the segment
  // spool none, so that a full disk reaches the spool's writes of received messages.
  const std::string reserve = layout == "files" ? "" : "min_free_space = 0\n";
  auto route = [](const std::string& name, const std::string& domain, std::uint16_t port) {
    return "\n[[route]]\nname = \"" + name + "\"\ndomains = [\"" + domain +
           "\"]\ntls = \"none\"\nhosts = [\"127.0.0.1:" + std::to_string(port) +
           "\"]\ntimeouts = { connect = \"2s\" }\n";
  };
  write_file(dir.file("relay.toml"),
             "spool = \"" + spool + "\"\nspool_layout = \"" + layout + "\"\nlog = \"" + log +
                 "\"\ncontrol = \"" + control +
                 "\"\nhelo = \"relay.mailq.test\"\n\n[listen]\naddress = \"127.0.0.1:" +
                 std::to_string(listen_port) + "\"\n" + reserve +
                 "\n[queue]\ncycle = \"2s\"\nmax_lifetime = \"40s\"\n"
                 "retry = { min = \"1s\", max = \"4s\" }\n"
                 "\n[delivery]\nidle_timeout = \"1s\"\nhost_backoff = \"2s\"\n"
                 "\n[domain_state]\nfailure_threshold = 3\ndown_interval = \"3s\"\n" +
                 route("tcp_live", "live.test", live.port()) +
                 route("tcp_slow", "slow.test", slow.port()) +
                 route("tcp_tempfail", "tempfail.test", tempfail.port()) +
                 route("tcp_hardfail", "hardfail.test", hardfail.port()) +
                 route("tcp_refused", "refused.test", refused_port) +
                 route("tcp_bounces", "sender.test", bounces.port()));
  {
    std::string out;
    const int status =
        run_program({MAILQ_RELAY_BIN, "--check", "--config", dir.file("relay.toml")}, &out);
    INFO(out);
    REQUIRE(status == 0);
  }

  std::string domain_list;
  for (const auto& d : kDomains) domain_list += (domain_list.empty() ? "" : ",") + d;
  ChildProcess client;
  const std::string acks = dir.file("client.out");

  using Clock = std::chrono::steady_clock;
  const auto begin = Clock::now();
  auto since = [&](Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  };
  auto jitter = [&](double every) {
    return std::uniform_real_distribution<double>(every * 2 / 3, every * 4 / 3)(rng);
  };

  std::vector<Lifetime> lifetimes;
  std::size_t kills = 0, fills = 0;
  std::string ballast = disk.path() + "/ballast";
  bool full = false, topped_up = false;
  double next_fill = fill_every / 2, fill_ends = 0;
  auto relay = std::make_unique<Daemon>();
  auto start_relay = [&] {
    relay = std::make_unique<Daemon>();
    REQUIRE(relay->start({MAILQ_RELAY_BIN, "--config", dir.file("relay.toml")},
                         dir.file("relay.out"), &error));
    lifetimes.emplace_back();
  };

  start_relay();
  REQUIRE(wait_for_listener("127.0.0.1", listen_port, 20s));
  REQUIRE(client.start({"python3", "-c", kClient, std::to_string(listen_port), "1",
                        std::to_string(rate), domain_list},
                       acks, &error));
  auto life_start = Clock::now();
  double next_kill = jitter(kill_every);
  auto last_sample = Clock::now();
  while (since(begin) < total_seconds) {
    std::this_thread::sleep_for(100ms);
    const double t = since(begin);
    if (since(last_sample) >= 1.0) {
      last_sample = Clock::now();
      INFO(read_file(dir.file("relay.out")));
      REQUIRE(relay->running());  // the relay never dies of what it meets
      lifetimes.back().samples.push_back(sample(relay->pid()));
    }
    if (!full && t >= next_fill) {
      // Another program fills the disk: a few MB stay free, and a third of the way in, none.
      const std::uint64_t avail = free_bytes(disk.path());
      const std::uint64_t leave = 3ull << 20;
      if (avail > leave) {
        std::ofstream b(ballast, std::ios::binary);
        const std::string chunk(1 << 20, 'b');
        for (std::uint64_t w = 0; w + chunk.size() <= avail - leave; w += chunk.size())
          b.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
      }
      full = true;
      topped_up = false;
      ++fills;
      fill_ends = t + fill_for;
    } else if (full && !topped_up && t >= fill_ends - fill_for * 2 / 3) {
      topped_up = true;
      const int fd = ::open(ballast.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
      const std::string chunk(4096, 'b');
      while (fd >= 0 && ::write(fd, chunk.data(), chunk.size()) > 0) {
      }
      if (fd >= 0) ::close(fd);
    } else if (full && t >= fill_ends) {
      fs::remove(ballast);
      full = false;
      next_fill = t + fill_every - fill_for;
    }
    if (t >= next_kill) {
      lifetimes.back().seconds = since(life_start);
      lifetimes.back().ended = "killed";
      REQUIRE(relay->signal(SIGKILL));
      CHECK(relay->wait(30s) == 128 + SIGKILL);
      ++kills;
      start_relay();
      life_start = Clock::now();
      next_kill = t + jitter(kill_every);
    }
  }
  client.stop();
  if (full) fs::remove(ballast);

  // What the client was told.
  std::map<long long, std::string> acked;       // message -> queue id
  std::map<std::string, std::size_t> refusals;  // "452 4.3.1" -> how many
  {
    const std::string out = read_file(acks);
    std::size_t at = 0;
    for (std::size_t nl; (nl = out.find('\n', at)) != std::string::npos; at = nl + 1) {
      std::istringstream line(out.substr(at, nl - at));
      std::string what, id;
      long long n = 0;
      line >> what >> n;
      if (what == "ACK" && (line >> id)) acked[n] = id;
      if (what == "TEMP") {
        std::string code, status;
        line >> code >> status;
        ++refusals[code + " " + status];
      }
    }
  }
  INFO(read_file(acks).substr(0, 4000));
  REQUIRE(!acked.empty());

  // The last run is left to finish: everything that can go out goes out.
  std::map<long long, int> delivered, bounced;
  std::map<std::string, std::size_t> delivered_to;
  std::size_t partial = 0;
  auto count = [&] {
    delivered.clear();
    bounced.clear();
    delivered_to.clear();
    partial = 0;
    for (SmtpSink* s : {&live, &slow, &tempfail, &hardfail}) {
      for (const auto& d : s->wait_for_dumps(0, 0ms)) {
        const long long seq = header_number(d, "X-Soak-Seq");
        if (seq >= 0 && header_number(d, "X-Soak-End") == seq) {
          if (++delivered[seq] == 1)
            ++delivered_to[kDomains[static_cast<std::size_t>(seq) % kDomains.size()]];
        } else {
          ++partial;
        }
      }
    }
    for (const auto& d : bounces.wait_for_dumps(0, 0ms)) {
      const long long seq = header_number(d, "X-Soak-Seq");
      if (seq >= 0) ++bounced[seq];
    }
  };
  auto settled = [&] {
    for (const auto& [n, id] : acked) {
      const std::string& domain = kDomains[static_cast<std::size_t>(n) % kDomains.size()];
      if ((domain == "live.test" || domain == "slow.test") && !delivered.count(n) &&
          !bounced.count(n))
        return false;
      if (domain == "hardfail.test" && !bounced.count(n)) return false;
    }
    return true;
  };
  const auto drain_deadline = Clock::now() + 90s;
  for (;;) {
    (void)relay::control_call(control, {{"flush"}, {}}, Duration(5s));
    count();
    if (settled() || Clock::now() >= drain_deadline) break;
    std::this_thread::sleep_for(1s);
    lifetimes.back().samples.push_back(sample(relay->pid()));
  }
  lifetimes.back().seconds = since(life_start);
  lifetimes.back().ended = "stopped";
  REQUIRE(relay->signal(SIGTERM));
  CHECK(relay->wait(30s) == 0);
  count();

  // What is still queued, and why: the messages themselves (with the reply that deferred them)
  // and the notifications of those that bounced but whose bounce had not gone out yet, read from
  // the stopped relay's spool; and what an operator sees of it (mailq-queue list).
  std::map<long long, bool> queued_originals;  // message -> a pending recipient has a reply
  std::set<long long> queued_bounces;
  {
    OpenedSpool stopped(spool);
    for (const auto& m : stopped.stored()) {
      const long long seq = header_number(m.body, "X-Soak-Seq");
      if (seq < 0) continue;
      if (m.record.reverse_path.empty()) {
        queued_bounces.insert(seq);
        continue;
      }
      bool reason = false;
      for (const auto& r : m.record.recipients)
        reason = reason || (!is_final(r.state) && !r.last_reply.empty());
      queued_originals[seq] = reason;
    }
  }
  const ToolRun listing = run_tool({MAILQ_QUEUE_BIN, "--spool", spool, "list"});
  INFO(listing.err);
  REQUIRE(listing.status == 0);
  std::size_t queued = 0, bounce_queued = 0, lost = 0, queued_without_reason = 0, not_listed = 0,
              hardfail_delivered = 0, stuck_delivered = 0;
  std::string missing;
  for (const auto& [n, id] : acked) {
    const std::string& domain = kDomains[static_cast<std::size_t>(n) % kDomains.size()];
    if (delivered.count(n) || bounced.count(n)) {
      if (domain == "hardfail.test" && delivered.count(n)) ++hardfail_delivered;
      if ((domain == "tempfail.test" || domain == "refused.test") && delivered.count(n))
        ++stuck_delivered;
      continue;
    }
    if (auto q = queued_originals.find(n); q != queued_originals.end()) {
      ++queued;
      if (!q->second) ++queued_without_reason;
      if (listing.out.find(id + " ") == std::string::npos) ++not_listed;
      continue;
    }
    if (queued_bounces.count(n)) {
      ++bounce_queued;
      continue;
    }
    ++lost;
    if (missing.size() < 2000) missing += " " + std::to_string(n) + "(" + id + ", " + domain + ")";
  }
  std::size_t duplicates = 0, unacked = 0;
  for (const auto& [n, c] : delivered) {
    duplicates += static_cast<std::size_t>(c - 1);
    if (!acked.count(n)) ++unacked;
  }

  std::string refusal_text;
  for (const auto& [reply, n] : refusals) refusal_text += " " + std::to_string(n) + " " + reply;
  if (refusals.empty()) refusal_text = " none";
  std::ostringstream report;
  report << "soak, " << layout << " spool, " << total_seconds << " s: " << acked.size()
         << " acknowledged (250), refused:" << refusal_text << ", " << delivered.size()
         << " delivered (" << delivered_to["live.test"] << " live, " << delivered_to["slow.test"]
         << " slow), " << bounced.size() << " bounced (" << bounce_queued
         << " more bounced with the bounce still queued), " << queued << " still queued, " << lost
         << " lost, " << duplicates << " duplicates, " << unacked << " delivered without a 250; "
         << kills << " SIGKILLs, " << fills << " times the disk full (" << disk.stats() << ")\n";
  for (std::size_t i = 0; i < lifetimes.size(); ++i)
    report << lifetime_line(i, lifetimes[i]) << "\n";
  WARN(report.str());

  INFO(report.str());
  INFO("lost:" << missing);
  CHECK(lost == 0);
  CHECK(partial == 0);
  CHECK(hardfail_delivered == 0);
  CHECK(stuck_delivered == 0);
  CHECK(queued_without_reason == 0);
  CHECK(not_listed == 0);
  CHECK(kills > 0);
  CHECK(fills > 0);
  // The full disk was told to clients in the words of RFC 3463 (mail system full).
  CHECK(refusals["452 4.3.1"] > 0);
  // Descriptors do not pile up: a leak of one per message or per session would be thousands.
  long fds_max = 0;
  for (const Lifetime& l : lifetimes)
    for (const Sample& s : l.samples) fds_max = std::max(fds_max, s.fds);
  CHECK(fds_max < 200);
  // Memory does not grow with the messages that went through: a leak of a few hundred
  // octets per message is megabytes here, and the relay's own figure is below 16 MiB. In a long
  // run the later half of the relay's lives holds no more than the earlier.
  long rss_max = 0, early_max = 0, late_max = 0;
  for (std::size_t i = 0; i < lifetimes.size(); ++i) {
    long& half_max = i < lifetimes.size() / 2 ? early_max : late_max;
    for (const Sample& s : lifetimes[i].samples) {
      rss_max = std::max(rss_max, s.rss_kib);
      half_max = std::max(half_max, s.rss_kib);
    }
  }
  if (!kSanitized) {
    CHECK(rss_max < 128 * 1024);
    if (lifetimes.size() >= 6) CHECK(late_max <= early_max + early_max / 2 + 8 * 1024);
  }
  const std::string log_text = read_file(log);
  CHECK(log_text.find("quarantine") == std::string::npos);
  // The full disk is in the log, without a line for each of the thousands of writes it failed.
  std::size_t spool_notices = 0;
  for (std::size_t p = 0; (p = log_text.find("notice: spool: ", p)) != std::string::npos; ++p)
    ++spool_notices;
  INFO(spool_notices << " spool notices");
  CHECK(spool_notices < 50 * fills + 20);
  // The default reserve of free space turned MAIL away, and said so.
  if (layout == "files")
    CHECK(log_text.find("listener: 127.0.0.1 storage low: ") != std::string::npos);
}

}  // namespace

TEST_CASE(
    "mailq-relay soak on the file spool: mixed destinations, SIGKILLs and a full disk lose no "
    "acknowledged message",
    "[relay][soak]") {
  run_soak("files");
}

TEST_CASE(
    "mailq-relay soak on the segment spool: mixed destinations, SIGKILLs and a full disk lose no "
    "acknowledged message",
    "[relay][soak][segments]") {
  run_soak("segments");
}

#endif  // MAILQ_RELAY_BIN && MAILQ_QUEUE_BIN
