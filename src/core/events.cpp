#include "mailq/events.h"

#include <cstdio>
#include <exception>

namespace mailq {

char action_letter(EventKind k) noexcept {
  switch (k) {
    case EventKind::enqueued:
      return 'E';
    case EventKind::deferred:
      return 'Q';
    case EventKind::delivered:
      return 'D';
    case EventKind::returned:
      return 'R';
    case EventKind::destination_down:
    case EventKind::destination_up:
    case EventKind::notice:
      return ' ';
  }
  return ' ';
}

void FanoutSink::on_event(const Event& event) {
  // One misbehaving sink (a full disk behind a log file, a host callback that throws) must
  // not starve the others of the event: each gets it, then the first exception goes on to
  // the engine's error reporter, so that a log that cannot be written is never silent.
  std::exception_ptr first;
  for (EventSink* sink : sinks_) {
    try {
      sink->on_event(event);
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
}

void ErrorReporter::report(const std::string& message, TimePoint now) {
  ++problems_;
  if (reported_ && now - last_report_ < kErrorReportInterval) {
    ++suppressed_;
    return;
  }
  std::string msg = message;
  if (suppressed_) msg += " (" + std::to_string(suppressed_) + " more since the last report)";
  suppressed_ = 0;
  reported_ = true;
  last_report_ = now;
  try {
    if (handler_)
      handler_(msg);
    else
      std::fprintf(stderr, "%s\n", msg.c_str());
  } catch (...) {  // NOLINT(bugprone-empty-catch): reporting must not unwind the engine
  }
}

void ErrorReporter::deliver(EventSink* sink, const Event& event, TimePoint now) {
  if (!sink) return;
  std::string what;
  try {
    sink->on_event(event);
    return;
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
    what = "unknown exception";
  }
  report("mailq: the event sink threw: " + what, now);
}

}  // namespace mailq
