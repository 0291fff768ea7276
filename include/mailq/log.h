// mailq — the Messaging Server style log (seed 002).
#pragma once

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "mailq/events.h"
#include "mailq/hop.h"

namespace mailq {

struct LogFormat {
  bool log_filename = true;    ///< LOG_FILENAME=1: the queue file line
  bool log_message_id = true;  ///< LOG_MESSAGE_ID=1: the Message-ID line
  bool utc = false;            ///< timestamps in UTC instead of local time
};

/// Renders one event as a record of seed 002, for example:
///
///     15-Jan-1998 10:31:10.37 tcp_local                  Q 3
///      adam@hosta.sesta.com rfc822;user@some.org user@some.org
///      queue/tcp_local/ZZ01IS3D2ZP7FQ9U.00
///      <01IRUD7SVA3Q9UN2D4@sesta.com>
///      TCP active open: Failed connect()    Error: no route to host
///
/// Time with hundredths; source and destination channel; action letter; size in blocks of
/// 1024 octets (rounded up, at least 1); then continuation lines starting with a space:
/// sender, "rfc822;" original recipient and active recipient; the queue file; the message id;
/// each diagnostic line. Engine notices render as one line. The result ends with "\n".
std::string format_log_record(const Event& event, const LogFormat& format = {});

/// Seed 002's line for the server of a session: "dns;host.some.org
/// (TCP|206.184.139.12|2788|192.1.1.1|25)" (our address and port, then the server's).
std::string hop_line(const Hop& hop);

/// The diagnostic lines of an outcome's notes, as the log shows them under a record and the
/// transient-attempt table joins them: a text note as it is; a DNS note "dns; <text>"; a
/// session that failed before it was usable, its hop line and the reply on one line; a
/// transaction, its hop line, "(<354 text>)" when the reply was positive, "tls; <version>
/// <cipher> verified|unverified" when encrypted, and "smtp; <reply>".
std::vector<std::string> diagnostic_lines(const std::vector<Note>& notes);

/// An EventSink that writes records to a FILE* or a callback.
class MessagingServerLog final : public EventSink {
 public:
  explicit MessagingServerLog(std::FILE* out, LogFormat format = {}) : out_(out), format_(format) {}
  explicit MessagingServerLog(std::function<void(const std::string&)> write, LogFormat format = {})
      : write_(std::move(write)), format_(format) {}
  void on_event(const Event& event) override;

 private:
  std::FILE* out_ = nullptr;
  std::function<void(const std::string&)> write_;
  LogFormat format_;
};

}  // namespace mailq
