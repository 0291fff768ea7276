// The Queue's writes that must reach the storage: a state change or a removal the storage
// could not record is kept (merged with later changes of the message), reported, and written
// again with a backoff through the Clock, so that the storage never stays behind the queue.
#include <algorithm>

#include "core/queue/core.h"

namespace mailq::detail {
namespace {

constexpr Duration kFirstRetry = std::chrono::seconds(1);
constexpr Duration kLastRetry = std::chrono::minutes(1);

std::string seconds(Duration d) {
  return std::to_string(std::chrono::duration_cast<std::chrono::seconds>(d).count());
}

}  // namespace

void QueueCore::storage_trouble(const std::string& what, MessageId id, const Error& error,
                                Duration retry) {
  std::string text = "storage: could not record " + what + " of " + id.to_string() + ": " +
                     (error.message.empty() ? error.code.message() : error.message);
  if (retry > Duration{0}) text += "; trying again in " + seconds(retry) + " s";
  reporter_->report("mailq: " + text, clock_.now());
  Event ev;
  ev.kind = EventKind::notice;
  ev.time = clock_.now();
  ev.id = id;
  ev.diagnostic.push_back(std::move(text));
  emit(std::move(ev));
}

RecordChange QueueCore::with_unwritten(RecordChange change) const {
  auto it = unwritten_.find(change.id.value);
  if (it == unwritten_.end() || it->second.removal) return change;
  RecordChange merged = it->second.change;
  merge_change(merged, std::move(change));
  return merged;
}

void QueueCore::write_change(RecordChange change) {
  const MessageId id = change.id;
  change = with_unwritten(std::move(change));
  if (auto it = unwritten_.find(id.value); it != unwritten_.end() && it->second.removal) {
    return;  // its removal is due: nothing of it is to be recorded any more
  }
  Result<void> r = storage_.update(change);
  if (r) return written(id);
  keep_unwritten(id, r.error(), std::move(change), false);
}

Result<void> QueueCore::remove_stored(MessageId id) {
  Result<void> r = storage_.remove(id);
  if (r || r.code() == errc::not_found) {
    written(id);
    return r;
  }
  keep_unwritten(id, r.error(), RecordChange{}, true);
  return r;
}

void QueueCore::written(MessageId id) {
  auto it = unwritten_.find(id.value);
  if (it == unwritten_.end()) return;
  if (it->second.timer != kNoTimer) clock_.cancel(it->second.timer);
  unwritten_.erase(it);
}

void QueueCore::keep_unwritten(MessageId id, const Error& error, RecordChange change,
                               bool removal) {
  Unwritten& u = unwritten_[id.value];
  u.change = std::move(change);
  u.removal = u.removal || removal;
  if (u.backoff == Duration{0}) u.backoff = kFirstRetry;
  // Once per backoff step: a write made meanwhile (the message's next change) that fails too
  // is not reported again.
  if (!u.reported) {
    u.reported = true;
    storage_trouble(u.removal ? "the removal" : "the new state", id, error, u.backoff);
  }
  if (u.timer != kNoTimer) return;
  std::weak_ptr<int> life = alive_;
  u.timer = clock_.schedule(u.backoff, [this, life, id] {
    if (life.expired()) return;
    retry_unwritten(id);
  });
}

void QueueCore::retry_unwritten(MessageId id) {
  auto it = unwritten_.find(id.value);
  if (it == unwritten_.end()) return;
  Unwritten& u = it->second;
  u.timer = kNoTimer;
  Result<void> r = u.removal ? storage_.remove(id) : storage_.update(u.change);
  // A message the storage no longer holds has nothing left to record.
  if (r || r.code() == errc::not_found) return written(id);
  u.backoff = std::min(u.backoff * 2, kLastRetry);
  u.reported = false;
  keep_unwritten(id, r.error(), std::move(u.change), u.removal);
}

}  // namespace mailq::detail
