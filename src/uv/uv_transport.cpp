// UvTransport: TCP connections on libuv, STARTTLS through uv/tls.h.
//
// Lifetime: each connection's libuv handles live in a heap `ConnState` that outlives the
// `UvConnection` the host holds. Destroying the UvConnection detaches the handler, cancels
// what it posted through the clock and closes the handles; the state is freed by the last
// close callback (libuv frees nothing itself and may still call the connect and write
// callbacks, with UV_ECANCELED, until then).

#include <csignal>
#include <cstring>
#include <deque>
#include <exception>
#include <string>
#include <utility>

#include "mailq/error.h"
#include "mailq/uv/transport.h"
#include "uv/tls.h"

namespace mailq {
namespace uv {

std::error_code error_from_uv(int status) noexcept {
  using std::errc;
  auto generic = [](errc e) { return std::make_error_code(e); };
  switch (status) {
    case 0:
      return {};
    case UV_ECONNREFUSED:
      return generic(errc::connection_refused);
    case UV_EHOSTUNREACH:
      return generic(errc::host_unreachable);
    case UV_ENETUNREACH:
      return generic(errc::network_unreachable);
    case UV_ETIMEDOUT:
      return generic(errc::timed_out);
    case UV_ECONNRESET:
      return generic(errc::connection_reset);
    case UV_ECONNABORTED:
      return generic(errc::connection_aborted);
    case UV_ENETDOWN:
      return generic(errc::network_down);
    case UV_EPIPE:
      return generic(errc::broken_pipe);
    case UV_EADDRINUSE:
      return generic(errc::address_in_use);
    case UV_EADDRNOTAVAIL:
      return generic(errc::address_not_available);
    case UV_EAFNOSUPPORT:
      return generic(errc::address_family_not_supported);
    case UV_EACCES:
      return generic(errc::permission_denied);
    case UV_EPERM:
      return generic(errc::operation_not_permitted);
    case UV_EINVAL:
      return generic(errc::invalid_argument);
    case UV_ECANCELED:
      return generic(errc::operation_canceled);
    case UV_EMFILE:
      return generic(errc::too_many_files_open);
    case UV_ENFILE:
      return generic(errc::too_many_files_open_in_system);
    case UV_ENOBUFS:
      return generic(errc::no_buffer_space);
    case UV_ENOMEM:
      return generic(errc::not_enough_memory);
    case UV_ENOTCONN:
      return generic(errc::not_connected);
    case UV_EOF:
      return generic(errc::connection_reset);
    default:
      break;
  }
#ifndef _WIN32
  // On Unix libuv's codes are negated errno values (EHOSTDOWN has no std::errc name).
  if (status < 0) return {-status, std::generic_category()};
#endif
  return generic(errc::io_error);
}

struct detail::TransportShared {
  uv_loop_t* loop = nullptr;
  Clock* clock = nullptr;  // posts the reports that must not come from inside a call
  UvTransportOptions options;
  ErrorReporter own_reporter;  // when the host gave none
  detail::TlsContextCache tls;
  // One read buffer for every connection: libuv runs one read callback at a time and each
  // consumes its bytes before returning.
  std::string read_buffer;

  TransportShared(uv_loop_t* l, Clock& c, UvTransportOptions o)
      : loop(l), clock(&c), options(std::move(o)), tls(options.system_ca_files) {
    read_buffer.resize(options.read_buffer_size < 4096 ? 4096 : options.read_buffer_size);
  }

