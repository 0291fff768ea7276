// The Storage conformance suite (include/mailq/testing/storage_conformance.h): MemoryStorage
// keeps the contract (durability aside); a storage of bytes built on the record codec keeps
// it whole; storages broken on purpose are caught, each by the check that names the fault.
#include <catch2/catch.hpp>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mailq/storage.h"
#include "mailq/testing/storage_conformance.h"
#include "support/bytes_storage.h"

using namespace mailq;
using mailq::test::BytesStorage;
using mailq::test::Disk;
using mailq::testing::check_storage_conformance;
using mailq::testing::StorageConformanceOptions;

namespace {

// The suite's failures for a BytesStorage on `disk`.
std::vector<std::string> run_on(const std::shared_ptr<Disk>& disk) {
  return check_storage_conformance(
      [disk](Clock&) -> std::unique_ptr<Storage> { return std::make_unique<BytesStorage>(disk); });
}

bool reported(const std::vector<std::string>& failures, const std::string& line) {
  for (const auto& f : failures)
    if (f == line) return true;
  return false;
}

std::string all(const std::vector<std::string>& failures) {
  std::string out;
  for (const auto& f : failures) out += f + "\n";
  return out;
}

}  // namespace

TEST_CASE("MemoryStorage keeps the Storage contract, durability aside", "[storage][conformance]") {
  StorageConformanceOptions options;
  options.durable = false;  // a new MemoryStorage is empty: nothing to reopen
  const auto failures = check_storage_conformance(
      [](Clock&) -> std::unique_ptr<Storage> { return std::make_unique<MemoryStorage>(); },
      options);
  INFO(all(failures));
  CHECK(failures.empty());
}

TEST_CASE("a storage of bytes kept through the record codec keeps the Storage contract",
          "[storage][conformance][codec]") {
  const auto failures = run_on(std::make_shared<Disk>());
  INFO(all(failures));
  CHECK(failures.empty());
}

TEST_CASE("the conformance suite catches a storage that drops a field at recovery",
          "[storage][conformance]") {
  auto disk = std::make_shared<Disk>();
  disk->drop_delay_notified = true;
  const auto failures = run_on(disk);
  INFO(all(failures));
  CHECK(reported(failures,
                 "recovery: every field: recipient 1 delay_notified: stored true, got false"));
  CHECK(reported(failures,
                 "update: recipient state: recipient 1 delay_notified: stored true, got false"));
}

TEST_CASE("the conformance suite catches a storage that drops a reply's enhanced code",
          "[storage][conformance]") {
  auto disk = std::make_shared<Disk>();
  disk->drop_enhanced_code = true;
  const auto failures = run_on(disk);
  INFO(all(failures));
  CHECK(reported(failures,
                 "attempt rows: row 0 as appended: reply: stored 451 \"4.4.1\" \"[internal] "
                 "connection was not attempted 0\", got 451 \"\" \"[internal] connection was "
                 "not attempted 0\""));
}

TEST_CASE("the conformance suite catches a storage that runs an insert's callback twice",
          "[storage][conformance]") {
  auto disk = std::make_shared<Disk>();
  disk->done_twice = true;
  const auto failures = run_on(disk);
  INFO(all(failures));
  REQUIRE_FALSE(failures.empty());
  CHECK(failures[0].rfind("insert: done ran 2 times for ", 0) == 0);
}
