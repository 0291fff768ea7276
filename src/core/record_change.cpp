// RecordChange: what an update carries, applied to a whole record or computed from two.
#include <algorithm>
#include <tuple>

#include "mailq/storage.h"

namespace mailq {
namespace {

// The mutable state of a RecipientRecord or a RecipientChange (the same fields), to copy or
// compare as a whole.
template <class Recipient>
auto mutable_state(Recipient& r) {
  return std::tie(r.state, r.attempts, r.next_attempt, r.last_reply, r.remote_mta,
                  r.delay_notified);
}

}  // namespace

RecipientChange RecipientChange::of(std::size_t index, const RecipientRecord& r) {
  RecipientChange c;
  c.index = static_cast<std::uint32_t>(index);
  mutable_state(c) = mutable_state(r);
  return c;
}

void RecipientChange::apply_to(RecipientRecord& r) const {
  mutable_state(r) = mutable_state(*this);
}

bool RecordChange::makes_final() const noexcept {
  return std::any_of(recipients.begin(), recipients.end(),
                     [](const RecipientChange& r) { return is_final(r.state); });
}

Result<void> check_change(const RecordChange& change, std::size_t recipients) {
  std::uint64_t next = 0;  // the lowest index the next entry may have
  for (const RecipientChange& r : change.recipients) {
    if (r.index >= recipients) {
      return Error(errc::bad_state, "update " + change.id.to_string() + ": no recipient " +
                                        std::to_string(r.index) + ", stored " +
                                        std::to_string(recipients));
    }
    if (r.index < next) {
      return Error(errc::invalid_parameter, "update " + change.id.to_string() + ": recipient " +
                                                std::to_string(r.index) + " out of order or twice");
    }
    next = std::uint64_t{r.index} + 1;
  }
  return success();
}

Result<void> apply_change(const RecordChange& change, MessageRecord& record) {
  if (change.id != record.id) {
    return Error(errc::invalid_parameter, "update " + change.id.to_string() +
                                              ": applied to message " + record.id.to_string());
  }
  if (auto ok = check_change(change, record.recipients.size()); !ok) return ok;
  record.attempts = change.attempts;
  record.held = change.held;
  for (const RecipientChange& r : change.recipients) r.apply_to(record.recipients[r.index]);
  return success();
}

RecordChange change_between(const MessageRecord& before, const MessageRecord& after) {
  RecordChange c;
  c.id = after.id;
  c.attempts = after.attempts;
  c.held = after.held;
  for (std::size_t i = 0; i < after.recipients.size(); ++i) {
    if (i < before.recipients.size() &&
        mutable_state(before.recipients[i]) == mutable_state(after.recipients[i]))
      continue;
    c.recipients.push_back(RecipientChange::of(i, after.recipients[i]));
  }
  return c;
}

RecordChange change_of(const MessageRecord& record, std::vector<std::size_t> recipients) {
  std::sort(recipients.begin(), recipients.end());
  recipients.erase(std::unique(recipients.begin(), recipients.end()), recipients.end());
  RecordChange c;
  c.id = record.id;
  c.attempts = record.attempts;
  c.held = record.held;
  for (std::size_t i : recipients) {
    if (i < record.recipients.size())
      c.recipients.push_back(RecipientChange::of(i, record.recipients[i]));
  }
  return c;
}

void merge_change(RecordChange& earlier, RecordChange later) {
  earlier.attempts = later.attempts;
  earlier.held = later.held;
  std::vector<RecipientChange> merged;
  merged.reserve(earlier.recipients.size() + later.recipients.size());
  auto a = earlier.recipients.begin();
  auto b = later.recipients.begin();
  while (a != earlier.recipients.end() || b != later.recipients.end()) {
    if (b == later.recipients.end() || (a != earlier.recipients.end() && a->index < b->index)) {
      merged.push_back(std::move(*a++));
    } else {
      if (a != earlier.recipients.end() && a->index == b->index) ++a;  // the later one wins
      merged.push_back(std::move(*b++));
    }
  }
  earlier.recipients = std::move(merged);
}

}  // namespace mailq
