// A blocking TCP client for talking to a server that runs on the test's own libuv loop: the
// client runs on a thread (`run_beside_loop`) while the test thread runs the loop. Every read
// is bounded by a deadline; nothing here waits forever.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <thread>

#include "support/test_loop.h"

namespace mailq {
namespace test {

class RawClient {
 public:
  RawClient() = default;
  ~RawClient();
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  /// Connects to a numeric IPv4 or IPv6 address. False (and `error`) on failure.
  bool connect(const std::string& address, std::uint16_t port, std::string* error = nullptr);
  /// Sends every byte (false when the connection is gone).
  bool send(std::string_view bytes);
  /// Sends as much of `bytes` as the peer takes before it stops reading for `stall`; returns
  /// how many octets went out (less than `bytes.size()` when it stalled or closed).
  std::size_t send_until_stalled(std::string_view bytes,
                                 std::chrono::milliseconds stall = std::chrono::seconds(2));
  /// Reads until `count` more complete replies (their last line "ddd " or "ddd\r\n") have
  /// arrived since the last call, the server closed, or `limit` passed. Returns the bytes
  /// of those replies (and of anything read with them).
  std::string read_replies(std::size_t count,
                           std::chrono::milliseconds limit = std::chrono::seconds(10));
  /// Reads until the server closes the connection (or `limit`); returns what arrived.
  std::string read_until_close(std::chrono::milliseconds limit = std::chrono::seconds(10));
  /// True once a read saw the server's EOF (or a reset).
  bool server_closed() const noexcept { return closed_; }
  /// Half-close: no more bytes from us.
  void shutdown_write();
  void close();

 private:
  bool read_some(std::chrono::steady_clock::time_point deadline);
  int fd_ = -1;
  bool closed_ = false;
  std::string pending_;  // read but not yet returned
};

/// Runs `fn` on its own thread and wakes `loop` when it returns, so that a test can run the
/// loop until `finished()`. The destructor joins (the client's reads are bounded).
class ClientThread {
 public:
  ClientThread(TestLoop& loop, std::function<void()> fn);
  ~ClientThread();
  ClientThread(const ClientThread&) = delete;
  ClientThread& operator=(const ClientThread&) = delete;

  bool finished() const noexcept;
  /// Runs the loop until the client returned (false when `limit` passed first), then joins
  /// the thread and closes the wake-up handle.
  bool wait(std::chrono::milliseconds limit = std::chrono::seconds(60));

 private:
  void release();
  struct State;
  TestLoop& loop_;
  State* state_;
};

/// Runs `client` on a thread while running `loop` until it returns (or `limit` passed; the
/// client's own reads are bounded, so the thread is joined either way). False on timeout.
bool run_beside_loop(TestLoop& loop, const std::function<void()>& client,
                     std::chrono::milliseconds limit = std::chrono::seconds(60));

}  // namespace test
}  // namespace mailq
