// The control socket: wire format, the serving side on the relay's loop, the blocking client.
#include "examples/relay/control.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <set>

namespace mailq::relay {

namespace {

constexpr std::size_t kMaxLine = 64 * 1024;
// A client that connects and says nothing, or reads nothing, is dropped after this long.
constexpr std::uint64_t kClientIdleMs = 60'000;
constexpr std::size_t kMaxClients = 64;

Error invalid(std::string message) {
  return Error(errc::invalid_parameter, std::move(message));
}

std::string errno_text(int e) {
  return std::strerror(e);
}

// Error lines are one line: CR, LF and NUL would end or corrupt the response framing.
std::string one_line(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  // Error lines end up on an operator's terminal: no control character (an escape sequence)
  // passes, whatever put it in the text.
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    out += (u < 0x20 || u == 0x7f) ? ' ' : c;
  }
  return out;
}

bool fill_address(const std::string& path, sockaddr_un* addr, std::string* error) {
  std::memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  if (path.empty()) {
    *error = "control socket path is empty";
    return false;
  }
  if (path.size() >= sizeof(addr->sun_path)) {
    *error = "control socket path " + path + " is too long (at most " +
             std::to_string(sizeof(addr->sun_path) - 1) + " octets)";
    return false;
  }
  std::memcpy(addr->sun_path, path.data(), path.size());
  return true;
}

// 0: something accepted a connection; else the errno of the failed connect.
int probe_socket(const std::string& path) {
  sockaddr_un addr;
  std::string ignored;
  if (!fill_address(path, &addr, &ignored)) return ENAMETOOLONG;
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  int e = rc == 0 ? 0 : errno;
  ::close(fd);
  return e;
}

}  // namespace

// --- wire format ------------------------------------------------------------------------------

Result<std::size_t> parse_control_request(std::string_view bytes, std::uint64_t max_body,
                                          ControlRequest* out) {
  const std::size_t lf = bytes.find('\n');
  if (lf == std::string_view::npos) {
    if (bytes.size() > kMaxLine)
      return invalid("request line longer than " + std::to_string(kMaxLine) + " octets");
    if (bytes.find('\0') != std::string_view::npos) return invalid("NUL in the request line");
    return std::size_t{0};
  }
  if (lf + 1 > kMaxLine)
    return invalid("request line longer than " + std::to_string(kMaxLine) + " octets");
  const std::string_view line = bytes.substr(0, lf);
  if (line.empty()) return invalid("empty request line");
  for (char c : line) {
    if (c == '\r') return invalid("CR in the request line (lines end with LF alone)");
    if (c == '\0') return invalid("NUL in the request line");
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      return invalid("control character in the request line");
  }
  std::vector<std::string> argv;
  std::size_t start = 0;
  while (true) {
    const std::size_t sp = line.find(' ', start);
    const std::string_view word =
        line.substr(start, sp == std::string_view::npos ? std::string_view::npos : sp - start);
    if (word.empty()) return invalid("empty argument (arguments are separated by single spaces)");
    argv.emplace_back(word);
    if (sp == std::string_view::npos) break;
    start = sp + 1;
  }
  std::size_t consumed = lf + 1;
  std::string body;
  if (argv[0] == "submit") {
    if (argv.size() < 4) return invalid("usage: submit SIZE FROM RCPT...");
    std::uint64_t size = 0;
    const std::string& s = argv[1];
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), size);
    if (ec != std::errc() || p != s.data() + s.size() || (s.size() > 1 && s[0] == '0'))
      return invalid("submit: SIZE \"" + s + "\" is not a decimal number");
    if (size > max_body)
      return invalid("submit: message of " + s + " octets exceeds the limit of " +
                     std::to_string(max_body) + " octets");
    if (bytes.size() - consumed < size) return std::size_t{0};
    body.assign(bytes.substr(consumed, size));
    consumed += size;
  }
  if (out) {
    out->argv = std::move(argv);
    out->body = std::move(body);
  }
  return consumed;
}

