// mailq — the Engine: the one object a host embeds (CMake target `mailq::engine`).
//
//     auto engine = mailq::Engine::open(loop, std::move(config));  // recovers the spool
//     engine.value()->submit(envelope, body, done);                // from any thread
//     ...
//     engine.value()->stop([] { /* the loop may end */ });
//
// It owns the spool, the resolver, the transport, the clock, the Queue, the Deliverer and the
// table of down destinations, wired once and destroyed in the right order; the host gives it
// a uv loop and a config. Every part can be the host's own instead (EngineParts). The separate
// objects stay usable for hosts that need another shape (docs/embedding.md).
//
// Threads. `submit` may be called from any thread; everything else, and every callback, runs
// on the loop thread (the thread running `uv_run` on the loop given to `open`). A callback may
// call the Engine (submit, operator calls, inspection, stop) but must not destroy it.
//
// Lifetime. `stop(done)` ends the engine cleanly: no more submissions, the ones already taken
// are stored, transactions in flight finish, connections close, the spool is synced and
// released, every uv handle of the engine is closed; then `done` runs, and the loop has
// nothing of the engine's left (uv_run returns when the host has nothing else on it). Destroy
// the Engine after that. Destroying it without `stop` closes everything at once (jobs in
// flight go back to the spool unattempted); run the loop once more before `uv_loop_close`.
#pragma once

#include <uv.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mailq/address.h"
#include "mailq/ares/resolver.h"
#include "mailq/clock.h"
#include "mailq/deliverer.h"
#include "mailq/domain_state.h"
#include "mailq/error.h"
#include "mailq/events.h"
#include "mailq/queue.h"
#include "mailq/resolver.h"
#include "mailq/route.h"
#include "mailq/spool/layout.h"
#include "mailq/storage.h"
#include "mailq/transport.h"
#include "mailq/uv/mta_sts.h"
#include "mailq/uv/transport.h"

namespace mailq {

/// Parts a host brings instead of the engine's own; the engine owns them from `open` on and
/// destroys them after the Queue and the Deliverer. Null: the engine builds its own.
struct EngineParts {
  std::unique_ptr<Clock> clock;          ///< default: a uv::LoopClock on the loop
  std::unique_ptr<Storage> storage;      ///< default: the spool of `EngineConfig::spool`
  std::unique_ptr<Resolver> resolver;    ///< default: c-ares with `EngineConfig::resolver`
  std::unique_ptr<Transport> transport;  ///< default: libuv + mbedTLS (`EngineConfig::transport`)
};

/// Where the engine's own spool lives.
struct SpoolConfig {
  std::string directory;  ///< required unless `parts.storage` is given
  /// files (seed 002's ZZ files) or segments; unset: the layout the directory holds, segments
  /// for a new spool (`spool::choose_layout`).
  std::optional<spool::Layout> layout;
};

/// The engine has nothing to do now: nothing in flight, nothing due, no submission waiting.
struct EngineIdle {
  std::size_t queued = 0;  ///< messages still queued (deferred until a later retry); 0: drained
  TimePoint next_due = TimePoint::max();  ///< when the next of them is due; max() when none
};

/// Everything an Engine needs. Move-only (it may carry the host's parts).
struct EngineConfig {
  RouteTable routes;  ///< copied in; the default sends every domain by MX
  QueueConfig queue;
  DelivererConfig delivery;  ///< includes `domain_state` (when destinations are marked down)
  SpoolConfig spool;
  ares::AresResolverOptions resolver;
  uv::UvTransportOptions transport;
  /// Honour recipient domains' MTA-STS policies (RFC 8461) on MX routes: the engine builds a
  /// `uv::MtaStsSource` on its resolver and transport (unless `delivery.mta_sts` is set).
  /// Unset: no policy is looked up.
  std::optional<uv::MtaStsOptions> mta_sts;
  /// Backpressure: `submit` refuses a message (errc::queue_full) while this many messages are
  /// queued or waiting to be; 0 = no limit.
  std::size_t max_queued_messages = 0;
  EngineParts parts;
  /// The host's sink for every event (log records, metrics); must outlive the Engine.
  EventSink* sink = nullptr;

  // --- what happens, for the host (loop thread) ---
  /// A message left the queue with every recipient final (delivered, bounced, expired),
  /// with each recipient's outcome.
  std::function<void(const MessageRecord& done)> on_message_done;
  /// The engine became idle (see EngineIdle); once per idle spell.
  std::function<void(const EngineIdle& idle)> on_idle;
  /// A destination was marked down until `until` (seed 000), with the failure that did it.
  std::function<void(const std::string& destination, TimePoint until, const std::string& why)>
      on_destination_down;
  /// A destination is no longer down: its down period ended, a connection succeeded, or an
  /// operator reset the marks.
  std::function<void(const std::string& destination)> on_destination_up;
};

class Engine {
 public:
  using SubmitDone = std::function<void(Result<MessageId>)>;

  /// Builds the parts, opens (or takes) the storage, recovers what it holds, and starts
  /// delivering. Errors name the part ("spool /var/spool/mailq is in use by another process",
  /// "resolver: ...", "recover spool ...: ..."); nothing is left running then.
  [[nodiscard]] static Result<std::unique_ptr<Engine>> open(uv_loop_t* loop, EngineConfig config);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  /// Queues a message; thread-safe. `done` runs exactly once on the loop thread, never inside
  /// `submit`: with the id once the message is durable, or with the error (the Queue's
  /// validation errors, `errc::storage_full` when the disk is full, `errc::storage_failure`
  /// for any other storage error, `errc::queue_full` past
  /// `max_queued_messages`). After `stop` was called it runs at once, on the calling thread,
  /// with `errc::shutting_down`.
  void submit(Envelope envelope, std::string body, SubmitDone done, EnqueueOptions options = {});

  /// Ends the engine cleanly (see the top of this header); `done` runs on the loop thread.
  void stop(std::function<void()> done);
  bool stopping() const noexcept;

  // --- operator calls (loop thread) ---
  /// Makes every deferred message due and delivers it now (down destinations still wait for
  /// their mark to end). Returns how many messages were made due.
  std::size_t flush();
  /// Clears every down mark and releases the mail the marks held back. Returns the
  /// destinations that were down.
  std::vector<std::string> reset_down();
  [[nodiscard]] Result<void> hold(MessageId id);
  [[nodiscard]] Result<void> release(MessageId id);
  /// Deletes a message without notification.
  [[nodiscard]] Result<void> remove(MessageId id);
  /// Bounces every pending recipient (550 5.0.0 [internal] <reason>) with a DSN.
  [[nodiscard]] Result<void> bounce(MessageId id,
                                    std::string_view reason = "deleted by the operator");
  std::size_t hold_destination(std::string_view destination);
  std::size_t release_destination(std::string_view destination);

  // --- inspection (loop thread) ---
  QueueStats stats() const;
  DelivererStats delivery_stats() const;
  const DomainStateTable& domains() const noexcept;  ///< valid until `stop` has finished
  std::optional<MessageRecord> find(MessageId id) const;
  std::vector<MessageId> list(const QueueFilter& filter = {}) const;
  /// What `open` recovered from the storage.
  const RecoveryReport& recovery() const noexcept;

  /// The parts, for what the calls above do not cover; valid until `stop` has finished
  /// (operator calls return `errc::shutting_down` after that, inspection empty values).
  Queue& queue() noexcept;
  Deliverer& deliverer() noexcept;
  Storage& storage() noexcept;
  Clock& clock() noexcept;
  uv_loop_t* loop() const noexcept;

 private:
  struct Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mailq
