// A misbehaving DNS server for the hostile-peer tests: UDP and TCP on the same port of
// 127.0.0.1, on a thread of its own (so it misbehaves whatever the test's loop does).
//
// The UDP side answers every query in one of a few broken ways (or not at all); when it sets
// the TC bit the resolver retries over TCP, whose side misbehaves too. Counts what it sees.
// Never sends anything anywhere but back to the 127.0.0.1 peer that asked.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace mailq {
namespace test {

class HostileDns {
 public:
  enum class Udp {
    silent,          ///< never answers
    garbage_answer,  ///< right id and question, then an answer section of garbage
    random_garbage,  ///< right id, then random octets (the question does not match)
    wrong_id,        ///< a well-formed NXDOMAIN answer with another query id
    short_packet,    ///< five octets, shorter than a DNS header
    truncated,       ///< right id and question, TC set, no answer: retry over TCP
  };
  enum class Tcp {
    none,            ///< nothing listens on TCP: the connection is refused
    close,           ///< accepts and closes at once
    hang,            ///< accepts, reads the query, never answers
    garbage_answer,  ///< a framed answer with the right id and question, then garbage
    short_length,    ///< announces 512 octets, sends 20, closes
  };

  explicit HostileDns(Udp udp, Tcp tcp = Tcp::none) : udp_mode_(udp), tcp_mode_(tcp) {}
  ~HostileDns();
  HostileDns(const HostileDns&) = delete;
  HostileDns& operator=(const HostileDns&) = delete;

  bool start(std::string* error);
  /// Closes every socket and joins the thread. Idempotent.
  void stop();

  std::uint16_t port() const noexcept { return port_; }
  std::string address() const;  ///< "127.0.0.1:<port>"

  std::size_t udp_queries() const noexcept { return udp_queries_; }
  std::size_t tcp_connections() const noexcept { return tcp_connections_; }
  std::size_t tcp_queries() const noexcept { return tcp_queries_; }

 private:
  void serve();

  Udp udp_mode_;
  Tcp tcp_mode_;
  int udp_ = -1;
  int tcp_ = -1;
  int wake_[2] = {-1, -1};
  std::uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<std::size_t> udp_queries_{0};
  std::atomic<std::size_t> tcp_connections_{0};
  std::atomic<std::size_t> tcp_queries_{0};
  std::thread thread_;
};

}  // namespace test
}  // namespace mailq