Result<std::string> encode_control_request(const ControlRequest& request) {
  if (request.argv.empty()) return invalid("a request needs a verb");
  std::string out;
  for (std::size_t i = 0; i < request.argv.size(); ++i) {
    const std::string& a = request.argv[i];
    // The request line is the framing: an argument with a space, a line break or another
    // control would become several arguments, or a second request line.
    if (a.empty()) return invalid("argument " + std::to_string(i) + " is empty");
    for (char c : a) {
      const auto u = static_cast<unsigned char>(c);
      if (c == ' ' || u < 0x20 || u == 0x7f)
        return invalid("argument " + std::to_string(i) + " (\"" + one_line(a) + "\") holds " +
                       (c == ' ' ? "a space" : "a control character") +
                       ", which a control request cannot carry");
    }
    if (i) out += ' ';
    out += a;
  }
  out += '\n';
  out += request.body;
  return out;
}

std::string encode_control_response(const ControlResponse& response) {
  if (!response.ok) {
    std::string text = one_line(response.error);
    return "error: " + (text.empty() ? std::string("failed") : text) + "\n";
  }
  std::string out = "ok\n";
  out += response.payload;
  if (!response.payload.empty() && response.payload.back() != '\n') out += '\n';
  return out;
}

Result<ControlResponse> parse_control_response(std::string_view bytes) {
  const std::size_t lf = bytes.find('\n');
  if (lf == std::string_view::npos)
    return Error(errc::protocol_error, bytes.empty()
                                           ? "empty response (the relay closed the connection)"
                                           : "truncated response: no end of line");
  const std::string_view first = bytes.substr(0, lf);
  if (first == "ok") return ControlResponse::success(std::string(bytes.substr(lf + 1)));
  constexpr std::string_view kError = "error: ";
  if (first.substr(0, kError.size()) == kError) {
    if (lf + 1 != bytes.size())
      return Error(errc::protocol_error, "unexpected data after an error response");
    return ControlResponse::failure(one_line(first.substr(kError.size())));
  }
  return Error(errc::protocol_error,
               "malformed response line \"" + one_line(first.substr(0, 80)) + "\"");
}

// --- serving side -----------------------------------------------------------------------------

struct ControlServer::Impl : std::enable_shared_from_this<ControlServer::Impl> {
  struct Client : std::enable_shared_from_this<Client> {
    uv_pipe_t pipe;
    uv_timer_t timer;
    std::weak_ptr<Impl> server;
    std::string in;
    std::string out;
    uv_write_t write_req;
    bool dispatched = false;  // a request went to the handler
    bool responded = false;
    bool closing = false;
    int open_handles = 0;
    std::shared_ptr<Client> self;  // kept until both handles are closed

    void close() {
      if (closing) return;
      closing = true;
      auto on_closed = [](uv_handle_t* h) {
        auto* c = static_cast<Client*>(h->data);
        if (--c->open_handles == 0) c->self.reset();  // may delete c
      };
      uv_close(reinterpret_cast<uv_handle_t*>(&pipe), on_closed);
      uv_close(reinterpret_cast<uv_handle_t*>(&timer), on_closed);
      if (auto s = server.lock()) s->clients.erase(this);
    }

    void send(const ControlResponse& response) {
      if (closing || responded) return;
      responded = true;
      uv_read_stop(reinterpret_cast<uv_stream_t*>(&pipe));
      out = encode_control_response(response);
      uv_buf_t buf = uv_buf_init(out.data(), static_cast<unsigned>(out.size()));
      write_req.data = this;
      int rc = uv_write(&write_req, reinterpret_cast<uv_stream_t*>(&pipe), &buf, 1,
                        [](uv_write_t* req, int) {
                          // The response is with the kernel (or the client went away): done.
                          static_cast<Client*>(req->data)->close();
                        });
      if (rc != 0) close();
    }
  };

