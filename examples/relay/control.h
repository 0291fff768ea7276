// mailq-relay — the control socket: how operators and tools talk to a running relay.
//
// A Unix stream socket (path in the config, default "<spool>/control.sock", mode 0660).
// One request per connection:
//
//   request  = VERB *(SP ARG) LF [ body ]
//   response = ( "ok" / "error: " TEXT ) LF *( payload-line LF )   then the server closes
//
// Arguments are separated by single spaces and may not contain spaces, CR, LF or NUL (queue
// ids, domains, addresses, durations never do). `submit` is the one verb with a body:
//   "submit SIZE FROM RCPT..." LF then exactly SIZE octets of message; FROM is "<>" for the
//   null reverse path. Its response payload is the queue id, sent once the message is durable.
// Requests are bounded (64 KiB for the line, the relay's max message size for a body); a
// malformed or oversized request gets "error: ..." and the connection is closed.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "mailq/clock.h"
#include "mailq/error.h"

namespace mailq::relay {

struct ControlRequest {
  std::vector<std::string> argv;  ///< argv[0] is the verb
  std::string body;               ///< `submit` only
};

struct ControlResponse {
  bool ok = true;
  std::string error;    ///< when !ok: one line
  std::string payload;  ///< when ok: zero or more LF-terminated lines
  static ControlResponse success(std::string payload = {}) {
    return {true, {}, std::move(payload)};
  }
  static ControlResponse failure(std::string error) { return {false, std::move(error), {}}; }
};

/// Serving side, on the relay's loop.
class ControlServer {
 public:
  using Handler =
      std::function<void(ControlRequest request, std::function<void(ControlResponse)> respond)>;
  ControlServer(uv_loop_t* loop, std::string path, Handler handler,
                std::uint64_t max_body = 50ull << 20);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;
  /// Binds the socket (a stale socket file nobody listens on is replaced; a live one is an
  /// error naming the path).
  std::error_code start();
  /// Stops accepting, closes open requests, removes the socket file.
  void close();
  const Error& last_error() const noexcept;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

/// Client side (blocking, for the tools): sends one request and returns the response.
/// Errors: `errc::storage_failure`-free; connection problems are `std::errc` values with a
/// message naming the path ("connect /var/spool/mailq/control.sock: No such file or
/// directory"), `timeout` bounds the whole exchange.
Result<ControlResponse> control_call(const std::string& path, const ControlRequest& request,
                                     Duration timeout = std::chrono::seconds(60));

/// Wire helpers (also used by the fuzz target): parse a request from the bytes received so
/// far. Returns 0 while incomplete, the number of octets consumed when complete, or an
/// error for a malformed / oversized request.
Result<std::size_t> parse_control_request(std::string_view bytes, std::uint64_t max_body,
                                          ControlRequest* out);
/// Refuses (`errc::invalid_parameter`) a request without a verb, or with an argument that is
/// empty or holds a space, CR, LF, NUL or other control: the line is the framing.
Result<std::string> encode_control_request(const ControlRequest& request);
std::string encode_control_response(const ControlResponse& response);
Result<ControlResponse> parse_control_response(std::string_view bytes);

}  // namespace mailq::relay
