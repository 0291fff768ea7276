// Crash test of the spool: a writer process is SIGKILLed at random moments, again and again;
// after each kill a fresh SpoolStorage must recover every message the writer saw
// acknowledged, byte for byte, with every recipient it saw recorded delivered still
// delivered, and none of the messages it saw removed.
//
// A handful of rounds by default; MAILQ_LONG_TESTS=1 runs 100.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>

#include "crash/crash_body.h"
#include "mailq/spool.h"

namespace fs = std::filesystem;

namespace {

std::string writer_path() {
#ifdef MAILQ_SPOOL_CRASH_WRITER
  return MAILQ_SPOOL_CRASH_WRITER;
#else
  return (fs::read_symlink("/proc/self/exe").parent_path() / "spool_crash_writer").string();
#endif
}

struct Round {
  std::string output;  // everything the writer printed
  bool killed = false;
};

// Runs the writer and kills it after `kill_after` (or when it exits by itself).
Round run_writer(const std::string& spool, int run, std::chrono::milliseconds kill_after) {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  const std::string exe = writer_path();
  const std::string run_text = std::to_string(run);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::execl(exe.c_str(), exe.c_str(), spool.c_str(), run_text.c_str(), nullptr);
    ::_exit(127);
  }
  ::close(fds[1]);
  Round r;
  const auto deadline = std::chrono::steady_clock::now() + kill_after;
  bool open = true;
  char buf[65536];
  while (open) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 && !r.killed) {
      ::kill(pid, SIGKILL);
      r.killed = true;
    }
    pollfd p{fds[0], POLLIN, 0};
    int n = ::poll(&p, 1, r.killed ? 1000 : static_cast<int>(std::max<long>(left.count(), 0)));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    ssize_t got = ::read(fds[0], buf, sizeof buf);
    if (got <= 0) {
      open = false;  // the writer is dead and its output drained
      break;
    }
    r.output.append(buf, static_cast<std::size_t>(got));
  }
  ::close(fds[0]);
  if (!r.killed) ::kill(pid, SIGKILL);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return r;
}

}  // namespace

TEST_CASE("spool survives SIGKILL at random moments: every acknowledged message is recovered",
          "[spool][crash]") {
  const char* long_tests = std::getenv("MAILQ_LONG_TESTS");
  const int rounds = (long_tests && std::string(long_tests) == "1") ? 100 : 6;
  REQUIRE(fs::exists(writer_path()));

  char tmpl[] = "/tmp/mailq-spool-crash-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  struct RemoveAtEnd {
    std::string path;
    ~RemoveAtEnd() {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  } remove_at_end{tmpl};
  const std::string spool = std::string(tmpl) + "/spool";

  std::random_device rd;
  const unsigned seed = rd();
  INFO("random seed " << seed);
  std::mt19937 rng(seed);

  std::set<std::uint64_t> acknowledged, delivered, removing, removed;
  std::size_t quarantined = 0, unacknowledged_recovered = 0, lines = 0, torn_repairs = 0;
  for (int round = 1; round <= rounds; ++round) {
    // Early kills land in start-up recovery, later ones among inserts, updates and syncs.
    const auto kill_after = std::chrono::milliseconds(
        std::uniform_int_distribution<int>(round % 5 == 0 ? 0 : 50, 600)(rng));
    Round r = run_writer(spool, round, kill_after);
    INFO("round " << round << ", killed after " << kill_after.count() << " ms");

    std::istringstream in(r.output);
    std::string line;
    while (std::getline(in, line)) {
      if (in.eof()) break;  // an unterminated last line is not a statement
      ++lines;
      REQUIRE(line.size() >= 2);
      INFO("writer said: " << line);
      REQUIRE(line[0] != 'E');
      if (line[0] == 'L') continue;
      const std::uint64_t id = std::stoull(line.substr(2), nullptr, 16);
      switch (line[0]) {
        case 'I':
          acknowledged.insert(id);
          break;
        case 'D':
          delivered.insert(id);
          break;
        case 'X':
          removing.insert(id);
          break;
        case 'R':
          removed.insert(id);
          break;
        default:
          FAIL("unexpected line");
      }
    }

    mailq::ManualClock clock;
    mailq::spool::SpoolStorage storage(spool, clock);
    REQUIRE_FALSE(storage.open_error());
    std::unordered_map<std::uint64_t, mailq::MessageRecord> found;
    mailq::RecoveryReport report;
    REQUIRE_FALSE(storage.load(
        [&](mailq::MessageRecord&& m) { found.emplace(m.id.value, std::move(m)); }, &report));
    quarantined += report.quarantined;
    torn_repairs += storage.stats().last_load_repaired;
    for (const auto& p : report.problems) WARN("recovery: " << p);
    CHECK(report.quarantined == 0);

    for (std::uint64_t id : acknowledged) {
      INFO("message " << std::hex << id);
      if (removed.count(id)) {
        CHECK(found.count(id) == 0);
        continue;
      }
      if (removing.count(id) && found.count(id) == 0) {
        removed.insert(id);  // killed between remove() and its "R" line
        continue;
      }
      REQUIRE(found.count(id) == 1);
      auto body = storage.read_body(mailq::MessageId{id});
      REQUIRE(body.ok());
      CHECK(*body == mailq_crash::body_for(id));
      if (delivered.count(id)) {
        CHECK(found[id].recipients[0].state == mailq::RecipientState::delivered);
      }
    }
    for (const auto& [id, m] : found) {
      // Made durable, but killed before it could say so: the host would enqueue it again.
      if (!acknowledged.count(id)) {
        ++unacknowledged_recovered;
        acknowledged.insert(id);  // from now on it must stay
      }
    }
  }
  WARN("spool crash test: " << rounds << " rounds, " << lines << " statements, "
                            << acknowledged.size() << " messages acknowledged, " << removed.size()
                            << " removed, " << delivered.size() << " delivered marks, "
                            << unacknowledged_recovered
                            << " recovered without acknowledgement (possible duplicates), "
                            << torn_repairs << " torn records cut, " << quarantined
                            << " quarantined");
  CHECK(lines > 0);
}