  void report(const std::string& message) {
    ErrorReporter* r = options.error_reporter ? options.error_reporter : &own_reporter;
    r->report(message, clock->now());
  }
};

namespace {

bool parse_address(const std::string& address, std::uint16_t port, sockaddr_storage* out) {
  std::memset(out, 0, sizeof *out);
  if (address.find(':') != std::string::npos) {
    return uv_ip6_addr(address.c_str(), port, reinterpret_cast<sockaddr_in6*>(out)) == 0;
  }
  return uv_ip4_addr(address.c_str(), port, reinterpret_cast<sockaddr_in*>(out)) == 0;
}

Endpoint endpoint_of(const sockaddr_storage& ss) {
  Endpoint e;
  char name[64] = {};
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    uv_ip6_name(a, name, sizeof name);
    e.port = ntohs(a->sin6_port);
  } else if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    uv_ip4_name(a, name, sizeof name);
    e.port = ntohs(a->sin_port);
  } else {
    e.port = 0;
  }
  e.address = name;
  return e;
}

std::string describe(std::error_code ec) {
  std::string m = ec.message();
  for (char& c : m) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return m;
}

class UvConnection;

// The largest single write request (see ConnState::write_raw).
constexpr std::size_t kWriteChunk = 256 * 1024;

struct ConnState;

struct WriteReq {
  uv_write_t req;
  std::string data;
  ConnState* state;
};

struct ConnState {
  enum class Phase : std::uint8_t {
    connecting,     // uv_tcp_connect pending
    open,           // plaintext stream
    tls_handshake,  // start_tls called, handshake under way
    tls,            // encrypted stream
    finished,       // the failure or close was reported (or the owner is gone)
  };

  std::shared_ptr<detail::TransportShared> shared;
  ConnectionHandler* handler;  // null once the UvConnection is destroyed
  Phase phase = Phase::connecting;

  uv_tcp_t tcp;
  uv_timer_t connect_timer;
  uv_connect_t connect_req;
  TimerId post_timer = kNoTimer;  // the clock's timer that runs `posted`
  bool tcp_open = false;
  int handles_open = 0;
  bool owner = true;

  Endpoint remote;
  Endpoint local;
  std::string pending;  // written before connect, or during the handshake
  std::size_t writes_in_flight = 0;
  std::unique_ptr<detail::TlsSession> tls;
  std::deque<std::function<void()>> posted;

  ConnState(std::shared_ptr<detail::TransportShared> s, ConnectionHandler& h, const Endpoint& r)
      : shared(std::move(s)), handler(&h), remote(r) {
    uv_timer_init(shared->loop, &connect_timer);
    connect_timer.data = this;
    connect_req.data = this;
    handles_open = 1;
  }

  // --- lifetime ----------------------------------------------------------------------------

  static void on_handle_closed(uv_handle_t* h) {
    auto* s = static_cast<ConnState*>(h->data);
    if (--s->handles_open == 0 && !s->owner) delete s;
  }

  void close_tcp() {
    if (tcp_open && !uv_is_closing(reinterpret_cast<uv_handle_t*>(&tcp))) {
      uv_close(reinterpret_cast<uv_handle_t*>(&tcp), &ConnState::on_handle_closed);
    }
  }

  // The UvConnection is gone: silence, close everything. The timer is closed only here, so
  // the state always outlives its owner and is freed from a close callback.
  void detach() {
    handler = nullptr;
    owner = false;
    phase = Phase::finished;
    posted.clear();
    if (post_timer != kNoTimer) {
      shared->clock->cancel(post_timer);
      post_timer = kNoTimer;
    }
    close_tcp();
    uv_close(reinterpret_cast<uv_handle_t*>(&connect_timer), &ConnState::on_handle_closed);
  }

  // --- calling the handler -----------------------------------------------------------------

  // Runs `f(*handler)` unless detached; exceptions stop here. Returns whether the connection
  // is still owned afterwards (the handler may destroy it from inside the call).
  template <class F>
  bool notify(F&& f) {
    if (!handler) return false;
    try {
      f(*handler);
    } catch (const std::exception& e) {
      shared->report(std::string("mailq UvTransport: connection handler threw: ") + e.what());
    } catch (...) {
      shared->report("mailq UvTransport: connection handler threw a non-standard exception");
    }
    return handler != nullptr;
  }

  // Runs `fn` on a later loop turn, through the clock (a zero-delay timer), in order.
  void post(std::function<void()> fn) {
    posted.push_back(std::move(fn));
    if (post_timer == kNoTimer) {
      post_timer = shared->clock->schedule(Duration{0}, [this] { run_posted(); });
    }
  }

