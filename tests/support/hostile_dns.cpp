#include "support/hostile_dns.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace mailq {
namespace test {

namespace {

// The query's header and question (QNAME, QTYPE, QCLASS); empty when the query is malformed.
std::string header_and_question(const std::string& q) {
  if (q.size() < 12) return {};
  std::size_t i = 12;
  while (i < q.size() && q[i] != 0) {
    auto len = static_cast<unsigned char>(q[i]);
    if (len > 63) return {};
    i += 1 + len;
  }
  if (i + 5 > q.size()) return {};
  return q.substr(0, i + 5);
}

// A response built from the query: QR and RA set, RD copied, one question, no other section
// but `rest` (with `ancount` claimed answers), flags as given.
std::string response(const std::string& query, std::uint8_t rcode, bool tc, std::uint16_t ancount,
                     const std::string& rest) {
  std::string r = header_and_question(query);
  if (r.empty()) return {};
  r[2] = static_cast<char>(0x80 | (query[2] & 0x01) | (tc ? 0x02 : 0x00));  // QR, TC, RD
  r[3] = static_cast<char>(0x80 | (rcode & 0x0f));                          // RA, RCODE
  r[4] = 0, r[5] = 1;                                                       // QDCOUNT
  r[6] = static_cast<char>(ancount >> 8), r[7] = static_cast<char>(ancount & 0xff);
  r[8] = r[9] = r[10] = r[11] = 0;  // NSCOUNT, ARCOUNT
  return r + rest;
}

std::string garbage(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

// An answer section that claims to be an MX record and falls apart: a name compression
// pointer that points at itself, then random octets.
std::string broken_answer() {
  return std::string("\xc0\x0c\x00\x0f\x00\x01\x00\x00\x0e\x10\x00\x40\xc0\x0c", 14) +
         garbage(40, 7);
}

}  // namespace

HostileDns::~HostileDns() {
  stop();
}

std::string HostileDns::address() const {
  return "127.0.0.1:" + std::to_string(port_);
}

bool HostileDns::start(std::string* error) {
  if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
    *error = std::string("pipe: ") + std::strerror(errno);
    return false;
  }
  // The same port for UDP and TCP: take a UDP port, then try to bind TCP to it.
  for (int attempt = 0; attempt < 50; ++attempt) {
    udp_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (udp_ < 0 || ::bind(udp_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(udp_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      *error = std::string("udp socket: ") + std::strerror(errno);
      return false;
    }
    port_ = ntohs(a.sin_port);
    if (tcp_mode_ == Tcp::none) break;
    tcp_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(tcp_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(tcp_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::listen(tcp_, 16) == 0)
      break;
    ::close(tcp_);
    ::close(udp_);
    tcp_ = udp_ = -1;
  }
  if (udp_ < 0) {
    *error = "no port free for both UDP and TCP on 127.0.0.1";
    return false;
  }
  thread_ = std::thread([this] { serve(); });
  return true;
}

void HostileDns::stop() {
  if (stopping_.exchange(true)) return;
  if (wake_[1] >= 0) (void)!::write(wake_[1], "x", 1);
  if (thread_.joinable()) thread_.join();
  for (int* fd : {&udp_, &tcp_, &wake_[0], &wake_[1]})
    if (*fd >= 0) ::close(*fd), *fd = -1;
}

void HostileDns::serve() {
  struct Client {
    int fd;
    std::string in;
    bool answered = false;
  };
  std::vector<Client> clients;
  std::uint32_t seed = 1;
  while (!stopping_) {
    std::vector<pollfd> fds;
    fds.push_back({wake_[0], POLLIN, 0});
    fds.push_back({udp_, POLLIN, 0});
    if (tcp_ >= 0) fds.push_back({tcp_, POLLIN, 0});
    for (auto& c : clients) fds.push_back({c.fd, POLLIN, 0});
    if (::poll(fds.data(), fds.size(), 100) < 0 && errno != EINTR) break;
    if (stopping_) break;

    if (fds[1].revents & POLLIN) {
      char buf[4096];
      sockaddr_storage from{};
      socklen_t flen = sizeof from;
      ssize_t n = ::recvfrom(udp_, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &flen);
      if (n > 0) {
        ++udp_queries_;
        std::string q(buf, static_cast<std::size_t>(n));
        std::string out;
        switch (udp_mode_) {
          case Udp::silent:
            break;
          case Udp::garbage_answer:
            out = response(q, 0, false, 1, broken_answer());
            break;
          case Udp::random_garbage:
            if (q.size() >= 2) out = q.substr(0, 2) + garbage(60, seed++);
            break;
          case Udp::wrong_id:
            out = response(q, 3, false, 0, "");
            if (!out.empty()) out[0] = static_cast<char>(out[0] ^ 0x5a), out[1] ^= 0x5a;
            break;
          case Udp::short_packet:
            if (q.size() >= 2) out = q.substr(0, 2) + std::string("\x81\x80\x00", 3);
            break;
          case Udp::truncated:
            out = response(q, 0, true, 0, "");
            break;
        }
        if (!out.empty())
          ::sendto(udp_, out.data(), out.size(), 0, reinterpret_cast<sockaddr*>(&from), flen);
      }
    }
    if (tcp_ >= 0 && (fds[2].revents & POLLIN)) {
      int fd = ::accept4(tcp_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) {
        ++tcp_connections_;
        if (tcp_mode_ == Tcp::close)
          ::close(fd);
        else
          clients.push_back({fd, {}, false});
      }
    }
    const std::size_t first_client = tcp_ >= 0 ? 3 : 2;
    std::vector<Client> keep;
    for (std::size_t i = 0; i < clients.size(); ++i) {
      Client& c = clients[i];
      const pollfd& p = fds[first_client + i];
      bool drop = false;
      if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
        char buf[4096];
        ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
        if (n <= 0) {
          drop = true;
        } else {
          c.in.append(buf, static_cast<std::size_t>(n));
          // One framed query: two length octets, then the message.
          while (c.in.size() >= 2) {
            std::size_t len =
                (static_cast<unsigned char>(c.in[0]) << 8) | static_cast<unsigned char>(c.in[1]);
            if (c.in.size() < 2 + len) break;
            std::string q = c.in.substr(2, len);
            c.in.erase(0, 2 + len);
            ++tcp_queries_;
            std::string out;
            if (tcp_mode_ == Tcp::garbage_answer) {
              std::string r = response(q, 0, false, 1, broken_answer());
              out = std::string(1, static_cast<char>(r.size() >> 8)) +
                    static_cast<char>(r.size() & 0xff) + r;
            } else if (tcp_mode_ == Tcp::short_length) {
              std::string r = response(q, 0, false, 1, broken_answer());
              out = std::string("\x02\x00", 2) + r.substr(0, 20);
              drop = true;
            }
            if (!out.empty()) (void)!::send(c.fd, out.data(), out.size(), MSG_NOSIGNAL);
          }
        }
      }
      if (drop)
        ::close(c.fd);
      else
        keep.push_back(std::move(c));
    }
    clients = std::move(keep);
  }
  for (auto& c : clients) ::close(c.fd);
}

}  // namespace test
}  // namespace mailq
