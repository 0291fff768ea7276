// SmtpListener: accepts TCP connections on a libuv loop and runs an SmtpServerSession on each.
//
// Lifetime: each connection's handles live in a heap `Conn` kept alive by its own `self`
// reference until the last close callback ran (libuv frees nothing itself). The host's
// `done` for a message holds only weak references, so it may run after the client vanished,
// after the listener was closed or destroyed: it then does nothing but count.
//
// Backpressure: a connection reads only while its session can consume (no message waiting
// for the host) and while less than kMaxQueuedOutput octets wait to be written; the session
// keeps at most one read's worth of pipelined input and a command line or two.

#include <sys/statvfs.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "mailq/net.h"
#include "mailq/uv/smtp_listener.h"
#include "mailq/uv/transport.h"
#include "uv/tls.h"

namespace mailq {
namespace uv {
namespace {

// Output not yet taken by the kernel beyond which we stop reading the client's commands.
constexpr std::size_t kMaxQueuedOutput = 64 * 1024;
constexpr std::size_t kReadBufferSize = 64 * 1024;
// After our last reply, how long we read (and drop) what the client still sends, so that
// closing does not turn into a reset that destroys the reply before the client reads it.
constexpr std::uint64_t kLingerMs = 2000;

std::string name_of(const sockaddr_storage& ss) {
  char name[64] = {};
  if (ss.ss_family == AF_INET6) {
    uv_ip6_name(reinterpret_cast<const sockaddr_in6*>(&ss), name, sizeof name);
  } else if (ss.ss_family == AF_INET) {
    uv_ip4_name(reinterpret_cast<const sockaddr_in*>(&ss), name, sizeof name);
  }
  return name;
}

std::string lower_message(std::error_code ec) {
  std::string m = ec.message();
  for (char& c : m) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return m;
}

}  // namespace

struct SmtpListener::Impl : std::enable_shared_from_this<Impl> {
  struct Conn;

  uv_loop_t* loop;
  SmtpListenerOptions options;
  SmtpServerSession::Callbacks callbacks;
  uv_tcp_t* listener = nullptr;  // freed by its close callback
  bool closing = false;
  std::vector<std::function<void()>> close_done;
  std::uint16_t port = 0;
  std::string where;           // "127.0.0.1:25", for the reports
  ErrorReporter own_reporter;  // when the host gave none
  SmtpListenerStats stats;
  std::unordered_set<Conn*> conns;
  std::shared_ptr<std::vector<char>> read_buffer =
      std::make_shared<std::vector<char>>(kReadBufferSize);
  std::shared_ptr<const detail::TlsConfig> tls_config;  // null: no STARTTLS

  // Timers that hold back a 535 (auth_failure_delay); closed unrun when the listener goes.
  struct Delay {
    uv_timer_t timer;
    std::function<void()> fn;
    Impl* owner;
  };
  std::unordered_set<Delay*> delays;

  void delay(Duration d, std::function<void()> fn) {
    auto* x = new Delay{};
    x->fn = std::move(fn);
    x->owner = this;
    x->timer.data = x;
    if (uv_timer_init(loop, &x->timer) != 0) {
      auto run = std::move(x->fn);
      delete x;
      run();
      return;
    }
    delays.insert(x);
    uv_timer_start(
        &x->timer,
        [](uv_timer_t* t) {
          auto* x = static_cast<Delay*>(t->data);
          auto run = std::move(x->fn);
          if (x->owner) x->owner->delays.erase(x);
          uv_close(reinterpret_cast<uv_handle_t*>(t),
                   [](uv_handle_t* h) { delete static_cast<Delay*>(h->data); });
          if (run) run();
        },
        static_cast<std::uint64_t>(d.count()), 0);
  }

  Impl(uv_loop_t* l, SmtpListenerOptions o, SmtpServerSession::Callbacks cb)
      : loop(l), options(std::move(o)), callbacks(std::move(cb)) {}

  void report(const std::string& message) {
    ErrorReporter* r = options.error_reporter ? options.error_reporter : &own_reporter;
    r->report("mailq SmtpListener: " + message, std::chrono::system_clock::now());
  }

