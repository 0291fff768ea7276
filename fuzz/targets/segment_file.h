// Fuzz target: start-up recovery of the segment spool (SegmentStorage::load on segment files
// of arbitrary bytes), the path every queued message of a segment spool goes through after a
// restart, a crash or a power loss.
//
// Input: one flags byte, then (bit 2 only) one cut byte, then the bytes of a segment file
// (the seeds are files written by SegmentStorage itself: fuzz/corpus/segment_file/*).
//   bit 0: repair the checksums first (preamble CRC, each record's header check and CRC
//          where the record's length fits; of each segment after the cut), so that mutations
//          reach the decoders and the replay behind the checksums; without it the checksum,
//          torn-tail and quarantine paths are exercised;
//   bit 1: verify_bodies_on_load;
//   bit 2: two segments: the file is cut after its <cut byte>-th record (walking the records
//          by their lengths; where the walk stops when there are fewer), the first part is
//          segments/0000000000000001.seg and the file's first 16 bytes (its preamble)
//          followed by the rest are segments/0000000000000002.seg, so that updates, attempt
//          rows and removals of one segment apply to messages inserted in the other.
//   Otherwise the bytes are segments/0000000000000001.seg.
// Checks: load() never fails on bad bytes (damage is cut off or quarantined, reported with
// single-line problem texts), except for a segment whose preamble says a newer format
// version, which fails by design (segment_spool.h) and is not looked at further; the report
// counts what was recovered; every recovered message has at least one recipient and the ids
// are distinct; bodies and attempt rows read back without crashing. Then the loop turn runs
// (compaction may copy messages forward), the spool is closed, and a second load of the same
// directory (after the repairs and copies of the first) recovers the very same records, with
// the same bodies and attempt counts where the first read them, and quarantines nothing.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "fuzz_support.h"
#include "mailq/clock.h"
#include "mailq/message.h"
#include "mailq/spool/layout.h"
#include "spool/format.h"
#include "spool_support.h"

namespace mailq::fuzz {

namespace segment_file_detail {

using spool_support::get_u32_at;
using spool_support::repair_checksums;
using spool_support::same;

struct Recovered {
  MessageRecord record;
  std::optional<std::string> body;          ///< when read_body succeeded
  std::optional<std::size_t> attempt_rows;  ///< when read_attempts succeeded
};

struct Loaded {
  std::vector<Recovered> messages;  ///< sorted by id
  RecoveryReport report;
  std::error_code ec;
  std::string error;  ///< the error's text when load failed
};

inline Loaded load(const std::string& dir, bool verify_bodies) {
  ManualClock clock;
  spool::SegmentOptions options;
  options.verify_bodies_on_load = verify_bodies;
  options.deferred_sync_delay = Duration{0};
  Loaded out;
  auto s = spool::SegmentStorage::open(dir, clock, options);
  MAILQ_FUZZ_CHECK(s.ok(), s.ok() ? "" : s.error().message);
  spool::SegmentStorage& spool = **s;
  auto loaded = spool.load(
      [&](MessageRecord&& r) {
        Recovered m;
        m.record = std::move(r);
        out.messages.push_back(std::move(m));
      },
      &out.report);
  if (!loaded) {
    out.ec = loaded.code();
    out.error = loaded.error().message;
    return out;
  }
  for (Recovered& m : out.messages) {
    MAILQ_FUZZ_CHECK(!m.record.recipients.empty(), "recovered a message without recipients");
    MAILQ_FUZZ_CHECK(spool.segment_of(m.record.id) != "", "a recovered message is not stored");
    // Reading must be safe whatever the segment held (a bad body is an error, not a crash).
    auto body = spool.read_body(m.record.id);
    if (body.ok()) m.body = std::move(*body);
    auto rows = spool.read_attempts(m.record.id);
    if (rows.ok()) m.attempt_rows = rows->size();
  }
  MAILQ_FUZZ_CHECK(spool.size() == out.messages.size(), "stored count differs from recovered");
  // The loop turn: compaction, when due, copies messages forward (and deletes segments).
  clock.run_pending();
  std::sort(out.messages.begin(), out.messages.end(), [](const Recovered& a, const Recovered& b) {
    return a.record.id.value < b.record.id.value;
  });
  return out;
}

/// Where the records of `f` (a segment file) end after `count` of them, walking by their
/// length fields; stops early where a length does not fit.
inline std::size_t after_records(std::string_view f, std::size_t count) {
  using namespace spool::detail;
  if (f.size() < kPreambleSize) return f.size();
  std::size_t off = kPreambleSize;
  for (std::size_t i = 0; i < count && f.size() - off >= kRecordOverhead; ++i) {
    const std::uint32_t length = get_u32_at(f, off);
    if (length > f.size() - off - kRecordOverhead) break;
    off += kRecordOverhead + length;
  }
  return off;
}

inline bool newer_version(std::string_view f) {
  std::uint32_t version = 0;
  return spool::detail::check_segment_preamble(f, &version) ==
         spool::detail::PreambleStatus::newer_version;
}

/// A private spool directory per process, on tmpfs when there is one.
inline const std::string& spool_dir() {
  static const std::string dir = [] {
    std::string base = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    return base + "/mailq-fuzz-segments-" + std::to_string(::getpid());
  }();
  return dir;
}

inline void write_segment(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  MAILQ_FUZZ_CHECK(out.good(), "cannot write the fuzz segment file");
}

}  // namespace segment_file_detail

inline void run_segment_file(std::string_view data) {
  using namespace segment_file_detail;
  namespace fs = std::filesystem;
  Input in(data);
  const std::uint8_t flags = in.byte();
  const bool split = (flags & 4) != 0;
  const std::uint8_t cut = split ? in.byte() : 0;
  std::vector<std::string> segs;
  segs.emplace_back(in.rest());
  if (split) {
    const std::size_t at = after_records(segs[0], cut);
    std::string second = segs[0].substr(0, std::min(segs[0].size(), spool::detail::kPreambleSize));
    second += segs[0].substr(std::max(at, second.size()));
    segs[0].resize(at);
    segs.push_back(std::move(second));
  }
  if (flags & 1) {
    for (std::string& s : segs) repair_checksums(s);
  }

  const std::string& dir = spool_dir();
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir + "/segments", ec);
  for (std::size_t i = 0; i < segs.size(); ++i) {
    write_segment(dir + "/segments/000000000000000" + std::to_string(i + 1) + ".seg", segs[i]);
  }