  uv_loop_t* loop;
  std::string path;
  Handler handler;
  std::uint64_t max_body;
  uv_pipe_t* listener = nullptr;
  bool bound = false;
  Error error;
  std::set<Client*> clients;

  Impl(uv_loop_t* l, std::string p, Handler h, std::uint64_t m)
      : loop(l), path(std::move(p)), handler(std::move(h)), max_body(m) {}

  std::error_code fail(std::errc e, std::string message) {
    error = Error(std::make_error_code(e), std::move(message));
    return error.code;
  }

  std::error_code start() {
    if (listener) return fail(std::errc::operation_in_progress, "control socket already started");
    sockaddr_un addr;
    std::string why;
    if (!fill_address(path, &addr, &why)) return fail(std::errc::filename_too_long, why);
    struct stat st;
    if (::lstat(path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode))
        return fail(std::errc::file_exists,
                    "control socket " + path + " exists and is not a socket; not replacing it");
      const int e = probe_socket(path);
      if (e == 0)
        return fail(std::errc::address_in_use,
                    "control socket " + path + " is live: another mailq-relay is running");
      // Nobody listens: a stale socket of a relay that died. Replace it.
      if (::unlink(path.c_str()) != 0 && errno != ENOENT)
        return fail(std::errc::permission_denied,
                    "remove stale control socket " + path + ": " + errno_text(errno));
    }
    listener = new uv_pipe_t;
    uv_pipe_init(loop, listener, 0);
    listener->data = this;
    int rc = uv_pipe_bind(listener, path.c_str());
    if (rc == 0) {
      bound = true;
      if (::chmod(path.c_str(), 0660) != 0) rc = uv_translate_sys_error(errno);
    }
    if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(listener), 64, &Impl::on_connection);
    if (rc != 0) {
      std::string text = "control socket " + path + ": " + uv_strerror(rc);
      close_listener();
      error = Error(std::error_code(-rc, std::generic_category()), text);
      return error.code;
    }
    return {};
  }

  void close_listener() {
    if (!listener) return;
    listener->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(listener),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_pipe_t*>(h); });
    listener = nullptr;
    if (bound) {
      ::unlink(path.c_str());
      bound = false;
    }
  }

  void close() {
    close_listener();
    // Requests in progress lose their connection; their `respond` becomes a no-op.
    auto open = clients;
    for (Client* c : open) c->close();
  }

  static void on_connection(uv_stream_t* s, int status) {
    auto* self = static_cast<Impl*>(s->data);
    if (!self || status < 0) return;
    auto c = std::make_shared<Client>();
    uv_pipe_init(self->loop, &c->pipe, 0);
    uv_timer_init(self->loop, &c->timer);
    c->pipe.data = c.get();
    c->timer.data = c.get();
    c->open_handles = 2;
    c->self = c;
    c->server = self->weak_from_this();
    self->clients.insert(c.get());
    if (uv_accept(s, reinterpret_cast<uv_stream_t*>(&c->pipe)) != 0) {
      c->close();
      return;
    }
    if (self->clients.size() > kMaxClients) {
      c->send(ControlResponse::failure("too many control connections"));
      return;
    }
    uv_timer_start(
        &c->timer,
        [](uv_timer_t* t) {
          auto* cl = static_cast<Client*>(t->data);
          // Waiting for the handler (a submit becoming durable, a long report) is not idle.
          if (cl->dispatched && !cl->responded) return;
          cl->close();
        },
        kClientIdleMs, 0);
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&c->pipe),
        [](uv_handle_t* h, std::size_t suggested, uv_buf_t* buf) {
          auto* cl = static_cast<Client*>(h->data);
          const std::size_t old = cl->in.size();
          cl->in.resize(old + suggested);
          *buf = uv_buf_init(cl->in.data() + old, static_cast<unsigned>(suggested));
        },
        &Impl::on_read);
  }

  static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
    auto* c = static_cast<Client*>(s->data);
    // The buffer was carved out of `in`; give back what was not filled.
    const std::size_t unused = n > 0 ? buf->len - static_cast<std::size_t>(n) : buf->len;
    if (buf->base) c->in.resize(c->in.size() - unused);
    if (c->closing || c->dispatched) return;
    if (n < 0) {
      if (n == UV_EOF && !c->in.empty())
        c->send(ControlResponse::failure("incomplete request"));
      else
        c->close();
      return;
    }
    if (n == 0) return;
    auto server = c->server.lock();
    if (!server) return c->close();
    ControlRequest request;
    auto parsed = parse_control_request(c->in, server->max_body, &request);
    if (!parsed) return c->send(ControlResponse::failure(parsed.error().message));
    if (parsed.value() == 0) return;
    c->dispatched = true;
    uv_read_stop(s);
    c->in.clear();
    c->in.shrink_to_fit();
    std::weak_ptr<Client> weak = c->shared_from_this();
    auto respond = [weak](ControlResponse response) {
      if (auto cl = weak.lock()) cl->send(response);
    };
    server->handler(std::move(request), std::move(respond));
  }
};