  void event(const std::string& client, const std::string& what) {
    if (!options.on_session_event) return;
    // A logging callback must not take the listener down.
    try {
      options.on_session_event(client, what);
    } catch (const std::exception& e) {
      report(std::string("on_session_event threw: ") + e.what());
    } catch (...) {
      report("on_session_event threw a non-standard exception");
    }
  }

  // The reserve of free space (options.min_free_space): a refusal for MAIL, or nothing.
  bool storage_low = false;  // the last check found less than the reserve

  static std::string mib(std::uint64_t octets) { return std::to_string(octets >> 20) + " MiB"; }

  std::optional<Reply> check_storage(const std::string& client, std::uint64_t declared) {
    struct statvfs st {};
    // A file system that cannot tell (no statvfs, or no size: some FUSE mounts): the queue
    // says what it could not store.
    if (::statvfs(options.storage_path.c_str(), &st) != 0 || st.f_blocks == 0) return std::nullopt;
    const std::uint64_t free = static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
    const Reply refusal(452, "4.3.1", "Insufficient system storage");
    if (free < options.min_free_space) {
      ++stats.storage_refusals;
      if (!storage_low) {
        storage_low = true;
        event(client, "storage low: " + mib(free) +
                          " free on the queue's file system, under the "
                          "reserve of " +
                          mib(options.min_free_space) +
                          ": MAIL refused with 452 4.3.1 until there is room");
      }
      return refusal;
    }
    if (storage_low) {
      storage_low = false;
      event(client,
            "storage ok: " + mib(free) + " free on the queue's file system: accepting mail");
    }
    // Postfix's rule: room for one and a half times the declared size, besides the reserve.
    const std::uint64_t room = free - options.min_free_space;
    if (declared > room / 3 * 2) {
      ++stats.storage_refusals;
      event(client, "refuse: insufficient storage for SIZE=" + std::to_string(declared) + " (" +
                        mib(free) + " free on the queue's file system)");
      return refusal;
    }
    return std::nullopt;
  }

  void check_closed() {
    if (!closing || listener != nullptr || !conns.empty() || close_done.empty()) return;
    auto done = std::exchange(close_done, {});
    for (auto& d : done) {
      if (d) d();
    }
  }

  // --- one connection ------------------------------------------------------------------

  struct WriteReq {
    uv_write_t req;
    std::string data;
  };

  struct Conn : std::enable_shared_from_this<Conn> {
    Impl* owner;                 // null once the listener is destroyed
    std::shared_ptr<Conn> self;  // released by the last close callback
    std::shared_ptr<std::vector<char>> buffer;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown_req;
    int handles_open = 0;
    bool timer_init = false;
    bool tcp_init = false;
    std::unique_ptr<SmtpServerSession> session;
    std::string client;
    std::string reason;
    bool counted = false;  // in stats.sessions_open
    bool reading = false;
    bool eof = false;        // the client closed its side
    bool finishing = false;  // our side is done: shut down, lingering, or closing
    bool closing = false;    // uv_close called
    bool timer_running = false;
    std::unique_ptr<detail::TlsSession> tls;  // after STARTTLS
    bool tls_ready = false;                   // the handshake is done

    explicit Conn(Impl* o) : owner(o), buffer(o->read_buffer) {
      tcp.data = this;
      timer.data = this;
      shutdown_req.data = this;
    }

    bool init(uv_loop_t* loop) {
      if (uv_timer_init(loop, &timer) != 0) return false;
      timer_init = true;
      ++handles_open;
      if (uv_tcp_init(loop, &tcp) != 0) return false;
      tcp_init = true;
      ++handles_open;
      return true;
    }

    uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp); }

    // --- closing -----------------------------------------------------------------------

    static void on_closed(uv_handle_t* h) {
      auto* c = static_cast<Conn*>(h->data);
      if (--c->handles_open > 0) return;
      c->released();
    }

    void released() {
      Conn* c = this;
      std::shared_ptr<Conn> keep = std::move(c->self);  // freed at the end of this scope
      if (Impl* o = c->owner) {
        auto keep_owner = o->shared_from_this();
        o->conns.erase(c);
        if (c->counted) --o->stats.sessions_open;
        if (!c->client.empty()) o->event(c->client, "close: " + c->reason);
        o->check_closed();
      }
    }