  const bool verify = (flags & 2) != 0;
  Loaded first = load(dir, verify);
  if (first.ec) {
    // By design (segment_spool.h): a newer format is refused rather than ignored, before
    // anything is changed.
    const bool newer = std::any_of(segs.begin(), segs.end(),
                                   [](const std::string& s) { return newer_version(s); });
    MAILQ_FUZZ_CHECK(newer,
                     "load() failed on bad bytes instead of quarantining them: " + first.error);
    MAILQ_FUZZ_CHECK(first.error.find("is newer than this build reads") != std::string::npos,
                     "a newer segment failed the load with another error: " + first.error);
    fs::remove_all(dir, ec);
    return;
  }
  MAILQ_FUZZ_CHECK(first.report.recovered == first.messages.size(), "recovered count");
  MAILQ_FUZZ_CHECK(first.report.problems.size() >= first.report.quarantined,
                   "every quarantined tail or file has a problem line");
  for (const std::string& p : first.report.problems) {
    MAILQ_FUZZ_CHECK(!p.empty() && p.find('\n') == std::string::npos, "problem line: " + p);
  }
  for (std::size_t i = 1; i < first.messages.size(); ++i) {
    MAILQ_FUZZ_CHECK(first.messages[i - 1].record.id != first.messages[i].record.id,
                     "one id recovered twice");
  }

  // Recovery is stable: what the first load cut off, quarantined or compacted loads the same.
  Loaded second = load(dir, verify);
  MAILQ_FUZZ_CHECK(!second.ec, "second load failed: " + second.error);
  MAILQ_FUZZ_CHECK(second.report.quarantined == 0, "the second load quarantined something");
  MAILQ_FUZZ_CHECK(second.messages.size() == first.messages.size(),
                   "the second load recovered a different number of messages");
  for (std::size_t i = 0; i < first.messages.size(); ++i) {
    const Recovered& a = first.messages[i];
    const Recovered& b = second.messages[i];
    MAILQ_FUZZ_CHECK(same(a.record, b.record), "the second load recovered a different record");
    if (a.body) {
      MAILQ_FUZZ_CHECK(b.body && *b.body == *a.body, "a body that read back no longer does");
    }
    if (a.attempt_rows) {
      MAILQ_FUZZ_CHECK(b.attempt_rows == a.attempt_rows, "attempt rows differ after reload");
    }
  }
  fs::remove_all(dir, ec);
}

}  // namespace mailq::fuzz
