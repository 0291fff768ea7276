#include "mailq/events.h"

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
  // not starve the others of the event. The exception is dropped here; reporting it is the
  // job of the engine's rate-limited error handler around the host's own sink.
  for (EventSink* sink : sinks_) {
    try {
      sink->on_event(event);
    } catch (...) {  // NOLINT(bugprone-empty-catch): see above
    }
  }
}

}  // namespace mailq