    // Closes both handles at once (pending writes are cancelled).
    void close_now(std::string why = {}) {
      if (closing) return;
      closing = true;
      finishing = true;
      if (reason.empty()) reason = why.empty() ? "closed" : std::move(why);
      // The session stays until the handles are closed: this may run from inside one of its
      // calls (a synchronous `done` whose write failed). A late `done` finds `closing` set.
      if (handles_open == 0) {
        released();
        return;
      }
      if (timer_init) uv_close(reinterpret_cast<uv_handle_t*>(&timer), &Conn::on_closed);
      if (tcp_init) uv_close(reinterpret_cast<uv_handle_t*>(&tcp), &Conn::on_closed);
    }

    // Our last reply is queued: send FIN after it, then read and drop until the client
    // closes too (bounded by a timer).
    void finish(std::string why) {
      if (finishing) return;
      if (tls && tls_ready && !closing) {
        tls->close_notify();
        write(tls->take_output());
        if (closing) return;
      }
      finishing = true;
      if (reason.empty()) reason = std::move(why);
      const int r = uv_shutdown(&shutdown_req, stream(), &Conn::on_shutdown);
      if (r < 0) {
        close_now();
        return;
      }
      start_timer(kLingerMs);
      if (!reading && !eof) {
        if (uv_read_start(stream(), &Conn::on_alloc, &Conn::on_read) == 0) reading = true;
      }
    }

    static void on_shutdown(uv_shutdown_t* req, int status) {
      auto* c = static_cast<Conn*>(req->data);
      // Once our FIN is out and the client had closed already, nothing is left to wait for.
      if ((status < 0 || c->eof) && !c->closing) c->close_now();
    }

    // --- writing -----------------------------------------------------------------------

    void write(std::string data) {
      if (data.empty() || finishing) return;
      auto* w = new WriteReq{};
      w->data = std::move(data);
      w->req.data = this;
      uv_buf_t b = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
      const int r = uv_write(&w->req, stream(), &b, 1, &Conn::on_written);
      if (r < 0) {
        delete w;
        close_now("write failed: " + lower_message(error_from_uv(r)));
      }
    }

    static void on_written(uv_write_t* req, int status) {
      auto* w = reinterpret_cast<WriteReq*>(req);
      auto* c = static_cast<Conn*>(req->data);
      delete w;
      if (c->closing) return;
      if (status < 0) {
        c->close_now("write failed: " + lower_message(error_from_uv(status)));
        return;
      }
      c->update_reading();
    }

    // Sends protocol text: encrypted once TLS is up.
    void send(std::string text) {
      if (!tls_ready) return write(std::move(text));
      if (finishing || text.empty()) return;
      if (!tls->write(text)) return close_now("TLS write failed: " + tls->error());
      write(tls->take_output());
    }

    // Sends what the session produced; starts closing once the session is over.
    void flush() {
      if (!session || finishing) return;
      if (session->has_output()) send(session->take_output());
      if (closing) return;
      if (session->starting_tls() && !tls) {
        start_tls();
        if (closing) return;
      }
      if (session->closed()) {
        finish(session->close_reason());
        return;
      }
      update_reading();
    }

    // Reads only while the session can take input and the client reads its replies.
    void update_reading() {
      if (finishing || !session || eof) return;
      const bool waiting = session->waiting_for_host();
      const bool want = !waiting && uv_stream_get_write_queue_size(stream()) < kMaxQueuedOutput;
      if (want && !reading) {
        const int r = uv_read_start(stream(), &Conn::on_alloc, &Conn::on_read);
        if (r < 0) {
          close_now("read failed: " + lower_message(error_from_uv(r)));
          return;
        }
        reading = true;
      } else if (!want && reading) {
        uv_read_stop(stream());
        reading = false;
      }
      // The idle limit is the client's: it does not run while the host works on a message.
      if (waiting) {
        stop_timer();
      } else if (!timer_running && owner) {
        start_timer(static_cast<std::uint64_t>(owner->options.idle_timeout.count()));
      }
    }

    // --- TLS ---------------------------------------------------------------------------

