// Crash test of the whole engine: a process running a spool, Queue, Deliverer and the libuv
// transport against Postfix's smtp-sink is SIGKILLed at random moments, again and again, each
// run enqueueing new messages; a last run recovers and drains the backlog. It runs once over
// the file spool (SpoolStorage) and once over the segment spool (SegmentStorage, with small
// segments so that kills also land in rollover and segment deletion). Every message
// whose enqueue was acknowledged must then have reached the sink whole at least once.
// Duplicates (at-least-once delivery after a kill between the sink's 250 and the spool's
// record of it) and messages made durable before the kill but never acknowledged are reported.
//
// The same rounds run again with the spool on the power-cut file system (tests/crash/
// powercut_fs.cpp, FUSE): after each SIGKILL everything the writer had not made durable
// (written but not fsynced, directory entries of directories not fsynced) is dropped, as a
// power cut drops it, and the next run recovers from what is left.
//
// A handful of rounds by default; MAILQ_LONG_TESTS=1 runs 100.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "crash/crash_storage.h"
#include "support/powercut.h"
#include "support/servers.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

std::string writer_path() {
#ifdef MAILQ_ENGINE_CRASH_WRITER
  return MAILQ_ENGINE_CRASH_WRITER;
#else
  return (fs::read_symlink("/proc/self/exe").parent_path() / "engine_crash_writer").string();
#endif
}

struct Run {
  std::string output;  // everything the writer printed on stdout
  bool killed = false;
  bool stopped_by_predicate = false;
  int status = 0;  // waitpid status
};

// Runs the writer and SIGKILLs it when `stop(output)` holds or after `limit`, whichever comes
// first (or lets it be, if it exits by itself). Its stderr is appended to `stderr_file`.
Run run_writer(const std::vector<std::string>& args, const std::string& stderr_file,
               std::chrono::milliseconds limit,
               const std::function<bool(const std::string&)>& stop = nullptr) {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  const int err = ::open(stderr_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  REQUIRE(err >= 0);
  std::vector<std::string> argv_text{writer_path()};
  argv_text.insert(argv_text.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // Dies with the test, whatever happens to it.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(126);
    ::dup2(fds[1], 1);
    ::dup2(err, 2);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  ::close(err);
  // Kills and reaps the writer on every way out, a failed assertion included.
  struct Reaper {
    pid_t pid;
    int fd;
    int* status;
    ~Reaper() {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, status, 0);
      ::close(fd);
    }
  };
  Run r;
  Reaper reaper{pid, fds[0], &r.status};
  const auto deadline = std::chrono::steady_clock::now() + limit;
  char buf[65536];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (!r.killed && (left.count() <= 0 || (stop && stop(r.output)))) {
      r.stopped_by_predicate = left.count() > 0;
      ::kill(pid, SIGKILL);
      r.killed = true;
    }
    // After the kill, drain what is left in the pipe (bounded: the writer is dead).
    pollfd p{fds[0], POLLIN, 0};
    const int n =
        ::poll(&p, 1, r.killed ? 5000 : static_cast<int>(std::max<long>(left.count(), 1)));
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 && r.killed) break;
    if (n <= 0) continue;
    const ssize_t got = ::read(fds[0], buf, sizeof buf);
    if (got <= 0) break;  // end of file: the writer is dead and its output drained
    r.output.append(buf, static_cast<std::size_t>(got));
  }
  return r;
}

// The complete lines of a writer's output (an unterminated last line was cut by the kill).
std::vector<std::string> lines_of(const std::string& output) {
  std::vector<std::string> lines;
  std::size_t at = 0;
  for (std::size_t nl; (nl = output.find('\n', at)) != std::string::npos; at = nl + 1)
    lines.push_back(output.substr(at, nl - at));
  return lines;
}

