// mailq — delivery status notifications (RFC 3464, RFC 3461).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "mailq/clock.h"
#include "mailq/message.h"
#include "mailq/reply.h"

namespace mailq {

enum class DsnAction : std::uint8_t { failed, delayed, delivered, relayed, expanded };
const char* to_string(DsnAction a) noexcept;

struct DsnRecipient {
  std::string final_recipient;     ///< "user@example.org" (rendered "rfc822;user@example.org")
  std::string original_recipient;  ///< ORCPT as given ("rfc822;..."), "" = none
  DsnAction action = DsnAction::failed;
  Reply reply;             ///< Status from the enhanced code (or derived from the code)
  std::string remote_mta;  ///< "mx.example.org", "" = none reached
  TimePoint last_attempt{};
  TimePoint will_retry_until{};  ///< for `delayed`
};

struct DsnInput {
  std::string reporting_mta;  ///< this host's name
  std::string from_address;   ///< "MAILER-DAEMON@reporting.mta"
  std::string to_address;     ///< the original envelope sender
  std::string envid;
  DsnRet ret = DsnRet::unspecified;  ///< unspecified = headers only
  TimePoint arrival{};
  TimePoint now{};
  std::string original_message_id;  ///< used for In-Reply-To / References
  std::vector<DsnRecipient> recipients;
  std::string_view original;  ///< the original message text (headers and body)
  std::string boundary_seed;  ///< makes the MIME boundary unique ("<id>/<time>")
};

/// Builds the complete notification message (header and body, CRLF line endings):
/// `multipart/report; report-type=delivery-status` with a human-readable part, a
/// `message/delivery-status` part (Reporting-MTA, Original-Envelope-Id, Arrival-Date; per
/// recipient Original-Recipient, Final-Recipient, Action, Status, Remote-MTA,
/// Diagnostic-Code, Last-Attempt-Date, Will-Retry-Until), and the original message
/// (`message/rfc822`, RET=FULL) or its header (`text/rfc822-headers`, otherwise);
/// `message/global` and `message/global-headers` (RFC 6533) when the header section holds
/// UTF-8. The Diagnostic-Code is of type `smtp` for a server's reply and `X-mailq` for
/// mailq's own ("[internal] ..." replies: a connection that failed, a message that expired).
std::string build_dsn(const DsnInput& input);

/// The Status field for a reply: its enhanced code, else "4.0.0" / "5.0.0" from the class.
std::string dsn_status(const Reply& reply);

/// RFC 5322 date-time ("Thu, 03 Jan 2023 15:48:55 +0000").
std::string rfc5322_date(TimePoint t);

}  // namespace mailq