    // The 220 to STARTTLS is queued (in the clear): what the client sends next is the
    // handshake.
    void start_tls() {
      auto config = owner ? owner->tls_config : nullptr;
      tls = std::make_unique<detail::TlsSession>();
      if (!config || !tls->setup_server(config)) {
        const std::string why = config ? tls->error() : std::string("no TLS configuration");
        if (owner) {
          ++owner->stats.tls_failures;
          owner->event(client, "tls failed: " + why);
        }
        close_now("TLS failed: " + why);
      }
    }

    // Ciphertext from the client: the handshake, then records for the session.
    void tls_input(std::string_view ciphertext) {
      tls->feed(ciphertext);
      if (!tls_ready) {
        const auto step = tls->handshake();
        write(tls->take_output());
        if (closing) return;
        if (step == detail::TlsSession::Step::again) return;
        if (step == detail::TlsSession::Step::failed) {
          if (owner) {
            ++owner->stats.tls_failures;
            owner->event(client, "tls failed: " + tls->error());
          }
          close_now("TLS handshake failed: " + tls->error());
          return;
        }
        tls_ready = true;
        const TlsInfo info = tls->info();
        const std::string description = info.version + " " + info.cipher;
        if (owner) {
          ++owner->stats.tls_handshakes;
          owner->event(client, "tls: " + description);
        }
        session->tls_started(description);
      }
      char plain[16 * 1024];
      for (;;) {
        const long n = tls->read(plain, sizeof plain);
        if (n > 0) {
          session->feed(std::string_view(plain, static_cast<std::size_t>(n)));
          if (closing || !session) return;
          continue;
        }
        write(tls->take_output());  // alerts
        if (n == detail::TlsSession::kWant) return;
        if (n == detail::TlsSession::kClosed) {
          // close_notify: the client is done sending, as with EOF.
          if (reading) uv_read_stop(stream());
          reading = false;
          eof = true;
          session->on_eof();
          return;
        }
        close_now("TLS read failed: " + tls->error());
        return;
      }
    }

    // --- reading -----------------------------------------------------------------------

    static void on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
      auto* c = static_cast<Conn*>(h->data);
      *buf = uv_buf_init(c->buffer->data(), static_cast<unsigned>(c->buffer->size()));
    }

