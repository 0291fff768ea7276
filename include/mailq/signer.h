// mailq — signing a message as it goes out (DKIM and the like).
//
// The delivery side calls a `MessageSigner` once per SMTP transaction with the message exactly
// as the server will receive it: CRLF line ends, not dot-stuffed, after any 8-bit to 7-bit
// conversion the server needed (RFC 6152). What it returns is put in front of the message. So
// a signature always covers the bytes on the wire, whatever the route does to them, and a
// message queued before a key was rotated goes out signed with the new key.
//
// `mailq::dkim::Signer` (mailq/dkim.h) is the DKIM implementation; a host may bring its own
// (ARC sealing, an HSM-held key). Set one on `DelivererConfig::signer` (all routes) or
// `Route::signer` (that route only).
#pragma once

#include <string>
#include <string_view>

#include "mailq/error.h"
#include "mailq/time.h"

namespace mailq {

class MessageSigner {
 public:
  virtual ~MessageSigner() = default;

  /// The header fields to put in front of `message` (each ending in CRLF, folded to lines of
  /// at most 78 octets), or "" when this message is not to be signed (no key for its author,
  /// no From field). `message` is the whole message as sent (header section, empty line,
  /// body; CRLF line ends; not dot-stuffed); `now` is the signing time.
  ///
  /// An error means the signer could not do what it must (a key that fails to sign): the
  /// transaction is not attempted and the recipients are deferred with 451 4.7.0 and the
  /// error's message, so that mail is never sent unsigned by accident.
  ///
  /// Called on the delivery loop's thread; may be called from several loops at once when one
  /// signer is shared, so implementations must be thread-safe.
  virtual Result<std::string> sign(std::string_view message, TimePoint now) const = 0;
};

}  // namespace mailq
