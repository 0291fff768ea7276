// A tiny TCP server on the test's own libuv loop, for cases no real server produces on
// demand: close after a greeting, answer a ClientHello with garbage, swallow a megabyte.
#pragma once

#include <uv.h>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "mailq/transport.h"

namespace mailq {
namespace test {

class LoopServer {
 public:
  /// One accepted connection. Owned by the server; valid until the server is destroyed.
  struct Peer {
    LoopServer* server = nullptr;
    uv_tcp_t tcp;
    std::string received;
    bool eof = false;
    bool closed = false;         // close() was called
    bool handle_closed = false;  // its close callback ran
    bool orphan = false;         // the server is gone: the close callback frees it
    Endpoint remote;

    void write(std::string data);
    /// Closes the socket (the client sees EOF).
    void close();
  };

  /// Listens on `address` (127.0.0.1 or ::1), an ephemeral port.
  explicit LoopServer(uv_loop_t* loop, const char* address = "127.0.0.1");
  /// Closes the listener and every peer; the loop must run afterwards to free them.
  ~LoopServer();
  LoopServer(const LoopServer&) = delete;
  LoopServer& operator=(const LoopServer&) = delete;

  bool ok() const noexcept { return port_ != 0; }
  Endpoint endpoint() const { return {address_, port_}; }
  std::vector<Peer*>& peers() noexcept { return peers_; }

  std::function<void(Peer&)> on_accept;
  std::function<void(Peer&, std::string_view)> on_data;

 private:
  static void on_connection(uv_stream_t* listener, int status);
  uv_loop_t* loop_;
  uv_tcp_t* listener_;  // freed by its close callback
  std::string address_;
  std::uint16_t port_ = 0;
  std::vector<Peer*> peers_;
};

}  // namespace test
}  // namespace mailq
