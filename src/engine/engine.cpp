// The Engine: the parts wired once, submissions from any thread, the host's events, a clean
// stop.
#include "mailq/engine.h"

#include <deque>
#include <exception>
#include <mutex>
#include <utility>

#include "mailq/spool/durable_storage.h"
#include "mailq/uv/loop_clock.h"

namespace mailq {

struct Engine::Impl final : EventSink {
  struct Submission {
    Envelope envelope;
    std::string body;
    SubmitDone done;
    EnqueueOptions options;
  };

  uv_loop_t* loop;
  EngineConfig config;
  ErrorReporter reporter;
  std::unique_ptr<Clock> clock;
  std::unique_ptr<Storage> storage;
  std::unique_ptr<Resolver> resolver;
  std::unique_ptr<Transport> transport;
  std::unique_ptr<Queue> queue;
  std::unique_ptr<Deliverer> deliverer;
  bool own_mta_sts = false;  // config.delivery.mta_sts was made by the engine
  RecoveryReport recovery;

  // Submissions from any thread reach the loop through `inbox` and `async`.
  std::mutex mu;
  std::deque<Submission> inbox;  // guarded by mu
  bool accepting = true;         // guarded by mu
  uv_async_t* async = nullptr;
  std::size_t waiting = 0;  // taken from the inbox, not yet durable (loop thread)

  bool idle_reported = false;
  TimerId idle_check = kNoTimer;
  bool stopping = false;
  bool stopped = false;
  std::function<void()> stop_done;

  Impl(uv_loop_t* l, EngineConfig c)
      : loop(l), config(std::move(c)), reporter(config.queue.error_handler) {}

  ~Impl() override {
    if (!stopped) teardown();
    // Submissions that never reached the queue: their senders hear of it.
    std::deque<Submission> left;
    {
      std::lock_guard<std::mutex> lock(mu);
      accepting = false;
      left.swap(inbox);
    }
    for (auto& s : left)
      guard([&] { s.done(Error(errc::shutting_down, "the mail engine was destroyed")); });
  }

  // Host code must not unwind the engine: what it throws is reported.
  template <class F>
  void guard(F&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      reporter.report(std::string("mailq: a host callback threw: ") + e.what(), now());
    } catch (...) {
      reporter.report("mailq: a host callback threw an unknown exception", now());
    }
  }
  TimePoint now() const { return clock ? clock->now() : std::chrono::system_clock::now(); }

  Result<void> build_parts() {
    EngineParts& p = config.parts;
    // One reporter for every part the engine builds: what they cannot hand back goes to
    // QueueConfig::error_handler, rate limited together.
    if (!config.transport.error_reporter) config.transport.error_reporter = &reporter;
    if (!config.resolver.error_reporter) config.resolver.error_reporter = &reporter;
    clock = p.clock ? std::move(p.clock) : std::make_unique<uv::LoopClock>(loop, &reporter);
    if (p.storage) {
      storage = std::move(p.storage);
    } else {
      if (config.spool.directory.empty())
        return Error(errc::invalid_parameter, "spool: no directory (EngineConfig::spool)");
      auto spool =
          spool::open_spool(config.spool.directory, *clock,
                            spool::choose_layout(config.spool.directory, config.spool.layout));
      if (!spool) return spool.error();
      storage = std::move(spool.value());
    }
    if (p.resolver) {
      resolver = std::move(p.resolver);
    } else {
      auto r = ares::AresResolver::open(loop, *clock, config.resolver);
      if (!r) return Error(r.error().code, "resolver: " + r.error().message);
      resolver = std::move(r.value());
    }
    transport = p.transport ? std::move(p.transport)
                            : std::make_unique<uv::UvTransport>(loop, *clock, config.transport);
    return success();
  }

  Result<void> start() {
    if (auto r = build_parts(); !r) return r;
    QueueConfig qc = config.queue;
    if (!qc.error_reporter) qc.error_reporter = &reporter;  // one rate limit with the adapters
    qc.on_message_done = [this](const MessageRecord& m) {
      if (config.on_message_done) guard([&] { config.on_message_done(m); });
    };
    queue = std::make_unique<Queue>(*storage, config.routes, *clock, this, qc);
    if (auto recovered = queue->recover(&recovery); !recovered)
      return Error(recovered.error().code, "recover the storage: " + recovered.error().message);
    if (config.mta_sts && !config.delivery.mta_sts) {
      auto sts = uv::MtaStsSource::open(*resolver, *transport, *clock, *config.mta_sts);
      if (!sts) return Error(sts.error().code, "mta_sts: " + sts.error().message);
      config.delivery.mta_sts = std::move(sts.value());
      own_mta_sts = true;
    }
    deliverer = std::make_unique<Deliverer>(*queue, *resolver, *transport, config.delivery);
    async = new uv_async_t{};
    async->data = this;
    if (int rc = uv_async_init(loop, async,
                               [](uv_async_t* a) {
                                 if (auto* self = static_cast<Impl*>(a->data)) self->on_async();
                               });
        rc != 0) {
      delete async;
      async = nullptr;
      return Error(errc::bad_state, std::string("uv_async_init: ") + uv_strerror(rc));
    }
    deliverer->start();
    schedule_idle_check();
    return success();
  }

