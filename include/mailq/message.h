// mailq — the queued message as the queue and the storage see it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "mailq/address.h"
#include "mailq/clock.h"
#include "mailq/reply.h"

namespace mailq {

/// A queue id: 64 bits, unique within a spool (time-ordered), rendered as 13 characters of
/// Crockford base 32 ("01J9ZK3D2ZP7F").
struct MessageId {
  std::uint64_t value = 0;

  std::string to_string() const;
  static bool parse(std::string_view s, MessageId* out);
  explicit operator bool() const noexcept { return value != 0; }
  friend bool operator==(MessageId a, MessageId b) { return a.value == b.value; }
  friend bool operator!=(MessageId a, MessageId b) { return a.value != b.value; }
  friend bool operator<(MessageId a, MessageId b) { return a.value < b.value; }
};

/// Where one recipient stands.
enum class RecipientState : std::uint8_t {
  queued,     ///< waiting for its first attempt
  deferred,   ///< transient failure; `next_attempt` says when it is due again
  delivered,  ///< accepted by the next hop (2xx to the final dot)
  bounced,    ///< permanent failure; a DSN was produced when one was due
  expired,    ///< outlived the maximal queue lifetime; a DSN was produced when one was due
};
const char* to_string(RecipientState s) noexcept;
inline bool is_final(RecipientState s) noexcept {
  return s == RecipientState::delivered || s == RecipientState::bounced ||
         s == RecipientState::expired;
}

struct RecipientRecord {
  std::string address;  ///< the forward path (validated at enqueue)
  std::string orcpt;    ///< DSN ORCPT, "" = none
  std::uint8_t notify = kNotifyDefault;
  std::string route;  ///< name of the route chosen at enqueue (the destination channel)
  RecipientState state = RecipientState::queued;
  std::uint32_t attempts = 0;  ///< real delivery attempts (self-imposed deferrals not counted)
  TimePoint next_attempt{};    ///< when deferred: not before this time
  /// The reply behind the current state (last transient reply, the permanent one, or the
  /// delivering 250).
  Reply last_reply;
  std::string remote_mta;       ///< the server that gave `last_reply` ("mx.example.org"), or ""
  bool delay_notified = false;  ///< a "delayed" DSN was sent for this recipient
};

/// One queued message: metadata only, the body lives in the storage.
struct MessageRecord {
  MessageId id;
  std::string reverse_path;    ///< "" = the null reverse path <>
  std::string source_channel;  ///< where it came from: "tcp_internal", "api", ...
  std::string message_id;      ///< the Message-ID header value, "<...>", or ""
  std::string envid;           ///< DSN ENVID
  DsnRet ret = DsnRet::unspecified;
  TimePoint arrival{};
  std::uint64_t size = 0;      ///< body octets
  std::uint32_t attempts = 0;  ///< delivery attempts of the message: drives ZZ / ZY / ZX
  bool held = false;
  std::vector<RecipientRecord> recipients;
};

/// One row of seed 000's "Transient Delivery Attempts" table.
struct AttemptRecord {
  std::string route;       ///< "default-non-local-route"
  TimePoint time{};        ///< failure time
  Reply reply;             ///< details: "451 4.4.1 [internal] connection was not attempted: ..."
  std::string recipient;   ///< "user@example.com"
  std::string diagnostic;  ///< extra detail for the log, e.g. the connect error or DNS detail
};

/// The queue file name of seed 002: "ZZ" + id + ".00" before and during the first attempt,
/// "ZY" during the second, "ZX" during the third, and so on down to "ZA".
std::string queue_file_name(MessageId id, std::uint32_t attempts_before);

}  // namespace mailq
