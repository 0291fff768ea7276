#include "support/raw_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

#include <uv.h>

namespace mailq {
namespace test {

RawClient::~RawClient() {
  close();
}

bool RawClient::connect(const std::string& address, std::uint16_t port, std::string* error) {
  close();
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (address.find(':') != std::string::npos) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    if (inet_pton(AF_INET6, address.c_str(), &a->sin6_addr) != 1) {
      if (error) *error = "bad address " + address;
      return false;
    }
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    if (inet_pton(AF_INET, address.c_str(), &a->sin_addr) != 1) {
      if (error) *error = "bad address " + address;
      return false;
    }
    len = sizeof *a;
  }
  fd_ = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    if (error) *error = std::string("connect: ") + std::strerror(errno);
    close();
    return false;
  }
  closed_ = false;
  pending_.clear();
  return true;
}

bool RawClient::send(std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

std::size_t RawClient::send_until_stalled(std::string_view bytes, std::chrono::milliseconds stall) {
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    pollfd p{fd_, POLLOUT, 0};
    const int r = ::poll(&p, 1, static_cast<int>(stall.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;  // no room for `stall`: the peer stopped reading
    const ssize_t n =
        ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (n <= 0) break;
    sent += static_cast<std::size_t>(n);
  }
  return sent;
}

bool RawClient::read_some(std::chrono::steady_clock::time_point deadline) {
  if (fd_ < 0 || closed_) return false;
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) return false;
  pollfd p{fd_, POLLIN, 0};
  const int r = ::poll(&p, 1, static_cast<int>(left.count()));
  if (r <= 0) return r < 0 && errno == EINTR;
  char buf[16384];
  const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
  if (n < 0 && errno == EINTR) return true;
  if (n <= 0) {
    closed_ = true;
    return false;
  }
  pending_.append(buf, static_cast<std::size_t>(n));
  return true;
}

std::string RawClient::read_replies(std::size_t count, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    // Complete replies at the front of pending_.
    std::size_t found = 0;
    std::size_t pos = 0;
    std::size_t end = 0;
    while (found < count) {
      const std::size_t lf = pending_.find('\n', pos);
      if (lf == std::string::npos) break;
      const std::string_view line(pending_.data() + pos, lf - pos);
      pos = lf + 1;
      if (line.size() >= 4 && line[3] == ' ') {
        ++found;
        end = pos;
      } else if (line.size() == 4 && line[3] == '\r') {
        ++found;
        end = pos;
      }
    }
    if (found == count || !read_some(deadline)) {
      if (found < count) end = pending_.size();
      std::string out = pending_.substr(0, end);
      pending_.erase(0, end);
      return out;
    }
  }
}

std::string RawClient::read_until_close(std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (read_some(deadline)) {
  }
  return std::exchange(pending_, {});
}

void RawClient::shutdown_write() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
}

void RawClient::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

struct ClientThread::State {
  std::atomic<bool> done{false};
  uv_async_t* wake = nullptr;  // freed by its close callback
  std::thread thread;
};

ClientThread::ClientThread(TestLoop& loop, std::function<void()> fn)
    : loop_(loop), state_(new State) {
  // Wakes the loop when the client is done (it may be blocked in poll otherwise).
  state_->wake = new uv_async_t;
  uv_async_init(loop.get(), state_->wake, [](uv_async_t*) {});
  State* s = state_;
  uv_async_t* wake = s->wake;
  s->thread = std::thread([s, wake, fn = std::move(fn)] {
    fn();
    s->done = true;
    uv_async_send(wake);
  });
}

ClientThread::~ClientThread() {
  release();
  delete state_;
}

void ClientThread::release() {
  if (state_->thread.joinable()) state_->thread.join();
  if (state_->wake != nullptr) {
    uv_close(reinterpret_cast<uv_handle_t*>(state_->wake),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
    state_->wake = nullptr;
  }
}

bool ClientThread::finished() const noexcept {
  return state_->done.load();
}

bool ClientThread::wait(std::chrono::milliseconds limit) {
  const bool ok = loop_.run_until([this] { return finished(); }, limit);
  release();  // joined, and the wake-up handle closed: the loop can close cleanly now
  return ok;
}

bool run_beside_loop(TestLoop& loop, const std::function<void()>& client,
                     std::chrono::milliseconds limit) {
  ClientThread t(loop, client);
  return t.wait(limit);
}

}  // namespace test
}  // namespace mailq
