#include "mailq/storage.h"

namespace mailq {

std::string Storage::locator(const MessageRecord& m, std::uint32_t attempts_before) const {
  const std::string channel = m.recipients.empty() ? std::string("local") : m.recipients[0].route;
  return "queue/" + channel + "/" + queue_file_name(m.id, attempts_before);
}

void MemoryStorage::insert(const MessageRecord& record, std::string_view body, Done done) {
  if (fail_) {
    done(fail_);
    return;
  }
  if (items_.count(record.id.value)) {
    done(make_error_code(errc::bad_state));
    return;
  }
  items_.emplace(record.id.value, Item{record, std::string(body), {}});
  done({});
}

std::error_code MemoryStorage::update(const RecordChange& change) {
  auto it = items_.find(change.id.value);
  if (it == items_.end()) return make_error_code(errc::not_found);
  return apply_change(change, it->second.record).code();
}

std::error_code MemoryStorage::append_attempt(MessageId id, const AttemptRecord& attempt) {
  auto it = items_.find(id.value);
  if (it == items_.end()) return make_error_code(errc::not_found);
  it->second.attempts.push_back(attempt);
  return {};
}

std::error_code MemoryStorage::remove(MessageId id) {
  return items_.erase(id.value) ? std::error_code{} : make_error_code(errc::not_found);
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

std::error_code MemoryStorage::load(const std::function<void(MessageRecord&&)>& each,
                                    RecoveryReport* report) {
  for (auto& [k, item] : items_) {
    MessageRecord copy = item.record;
    each(std::move(copy));
    if (report) ++report->recovered;
  }
  return {};
}

}  // namespace mailq
