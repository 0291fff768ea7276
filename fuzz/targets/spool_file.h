// Fuzz target: start-up recovery of a spool file (SpoolStorage::load on a file of arbitrary
// bytes), the path every queued message goes through after a restart or a crash.
//
// Input: one flags byte, then the bytes of a spool file (the seeds are files written by
// SpoolStorage itself: fuzz/corpus/spool_file/*).
//   bit 0: repair the checksums first (preamble CRC, each record's header check and CRC
//          where the record's length fits), so that mutations reach the decoders behind
//          the checksums; without it the checksum and torn-write paths are exercised;
//   bit 1: name the file after the id its metadata holds (else a fixed id, so that the
//          "holds message X, not Y" path is reachable);
//   bit 2: held file name (".HELD");
//   bit 3: verify_bodies_on_load.
// Checks: load() never fails on a bad file (a bad file is quarantined, reported with a
// reason); at most one message is recovered and it is the one the file name says, with at
// least one recipient; its body and attempts read back without crashing (the body exactly
// `size` octets when it reads); a second load of the same spool (after the repairs and
// renames of the first) recovers the very same record and quarantines nothing more.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
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
#include "mailq/spool/file_spool.h"
#include "spool/crc32c.h"
#include "spool/format.h"
#include "spool_support.h"

namespace mailq::fuzz {

namespace spool_file_detail {

// The shared helpers, under the names this target (and spool_records.h) always used.
using spool_support::get_u32_at;
using spool_support::put_u32_at;
using spool_support::repair_checksums;
using spool_support::same;

struct Loaded {
  std::vector<MessageRecord> records;
  RecoveryReport report;
  std::error_code ec;
};

inline Loaded load(const std::string& dir, bool verify_bodies) {
  ManualClock clock;
  spool::SpoolOptions options;
  options.verify_bodies_on_load = verify_bodies;
  options.deferred_sync_delay = Duration{0};
  Loaded out;
  auto s = spool::SpoolStorage::open(dir, clock, options);
  MAILQ_FUZZ_CHECK(s.ok(), s.ok() ? "" : s.error().message);
  spool::SpoolStorage& spool = **s;
  out.ec = spool.load([&](MessageRecord&& r) { out.records.push_back(std::move(r)); }, &out.report)
               .code();
  for (const MessageRecord& r : out.records) {
    MAILQ_FUZZ_CHECK(!r.recipients.empty(), "recovered a message without recipients");
    // Reading must be safe whatever the file held (a bad body is an error, not a crash).
    (void)spool.read_body(r.id);
    (void)spool.read_attempts(r.id);
  }
  clock.run_pending();
  return out;
}

/// A private spool directory per process, on tmpfs when there is one.
inline const std::string& spool_dir() {
  static const std::string dir = [] {
    std::string base = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    return base + "/mailq-fuzz-spool-" + std::to_string(::getpid());
  }();
  return dir;
}

}  // namespace spool_file_detail

inline void run_spool_file(std::string_view data) {
  using namespace spool_file_detail;
  namespace fs = std::filesystem;
  Input in(data);
  const std::uint8_t flags = in.byte();
  std::string file(in.rest());
  if (flags & 1) repair_checksums(file);

  MessageId id{0x0123456789ABull};
  if (flags & 2) {
    // The id as the metadata says (when it decodes), so that the file is not refused for
    // its name alone.
    spool::detail::RecordView rv;
    MessageRecord r;
    std::string why;
    if (file.size() > spool::detail::kPreambleSize &&
        spool::detail::parse_record(std::string_view(file).substr(spool::detail::kPreambleSize),
                                    &rv) == spool::detail::RecordStatus::ok &&
        rv.type == spool::detail::RecordType::meta &&
        spool::detail::decode_meta(rv.payload, &r, &why)) {
      id = r.id;
    }
  }

  const std::string& dir = spool_dir();
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir + "/queue/tcp_local", ec);
  std::string name = queue_file_name(id, 0);
  if (flags & 4) name += ".HELD";
  {
    std::ofstream out(dir + "/queue/tcp_local/" + name, std::ios::binary);
    out.write(file.data(), static_cast<std::streamsize>(file.size()));
    MAILQ_FUZZ_CHECK(out.good(), "cannot write the fuzz spool file");
  }

  const bool verify = (flags & 8) != 0;
  Loaded first = load(dir, verify);
  MAILQ_FUZZ_CHECK(!first.ec, "load() failed on a bad file instead of quarantining it");
  MAILQ_FUZZ_CHECK(first.records.size() <= 1, "one file gave several messages");
  MAILQ_FUZZ_CHECK(first.report.recovered == first.records.size(), "recovered count");
  MAILQ_FUZZ_CHECK(first.report.quarantined == first.report.problems.size() ||
                       first.report.problems.size() >= first.report.quarantined,
                   "every quarantined file has a problem line");
  if (!first.records.empty()) {
    MAILQ_FUZZ_CHECK(first.records[0].id == id, "recovered another message than the file's");
    MAILQ_FUZZ_CHECK(first.report.quarantined == 0, "recovered and quarantined");
  }
  for (const std::string& p : first.report.problems) {
    MAILQ_FUZZ_CHECK(!p.empty() && p.find('\n') == std::string::npos, "problem line: " + p);
  }

  // Recovery is stable: what the first load repaired or renamed loads the same again.
  Loaded second = load(dir, verify);
  MAILQ_FUZZ_CHECK(!second.ec, "second load failed");
  MAILQ_FUZZ_CHECK(second.records.size() == first.records.size(),
                   "the second load recovered a different number of messages");
  MAILQ_FUZZ_CHECK(second.report.quarantined == 0, "the second load quarantined a file");
  if (!first.records.empty()) {
    MAILQ_FUZZ_CHECK(same(first.records[0], second.records[0]),
                     "the second load recovered a different record");
  }
  fs::remove_all(dir, ec);
}

}  // namespace mailq::fuzz
