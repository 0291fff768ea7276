// A host's own Storage, as a host would write one over a database: it keeps only bytes (each
// message as its encoded record, its body, its encoded changes and attempt rows, through
// mailq/record_codec.h) in a Disk that outlives it, so a new instance on the same Disk finds
// what the previous one stored. The Disk's fault switches break it on purpose, for the tests
// of the Storage conformance suite.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mailq/record_codec.h"
#include "mailq/storage.h"

namespace mailq {
namespace test {

struct Disk {
  struct Message {
    std::string record;
    std::string body;
    std::vector<std::string> changes;
    std::vector<std::string> attempts;
  };
  std::map<std::uint64_t, Message> messages;
  bool drop_delay_notified = false;  // forgets a recipient's "delayed" notice at load
  bool drop_enhanced_code = false;   // forgets an attempt row's enhanced code when read
  bool done_twice = false;           // runs an insert's callback twice
  bool keep_failed_insert = false;   // stores an insert it reports failed
  bool fail_load_on_damage = false;  // fails its whole load on one damaged record
  bool failing = false;              // the medium fails: every write is refused
  std::uint64_t last_inserted = 0;

  // A power cut in the middle of the last insert: its record loses its last bytes.
  void tear_last_write() {
    auto it = messages.find(last_inserted);
    if (it != messages.end()) it->second.record.resize(it->second.record.size() / 2);
  }
};

class BytesStorage final : public Storage {
 public:
  explicit BytesStorage(std::shared_ptr<Disk> disk) : disk_(std::move(disk)) {}

  void insert(const MessageRecord& record, std::string_view body, Done done) override {
    Result<void> r = success();
    if (!record.id) {
      r = Error(errc::invalid_parameter, "insert: message id 0");
    } else if (record.recipients.empty()) {
      r = Error(errc::invalid_parameter, "insert " + record.id.to_string() + ": no recipients");
    } else if (disk_->messages.count(record.id.value)) {
      r = Error(errc::bad_state, "insert " + record.id.to_string() + ": already stored");
    } else if (disk_->failing) {
      r = Error(errc::storage_failure, "insert " + record.id.to_string() + ": the disk fails");
      if (disk_->keep_failed_insert)
        disk_->messages[record.id.value] = {encode_record(record), std::string(body), {}, {}};
    } else {
      disk_->messages[record.id.value] = {encode_record(record), std::string(body), {}, {}};
      disk_->last_inserted = record.id.value;
    }
    if (disk_->done_twice) done(r);
    done(std::move(r));
  }

  Result<void> update(const RecordChange& change) override {
    auto current = record_of(change.id, "update");
    if (!current) return current.error();
    if (auto applied = apply_change(change, *current); !applied) return applied;
    if (disk_->failing)
      return Error(errc::storage_failure, "update " + change.id.to_string() + ": the disk fails");
    disk_->messages[change.id.value].changes.push_back(encode_change(change));
    return success();
  }

  Result<void> append_attempt(MessageId id, const AttemptRecord& attempt) override {
    auto it = disk_->messages.find(id.value);
    if (it == disk_->messages.end())
      return Error(errc::not_found, "append_attempt: no message " + id.to_string());
    if (disk_->failing)
      return Error(errc::storage_failure, "append_attempt " + id.to_string() + ": the disk fails");
    it->second.attempts.push_back(encode_attempt(attempt));
    return success();
  }

  Result<void> remove(MessageId id) override {
    if (disk_->failing && disk_->messages.count(id.value))
      return Error(errc::storage_failure, "remove " + id.to_string() + ": the disk fails");
    if (!disk_->messages.erase(id.value))
      return Error(errc::not_found, "remove: no message " + id.to_string());
    return success();
  }

  Result<std::string> read_body(MessageId id) const override {
    auto it = disk_->messages.find(id.value);
    if (it == disk_->messages.end()) return Error(errc::not_found, "no message " + id.to_string());
    return it->second.body;
  }

  Result<std::vector<AttemptRecord>> read_attempts(MessageId id) const override {
    auto it = disk_->messages.find(id.value);
    if (it == disk_->messages.end()) return Error(errc::not_found, "no message " + id.to_string());
    std::vector<AttemptRecord> rows;
    for (const auto& bytes : it->second.attempts) {
      auto row = decode_attempt(bytes);
      if (!row) return row.error();
      if (disk_->drop_enhanced_code) row->reply.enhanced.clear();
      rows.push_back(std::move(*row));
    }
    return rows;
  }

  Result<void> load(const std::function<void(MessageRecord&&)>& each,
                    RecoveryReport* report) override {
    std::vector<std::uint64_t> ids;
    for (const auto& kv : disk_->messages) ids.push_back(kv.first);
    for (std::uint64_t id : ids) {
      if (!disk_->messages.count(id)) continue;
      auto m = record_of(MessageId{id}, "load");
      if (!m) {
        if (disk_->fail_load_on_damage) return m.error();
        // Damage is set aside, said, and the rest is loaded.
        if (report) report->problems.push_back(m.error().message);
        disk_->messages.erase(id);
        continue;
      }
      if (disk_->drop_delay_notified)
        for (auto& r : m->recipients) r.delay_notified = false;
      if (report) ++report->recovered;
      each(std::move(*m));
    }
    return success();
  }

 private:
  // The record as inserted with its changes applied in order.
  Result<MessageRecord> record_of(MessageId id, const char* op) const {
    auto it = disk_->messages.find(id.value);
    if (it == disk_->messages.end())
      return Error(errc::not_found, std::string(op) + ": no message " + id.to_string());
    auto m = decode_record(it->second.record);
    if (!m) return m.error();
    for (const auto& change : it->second.changes)
      if (auto applied = apply_encoded_change(change, *m); !applied) return applied.error();
    return m;
  }

  std::shared_ptr<Disk> disk_;
};

}  // namespace test
}  // namespace mailq
