// The durable spools against the Storage conformance suite
// (include/mailq/testing/storage_conformance.h): every check, reopens included.
#include <catch2/catch.hpp>

#include <memory>
#include <string>

#include "mailq/spool/file_spool.h"
#include "mailq/spool/segment_spool.h"
#include "mailq/testing/storage_conformance.h"
#include "support/spool_fixtures.h"

using mailq::testing::check_storage_conformance;

namespace {

std::string all(const std::vector<std::string>& failures) {
  std::string out;
  for (const auto& f : failures) out += f + "\n";
  return out;
}

}  // namespace

TEST_CASE("the file spool keeps the Storage contract", "[spool][conformance]") {
  mailq::spool_test::TempDir dir;
  const auto failures =
      check_storage_conformance([&](mailq::Clock& clock) -> std::unique_ptr<mailq::Storage> {
        auto s = mailq::spool::SpoolStorage::open(dir.path(), clock);
        if (!s) return nullptr;
        return std::move(s.value());
      });
  INFO(all(failures));
  CHECK(failures.empty());
}

TEST_CASE("the segment spool keeps the Storage contract", "[segment][conformance]") {
  mailq::spool_test::TempDir dir;
  mailq::spool::SegmentOptions options;
  options.segment_size = 64 << 10;  // rollovers and deletions on the way
  const auto failures =
      check_storage_conformance([&](mailq::Clock& clock) -> std::unique_ptr<mailq::Storage> {
        auto s = mailq::spool::SegmentStorage::open(dir.path(), clock, options);
        if (!s) return nullptr;
        return std::move(s.value());
      });
  INFO(all(failures));
  CHECK(failures.empty());
}