// The rounds of the test over one spool layout; `layout_options` go to every writer run. With
// `power`, the spool is on the power-cut file system and every kill is also a power cut.
void run_engine_crash(mailq::spool::Layout layout, const std::vector<std::string>& layout_options,
                      const mailq_crash::StorageTuning& tuning,
                      mailq::test::PowerCutMount* power = nullptr) {
  const char* long_tests = std::getenv("MAILQ_LONG_TESTS");
  const int rounds = (long_tests && std::string(long_tests) == "1") ? 100 : 5;
  constexpr unsigned long long kPerRound = 60;
  REQUIRE(fs::exists(writer_path()));

  mailq::test::SmtpSink sink;
  std::string err;
  if (!sink.start(&err)) FAIL("smtp-sink: " << err);
  mailq::test::TempDir dir;
  const std::string spool = power ? power->path() + "/spool" : dir.file("spool");
  const std::string writer_err = dir.file("writer.err");
  const std::string port = std::to_string(sink.port());

  std::random_device rd;
  const unsigned seed = rd();
  INFO("layout " << mailq::spool::to_string(layout) << ", random seed " << seed);
  // Every writer run: its own arguments, then the layout's.
  auto args = [&](std::vector<std::string> a) {
    a.insert(a.end(), layout_options.begin(), layout_options.end());
    return a;
  };
  std::mt19937 rng(seed);

  std::map<unsigned long long, int> acked;  // message number -> round of its ACK
  std::vector<std::string> failures;        // ERR and E lines
  std::vector<int> kill_after_ms;
  std::size_t recovered_total = 0, quarantined = 0;
  unsigned long long next = 1;
  auto parse = [&](const Run& r, int round) {
    for (const auto& line : lines_of(r.output)) {
      if (line.rfind("ACK ", 0) == 0) {
        const unsigned long long n = std::stoull(line.substr(4));
        CHECK(acked.count(n) == 0);
        acked[n] = round;
      } else if (line.rfind("L ", 0) == 0) {
        std::istringstream in(line.substr(2));
        std::size_t rec = 0, quar = 0;
        in >> rec >> quar;
        recovered_total += rec;
        quarantined += quar;
      } else if (line == "IDLE") {
      } else {
        failures.push_back("round " + std::to_string(round) + ": " + line);
      }
    }
  };

  // With power cuts, every other round delivers to a port where nothing listens: its messages
  // are still queued (deferred, retried) when the power goes, so that the cuts hit a backlog.
  const std::string closed_port = std::to_string(mailq::test::free_tcp_port());
  for (int round = 1; round <= rounds; ++round) {
    const int kill_after = std::uniform_int_distribution<int>(20, 400)(rng);
    kill_after_ms.push_back(kill_after);
    const std::string& to = power && round % 2 == 1 ? closed_port : port;
    Run r = run_writer(args({"--spool", spool, "--port", to, "--start", std::to_string(next),
                             "--count", std::to_string(kPerRound)}),
                       writer_err, std::chrono::milliseconds(kill_after));
    INFO("round " << round << ", killed after " << kill_after << " ms");
    CHECK(r.killed);
    if (power) power->cut();
    parse(r, round);
    next += kPerRound;
  }

  if (acked.empty()) {
    // A slow machine let no round get as far as an acknowledgement: one more round, killed
    // at its first one, so that the test never passes on nothing.
    const int round = rounds + 1;
    kill_after_ms.push_back(-1);  // killed at its first acknowledgement
    Run r = run_writer(args({"--spool", spool, "--port", port, "--start", std::to_string(next),
                             "--count", std::to_string(kPerRound)}),
                       writer_err, 30s, [](const std::string& out) {
                         return out.find("ACK ") != std::string::npos &&
                                out.find('\n', out.find("ACK ")) != std::string::npos;
                       });
    if (power) power->cut();
    parse(r, round);
    next += kPerRound;
  }

  // The last run enqueues nothing: it recovers the spool and delivers the backlog.
  Run last = run_writer(
      args({"--spool", spool, "--port", port, "--start", std::to_string(next), "--count", "0"}),
      writer_err, 30s, [](const std::string& out) {
        return out.find("\nIDLE\n") != std::string::npos || out.rfind("IDLE\n", 0) == 0;
      });
  parse(last, static_cast<int>(kill_after_ms.size()) + 1);
  INFO("last run said: " << last.output);
  INFO("writer stderr: " << mailq::test::read_file(writer_err));
  REQUIRE(last.stopped_by_predicate);

  // What the sink received: whole messages only (a dump cut by a kill has no end line).
  std::map<unsigned long long, int> delivered;
  std::size_t partial = 0, foreign = 0;
  const auto dumps = sink.wait_for_dumps(0, 0ms);
  for (const auto& d : dumps) {
    const long long seq = mailq::test::header_number(d, "X-Crash-Seq");
    const long long end = mailq::test::header_number(d, "X-Crash-End");
    if (seq < 0) {
      ++foreign;
    } else if (end != seq) {
      ++partial;
    } else {
      ++delivered[static_cast<unsigned long long>(seq)];
    }
  }

  std::vector<std::string> missing;
  for (const auto& [n, round] : acked) {
    if (delivered.count(n) == 0) {
      const int after =
          round <= static_cast<int>(kill_after_ms.size()) ? kill_after_ms[round - 1] : -1;
      missing.push_back(std::to_string(n) + " (acknowledged in round " + std::to_string(round) +
                        (after >= 0 ? ", killed after " + std::to_string(after) + " ms)" : ")"));
    }
  }
  std::size_t duplicates = 0, unacked_delivered = 0, out_of_range = 0;
  for (const auto& [n, count] : delivered) {
    duplicates += static_cast<std::size_t>(count - 1);
    if (acked.count(n) == 0) ++unacked_delivered;
    if (n == 0 || n >= next) ++out_of_range;
  }

  WARN(mailq::spool::to_string(layout)
       << (power ? " engine power-cut test (" + power->stats() + "): " : " engine crash test: ")
       << kill_after_ms.size() << " rounds, " << acked.size() << " acknowledged, "
       << delivered.size() << " distinct delivered, " << duplicates << " duplicates, "
       << unacked_delivered << " delivered without acknowledgement, " << partial
       << " partial dumps, " << recovered_total << " messages recovered at start-ups, "
       << quarantined << " quarantined");

  std::string missing_text;
  for (const auto& m : missing) missing_text += "\n  " + m;
  INFO("lost messages:" << missing_text);
  CHECK(missing.empty());
  std::string failure_text;
  for (const auto& f : failures) failure_text += "\n  " + f;
  INFO("writer failures:" << failure_text);
  CHECK(failures.empty());
  CHECK(quarantined == 0);
  CHECK(foreign == 0);
  CHECK(out_of_range == 0);
  CHECK(!acked.empty());
  // The cuts hit a backlog: some acknowledged messages were only in the spool when the power
  // went (acknowledged in a round whose deliveries were refused), and came back from it; and
  // the cuts did drop something (the file system is not a no-op).
  if (power) {
    CHECK(recovered_total > 0);
    CHECK(std::any_of(acked.begin(), acked.end(), [](const auto& a) { return a.second % 2 == 1; }));
    std::istringstream st(power->stats());
    std::map<std::string, long long> fields;
    std::string key;
    long long value = 0;
    while (st >> key >> value) fields[key] = value;
    INFO(power->stats());
    CHECK(fields["cuts"] >= rounds);
    CHECK(fields["fsyncs"] + fields["dirsyncs"] > 0);
    CHECK(fields["lost_writes"] + fields["lost_entries"] > 0);
  }
  // The writer prints nothing on stderr unless something went wrong (a sanitizer's report,
  // an error the engine reported).
  CHECK(mailq::test::read_file(writer_err).empty());

  // Drained: the spool holds nothing any more.
  mailq::ManualClock clock;
  auto opened = mailq_crash::CrashStorage::open(layout, spool, clock, tuning);
  INFO("open: " << (opened ? std::string() : opened.error().message));
  REQUIRE(opened.ok());
  std::size_t left = 0;
  mailq::RecoveryReport report;
  REQUIRE(opened->storage().load([&](mailq::MessageRecord&&) { ++left; }, &report));
  CHECK(left == 0);
  CHECK(report.quarantined == 0);
  CHECK(opened->last_load().quarantined == 0);
}

}  // namespace

