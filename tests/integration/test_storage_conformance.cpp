// The durable spools against the Storage conformance suite
// (include/mailq/testing/storage_conformance.h): every check, reopens included, a failing disk
// (every data sync fails with EIO) and a write torn by a power cut.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>

#include "mailq/spool/file_spool.h"
#include "mailq/spool/segment_spool.h"
#include "mailq/testing/storage_conformance.h"
#include "support/spool_fixtures.h"
#include "support/sync_fault.h"

using mailq::testing::check_storage_conformance;
using mailq::testing::StorageConformanceOptions;

namespace {

std::string all(const std::vector<std::string>& failures) {
  std::string out;
  for (const auto& f : failures) out += f + "\n";
  return out;
}

// The options for a spool in `dir`: its disk fails while the sync hook is installed, and its
// newest file loses its last 100 bytes (a power cut in the middle of the last write).
StorageConformanceOptions spool_options(const std::string& dir,
                                        std::unique_ptr<mailq::spool_test::FailDataSyncs>& fault) {
  StorageConformanceOptions options;
  options.fail_writes = [&fault](bool failing) {
    if (failing)
      fault = std::make_unique<mailq::spool_test::FailDataSyncs>();
    else
      fault.reset();
  };
  options.tear_last_write = [dir] {
    namespace fs = std::filesystem;
    fs::path newest;
    struct timespec newest_time {};
    for (const auto& entry : fs::recursive_directory_iterator(dir)) {
      if (!entry.is_regular_file() || entry.file_size() == 0) continue;
      struct stat st {};
      if (::stat(entry.path().c_str(), &st) != 0) continue;
      if (newest.empty() || st.st_mtim.tv_sec > newest_time.tv_sec ||
          (st.st_mtim.tv_sec == newest_time.tv_sec && st.st_mtim.tv_nsec > newest_time.tv_nsec)) {
        newest = entry.path();
        newest_time = st.st_mtim;
      }
    }
    REQUIRE_FALSE(newest.empty());
    const auto size = fs::file_size(newest);
    REQUIRE(::truncate(newest.c_str(),
                       static_cast<off_t>(size - std::min<std::uintmax_t>(100, size / 2))) == 0);
  };
  return options;
}

}  // namespace

TEST_CASE("the file spool keeps the Storage contract", "[spool][conformance]") {
  mailq::spool_test::TempDir dir;
  std::unique_ptr<mailq::spool_test::FailDataSyncs> fault;
  const auto failures = check_storage_conformance(
      [&](mailq::Clock& clock) -> std::unique_ptr<mailq::Storage> {
        auto s = mailq::spool::SpoolStorage::open(dir.path(), clock);
        if (!s) return nullptr;
        return std::move(s.value());
      },
      spool_options(dir.path(), fault));
  INFO(all(failures));
  CHECK(failures.empty());
}

TEST_CASE("the segment spool keeps the Storage contract", "[segment][conformance]") {
  mailq::spool_test::TempDir dir;
  mailq::spool::SegmentOptions segment;
  segment.segment_size = 64 << 10;  // rollovers and deletions on the way
  std::unique_ptr<mailq::spool_test::FailDataSyncs> fault;
  const auto failures = check_storage_conformance(
      [&](mailq::Clock& clock) -> std::unique_ptr<mailq::Storage> {
        auto s = mailq::spool::SegmentStorage::open(dir.path(), clock, segment);
        if (!s) return nullptr;
        return std::move(s.value());
      },
      spool_options(dir.path(), fault));
  INFO(all(failures));
  CHECK(failures.empty());
}