ControlServer::ControlServer(uv_loop_t* loop, std::string path, Handler handler,
                             std::uint64_t max_body)
    : impl_(std::make_shared<Impl>(loop, std::move(path), std::move(handler), max_body)) {}

ControlServer::~ControlServer() {
  close();
}

std::error_code ControlServer::start() {
  return impl_->start();
}

void ControlServer::close() {
  impl_->close();
}

const Error& ControlServer::last_error() const noexcept {
  return impl_->error;
}

// --- client side ------------------------------------------------------------------------------

Result<ControlResponse> control_call(const std::string& path, const ControlRequest& request,
                                     Duration timeout) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + timeout;
  auto remaining_ms = [&]() -> int {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    return left.count() <= 0 ? 0 : static_cast<int>(std::min<long long>(left.count(), 1 << 30));
  };
  auto sys_error = [&](int e, const std::string& what) {
    return Error(std::error_code(e, std::generic_category()),
                 what + " " + path + ": " + errno_text(e));
  };
  sockaddr_un addr;
  std::string why;
  if (!fill_address(path, &addr, &why))
    return Error(std::make_error_code(std::errc::filename_too_long), why);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return sys_error(errno, "socket for");
  struct FdGuard {
    int fd;
    ~FdGuard() { ::close(fd); }
  } guard{fd};
  // A Unix socket connect does not block on a listener with room in its backlog; with a full
  // backlog it would, so the socket is non-blocking and every wait is bounded.
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (errno != EINPROGRESS && errno != EAGAIN) return sys_error(errno, "connect");
    pollfd p{fd, POLLOUT, 0};
    int rc = ::poll(&p, 1, remaining_ms());
    if (rc == 0) return sys_error(ETIMEDOUT, "connect");
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return sys_error(err, "connect");
  }
  auto encoded = encode_control_request(request);
  if (!encoded) return encoded.error();
  const std::string& out = *encoded;
  std::size_t sent = 0;
  while (sent < out.size()) {
    ssize_t n = ::send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT | POLLIN, 0};
      int rc = ::poll(&p, 1, remaining_ms());
      if (rc == 0) return sys_error(ETIMEDOUT, "send to");
      if (p.revents & POLLIN) break;  // the relay answered early (an error): read it
      continue;
    }
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) break;  // read what it said
    return sys_error(errno, "send to");
  }
  std::string in;
  char buf[16384];
  while (true) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n > 0) {
      in.append(buf, static_cast<std::size_t>(n));
      if (in.size() > (256u << 20)) return Error(errc::protocol_error, "response too large");
      continue;
    }
    if (n == 0) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      pollfd p{fd, POLLIN, 0};
      int rc = ::poll(&p, 1, remaining_ms());
      if (rc == 0) return sys_error(ETIMEDOUT, "waiting for the response of");
      continue;
    }
    if (errno == ECONNRESET) break;
    return sys_error(errno, "recv from");
  }
  return parse_control_response(in);
}

}  // namespace mailq::relay