    static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
      auto* c = static_cast<Conn*>(s->data);
      if (nread == 0 || c->closing) return;
      if (nread < 0) {
        if (c->finishing || nread == UV_EOF) {
          if (c->finishing || !c->session) {
            c->close_now();
            return;
          }
          // The client is done sending; what it sent before is still answered (flush closes
          // once the session is over, possibly after the host's `done`).
          uv_read_stop(c->stream());
          c->reading = false;
          c->eof = true;
          c->session->on_eof();
          c->flush();
          return;
        }
        c->close_now("read failed: " + lower_message(error_from_uv(static_cast<int>(nread))));
        return;
      }
      if (c->finishing || !c->session) return;  // lingering: dropped
      c->restart_idle_timer();
      auto keep = c->self;  // a synchronous `done` may flush and even close us
      const std::string_view bytes(buf->base, static_cast<std::size_t>(nread));
      if (c->tls) {
        c->tls_input(bytes);
        if (c->closing) return;
      } else {
        c->session->feed(bytes);
      }
      c->flush();
    }

    // --- timers ------------------------------------------------------------------------

    void start_timer(std::uint64_t ms) {
      uv_timer_start(&timer, &Conn::on_timer, ms, 0);
      timer_running = true;
    }
    void stop_timer() {
      uv_timer_stop(&timer);
      timer_running = false;
    }
    void restart_idle_timer() {
      if (owner && session && !session->waiting_for_host()) {
        start_timer(static_cast<std::uint64_t>(owner->options.idle_timeout.count()));
      }
    }

    static void on_timer(uv_timer_t* t) {
      auto* c = static_cast<Conn*>(t->data);
      c->timer_running = false;
      if (c->closing) return;
      if (c->finishing) {
        c->close_now();  // the linger period is over
        return;
      }
      if (c->session && c->session->waiting_for_host()) return;
      if (c->tls && !c->tls_ready) {
        c->close_now("idle timeout in the TLS handshake");  // no reply can be sent
        return;
      }
      const std::string host = c->owner ? c->owner->options.server.hostname : "localhost";
      c->send("421 4.4.2 " + host + " Error: timeout exceeded\r\n");
      if (c->closing) return;
      c->finish("idle timeout");
    }

    // Called after the host's `done` ran.
    void after_host() {
      if (closing) return;
      auto keep = self;
      flush();
    }
  };

  // --- accepting -----------------------------------------------------------------------

  static void on_connection(uv_stream_t* server, int status) {
    auto* impl = static_cast<Impl*>(server->data);
    if (impl == nullptr) return;
    auto keep = impl->shared_from_this();
    if (status < 0) {
      impl->report("accept on " + impl->where + ": " + lower_message(error_from_uv(status)));
      return;
    }
    impl->accept(server);
  }

  void accept(uv_stream_t* server) {
    auto conn = std::make_shared<Conn>(this);
    conn->self = conn;
    Conn* c = conn.get();
    conns.insert(c);
    if (!c->init(loop)) {
      c->close_now("cannot create a handle");
      return;
    }
    int r = uv_accept(server, c->stream());
    if (r < 0) {
      report("accept on " + where + ": " + lower_message(error_from_uv(r)));
      c->close_now("accept failed");
      return;
    }
    sockaddr_storage ss;
    int len = sizeof ss;
    std::memset(&ss, 0, sizeof ss);
    if (uv_tcp_getpeername(&c->tcp, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
      c->client = name_of(ss);
    }
    if (c->client.empty()) c->client = "unknown";
    uv_tcp_nodelay(&c->tcp, 1);

    bool allowed = false;
    try {
      allowed =
          options.allow_client ? options.allow_client(c->client) : is_loopback_address(c->client);
    } catch (...) {
      allowed = false;  // a failing policy refuses: never an open relay by accident
    }
    if (!allowed) {
      ++stats.sessions_refused;
      event(c->client, "reject: not allowed");
      c->reason = "not allowed";
      c->write("554 5.7.1 " + c->client + " not allowed to submit mail\r\n");
      c->finish("not allowed");
      return;
    }
    if (closing || stats.sessions_open >= options.max_sessions) {
      ++stats.sessions_refused;
      event(c->client, closing ? "reject: shutting down" : "reject: too many sessions");
      c->write("421 4.3.2 " + options.server.hostname +
               (closing ? " Service shutting down\r\n" : " too many sessions\r\n"));
      c->finish(closing ? "shutting down" : "too many sessions");
      return;
    }

    ++stats.sessions_accepted;
    ++stats.sessions_open;
    c->counted = true;
    event(c->client, "connect");

    std::weak_ptr<Conn> weak_conn = conn;
    std::weak_ptr<Impl> weak_impl = weak_from_this();
    SmtpServerSession::Callbacks cb;
    cb.check_recipient = callbacks.check_recipient;
    cb.on_message = [weak_conn, weak_impl](ReceivedMessage m, std::function<void(Reply)> done) {
      auto impl = weak_impl.lock();
      if (!impl) return;  // no host any more: the session is being torn down
      ++impl->stats.messages_received;
      auto called = std::make_shared<bool>(false);
      auto wrapped = [weak_conn, weak_impl, called, done = std::move(done)](Reply r) {
        if (*called) return;
        *called = true;
        if (r.positive()) {
          if (auto i = weak_impl.lock()) ++i->stats.messages_accepted;
        }
        done(std::move(r));  // does nothing when the session is gone
        if (auto c = weak_conn.lock()) c->after_host();
      };
      if (!impl->callbacks.on_message) {
        wrapped(Reply(451, "4.3.0", "Error: no queue to accept the message, try again later"));
        return;
      }
      impl->callbacks.on_message(std::move(m), std::move(wrapped));
    };
    if (options.min_free_space > 0 && !options.storage_path.empty()) {
      const std::string client = c->client;
      cb.check_sender = [weak_impl, client, host = callbacks.check_sender](const SenderCheck& s) {
        if (auto impl = weak_impl.lock()) {
          if (auto refusal = impl->check_storage(client, s.size)) return *refusal;
        }
        return host ? host(s) : Reply(250, "2.1.0", "Ok");
      };
    } else {
      cb.check_sender = callbacks.check_sender;
    }
    if (callbacks.authenticate) {
      const std::string client = c->client;
      cb.authenticate = [weak_conn, weak_impl, client](AuthRequest request,
                                                       std::function<void(AuthVerdict)> done) {
        auto impl = weak_impl.lock();
        if (!impl) return;  // no host any more: the session is being torn down
        auto called = std::make_shared<bool>(false);
        auto finish = [weak_conn, weak_impl, client, user = request.user,
                       done = std::move(done)](AuthVerdict verdict) {
          if (auto i = weak_impl.lock()) {
            if (verdict == AuthVerdict::accepted) ++i->stats.auth_successes;
            if (verdict == AuthVerdict::rejected) ++i->stats.auth_failures;
            i->event(client, (verdict == AuthVerdict::accepted   ? "auth: "
                              : verdict == AuthVerdict::rejected ? "auth failed: "
                                                                 : "auth unavailable: ") +
                                 user);
          }
          done(verdict);
          if (auto c = weak_conn.lock()) c->after_host();
        };
        auto wrapped = [weak_impl, called, finish](AuthVerdict verdict) {
          if (*called) return;
          *called = true;
          auto i = weak_impl.lock();
          if (i && verdict == AuthVerdict::rejected && i->options.auth_failure_delay.count() > 0) {
            i->delay(i->options.auth_failure_delay, [finish, verdict] { finish(verdict); });
            return;
          }
          finish(verdict);
        };
        try {
          impl->callbacks.authenticate(std::move(request), wrapped);
        } catch (...) {
          wrapped(AuthVerdict::unavailable);
        }
      };
    }
    SmtpServerConfig config = options.server;
    config.starttls = tls_config != nullptr;
    if (options.trusted_client) {
      bool trusted = false;
      try {
        trusted = options.trusted_client(c->client);
      } catch (...) {
        trusted = false;  // a failing policy asks for AUTH
      }
      if (!trusted) config.auth.required = true;
    }
    c->session = std::make_unique<SmtpServerSession>(std::move(config), std::move(cb), c->client);
    c->session->start();
    c->flush();
  }

  // --- the listening socket ----------------------------------------------------------------

  static void on_listener_closed(uv_handle_t* h) {
    auto* impl = static_cast<Impl*>(h->data);
    delete reinterpret_cast<uv_tcp_t*>(h);
    if (impl == nullptr) return;
    auto keep = impl->shared_from_this();
    impl->listener = nullptr;
    impl->check_closed();
  }

  void close_listener() {
    if (listener && !uv_is_closing(reinterpret_cast<uv_handle_t*>(listener))) {
      uv_close(reinterpret_cast<uv_handle_t*>(listener), &Impl::on_listener_closed);
    }
  }

  // Binds and listens; called once, by `open`.
  Result<void> start() {
    const std::string host =
        options.host.size() >= 2 && options.host.front() == '[' && options.host.back() == ']'
            ? options.host.substr(1, options.host.size() - 2)
            : options.host;
    where = HostPort{host, options.port}.to_string();
    auto fail = [&](std::error_code ec, const std::string& what) {
      close_listener();
      return Result<void>(Error(ec, "listen " + where + ": " + what));
    };
    if (!options.tls_certificate_file.empty() || !options.tls_key_file.empty()) {
      if (options.tls_certificate_file.empty() || options.tls_key_file.empty()) {
        return fail(make_error_code(errc::invalid_parameter),
                    "STARTTLS needs both a certificate file and a key file");
      }
      std::string why;
      tls_config =
          detail::load_server_tls(options.tls_certificate_file, options.tls_key_file, &why);
      if (!tls_config) return fail(make_error_code(errc::invalid_parameter), why);
    }
    sockaddr_storage addr;
    std::memset(&addr, 0, sizeof addr);
    int r = host.find(':') != std::string::npos
                ? uv_ip6_addr(host.c_str(), options.port, reinterpret_cast<sockaddr_in6*>(&addr))
                : uv_ip4_addr(host.c_str(), options.port, reinterpret_cast<sockaddr_in*>(&addr));
    if (r != 0) {
      return fail(make_error_code(errc::invalid_parameter),
                  "\"" + host + "\" is not a numeric IPv4 or IPv6 address");
    }
    listener = new uv_tcp_t;
    r = uv_tcp_init_ex(loop, listener, addr.ss_family);
    if (r < 0) {
      delete listener;
      listener = nullptr;
      return fail(error_from_uv(r), lower_message(error_from_uv(r)));
    }
    listener->data = this;
    r = uv_tcp_bind(listener, reinterpret_cast<const sockaddr*>(&addr), 0);
    if (r == 0) {
      r = uv_listen(reinterpret_cast<uv_stream_t*>(listener), options.backlog,
                    &Impl::on_connection);
    }
    if (r < 0) return fail(error_from_uv(r), lower_message(error_from_uv(r)));
    sockaddr_storage bound;
    int len = sizeof bound;
    if (uv_tcp_getsockname(listener, reinterpret_cast<sockaddr*>(&bound), &len) == 0) {
      port = ntohs(bound.ss_family == AF_INET6
                       ? reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port
                       : reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);
      where = HostPort{host, port}.to_string();
    }
    return success();
  }

  void close(std::function<void()> done) {
    close_done.push_back(std::move(done));
    closing = true;
    close_listener();
    // Copy: a session may close (and leave `conns`) while we walk.
    std::vector<std::weak_ptr<Conn>> all;
    for (Conn* c : conns) all.push_back(c->self);
    for (auto& w : all) {
      if (auto c = w.lock()) {
        if (c->tls && !c->tls_ready) {
          c->close_now("shutdown during the TLS handshake");  // nothing to finish yet
        } else if (c->session && !c->finishing) {
          c->session->shutdown();
          c->flush();
        }
      }
    }
    check_closed();
  }

  void destroy() {
    closing = true;
    close_done.clear();
    for (Delay* x : std::exchange(delays, {})) {
      x->owner = nullptr;
      x->fn = nullptr;
      uv_timer_stop(&x->timer);
      uv_close(reinterpret_cast<uv_handle_t*>(&x->timer),
               [](uv_handle_t* h) { delete static_cast<Delay*>(h->data); });
    }
    if (listener) {
      listener->data = nullptr;
      if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(listener))) {
        uv_close(reinterpret_cast<uv_handle_t*>(listener), &Impl::on_listener_closed);
      }
      listener = nullptr;
    }
    auto all = std::exchange(conns, {});
    for (Conn* c : all) {
      c->owner = nullptr;
      c->close_now("listener destroyed");
    }
  }
};

