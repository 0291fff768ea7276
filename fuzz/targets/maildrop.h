// Fuzz target: the maildrop file decoder (examples/relay/maildrop.h), which reads what any
// local user allowed to submit left in the spool's maildrop.
//
// Input: the file's bytes.
// Checks: an entry that decodes has a valid envelope (Envelope::validate), encodes to bytes
// that decode to the same entry and encode the same again; no strict prefix of those bytes
// decodes; an error always says why, on one line.
#pragma once

#include <string>
#include <string_view>

#include "examples/relay/maildrop.h"
#include "fuzz_support.h"

namespace mailq::fuzz {

inline void run_maildrop(std::string_view data) {
  using namespace mailq::relay;
  const MessageId id{0x0123456789abcull};
  auto e = decode_maildrop(data, id);
  if (!e) {
    MAILQ_FUZZ_CHECK(!e.error().message.empty(), "an error must say why");
    MAILQ_FUZZ_CHECK(e.error().message.find('\n') == std::string::npos, "multi-line error");
    return;
  }
  MAILQ_FUZZ_CHECK(!e->envelope.validate(), "a decoded envelope does not validate");
  const std::string bytes = encode_maildrop(*e);
  auto back = decode_maildrop(bytes, id);
  MAILQ_FUZZ_CHECK(back.ok(), "an encoded entry does not decode: " +
                                  (back ? std::string() : back.error().message));
  MAILQ_FUZZ_CHECK(encode_maildrop(*back) == bytes, "an entry does not round-trip");
  MAILQ_FUZZ_CHECK(back->body == e->body && back->submitted == e->submitted,
                   "body or time changed");
  for (std::size_t cut : {bytes.size() - 1, bytes.find('\n'), bytes.find("\n\n")}) {
    if (cut >= bytes.size()) continue;
    MAILQ_FUZZ_CHECK(!decode_maildrop(std::string_view(bytes).substr(0, cut), id).ok(),
                     "a prefix of an entry decoded");
  }
}

}  // namespace mailq::fuzz