  void run_posted() {
    // What the functions post runs in this pass too; a detach (the handler destroyed the
    // connection) empties the queue. The state outlives this call either way: it is freed by
    // a close callback.
    while (!posted.empty() && handler) {
      auto fn = std::move(posted.front());
      posted.pop_front();
      fn();
    }
    post_timer = kNoTimer;
  }

  // --- connect -----------------------------------------------------------------------------

  void start(const ConnectOptions& options) {
    sockaddr_storage addr;
    if (!parse_address(remote.address, remote.port, &addr)) {
      fail_connect_later(std::make_error_code(std::errc::invalid_argument),
                         "\"" + remote.address + "\" is not a numeric IPv4 or IPv6 address");
      return;
    }
    int r = uv_tcp_init_ex(shared->loop, &tcp, addr.ss_family);
    if (r < 0) {
      fail_connect_later(error_from_uv(r),
                         std::string("cannot create a socket: ") + uv_strerror(r));
      return;
    }
    tcp.data = this;
    tcp_open = true;
    ++handles_open;
    if (!options.source_address.empty()) {
      sockaddr_storage source;
      if (!parse_address(options.source_address, 0, &source)) {
        fail_connect_later(std::make_error_code(std::errc::invalid_argument),
                           "source address \"" + options.source_address +
                               "\" is not a numeric IPv4 or IPv6 address");
        return;
      }
      if (source.ss_family != addr.ss_family) {
        fail_connect_later(
            std::make_error_code(std::errc::address_family_not_supported),
            "source address " + options.source_address + " is not of the remote address's family");
        return;
      }
      r = uv_tcp_bind(&tcp, reinterpret_cast<const sockaddr*>(&source), 0);
      if (r < 0) {
        fail_connect_later(error_from_uv(r), "cannot bind to " + options.source_address + ": " +
                                                 describe(error_from_uv(r)));
        return;
      }
    }
    // SMTP sends small commands and waits for replies (or pipelines them in one write):
    // Nagle's algorithm would only add delay.
    uv_tcp_nodelay(&tcp, 1);
    r = uv_tcp_connect(&connect_req, &tcp, reinterpret_cast<const sockaddr*>(&addr),
                       &ConnState::on_connected);
    if (r < 0) {
      fail_connect_later(error_from_uv(r), describe(error_from_uv(r)));
      return;
    }
    if (options.connect_timeout > Duration{0}) {
      uv_timer_start(&connect_timer, &ConnState::on_connect_timeout,
                     static_cast<std::uint64_t>(options.connect_timeout.count()), 0);
    }
  }

  void fail_connect_later(std::error_code ec, std::string text) {
    phase = Phase::finished;
    close_tcp();
    post([this, error = Error(ec, std::move(text))] {
      notify([&](ConnectionHandler& h) { h.on_connect(error); });
    });
  }

  void fail_connect(std::error_code ec, std::string text) {
    phase = Phase::finished;
    uv_timer_stop(&connect_timer);
    close_tcp();  // cancels a pending connect request (its callback sees UV_ECANCELED)
    const Result<void> failed = Error(ec, std::move(text));
    notify([&](ConnectionHandler& h) { h.on_connect(failed); });
  }

  static void on_connect_timeout(uv_timer_t* t) {
    auto* s = static_cast<ConnState*>(t->data);
    if (s->phase != Phase::connecting) return;
    s->fail_connect(std::make_error_code(std::errc::timed_out), "connection timed out");
  }

