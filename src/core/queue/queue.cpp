// The public Queue: the host's view of the queue core.
#include "mailq/queue.h"

#include <algorithm>
#include <cmath>

#include "core/queue/core.h"

namespace mailq {

Duration RetryPolicy::delay(std::uint32_t failures, double unit) const {
  if (failures == 0) failures = 1;
  Duration base;
  if (!schedule.empty()) {
    base = schedule[std::min<std::size_t>(failures, schedule.size()) - 1];
  } else {
    double ms = static_cast<double>(floor.count()) * std::pow(factor, failures - 1);
    double cap = static_cast<double>(ceiling.count());
    base = Duration{static_cast<Duration::rep>(std::min(ms, cap))};
    if (base < floor) base = floor;
  }
  if (jitter > 0) {
    double spread = (unit * 2.0 - 1.0) * jitter;  // in [-jitter, +jitter)
    base = Duration{static_cast<Duration::rep>(static_cast<double>(base.count()) * (1.0 + spread))};
  }
  return std::max(base, Duration{0});
}

Queue::Queue(Storage& storage, const RouteTable& routes, Clock& clock, EventSink* sink)
    : Queue(storage, routes, clock, sink, QueueConfig()) {}

Queue::Queue(Storage& storage, const RouteTable& routes, Clock& clock, EventSink* sink,
             const QueueConfig& config)
    : core_(std::make_unique<detail::QueueCore>(storage, routes, clock, sink, config)) {}

Queue::~Queue() = default;

void Queue::enqueue(const Envelope& envelope, std::string body, EnqueueDone done,
                    const EnqueueOptions& options) {
  core_->enqueue(envelope, std::move(body), std::move(done), options);
}

MessageId Queue::reserve_id() {
  return core_->reserve_id();
}

Result<void> Queue::recover(RecoveryReport* report) {
  return core_->recover(report);
}
Result<void> Queue::hold(MessageId id) {
  return core_->hold(id);
}
Result<void> Queue::release(MessageId id) {
  return core_->release(id);
}
std::size_t Queue::hold_destination(std::string_view destination) {
  return core_->hold_destination(destination);
}
std::size_t Queue::release_destination(std::string_view destination) {
  return core_->release_destination(destination);
}
Result<void> Queue::remove(MessageId id) {
  return core_->remove(id);
}
Result<void> Queue::bounce(MessageId id, std::string_view reason) {
  return core_->bounce(id, reason);
}
std::size_t Queue::make_all_due() {
  return core_->make_all_due();
}
std::optional<MessageRecord> Queue::find(MessageId id) const {
  return core_->find(id);
}
bool Queue::contains(MessageId id) const {
  return core_->contains(id);
}
std::vector<MessageId> Queue::list(const QueueFilter& filter) const {
  return core_->list(filter);
}
Result<std::vector<AttemptRecord>> Queue::transient_attempts(MessageId id) const {
  return core_->storage().read_attempts(id);
}
QueueStats Queue::stats() const {
  return core_->stats();
}
std::vector<std::pair<std::string, std::size_t>> Queue::depth_by_destination() const {
  return core_->depth_by_destination();
}
Result<std::string> Queue::read_body(MessageId id) const {
  return core_->storage().read_body(id);
}
std::size_t Queue::size() const noexcept {
  return core_->size();
}
const QueueConfig& Queue::config() const noexcept {
  return core_->config();
}
const RouteTable& Queue::routes() const noexcept {
  return core_->routes();
}
std::string Queue::destination_of(const RecipientRecord& r) const {
  return core_->destination_of(r);
}
std::string Queue::queue_file(const MessageRecord& m) const {
  return core_->storage().locator(m, m.attempts);
}

namespace detail {
DeliveryPort& delivery_port(Queue& queue) {
  return *queue.core_;
}
}  // namespace detail

}  // namespace mailq
