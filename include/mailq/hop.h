// mailq — what a delivery attempt met on its way: the server it talked to, and the facts
// behind an outcome, kept as values until the log and DSNs render them as text.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "mailq/reply.h"
#include "mailq/transport.h"

namespace mailq {

/// The server of one SMTP session: the log renders it as seed 002's
/// "dns;host.some.org (TCP|206.184.139.12|2788|192.1.1.1|25)", a DSN's Remote-MTA names its
/// host.
struct Hop {
  std::string host;            ///< the MX or smart-host name (an address literal as given)
  Endpoint local;              ///< our end of the connection
  Endpoint remote;             ///< the server's end
  std::optional<TlsInfo> tls;  ///< what STARTTLS negotiated, when the session was encrypted
  std::string intermediate;    ///< the text of the 354 reply to DATA, when the data went
};

/// One fact behind an outcome, beside its reply.
struct Note {
  enum class Kind : std::uint8_t {
    text,         ///< words as they are ("TCP active open: Failed connect() Error: ...")
    dns,          ///< about a DNS answer: rendered "dns; <text>"
    session,      ///< a session that failed before it was usable: the hop and its reply
    transaction,  ///< a transaction: the hop, the 354 text, the TLS facts and the reply
  };
  Kind kind = Kind::text;
  std::string text;  ///< text, dns
  Hop hop;           ///< session, transaction
  Reply reply;       ///< session, transaction

  static Note words(std::string t) { return Note{Kind::text, std::move(t), {}, {}}; }
  static Note about_dns(std::string t) { return Note{Kind::dns, std::move(t), {}, {}}; }
  static Note of_session(Hop h, Reply r) {
    return Note{Kind::session, {}, std::move(h), std::move(r)};
  }
  static Note of_transaction(Hop h, Reply r) {
    return Note{Kind::transaction, {}, std::move(h), std::move(r)};
  }
};

}  // namespace mailq