  static void on_connected(uv_connect_t* req, int status) {
    auto* s = static_cast<ConnState*>(req->data);
    if (status == UV_ECANCELED || s->phase != Phase::connecting) return;
    uv_timer_stop(&s->connect_timer);
    if (status < 0) {
      s->fail_connect(error_from_uv(status), describe(error_from_uv(status)));
      return;
    }
    sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getsockname(&s->tcp, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
      s->local = endpoint_of(ss);
    }
    len = sizeof ss;
    if (uv_tcp_getpeername(&s->tcp, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
      s->remote = endpoint_of(ss);
    }
    const int r = uv_read_start(reinterpret_cast<uv_stream_t*>(&s->tcp), &ConnState::on_alloc,
                                &ConnState::on_read);
    if (r < 0) {
      s->fail_connect(error_from_uv(r), std::string("cannot read: ") + uv_strerror(r));
      return;
    }
    s->phase = Phase::open;
    // Bytes written before the connection was up go first. Should handing them to libuv fail,
    // on_close follows on_connect from the loop.
    if (!s->pending.empty()) s->write_raw(std::exchange(s->pending, {}));
    s->notify([](ConnectionHandler& h) { h.on_connect(success()); });
  }

  // --- reading -----------------------------------------------------------------------------

  static void on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
    auto* s = static_cast<ConnState*>(h->data);
    std::string& b = s->shared->read_buffer;
    *buf = uv_buf_init(b.data(), static_cast<unsigned>(b.size()));
  }

  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
    auto* s = static_cast<ConnState*>(stream->data);
    if (nread == 0 || s->phase == Phase::finished || !s->handler) return;
    if (nread > 0) {
      const std::string_view data(buf->base, static_cast<std::size_t>(nread));
      if (s->phase == Phase::open) {
        s->notify([&](ConnectionHandler& h) { h.on_read(data); });
      } else if (s->tls) {
        s->tls->feed(data);
        s->pump_tls();
      }
      // else: start_tls could not set up a session; its failure is about to be reported and
      // the bytes have no meaning.
      return;
    }
    const auto status = static_cast<int>(nread);
    if (s->phase == Phase::tls_handshake) {
      s->fail_tls(status == UV_EOF ? "the server closed the connection during the TLS handshake"
                                   : "TLS handshake failed: " + describe(error_from_uv(status)));
    } else if (status == UV_EOF) {
      s->finish({}, "");
    } else {
      s->finish(error_from_uv(status), describe(error_from_uv(status)));
    }
  }

