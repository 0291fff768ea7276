// Crash test of the spools: a writer process is SIGKILLed at random moments, again and again;
// after each kill a fresh storage of the same layout must recover every message the writer
// saw acknowledged, byte for byte, with every recipient it saw recorded delivered still
// delivered, its deferrals and attempt rows as written (none lost, none out of order), and
// none of the messages it saw removed; the writer's next start-up must find what that fresh
// load found; and neither may quarantine anything: a kill tears at most the end of the last
// write, which recovery cuts off.
//
// The same writer and the same checks run for the file spool (SpoolStorage) and the segment
// spool (SegmentStorage, with small segments and eager compaction so that kills also land in
// segment rollover, segment deletion and compaction; every third round also appends a torn
// record to the newest segment, which recovery must repair, not quarantine). A handful of
// rounds by default; MAILQ_LONG_TESTS=1 runs 100.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "crash/crash_body.h"
#include "crash/crash_storage.h"
#include "spool/format.h"

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
  int status = 0;  // waitpid status
};

// Runs the writer with `options` before its spool and run arguments and kills it after
// `kill_after` (or when it exits by itself).
Round run_writer(const std::vector<std::string>& options, const std::string& spool, int run,
                 std::chrono::milliseconds kill_after) {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  std::vector<std::string> argv_text{writer_path()};
  argv_text.insert(argv_text.end(), options.begin(), options.end());
  argv_text.push_back(spool);
  argv_text.push_back(std::to_string(run));
  std::vector<char*> argv;
  for (auto& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::execv(argv[0], argv.data());
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
  REQUIRE(::waitpid(pid, &r.status, 0) == pid);
  return r;
}

// Segment spool: appends to the newest segment a write cut short, as a crash leaves it (a kill
// -9 rarely lands inside one write(2)): the first bytes of the first record of some segment,
// and when that is a message's metadata ('i') followed by its body, maybe the whole metadata
// and part of the body (an insert or a compaction's copy torn between the two; any other
// record whole would be a valid change, not a torn one). Recovery must cut them off (a
// repair, not a quarantine) and lose nothing.
enum class Tear { none, record, metadata_whole };  // none: no segment had a record to copy
Tear tear_newest_segment(const std::string& spool, std::mt19937& rng) {
  namespace d = mailq::spool::detail;
  // The size of the record at `off` of `fd` (0 when there is none) and its type.
  auto record_at = [](int fd, std::uint64_t off, d::RecordType* type) -> std::uint64_t {
    std::string head(d::kRecordHeaderSize, '\0');
    if (::pread(fd, head.data(), head.size(), static_cast<off_t>(off)) !=
        static_cast<ssize_t>(head.size()))
      return 0;
    std::uint32_t length = 0;
    if (!d::parse_record_header(head, type, &length)) return 0;
    return d::kRecordOverhead + std::uint64_t{length};
  };
  std::vector<fs::path> segments;
  for (const auto& e : fs::directory_iterator(fs::path(spool) / "segments")) {
    if (e.path().extension() == ".seg") segments.push_back(e.path());
  }
  std::sort(segments.begin(), segments.end());
  if (segments.empty() || fs::file_size(segments.back()) < d::kPreambleSize) return Tear::none;
  {
    // The kill itself may have cut the last write short (a fatal signal ends a large write
    // between pages): a power cut leaves one torn tail, not a torn record and then another.
    const int fd = ::open(segments.back().c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    const std::uint64_t size = fs::file_size(segments.back());
    std::uint64_t off = d::kPreambleSize;
    d::RecordType type{};
    while (off < size) {
      const std::uint64_t n = record_at(fd, off, &type);
      if (n == 0 || off + n > size) break;
      off += n;
    }
    ::close(fd);
    if (off != size) return Tear::none;
  }
  for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
    const int fd = ::open(it->c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    d::RecordType type{}, next_type{};
    const std::uint64_t first = record_at(fd, d::kPreambleSize, &type);
    if (first == 0) {
      ::close(fd);
      continue;
    }
    std::uint64_t whole = first;
    if (type == d::RecordType::seg_insert) {
      const std::uint64_t second = record_at(fd, d::kPreambleSize + first, &next_type);
      if (second != 0 && next_type == d::RecordType::seg_body) whole += second;
    }
    const auto available = fs::file_size(*it) - d::kPreambleSize;
    const std::uint64_t cut =
        std::uniform_int_distribution<std::uint64_t>(1, std::min(whole, available) - 1)(rng);
    std::string torn(cut, '\0');
    const bool read = ::pread(fd, torn.data(), torn.size(), d::kPreambleSize) ==
                      static_cast<ssize_t>(torn.size());
    ::close(fd);
    REQUIRE(read);
    const int out = ::open(segments.back().c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    REQUIRE(out >= 0);
    const bool written =
        ::write(out, torn.data(), torn.size()) == static_cast<ssize_t>(torn.size());
    ::close(out);
    REQUIRE(written);
    return cut >= first ? Tear::metadata_whole : Tear::record;
  }
  return Tear::none;
}

// What a load showed of a message's deferrals: recipient 1's attempt count and the numbers of
// its attempt rows ("try again <n>"), in order.
struct Deferrals {
  std::uint32_t attempts = 0;
  std::vector<std::uint32_t> rows;
};

// The deferral state of recipient 1 and the attempt rows as the writer writes them: the
// update (attempts n, "try again n"), then the row "try again n". Against what the previous
// load showed (`before`): the rows it showed are all still there, unchanged, and the writer
// added rows before + 1, before + 2, ... in order, the last one n or n - 1 (a kill between an
// update and its row). Returns what this load shows.
Deferrals check_deferrals(mailq::Storage& storage, const mailq::MessageRecord& m,
                          const Deferrals& before) {
  REQUIRE(m.recipients.size() == 2);
  const auto& r = m.recipients[1];
  auto rows = storage.read_attempts(m.id);
  REQUIRE(rows.ok());
  Deferrals now;
  now.attempts = r.attempts;
  if (r.attempts == 0) {
    CHECK(r.state == mailq::RecipientState::queued);
  } else {
    CHECK(r.state == mailq::RecipientState::deferred);
    CHECK(r.last_reply == mailq::Reply(451, "4.4.1", "try again " + std::to_string(r.attempts)));
  }
  for (const auto& a : *rows) {
    INFO("attempt row: " << a.reply.to_string());
    CHECK(a.recipient == "rcpt1@example.net");
    CHECK(a.route == r.route);
    const std::string prefix = "try again ";
    REQUIRE(a.reply.text.rfind(prefix, 0) == 0);
    CHECK(a.reply == mailq::Reply(451, "4.4.1", a.reply.text));
    now.rows.push_back(static_cast<std::uint32_t>(std::stoul(a.reply.text.substr(prefix.size()))));
  }
  INFO("attempts " << before.attempts << " -> " << now.attempts << ", rows before "
                   << before.rows.size() << ", now " << now.rows.size());
  CHECK(now.attempts >= before.attempts);
  REQUIRE(now.rows.size() >= before.rows.size());
  CHECK(std::equal(before.rows.begin(), before.rows.end(), now.rows.begin()));
  std::uint32_t expect = before.attempts + 1;
  for (std::size_t i = before.rows.size(); i < now.rows.size(); ++i) CHECK(now.rows[i] == expect++);
  if (now.attempts == before.attempts) {
    CHECK(now.rows.size() == before.rows.size());
  } else {
    CHECK(expect - 1 <= now.attempts);
    CHECK(expect >= now.attempts);
  }
  return now;
}

// Kills a writer of `layout` at random moments, again and again, and checks after each kill
// what a fresh storage of that layout recovers.
void run_crash_rounds(mailq::spool::Layout layout, const std::vector<std::string>& writer_options,
                      const mailq_crash::StorageTuning& tuning) {
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
  INFO("layout " << mailq::spool::to_string(layout) << ", random seed " << seed);
  std::mt19937 rng(seed);

  std::set<std::uint64_t> acknowledged, delivered, removing, removed;
  std::unordered_map<std::uint64_t, Deferrals> deferrals;  // as the last load showed them
  std::size_t quarantined = 0, unacknowledged_recovered = 0, lines = 0, torn_repairs = 0;
  std::size_t compactions = 0, attempt_checks = 0, tears = 0, metadata_tears = 0;
  mailq_crash::SegmentCounts segment_totals;
  std::size_t stored_after_last_load = 0;  // what the previous round's check found
  for (int round = 1; round <= rounds; ++round) {
    // Early kills land in start-up recovery, later ones among inserts, updates and syncs.
    const auto kill_after = std::chrono::milliseconds(
        std::uniform_int_distribution<int>(round % 5 == 0 ? 0 : 50, 600)(rng));
    Round r = run_writer(writer_options, spool, round, kill_after);
    INFO("round " << round << ", killed after " << kill_after.count() << " ms");
    // The writer runs until killed: any other end (a crash, a sanitizer's abort, an exit after
    // an "E" line) is a failure.
    INFO("writer wait status " << r.status);
    CHECK((WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGKILL));

    std::istringstream in(r.output);
    std::string line;
    mailq_crash::SegmentCounts round_counts;  // the last "C" line: counted since start-up
    while (std::getline(in, line)) {
      if (in.eof()) break;  // an unterminated last line is not a statement
      ++lines;
      REQUIRE(line.size() >= 2);
      INFO("writer said: " << line);
      REQUIRE(line[0] != 'E');
      if (line[0] == 'L') {
        std::istringstream fields(line.substr(2));
        std::size_t recovered = 0, quarantined_at_start = 99;
        fields >> recovered >> quarantined_at_start;
        REQUIRE(fields);
        CHECK(quarantined_at_start == 0);
        // Nothing changed the spool between the previous check's load and this one.
        CHECK(recovered == stored_after_last_load);
        continue;
      }
      if (line[0] == 'C') {
        std::istringstream fields(line.substr(2));
        fields >> round_counts.created >> round_counts.deleted >> round_counts.compacted_messages;
        REQUIRE(fields);
        ++compactions;
        continue;
      }
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
    segment_totals.created += round_counts.created;
    segment_totals.deleted += round_counts.deleted;
    segment_totals.compacted_messages += round_counts.compacted_messages;

    // Every third round of the segment spool also ends in a torn write.
    const Tear tear = layout == mailq::spool::Layout::segments && round % 3 == 0 &&
                              fs::exists(fs::path(spool) / "segments")
                          ? tear_newest_segment(spool, rng)
                          : Tear::none;
    const bool torn = tear != Tear::none;
    if (torn) ++tears;
    if (tear == Tear::metadata_whole) ++metadata_tears;
    INFO("torn write appended: " << torn);

    mailq::ManualClock clock;
    auto opened = mailq_crash::CrashStorage::open(layout, spool, clock, tuning);
    INFO("open: " << (opened ? std::string() : opened.error().message));
    REQUIRE(opened.ok());
    mailq::Storage& storage = opened->storage();
    std::unordered_map<std::uint64_t, mailq::MessageRecord> found;
    mailq::RecoveryReport report;
    const auto loaded = storage.load(
        [&](mailq::MessageRecord&& m) { found.emplace(m.id.value, std::move(m)); }, &report);
    INFO("load: " << (loaded ? std::string() : loaded.error().message));
    REQUIRE(loaded.ok());
    const auto counts = opened->last_load();
    quarantined += report.quarantined;
    torn_repairs += counts.repaired;
    for (const auto& p : report.problems) WARN("recovery: " << p);
    CHECK(report.quarantined == 0);
    CHECK(counts.quarantined == 0);
    if (torn) CHECK(counts.repaired >= 1);
    CHECK(report.recovered == found.size());
    stored_after_last_load = found.size();

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
      INFO("message " << std::hex << id);
      // Nothing the writer never wrote, nothing it removed for good.
      CHECK(id >> 32 >= 1);
      CHECK((id >> 32) <= static_cast<std::uint64_t>(round));
      CHECK(removed.count(id) == 0);
      CHECK(m.size == mailq_crash::body_for(id).size());
      deferrals[id] = check_deferrals(storage, m, deferrals[id]);
      ++attempt_checks;
      // Made durable, but killed before it could say so: the host would enqueue it again.
      if (!acknowledged.count(id)) {
        auto body = storage.read_body(m.id);
        REQUIRE(body.ok());
        CHECK(*body == mailq_crash::body_for(id));
        ++unacknowledged_recovered;
        acknowledged.insert(id);  // from now on it must stay
      }
    }
  }
  WARN(mailq::spool::to_string(layout)
       << " spool crash test: " << rounds << " rounds, " << lines << " statements, "
       << acknowledged.size() << " messages acknowledged, " << removed.size() << " removed, "
       << delivered.size() << " delivered marks, " << attempt_checks << " deferral checks, "
       << unacknowledged_recovered << " recovered without acknowledgement (possible duplicates), "
       << torn_repairs << " torn tails cut, " << quarantined << " quarantined"
       << (layout == mailq::spool::Layout::segments
               ? ", " + std::to_string(segment_totals.created) + " segments created, " +
                     std::to_string(segment_totals.deleted) + " deleted, " +
                     std::to_string(compactions) + " compactions, " +
                     std::to_string(segment_totals.compacted_messages) + " messages compacted, " +
                     std::to_string(tears) + " torn writes appended (" +
                     std::to_string(metadata_tears) + " after a whole metadata record)"
               : std::string()));
  CHECK(lines > 0);
}

}  // namespace

TEST_CASE("file spool survives SIGKILL at random moments: every acknowledged message is recovered",
          "[spool][crash]") {
  mailq_crash::StorageTuning tuning;
  run_crash_rounds(mailq::spool::Layout::files, {"--layout", "files"}, tuning);
}

TEST_CASE(
    "segment spool survives SIGKILL at random moments, in rollover, segment deletion and "
    "compaction too: every acknowledged message is recovered, nothing is quarantined",
    "[segment][crash]") {
  // Small segments: a few hundred messages of up to 60 KB span many of them, so that kills
  // land in rollover, in the deletion of drained segments and in compaction, which a high
  // live fraction makes run within the first rounds already.
  constexpr std::uint64_t kSegmentSize = 256 << 10;
  mailq_crash::StorageTuning tuning;
  tuning.segment_size = kSegmentSize;
  tuning.compact_below_live_fraction = 0.9;
  run_crash_rounds(mailq::spool::Layout::segments,
                   {"--layout", "segments", "--segment-size", std::to_string(kSegmentSize),
                    "--compact-below", "0.9"},
                   tuning);
}