TEST_CASE(
    "Engine on the file spool survives SIGKILL at random moments: every message whose enqueue "
    "was acknowledged is delivered at least once",
    "[engine][crash]") {
  run_engine_crash(mailq::spool::Layout::files, {"--layout", "files"}, {});
}

TEST_CASE(
    "Engine on the segment spool survives SIGKILL at random moments, in segment rollover and "
    "deletion too: every message whose enqueue was acknowledged is delivered at least once",
    "[engine][segment][crash]") {
  // Small segments: a round's 60 messages and their updates fill several, so that kills land
  // in rollover and in the deletion of drained segments.
  constexpr std::uint64_t kSegmentSize = 16 << 10;
  mailq_crash::StorageTuning tuning;
  tuning.segment_size = kSegmentSize;
  run_engine_crash(mailq::spool::Layout::segments,
                   {"--layout", "segments", "--segment-size", std::to_string(kSegmentSize)},
                   tuning);
}

TEST_CASE(
    "Engine on the file spool survives power cuts at random moments (what was not fsynced is "
    "lost): every message whose enqueue was acknowledged is delivered at least once",
    "[engine][crash][powercut]") {
  mailq::test::PowerCutMount power;
  run_engine_crash(mailq::spool::Layout::files, {"--layout", "files"}, {}, &power);
}