  // Reports the end of an established connection: on_close, exactly once. `text` describes
  // the error `ec`; an empty `ec` is the peer's clean close.
  void finish(std::error_code ec, std::string text) {
    if (phase == Phase::finished) return;
    phase = Phase::finished;
    if (tcp_open && !uv_is_closing(reinterpret_cast<uv_handle_t*>(&tcp))) {
      uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp));
    }
    const Result<void> end = ec ? Result<void>(Error(ec, std::move(text))) : success();
    notify([&](ConnectionHandler& h) { h.on_close(end); });
  }

  // Reports the end of any phase with the callback that phase expects.
  void fail(std::error_code ec, std::string text) {
    switch (phase) {
      case Phase::connecting:
        fail_connect(ec, std::move(text));
        break;
      case Phase::tls_handshake:
        fail_tls("TLS handshake failed: " + text);
        break;
      case Phase::open:
      case Phase::tls:
        finish(ec, std::move(text));
        break;
      case Phase::finished:
        break;
    }
  }

  // --- writing -----------------------------------------------------------------------------

  // Hands bytes to libuv as they are (plaintext or ciphertext), in requests of at most
  // kWriteChunk octets: each completion is progress the handler hears of (a large body to a
  // slow peer makes progress chunk by chunk, or stops).
  void write_raw(std::string data) {
    if (data.empty() || phase == Phase::finished) return;
    if (data.size() > kWriteChunk) {
      write_chunks(data);
      return;
    }
    auto* w = new WriteReq{};
    w->data = std::move(data);
    w->state = this;
    w->req.data = w;
    uv_buf_t b = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
    const int r =
        uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&tcp), &b, 1, &ConnState::on_written);
    if (r < 0) {
      delete w;
      // Called from the handler's own write(): report from the loop, not from inside it.
      const std::error_code ec = error_from_uv(r);
      const Phase at = phase;
      phase = Phase::finished;
      if (tcp_open && !uv_is_closing(reinterpret_cast<uv_handle_t*>(&tcp))) {
        uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp));
      }
      std::string text = "write failed: " + describe(ec);
      post([this, ec, at, text = std::move(text)] {
        if (at == Phase::tls_handshake) {
          const Result<TlsInfo> failed = Error(errc::tls_failure, text);
          notify([&](ConnectionHandler& h) { h.on_tls(failed); });
        } else {
          const Result<void> failed = Error(ec, text);
          notify([&](ConnectionHandler& h) { h.on_close(failed); });
        }
      });
      return;
    }
    ++writes_in_flight;
  }

  // A large write as requests of kWriteChunk octets, each copied once from `data`.
  void write_chunks(std::string_view data) {
    for (std::size_t at = 0; at < data.size() && phase != Phase::finished; at += kWriteChunk)
      write_raw(std::string(data.substr(at, kWriteChunk)));
  }

  static void on_written(uv_write_t* req, int status) {
    auto* w = static_cast<WriteReq*>(req->data);
    ConnState* s = w->state;
    delete w;
    --s->writes_in_flight;
    if (status < 0 && status != UV_ECANCELED && s->handler) {
      s->fail(error_from_uv(status), "write failed: " + describe(error_from_uv(status)));
      return;
    }
    if (status == 0 && s->phase != Phase::finished) {
      const bool idle = s->write_idle();
      s->notify([&](ConnectionHandler& h) { h.on_write_progress(idle); });
    }
  }

  void flush_tls() {
    if (tls && tls->has_output()) write_raw(tls->take_output());
  }

  void write(std::string_view bytes) {
    switch (phase) {
      case Phase::connecting:
      case Phase::tls_handshake:
        pending.append(bytes);
        break;
      case Phase::open:
        // Most writes fit the socket buffer at once: try that before copying the bytes into a
        // write request (a 100 KB message body would be copied for nothing). Only with no
        // request queued, so that the bytes stay in order.
        if (writes_in_flight == 0 && !bytes.empty() && bytes.size() <= (1u << 30)) {
          uv_buf_t b =
              uv_buf_init(const_cast<char*>(bytes.data()), static_cast<unsigned>(bytes.size()));
          const int n = uv_try_write(reinterpret_cast<uv_stream_t*>(&tcp), &b, 1);
          if (n > 0) bytes.remove_prefix(static_cast<std::size_t>(n));
          // Errors other than EAGAIN are reported by uv_write below, as before.
        }
        if (bytes.size() > kWriteChunk)
          write_chunks(bytes);  // not copied whole first
        else
          write_raw(std::string(bytes));
        break;
      case Phase::tls:
        if (!tls->write(bytes)) {
          const Result<void> failed = Error(errc::tls_failure, tls->error());
          flush_tls();
          phase = Phase::finished;
          post([this, failed] { notify([&](ConnectionHandler& h) { h.on_close(failed); }); });
          return;
        }
        flush_tls();
        break;
      case Phase::finished:
        break;  // already reported; the bytes have nowhere to go
    }
  }

  bool write_idle() const {
    return writes_in_flight == 0 && pending.empty() && !(tls && tls->has_output());
  }

  // --- TLS ---------------------------------------------------------------------------------

  void start_tls(const TlsClientOptions& options) {
    if (phase == Phase::finished) return;  // on_close or a failure was reported already
    if (phase != Phase::open) {
      const char* why = phase == Phase::connecting ? "start_tls before the connection is up"
                                                   : "TLS was already started";
      post([this, why] {
        const Result<TlsInfo> failed = Error(errc::bad_state, why);
        notify([&](ConnectionHandler& h) { h.on_tls(failed); });
      });
      return;
    }
    phase = Phase::tls_handshake;
    std::string error;
    auto config = shared->tls.get(options, &error);
    if (config) {
      tls = std::make_unique<detail::TlsSession>();
      if (!tls->setup(std::move(config), options)) {
        error = tls->error();
        tls.reset();
      }
    }
    // Even the first step (the ClientHello) runs from the loop, so that no outcome is ever
    // reported from inside start_tls.
    post([this, error] {
      if (phase != Phase::tls_handshake) return;
      if (!error.empty()) {
        fail_tls(error);
      } else {
        pump_tls();
      }
    });
  }

  void fail_tls(std::string text) {
    if (phase != Phase::tls_handshake) return;
    phase = Phase::finished;
    flush_tls();  // the alert mbedTLS queued, so the server learns why
    if (tcp_open && !uv_is_closing(reinterpret_cast<uv_handle_t*>(&tcp))) {
      uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp));
    }
    const Result<TlsInfo> failed = Error(errc::tls_failure, std::move(text));
    notify([&](ConnectionHandler& h) { h.on_tls(failed); });
  }

  void pump_tls() {
    if (phase == Phase::tls_handshake) {
      const auto step = tls->handshake();
      if (step == detail::TlsSession::Step::failed) {
        fail_tls(tls->error());
        return;
      }
      flush_tls();
      if (phase != Phase::tls_handshake) return;  // a write failed
      if (step == detail::TlsSession::Step::again) return;
      phase = Phase::tls;
      const Result<TlsInfo> done = tls->info();
      if (!notify([&](ConnectionHandler& h) { h.on_tls(done); })) return;
      if (phase != Phase::tls) return;
      if (!pending.empty()) write(std::exchange(pending, {}));
      if (phase != Phase::tls) return;
      // Application data may have arrived together with the server's last handshake flight.
    }
    if (phase != Phase::tls) return;
    std::string& buf = shared->read_buffer;
    for (;;) {
      const long n = tls->read(buf.data(), buf.size());
      flush_tls();  // alerts, or a reply to a renegotiation request
      if (n > 0) {
        const std::string_view data(buf.data(), static_cast<std::size_t>(n));
        if (!notify([&](ConnectionHandler& h) { h.on_read(data); })) return;
        if (phase != Phase::tls) return;
        continue;
      }
      if (n == detail::TlsSession::kWant) return;
      if (n == detail::TlsSession::kClosed) {
        finish({}, "");
      } else {
        finish(make_error_code(errc::tls_failure), tls->error());
      }
      return;
    }
  }
};

