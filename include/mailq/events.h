// mailq — structured events and the host's sink.
//
// Every step of a message's life (enqueued, deferred, delivered, returned) and every engine
// notice (destination marked down, recovery, storage trouble) is one `Event` handed to the
// host's `EventSink`. `MessagingServerLog` (log.h) renders message events as the log lines of
// seed 002.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mailq/clock.h"
#include "mailq/hop.h"
#include "mailq/message.h"
#include "mailq/reply.h"

namespace mailq {

enum class EventKind : std::uint8_t {
  enqueued,          ///< 'E': a message (one event per recipient) entered the queue
  deferred,          ///< 'Q': a recipient got a transient failure (real or self-imposed)
  delivered,         ///< 'D': a recipient was accepted by the next hop
  returned,          ///< 'R': a recipient bounced (permanent failure or expiry)
  destination_down,  ///< a destination was marked down
  destination_up,    ///< a down mark ended or was reset
  notice,            ///< anything else worth a log line (recovery, storage errors)
};

/// The action letter of seed 002 ('E', 'Q', 'D', 'R'), or ' ' for engine notices.
char action_letter(EventKind k) noexcept;

struct Event {
  EventKind kind = EventKind::notice;
  TimePoint time{};
  std::string source_channel;      ///< E: where it came from; Q/D/R: the delivering channel
  std::string dest_channel;        ///< E: the channel it was queued to; Q/D/R: ""
  std::uint64_t size = 0;          ///< message size in octets
  std::string sender;              ///< envelope sender, "" for <>
  std::string original_recipient;  ///< "rfc822;user@some.org"
  std::string recipient;           ///< active recipient "user@some.org"
  std::string queue_file;          ///< "queue/tcp_local/ZZ01J9ZK3D2ZP7F.00"
  std::string message_id;          ///< "<01IRUD7SVA3Q9UN2D4@sesta.com>"
  MessageId id;
  Reply reply;  ///< the reply behind Q / D / R
  /// Diagnostic lines, as seed 002 shows them: "TCP active open: Failed connect()    Error:
  /// no route to host", or "dns;host.some.org (TCP|206.184.139.12|2788|192.1.1.1|25)",
  /// "(All set, fire away)", "smtp; 250 Ok".
  std::vector<std::string> diagnostic;
  /// The server behind the reply, when one answered (Q / D / R of a transaction).
  std::optional<Hop> hop;
  std::string destination;  ///< destination key for destination_* and delivery events
  /// When the message entered the queue (message events; `TimePoint{}` for engine notices):
  /// with `time`, the delivery latency of a 'D' event.
  TimePoint arrival{};
};

/// Receives events on the loop thread. An exception thrown by `on_event` is caught by the
/// engine and reported to the error handler (rate limited); it never unwinds the engine.
class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void on_event(const Event& event) = 0;
};

/// Receives problems the engine cannot report otherwise (a host sink that threw, a state
/// write that failed during delivery). Called on the loop thread, at most once per
/// `kErrorReportInterval` per reporter; the suppressed count is included in the next report.
using ErrorHandler = std::function<void(const std::string& message)>;
inline constexpr std::chrono::seconds kErrorReportInterval{10};

/// The one way the parts of the engine report a problem they cannot hand back as a value:
/// to an `ErrorHandler` (standard error when none), rate limited as said above. An exception
/// thrown by the handler is swallowed: reporting never unwinds the engine. Loop thread only.
///
/// The Queue keeps one (`QueueConfig::error_handler`); the adapters take one by pointer
/// (`uv::LoopClock`, `uv::UvTransportOptions::error_reporter`,
/// `uv::SmtpListenerOptions::error_reporter`, `ares::AresResolverOptions::error_reporter`), so
/// that they can share one rate limit. An adapter given none keeps a reporter of its own, to
/// standard error.
class ErrorReporter {
 public:
  explicit ErrorReporter(ErrorHandler handler = nullptr) : handler_(std::move(handler)) {}

  void report(const std::string& message, TimePoint now);
  /// Hands `event` to `sink` (none: nothing); what the sink throws is reported as
  /// "mailq: the event sink threw: <what>".
  void deliver(EventSink* sink, const Event& event, TimePoint now);
  /// Problems seen so far, suppressed ones included.
  std::uint64_t problems() const noexcept { return problems_; }

 private:
  ErrorHandler handler_;
  std::uint64_t problems_ = 0;
  std::uint64_t suppressed_ = 0;
  TimePoint last_report_{};
  bool reported_ = false;
};

/// Sends each event to several sinks.
class FanoutSink final : public EventSink {
 public:
  void add(EventSink& sink) { sinks_.push_back(&sink); }
  void on_event(const Event& event) override;

 private:
  std::vector<EventSink*> sinks_;
};

/// Keeps events in memory (tests, status displays).
class MemorySink final : public EventSink {
 public:
  void on_event(const Event& event) override { events.push_back(event); }
  std::vector<Event> events;
};

}  // namespace mailq