TEST_CASE(
    "Engine on the segment spool survives power cuts at random moments (what was not fsynced is "
    "lost): every message whose enqueue was acknowledged is delivered at least once",
    "[engine][segment][crash][powercut]") {
  constexpr std::uint64_t kSegmentSize = 16 << 10;
  mailq_crash::StorageTuning tuning;
  tuning.segment_size = kSegmentSize;
  mailq::test::PowerCutMount power;
  run_engine_crash(mailq::spool::Layout::segments,
                   {"--layout", "segments", "--segment-size", std::to_string(kSegmentSize)}, tuning,
                   &power);
}

TEST_CASE(
    "The power-cut file system keeps what was fsynced and drops what was not: file data, new "
    "names, renames and unlinks",
    "[powercut]") {
  mailq::test::PowerCutMount power;
  const std::string d = power.path() + "/d";
  auto sync_path = [](const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    CHECK(::fsync(fd) == 0);
    ::close(fd);
  };
  auto write = [](const std::string& path, const std::string& text, bool sync) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
    if (sync) CHECK(::fdatasync(fd) == 0);
    ::close(fd);
  };
  fs::create_directory(d);
  write(d + "/durable", "kept", true);
  write(d + "/named-only", "data never synced", false);
  write(d + "/gone-later", "x", true);
  sync_path(d);
  sync_path(power.path());
  // After the last syncs: an append, a new file, a rename and an unlink, none made durable.
  {
    const int fd = ::open((d + "/durable").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, " and more", 9) == 9);
    ::close(fd);
  }
  write(d + "/new", "new", true);  // its data synced, its name not
  fs::rename(d + "/durable", d + "/renamed");
  fs::remove(d + "/gone-later");
  CHECK(mailq::test::read_file(d + "/renamed") == "kept and more");
  power.cut();
  CHECK(mailq::test::read_file(d + "/durable") == "kept");
  CHECK_FALSE(fs::exists(d + "/renamed"));
  CHECK_FALSE(fs::exists(d + "/new"));
  CHECK(fs::exists(d + "/gone-later"));
  CHECK(fs::exists(d + "/named-only"));
  CHECK(fs::file_size(d + "/named-only") == 0);  // its name was durable, its data not
  CHECK(power.stats().rfind("cuts 1 ", 0) == 0);
}