  // --- events -------------------------------------------------------------------------------

  void on_event(const Event& e) override {
    switch (e.kind) {
      case EventKind::destination_down:
        if (config.on_destination_down) {
          auto st = deliverer ? deliverer->domains().state(e.destination) : std::nullopt;
          const TimePoint until = st ? st->down_until : TimePoint{};
          const std::string why = st ? st->last_failure : std::string();
          guard([&] { config.on_destination_down(e.destination, until, why); });
        }
        break;
      case EventKind::destination_up:
        if (config.on_destination_up) guard([&] { config.on_destination_up(e.destination); });
        break;
      case EventKind::notice:
        break;
      default:
        activity();
        break;
    }
    // The host's sink last; what it throws reaches the queue's error reporter.
    if (config.sink) config.sink->on_event(e);
  }

  void activity() {
    idle_reported = false;
    schedule_idle_check();
  }

  void schedule_idle_check() {
    if (idle_check != kNoTimer || !config.on_idle || stopping || !clock) return;
    idle_check = clock->schedule(Duration{0}, [this] {
      idle_check = kNoTimer;
      check_idle();
    });
  }

  void check_idle() {
    if (stopping || idle_reported || !deliverer) return;
    if (deliverer->jobs() != 0 || waiting != 0) return;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!inbox.empty()) return;
    }
    EngineIdle idle;
    idle.next_due = deliverer->next_due();
    if (idle.next_due <= clock->now()) return;  // due now: the next cycle takes it
    idle.queued = queue->size();
    idle_reported = true;
    guard([&] { config.on_idle(idle); });
  }

  // --- submissions --------------------------------------------------------------------------

  void submit(Submission s) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (accepting) {
        inbox.push_back(std::move(s));
        uv_async_send(async);
        return;
      }
    }
    s.done(Error(errc::shutting_down, "the mail engine is stopping"));
  }

  void on_async() {
    take_submissions();
    if (stopping && !stopped && deliverer_stopped) finish_stop();
  }

  void take_submissions() {
    std::deque<Submission> batch;
    {
      std::lock_guard<std::mutex> lock(mu);
      batch.swap(inbox);
    }
    for (auto& s : batch) enqueue(std::move(s));
  }

  void enqueue(Submission s) {
    const std::size_t limit = config.max_queued_messages;
    if (limit != 0 && queue->size() + waiting >= limit) {
      const std::string why = "the queue holds " + std::to_string(queue->size() + waiting) +
                              " messages, its limit (max_queued_messages)";
      guard([&] { s.done(Error(errc::queue_full, why)); });
      return;
    }
    waiting++;
    auto done = std::make_shared<SubmitDone>(std::move(s.done));
    queue->enqueue(
        s.envelope, std::move(s.body),
        [this, done](Result<MessageId> r) {
          waiting--;
          const bool failed = !r;
          guard([&] { (*done)(std::move(r)); });
          if (failed) schedule_idle_check();
        },
        s.options);
  }

  // --- stop ---------------------------------------------------------------------------------

  bool deliverer_stopped = false;

  void stop(std::function<void()> done) {
    if (stopping) {
      // A second stop: both are told when the engine is down.
      auto first = std::move(stop_done);
      stop_done = [first, done] {
        if (first) first();
        if (done) done();
      };
      return;
    }
    stopping = true;
    stop_done = std::move(done);
    {
      std::lock_guard<std::mutex> lock(mu);
      accepting = false;
    }
    take_submissions();  // what was already taken is stored
    if (idle_check != kNoTimer) clock->cancel(idle_check);
    idle_check = kNoTimer;
    deliverer->stop([this] {
      // Not from inside the Deliverer's own call: the next loop turn.
      deliverer_stopped = true;
      uv_async_send(async);
    });
  }

  void finish_stop() {
    teardown();  // the spool completes pending inserts (their callbacks run) and syncs
    stopped = true;
  }

  // Destroys the parts in order: the Deliverer and the Queue first (they use the others),
  // the clock last, then the engine's own handle, whose close callback says all is closed.
  void teardown() {
    {
      std::lock_guard<std::mutex> lock(mu);
      accepting = false;
    }
    if (idle_check != kNoTimer && clock) clock->cancel(idle_check);
    idle_check = kNoTimer;
    deliverer.reset();
    // The policy source the engine made uses the transport, resolver and clock: it goes first.
    if (own_mta_sts) config.delivery.mta_sts.reset();
    // Inserts still waiting for their sync complete now, so every submitter hears back.
    if (auto* durable = dynamic_cast<spool::DurableStorage*>(storage.get())) durable->flush();
    queue.reset();
    storage.reset();
    resolver.reset();
    transport.reset();
    clock.reset();
    if (async) {
      async->data = stop_done ? new std::function<void()>(std::move(stop_done)) : nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(async), [](uv_handle_t* h) {
        auto* done = static_cast<std::function<void()>*>(h->data);
        delete reinterpret_cast<uv_async_t*>(h);
        if (done) {
          (*done)();
          delete done;
        }
      });
      async = nullptr;
    }
  }
};

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Engine::~Engine() = default;