class UvConnection final : public Connection {
 public:
  explicit UvConnection(ConnState* s) : s_(s) {}
  ~UvConnection() override { s_->detach(); }
  UvConnection(const UvConnection&) = delete;
  UvConnection& operator=(const UvConnection&) = delete;

  void write(std::string_view bytes) override { s_->write(bytes); }
  void start_tls(const TlsClientOptions& options) override { s_->start_tls(options); }
  bool write_idle() const override { return s_->write_idle(); }
  Endpoint local_endpoint() const override { return s_->local; }
  Endpoint remote_endpoint() const override { return s_->remote; }

 private:
  ConnState* s_;
};

}  // namespace

UvTransport::UvTransport(uv_loop_t* loop, Clock& clock, UvTransportOptions options)
    : shared_(std::make_shared<detail::TransportShared>(loop, clock, std::move(options))) {
#ifndef _WIN32
  // libuv writes to sockets with write(2): a peer that reset the connection would raise
  // SIGPIPE and kill the host. Ignore it unless the host installed its own handler.
  struct sigaction current;
  if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
    std::signal(SIGPIPE, SIG_IGN);
  }
#endif
}

UvTransport::~UvTransport() = default;

std::unique_ptr<Connection> UvTransport::connect(const Endpoint& remote,
                                                 const ConnectOptions& options,
                                                 ConnectionHandler& handler) {
  auto* state = new ConnState(shared_, handler, remote);
  auto connection = std::make_unique<UvConnection>(state);
  state->start(options);
  return connection;
}

uv_loop_t* UvTransport::loop() const noexcept {
  return shared_->loop;
}

void UvTransport::reload_tls() {
  shared_->tls.clear();
}

}  // namespace uv
}  // namespace mailq
