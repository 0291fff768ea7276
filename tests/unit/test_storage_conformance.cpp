// The Storage conformance suite (include/mailq/testing/storage_conformance.h): MemoryStorage
// keeps the contract (durability aside); a storage of bytes built on the record codec keeps
// it whole; storages broken on purpose are caught, each by the check that names the fault.
#include <catch2/catch.hpp>

#include <cstdint>
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

// The suite's failures for a BytesStorage on `disk`, with its fault injection and tearing.
std::vector<std::string> run_on(const std::shared_ptr<Disk>& disk) {
  StorageConformanceOptions options;
  options.fail_writes = [disk](bool failing) { disk->failing = failing; };
  options.tear_last_write = [disk] { disk->tear_last_write(); };
  return check_storage_conformance(
      [disk](Clock&) -> std::unique_ptr<Storage> { return std::make_unique<BytesStorage>(disk); },
      options);
}

bool reported_prefix(const std::vector<std::string>& failures, const std::string& prefix) {
  for (const auto& f : failures)
    if (f.rfind(prefix, 0) == 0) return true;
  return false;
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
  MemoryStorage* current = nullptr;
  options.fail_writes = [&current](bool failing) {  // through its test hooks
    const std::error_code ec = failing ? make_error_code(errc::storage_failure) : std::error_code();
    current->fail_inserts(ec);
    current->fail_updates(failing ? SIZE_MAX : 0, ec);
    current->fail_removes(failing ? SIZE_MAX : 0, ec);
  };
  const auto failures = check_storage_conformance(
      [&current](Clock&) -> std::unique_ptr<Storage> {
        auto storage = std::make_unique<MemoryStorage>();
        current = storage.get();
        return storage;
      },
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

TEST_CASE("the conformance suite catches a storage that keeps an insert it reported failed",
          "[storage][conformance]") {
  auto disk = std::make_shared<Disk>();
  disk->keep_failed_insert = true;
  const auto failures = run_on(disk);
  INFO(all(failures));
  CHECK(reported(failures, "failures: the failed insert left the message behind"));
  CHECK(reported(failures, "failures: the failed insert came back after a reopen"));
}

TEST_CASE("the conformance suite catches a storage whose load fails on one torn record",
          "[storage][conformance]") {
  auto disk = std::make_shared<Disk>();
  disk->fail_load_on_damage = true;
  const auto failures = run_on(disk);
  INFO(all(failures));
  CHECK(reported_prefix(failures, "torn write: load failed: "));
  CHECK(reported_prefix(failures, "torn write: a message stored after the damage: "));
}