Result<std::unique_ptr<Engine>> Engine::open(uv_loop_t* loop, EngineConfig config) {
  if (!loop) return Error(errc::invalid_parameter, "Engine::open: no uv loop");
  auto impl = std::make_unique<Impl>(loop, std::move(config));
  if (auto r = impl->start(); !r) return r.error();
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

void Engine::submit(Envelope envelope, std::string body, SubmitDone done, EnqueueOptions options) {
  impl_->submit({std::move(envelope), std::move(body), std::move(done), std::move(options)});
}

void Engine::stop(std::function<void()> done) {
  impl_->stop(std::move(done));
}

bool Engine::stopping() const noexcept {
  return impl_->stopping;
}

namespace {
Error stopped_error(const std::string& what) {
  return Error(errc::shutting_down, what + ": the mail engine is stopped");
}
}  // namespace

std::size_t Engine::flush() {
  if (!impl_->queue || impl_->stopping) return 0;
  const std::size_t n = impl_->queue->make_all_due();
  impl_->deliverer->run_cycle();
  return n;
}

std::vector<std::string> Engine::reset_down() {
  std::vector<std::string> down;
  if (!impl_->deliverer || impl_->stopping) return down;
  const TimePoint now = impl_->clock->now();
  for (const auto& s : impl_->deliverer->domains().snapshot())
    if (s.down_until > now) down.push_back(s.destination);
  impl_->deliverer->reset_domains();
  return down;
}

Result<void> Engine::hold(MessageId id) {
  if (!impl_->queue) return stopped_error("hold");
  return impl_->queue->hold(id);
}
Result<void> Engine::release(MessageId id) {
  if (!impl_->queue) return stopped_error("release");
  return impl_->queue->release(id);
}
Result<void> Engine::remove(MessageId id) {
  if (!impl_->queue) return stopped_error("remove");
  return impl_->queue->remove(id);
}
Result<void> Engine::bounce(MessageId id, std::string_view reason) {
  if (!impl_->queue) return stopped_error("bounce");
  return impl_->queue->bounce(id, reason);
}
std::size_t Engine::hold_destination(std::string_view destination) {
  return impl_->queue ? impl_->queue->hold_destination(destination) : 0;
}
std::size_t Engine::release_destination(std::string_view destination) {
  return impl_->queue ? impl_->queue->release_destination(destination) : 0;
}

QueueStats Engine::stats() const {
  return impl_->queue ? impl_->queue->stats() : QueueStats{};
}
DelivererStats Engine::delivery_stats() const {
  return impl_->deliverer ? impl_->deliverer->stats() : DelivererStats{};
}
const DomainStateTable& Engine::domains() const noexcept {
  return impl_->deliverer->domains();
}
std::optional<MessageRecord> Engine::find(MessageId id) const {
  return impl_->queue ? impl_->queue->find(id) : std::nullopt;
}
std::vector<MessageId> Engine::list(const QueueFilter& filter) const {
  return impl_->queue ? impl_->queue->list(filter) : std::vector<MessageId>{};
}
const RecoveryReport& Engine::recovery() const noexcept {
  return impl_->recovery;
}
Queue& Engine::queue() noexcept {
  return *impl_->queue;
}
Deliverer& Engine::deliverer() noexcept {
  return *impl_->deliverer;
}
Storage& Engine::storage() noexcept {
  return *impl_->storage;
}
Clock& Engine::clock() noexcept {
  return *impl_->clock;
}
uv_loop_t* Engine::loop() const noexcept {
  return impl_->loop;
}

}  // namespace mailq
