#include "support/hostile_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>

namespace mailq {
namespace test {

using Steady = std::chrono::steady_clock;

// --- scripts -----------------------------------------------------------------------------

HostileScript& HostileScript::send(std::string bytes) {
  steps_.push_back({Step::Kind::send, std::move(bytes), {}});
  return *this;
}
HostileScript& HostileScript::send_slowly(std::string bytes, std::chrono::milliseconds interval) {
  steps_.push_back({Step::Kind::send, std::move(bytes), interval});
  return *this;
}
HostileScript& HostileScript::wait(std::chrono::milliseconds d) {
  steps_.push_back({Step::Kind::wait, {}, d});
  return *this;
}
HostileScript& HostileScript::expect(std::string prefix) {
  steps_.push_back({Step::Kind::expect, std::move(prefix), {}});
  return *this;
}
HostileScript& HostileScript::expect_data() {
  steps_.push_back({Step::Kind::expect_data, {}, {}});
  return *this;
}
HostileScript& HostileScript::close() {
  steps_.push_back({Step::Kind::close, {}, {}});
  return *this;
}
HostileScript& HostileScript::reset() {
  steps_.push_back({Step::Kind::reset, {}, {}});
  return *this;
}
HostileScript& HostileScript::hold() {
  steps_.push_back({Step::Kind::hold, {}, {}});
  return *this;
}

HostileScript& HostileScript::read_some() {
  steps_.push_back({Step::Kind::read_some, {}, {}});
  return *this;
}

HostileScript& HostileScript::greet() {
  return send("220 hostile.test ESMTP\r\n");
}
HostileScript& HostileScript::ehlo(const std::vector<std::string>& extensions) {
  expect("EHLO ");
  std::string reply;
  if (extensions.empty()) {
    reply = "250 hostile.test\r\n";
  } else {
    reply = "250-hostile.test\r\n";
    for (std::size_t i = 0; i < extensions.size(); ++i)
      reply += (i + 1 < extensions.size() ? "250-" : "250 ") + extensions[i] + "\r\n";
  }
  return send(reply);
}
HostileScript& HostileScript::mail() {
  return expect("MAIL FROM:").send("250 2.1.0 Ok\r\n");
}
HostileScript& HostileScript::rcpt() {
  return expect("RCPT TO:").send("250 2.1.5 Ok\r\n");
}
HostileScript& HostileScript::data() {
  return expect("DATA").send("354 End data with <CR><LF>.<CR><LF>\r\n");
}
HostileScript& HostileScript::body() {
  return expect_data().send("250 2.0.0 Ok: queued\r\n");
}
HostileScript& HostileScript::quit() {
  return expect("QUIT").send("221 2.0.0 Bye\r\n").close();
}
HostileScript HostileScript::accept_one() {
  HostileScript s;
  s.greet().ehlo().mail().rcpt().data().body().quit();
  return s;
}

// --- the server --------------------------------------------------------------------------

struct HostileServer::Conn {
  int fd = -1;
  std::thread thread;
  std::vector<std::string> transcript;
  bool finished = false;
  std::string buffer;  // received, not yet consumed
};

namespace {

bool starts_with_nocase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i)
    if (std::toupper(static_cast<unsigned char>(s[i])) !=
        std::toupper(static_cast<unsigned char>(prefix[i])))
      return false;
  return true;
}

std::string first_line(std::string_view s) {
  auto eol = s.find_first_of("\r\n");
  std::string line(s.substr(0, eol == std::string_view::npos ? s.size() : eol));
  if (line.size() > 80) line = line.substr(0, 80) + "... (" + std::to_string(s.size()) + " octets)";
  return line;
}

}  // namespace

HostileServer::HostileServer(std::vector<HostileScript> scripts) : scripts_(std::move(scripts)) {
  if (scripts_.empty()) scripts_.emplace_back();
}

HostileServer::~HostileServer() {
  stop();
}

bool HostileServer::start(std::string* error) {
  listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener_ < 0) {
    *error = std::string("socket: ") + std::strerror(errno);
    return false;
  }
  int one = 1;
  ::setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (::bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(listener_, 64) != 0 ||
      ::getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len) != 0 ||
      ::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
    *error = std::string("listen on 127.0.0.1: ") + std::strerror(errno);
    return false;
  }
  port_ = ntohs(a.sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
  return true;
}

