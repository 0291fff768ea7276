#include "mailq/storage.h"

namespace mailq {

std::string Storage::locator(const MessageRecord& m, std::uint32_t attempts_before) const {
  const std::string channel = m.recipients.empty() ? std::string("local") : m.recipients[0].route;
  return "queue/" + channel + "/" + queue_file_name(m.id, attempts_before);
}

void MemoryStorage::insert(const MessageRecord& record, std::string_view body, Done done) {
  if (fail_) {
    done(Error(fail_, "insert " + record.id.to_string() + ": " + fail_.message()));
    return;
  }
  if (!record.id) {
    done(Error(errc::invalid_parameter, "insert: message id 0"));
    return;
  }
  if (record.recipients.empty()) {
    done(Error(errc::invalid_parameter, "insert " + record.id.to_string() + ": no recipients"));
    return;
  }
  if (items_.count(record.id.value)) {
    done(Error(errc::bad_state, "insert " + record.id.to_string() + ": already stored"));
    return;
  }
  items_.emplace(record.id.value, Item{record, std::string(body), {}});
  done(success());
}

Result<void> MemoryStorage::injected(Failures& f, const char* op, MessageId id) {
  if (f.count == 0) return success();
  if (f.count != SIZE_MAX) --f.count;
  return Error(f.ec, std::string(op) + " " + id.to_string() + ": " + f.ec.message());
}

Result<void> MemoryStorage::update(const RecordChange& change) {
  if (auto failed = injected(fail_updates_, "update", change.id); !failed) return failed;
  auto it = items_.find(change.id.value);
  if (it == items_.end())
    return Error(errc::not_found, "update: no message " + change.id.to_string());
  return apply_change(change, it->second.record);
}

Result<void> MemoryStorage::append_attempt(MessageId id, const AttemptRecord& attempt) {
  auto it = items_.find(id.value);
  if (it == items_.end())
    return Error(errc::not_found, "append_attempt: no message " + id.to_string());
  it->second.attempts.push_back(attempt);
  return success();
}

Result<void> MemoryStorage::remove(MessageId id) {
  if (auto failed = injected(fail_removes_, "remove", id); !failed) return failed;
  if (!items_.erase(id.value))
    return Error(errc::not_found, "remove: no message " + id.to_string());
  return success();
}

Result<std::string> MemoryStorage::read_body(MessageId id) const {
  auto it = items_.find(id.value);
  if (it == items_.end()) return Error(errc::not_found, "no message " + id.to_string());
  return it->second.body;
}

Result<std::vector<AttemptRecord>> MemoryStorage::read_attempts(MessageId id) const {
  auto it = items_.find(id.value);
  if (it == items_.end()) return Error(errc::not_found, "no message " + id.to_string());
  return it->second.attempts;
}

Result<void> MemoryStorage::load(const std::function<void(MessageRecord&&)>& each,
                                 RecoveryReport* report) {
  // `each` may remove or update the message it is given: walk a list of the ids, not the map.
  std::vector<std::uint64_t> ids;
  ids.reserve(items_.size());
  for (const auto& kv : items_) ids.push_back(kv.first);
  for (std::uint64_t id : ids) {
    auto it = items_.find(id);
    if (it == items_.end()) continue;
    MessageRecord copy = it->second.record;
    if (report) ++report->recovered;
    each(std::move(copy));
  }
  return success();
}

}  // namespace mailq
