// Fuzz target: the relay's control protocol parsers (examples/relay/control.h), which read
// whatever a local client writes to the control socket.
//
// Input: one byte choosing the body limit (bit 0: 64 octets, else 1 MiB) and whether the rest
// is a request or a response (bit 1), then the bytes.
// Checks, requests: a complete request consumed no more than was given, has a verb and
// arguments that are non-empty and free of spaces and control characters, a `submit` body of
// exactly its declared size within the limit, and encodes back to exactly the bytes it was
// parsed from; a strict prefix of those bytes never parses as a complete request.
// Responses: a parsed response encodes back to one that parses the same, and an error text
// always encodes as a single line.
#pragma once

#include <string>
#include <string_view>

#include "examples/relay/control.h"
#include "fuzz_support.h"

namespace mailq::fuzz {

inline void run_relay_control(std::string_view data) {
  using namespace mailq::relay;
  Input in(data);
  const std::uint8_t sel = in.byte();
  const std::uint64_t max_body = (sel & 1) ? 64 : 1u << 20;
  const std::string_view bytes = in.rest();

  if ((sel & 2) == 0) {
    ControlRequest req;
    auto r = parse_control_request(bytes, max_body, &req);
    if (!r) {
      MAILQ_FUZZ_CHECK(!r.error().message.empty(), "an error must say why");
      MAILQ_FUZZ_CHECK(r.error().message.find('\n') == std::string::npos, "multi-line error");
      return;
    }
    const std::size_t n = *r;
    if (n == 0) return;  // incomplete
    MAILQ_FUZZ_CHECK(n <= bytes.size(), "consumed more than given");
    MAILQ_FUZZ_CHECK(!req.argv.empty() && !req.argv[0].empty(), "no verb");
    for (const std::string& a : req.argv) {
      MAILQ_FUZZ_CHECK(!a.empty() && a.find(' ') == std::string::npos && !has_control(a),
                       "bad argument: " + a);
    }
    if (req.argv[0] == "submit") {
      MAILQ_FUZZ_CHECK(req.body.size() <= max_body, "a body over the limit");
      MAILQ_FUZZ_CHECK(std::to_string(req.body.size()) == req.argv[1], "body size differs");
    } else {
      MAILQ_FUZZ_CHECK(req.body.empty(), "a body on a verb without one");
    }
    auto encoded = encode_control_request(req);
    MAILQ_FUZZ_CHECK(encoded.ok() && *encoded == bytes.substr(0, n),
                     "a request does not encode back to its bytes");
    for (std::size_t cut : {n - 1, bytes.find('\n')}) {
      if (cut >= n) continue;
      ControlRequest part;
      auto p = parse_control_request(bytes.substr(0, cut), max_body, &part);
      MAILQ_FUZZ_CHECK(!p || *p == 0, "a prefix of a request parsed as complete");
    }
    return;
  }

  auto resp = parse_control_response(bytes);
  if (resp) {
    const std::string again = encode_control_response(*resp);
    auto back = parse_control_response(again);
    MAILQ_FUZZ_CHECK(back.ok(), "an encoded response does not parse");
    MAILQ_FUZZ_CHECK(back->ok == resp->ok, "a response does not round-trip");
    // The parser passes control characters of an error line through (the tools print it);
    // the encoder makes them printable, so only clean texts must come back unchanged.
    // An empty error text is sent as "failed".
    if (!has_control(resp->error))
      MAILQ_FUZZ_CHECK(back->error == (!resp->ok && resp->error.empty() ? "failed" : resp->error),
                       "an error text does not round-trip");
    if (resp->ok && !resp->payload.empty() && resp->payload.back() == '\n')
      MAILQ_FUZZ_CHECK(back->payload == resp->payload, "payload does not round-trip");
  }
  const std::string err = encode_control_response(ControlResponse::failure(std::string(bytes)));
  MAILQ_FUZZ_CHECK(err.size() >= 8 && err.compare(0, 7, "error: ") == 0 && err.back() == '\n' &&
                       err.find('\n') == err.size() - 1,
                   "an error response spans lines: " + err);
}

}  // namespace mailq::fuzz