SmtpListener::SmtpListener(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {
#ifndef _WIN32
  // A client that resets the connection must not kill the host with SIGPIPE on our next write.
  struct sigaction current;
  if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
    std::signal(SIGPIPE, SIG_IGN);
  }
#endif
}

SmtpListener::~SmtpListener() {
  impl_->destroy();
}

Result<std::unique_ptr<SmtpListener>> SmtpListener::open(uv_loop_t* loop,
                                                         SmtpListenerOptions options,
                                                         SmtpServerSession::Callbacks callbacks) {
  std::unique_ptr<SmtpListener> listener(
      new SmtpListener(std::make_shared<Impl>(loop, std::move(options), std::move(callbacks))));
  // On failure the destructor closes what start() opened.
  if (auto started = listener->impl_->start(); !started) return started.error();
  return Result<std::unique_ptr<SmtpListener>>(std::move(listener));
}

std::uint16_t SmtpListener::port() const noexcept {
  return impl_->port;
}

void SmtpListener::close(std::function<void()> done) {
  impl_->close(std::move(done));
}

SmtpListenerStats SmtpListener::stats() const {
  return impl_->stats;
}

Result<std::string> check_tls_files(const std::string& certificate_file,
                                    const std::string& key_file) {
  std::string why;
  auto config = detail::load_server_tls(certificate_file, key_file, &why);
  if (!config) return Error(make_error_code(errc::invalid_parameter), why);
  return detail::server_tls_summary(*config);
}

Result<void> SmtpListener::reload_tls() {
  const SmtpListenerOptions& o = impl_->options;
  if (!impl_->tls_config) return success();
  std::string why;
  auto fresh = detail::load_server_tls(o.tls_certificate_file, o.tls_key_file, &why);
  if (!fresh) return Error(make_error_code(errc::invalid_parameter), why);
  impl_->tls_config = std::move(fresh);
  return success();
}

std::string SmtpListener::tls_certificate() const {
  return impl_->tls_config ? detail::server_tls_summary(*impl_->tls_config) : std::string();
}

}  // namespace uv
}  // namespace mailq
