#include "mailq/reply.h"

#include <string>

namespace mailq {

std::string Reply::to_string() const {
  std::string out;
  if (code != 0) out = std::to_string(code);
  if (!enhanced.empty()) {
    if (!out.empty()) out += ' ';
    out += enhanced;
  }
  if (!text.empty()) {
    if (!out.empty()) out += ' ';
    // A multi-line reply keeps its lines joined with "\n"; a one-line rendering must not
    // carry a line break into a log record or a queue listing.
    for (char c : text) {
      if (c == '\n') {
        out += "; ";
      } else if (c != '\r') {
        out += c;
      }
    }
  }
  return out;
}

namespace replies {

Reply domain_marked_down() {
  return {451, "4.4.1",
          "[internal] connection was not attempted: domain is marked down (too many connection "
          "failures)"};
}

Reply domain_does_not_resolve() {
  return {421, "4.4.4", "[internal] domain does not resolve"};
}

Reply domain_does_not_exist() {
  return {550, "5.1.2", "[internal] domain does not exist"};
}

Reply null_mx() {
  // RFC 7505 §4.2: 556 with enhanced status 5.1.10 for a domain that accepts no mail.
  return {556, "5.1.10", "[internal] recipient domain has a null MX (it does not accept mail)"};
}

Reply mx_loops_to_self() {
  return {554, "5.4.6", "[internal] MX records point to this host (mail loop)"};
}

Reply no_mx_host_address() {
  return {550, "5.4.4", "[internal] no MX host has a valid address"};
}

Reply connection_failed(std::string_view detail) {
  return {421, "4.4.1", "[internal] " + std::string(detail)};
}

Reply connection_lost(std::string_view detail) {
  return {421, "4.4.2", "[internal] " + std::string(detail)};
}

Reply expired(std::string_view last_reply) {
  // Permanent: the message is returned to its sender. 5.4.7 is RFC 3463's "delivery time
  // expired"; the last transient reply says why it never got through.
  std::string text = "[internal] message expired in the queue";
  if (!last_reply.empty()) {
    text += "; last error: ";
    text += last_reply;
  }
  return {550, "5.4.7", std::move(text)};
}

}  // namespace replies
}  // namespace mailq