void HostileServer::stop() {
  if (stopping_.exchange(true)) return;
  if (wake_[1] >= 0) (void)!::write(wake_[1], "x", 1);
  if (acceptor_.joinable()) acceptor_.join();
  // Connection threads poll the wake pipe too: each ends within one poll slice.
  for (auto& c : conns_)
    if (c->thread.joinable()) c->thread.join();
  for (auto& c : conns_)
    if (c->fd >= 0) ::close(c->fd), c->fd = -1;
  if (listener_ >= 0) ::close(listener_);
  listener_ = -1;
  for (int& fd : wake_)
    if (fd >= 0) ::close(fd), fd = -1;
}

void HostileServer::accept_loop() {
  while (!stopping_) {
    pollfd p[2] = {{listener_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    int r = ::poll(p, 2, 100);
    if (r < 0 && errno != EINTR) break;
    if (stopping_) break;
    if (r <= 0 || !(p[0].revents & POLLIN)) continue;
    int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    std::lock_guard<std::mutex> lock(mu_);
    auto c = std::make_unique<Conn>();
    c->fd = fd;
    const HostileScript& script = scripts_[std::min(conns_.size(), scripts_.size() - 1)];
    Conn* raw = c.get();
    conns_.push_back(std::move(c));
    raw->thread = std::thread([this, raw, &script] { run(*raw, script); });
  }
}

void HostileServer::note(Conn& c, std::string line) {
  std::lock_guard<std::mutex> lock(mu_);
  c.transcript.push_back(std::move(line));
  changed_.notify_all();
}

void HostileServer::run(Conn& c, const HostileScript& script) {
  // Waits up to `limit` for the socket to be readable; false on stop or timeout.
  auto wait_readable = [&](Steady::time_point until) -> int {
    while (!stopping_) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Steady::now());
      if (left.count() <= 0) return 0;
      pollfd p[2] = {{c.fd, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      int r = ::poll(p, 2, static_cast<int>(std::min<long long>(left.count(), 100)));
      if (r < 0 && errno != EINTR) return -1;
      if (r > 0 && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) return 1;
    }
    return -1;
  };
  // Reads more into the buffer: >0 bytes read, 0 EOF, -1 error / stop / timeout.
  auto read_more = [&](Steady::time_point until, bool* timed_out) -> long {
    int w = wait_readable(until);
    if (w <= 0) {
      if (timed_out) *timed_out = w == 0;
      return -1;
    }
    char buf[65536];
    ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
    if (n > 0) c.buffer.append(buf, static_cast<std::size_t>(n));
    return n < 0 ? -1 : n;
  };
  auto sleep_for = [&](std::chrono::milliseconds d) {
    auto until = Steady::now() + d;
    while (!stopping_ && Steady::now() < until) {
      pollfd p{wake_[0], POLLIN, 0};
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Steady::now());
      ::poll(&p, 1,
             static_cast<int>(std::max<long long>(0, std::min<long long>(left.count(), 50))));
    }
  };
  auto send_all = [&](std::string_view bytes) -> bool {
    while (!bytes.empty()) {
      ssize_t n = ::send(c.fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
          pollfd p{c.fd, POLLOUT, 0};
          ::poll(&p, 1, 100);
          if (stopping_) return false;
          continue;
        }
        return false;
      }
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  };

  bool ok = true;
  for (const auto& step : script.steps()) {
    if (!ok || stopping_) break;
    using K = HostileScript::Step::Kind;
    switch (step.kind) {
      case K::send: {
        if (step.interval.count() == 0) {
          ok = send_all(step.bytes);
        } else {
          for (char ch : step.bytes) {
            if (!send_all(std::string_view(&ch, 1))) {
              ok = false;
              break;
            }
            sleep_for(step.interval);
            if (stopping_) break;
          }
        }
        note(c, ok ? "S: " + first_line(step.bytes)
                   : "send failed: " + std::string(std::strerror(errno)));
        break;
      }
      case K::wait:
        sleep_for(step.interval);
        break;
      case K::expect: {
        auto until = Steady::now() + read_limit;
        std::size_t eol;
        bool timed_out = false;
        while ((eol = c.buffer.find('\n')) == std::string::npos) {
          long n = read_more(until, &timed_out);
          if (n <= 0) break;
        }
        if (eol == std::string::npos) {
          note(c, "expectation failed: \"" + step.bytes + "\" but " +
                      (timed_out ? "nothing came" : "the client closed") +
                      (c.buffer.empty() ? "" : " after \"" + first_line(c.buffer) + "\""));
          ok = false;
          break;
        }
        std::string line = c.buffer.substr(0, eol);
        c.buffer.erase(0, eol + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        note(c, "C: " + line);
        if (!starts_with_nocase(line, step.bytes)) {
          note(c, "expectation failed: \"" + step.bytes + "\"");
          ok = false;
        }
        break;
      }
      case K::expect_data: {
        auto until = Steady::now() + read_limit;
        std::size_t end;
        bool timed_out = false;
        // The data ends with a line holding a single dot; it may be the first line.
        auto find_end = [&]() -> std::size_t {
          if (c.buffer.rfind(".\r\n", 0) == 0) return 0;
          auto p = c.buffer.find("\r\n.\r\n");
          return p == std::string::npos ? p : p + 2;
        };
        while ((end = find_end()) == std::string::npos) {
          long n = read_more(until, &timed_out);
          if (n <= 0) break;
        }
        if (end == std::string::npos) {
          note(c, std::string("expectation failed: message data but ") +
                      (timed_out ? "nothing came" : "the client closed"));
          ok = false;
          break;
        }
        note(c, "C: <data, " + std::to_string(end) + " octets>");
        c.buffer.erase(0, end + 3);
        break;
      }
      case K::close:
        ::shutdown(c.fd, SHUT_RDWR);
        note(c, "closed");
        ok = false;
        break;
      case K::reset: {
        linger l{1, 0};
        ::setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        ::close(c.fd);
        {
          std::lock_guard<std::mutex> lock(mu_);
          c.fd = -1;
        }
        note(c, "reset");
        ok = false;
        break;
      }
      case K::hold: {
        auto until = Steady::now() + read_limit;
        bool timed_out = false;
        while (read_more(until, &timed_out) > 0) {
        }
        const std::string unread = " (" + std::to_string(c.buffer.size()) + " octets unread)";
        note(c, (timed_out ? "held until the read limit" : "client closed") + unread);
        c.buffer.clear();
        ok = false;
        break;
      }
      case K::read_some: {
        auto until = Steady::now() + read_limit;
        bool timed_out = false;
        if (c.buffer.empty() && read_more(until, &timed_out) <= 0) {
          note(c, std::string("expectation failed: some octets but ") +
                      (timed_out ? "nothing came" : "the client closed"));
          ok = false;
          break;
        }
        note(c, "C: <" + std::to_string(c.buffer.size()) + " octets>");
        c.buffer.clear();
        break;
      }
    }
  }
  if (ok && !stopping_) {
    // Script done with the connection open: wait for the client to go (bounded).
    auto until = Steady::now() + read_limit;
    while (read_more(until, nullptr) > 0) {
    }
    note(c, "client closed (" + std::to_string(c.buffer.size()) + " octets unread)");
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (c.fd >= 0) {
    ::close(c.fd);
    c.fd = -1;
  }
  c.finished = true;
  changed_.notify_all();
}

std::size_t HostileServer::connections() const {
  std::lock_guard<std::mutex> lock(mu_);
  return conns_.size();
}

std::size_t HostileServer::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::size_t done = 0;
  for (auto& c : conns_) done += c->finished;
  return done;
}

bool HostileServer::wait_for_finished(std::size_t n, std::chrono::milliseconds limit) {
  std::unique_lock<std::mutex> lock(mu_);
  return changed_.wait_for(lock, limit, [&] {
    std::size_t done = 0;
    for (auto& c : conns_) done += c->finished;
    return done >= n;
  });
}

std::vector<std::string> HostileServer::transcript(std::size_t i) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (i >= conns_.size()) return {};
  return conns_[i]->transcript;
}

std::string HostileServer::dump() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (std::size_t i = 0; i < conns_.size(); ++i) {
    out += "connection " + std::to_string(i) + ":\n";
    for (auto& l : conns_[i]->transcript) out += "  " + l + "\n";
  }
  return out;
}

bool HostileServer::received_command(std::string_view prefix) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& c : conns_)
    for (auto& l : c->transcript)
      if (l.rfind("C: ", 0) == 0 && starts_with_nocase(std::string_view(l).substr(3), prefix))
        return true;
  return false;
}

}  // namespace test
}  // namespace mailq
