// A scriptable misbehaving SMTP server for the hostile-peer tests.
//
// It listens on 127.0.0.1 (a free port chosen by the kernel), accepts connections on its own
// thread and plays a script on each one, each connection on a thread of its own: send bytes
// (all at once or one per interval), wait, expect a command line or the message data, close
// (FIN) or reset (RST), or hold the connection open until the client gives up. Every blocking
// step is bounded, and `stop()` (the destructor) ends every connection and joins every thread.
//
// The server records what happened on each connection ("C: EHLO localhost", "S: 250 ok",
// "client closed", "expectation failed: ...") so that a test can assert that nothing got
// further than it should (no DATA after a refused TLS, no second command after garbage).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "mailq/transport.h"

namespace mailq {
namespace test {

/// What the server does on one connection, step by step.
class HostileScript {
 public:
  struct Step {
    enum class Kind {
      send,         ///< write `bytes` (one byte per `interval` when it is not zero)
      wait,         ///< sleep `interval`
      expect,       ///< read one line; it must start with `bytes` (case-insensitive)
      expect_data,  ///< read message data up to and including the "." line
      close,        ///< close the socket (the client sees EOF)
      reset,        ///< close with SO_LINGER 0 (the client sees a reset)
      hold,         ///< read and discard until the client closes (or the server stops)
      read_some,    ///< read whatever arrives first (a TLS ClientHello, say), at least 1 octet
    };
    Kind kind;
    std::string bytes;
    std::chrono::milliseconds interval{0};
  };

  HostileScript& send(std::string bytes);
  /// One byte every `interval`.
  HostileScript& send_slowly(std::string bytes, std::chrono::milliseconds interval);
  HostileScript& wait(std::chrono::milliseconds d);
  HostileScript& expect(std::string prefix);
  HostileScript& expect_data();
  HostileScript& close();
  HostileScript& reset();
  HostileScript& hold();
  HostileScript& read_some();

  // --- the usual server, piece by piece -------------------------------------------------
  /// "220 hostile.test ESMTP\r\n".
  HostileScript& greet();
  /// Expects EHLO and answers with `extensions` ("PIPELINING", "STARTTLS"...).
  HostileScript& ehlo(const std::vector<std::string>& extensions = {});
  /// Expects MAIL, answers 250.
  HostileScript& mail();
  /// Expects RCPT, answers 250.
  HostileScript& rcpt();
  /// Expects DATA, answers 354.
  HostileScript& data();
  /// Expects the message data, answers 250 to the final dot.
  HostileScript& body();
  /// Expects QUIT, answers 221, closes.
  HostileScript& quit();
  /// greet, ehlo, mail, rcpt, data, body, quit: a server that accepts one message.
  static HostileScript accept_one();

  const std::vector<Step>& steps() const noexcept { return steps_; }

 private:
  std::vector<Step> steps_;
};

class HostileServer {
 public:
  /// Connection i plays `scripts[min(i, size - 1)]`.
  explicit HostileServer(std::vector<HostileScript> scripts);
  explicit HostileServer(HostileScript script)
      : HostileServer(std::vector<HostileScript>{std::move(script)}) {}
  ~HostileServer();
  HostileServer(const HostileServer&) = delete;
  HostileServer& operator=(const HostileServer&) = delete;

  /// Binds 127.0.0.1:0, listens and starts the accepting thread.
  bool start(std::string* error);
  /// Closes the listener and every connection, joins every thread. Idempotent.
  void stop();

  Endpoint endpoint() const { return {"127.0.0.1", port_}; }
  std::uint16_t port() const noexcept { return port_; }

  /// Connections accepted so far.
  std::size_t connections() const;
  /// Connections whose script has ended (and whose socket is closed).
  std::size_t finished() const;
  /// Waits (bounded) until `n` connections have finished their scripts (or were closed).
  /// Blocks the calling thread: when the client runs on this thread's loop, run the loop
  /// until `finished() >= n` instead.
  bool wait_for_finished(std::size_t n, std::chrono::milliseconds limit = std::chrono::seconds(20));
  /// The record of connection `i`: "C: <line>", "C: <data, N octets>", "S: <first line sent>",
  /// "C: <N octets>" (read_some), "closed", "reset", "client closed (N octets unread)",
  /// "expectation failed: ...".
  std::vector<std::string> transcript(std::size_t i) const;
  /// Every connection's record joined, for INFO().
  std::string dump() const;
  /// Whether any connection received a line starting with `prefix` (case-insensitive).
  bool received_command(std::string_view prefix) const;

  /// Upper bound of each blocking read of `expect` / `expect_data` / `hold`.
  std::chrono::milliseconds read_limit{std::chrono::seconds(30)};

 private:
  struct Conn;
  void accept_loop();
  void run(Conn& c, const HostileScript& script);
  void note(Conn& c, std::string line);

  std::vector<HostileScript> scripts_;
  int listener_ = -1;
  int wake_[2] = {-1, -1};  // a pipe written by stop() to wake poll()
  std::uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::vector<std::unique_ptr<Conn>> conns_;
};

}  // namespace test
}  // namespace mailq
