// mailq-relay — the daemon's wiring (see relay.h).
#include "examples/relay/relay.h"

#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>

#include "examples/relay/commands.h"
#include "examples/relay/control.h"
#include "examples/relay/maildrop.h"
#include "examples/relay/metrics.h"
#include "mailq/ares/resolver.h"
#include "mailq/deliverer.h"
#include "mailq/domain_state.h"
#include "mailq/log.h"
#include "mailq/queue.h"
#include "mailq/spool/file_spool.h"
#include "mailq/spool/layout.h"
#include "mailq/uv/credentials.h"
#include "mailq/uv/loop_clock.h"
#include "mailq/uv/mta_sts.h"
#include "mailq/uv/smtp_listener.h"
#include "mailq/uv/transport.h"

namespace mailq::relay {

namespace {

// The source channel of messages received by the listener and by `submit`, in the E records.
constexpr const char* kListenerChannel = "tcp_smtp";
constexpr const char* kSubmitChannel = "local";
constexpr const char* kRelayChannel = "mailq-relay";
// --once: how often the relay looks whether anything is left to do.
constexpr std::uint64_t kOnceCheckMs = 100;

// A uv handle on the heap, freed by its close callback.
template <class H>
H* new_handle() {
  return new H{};
}
template <class H>
void close_handle(H*& h) {
  if (!h) return;
  auto* handle = reinterpret_cast<uv_handle_t*>(h);
  handle->data = nullptr;
  if (!uv_is_closing(handle))
    uv_close(handle, [](uv_handle_t* x) { delete reinterpret_cast<H*>(x); });
  h = nullptr;
}

// Recipients whose route the configuration no longer has: said once per start.
std::string rerouted_notice(const RecoveryReport& report) {
  std::string names;
  for (const auto& n : report.gone_routes) names += (names.empty() ? "" : ", ") + n;
  return fmt::format(
      "spool recovery: {} {} routed again by the route table: route{} {} not configured any "
      "more",
      report.rerouted, report.rerouted == 1 ? "recipient" : "recipients",
      report.gone_routes.size() == 1 ? "" : "s", names);
}

std::string messages(std::size_t n) {
  return fmt::format("{} {}", n, n == 1 ? "message" : "messages");
}

bool in_networks(const std::vector<Network>& networks, const std::string& address) {
  for (const auto& n : networks)
    if (n.contains(address)) return true;
  return false;
}

}  // namespace

struct Relay::Impl {
  uv_loop_t* loop;
  RelayConfig config;
  RelayOptions options;

  Error error;
  int start_status = kExitOk;

  // The log.
  std::FILE* log_file = nullptr;  // null: standard output
  bool log_to_stdout = true;
  std::unique_ptr<MessagingServerLog> log;
  FanoutSink fanout;
  // What the adapters cannot hand back (a callback that threw) becomes a notice, rate limited
  // across all of them.
  ErrorReporter reporter{[this](const std::string& m) { notice(m); }};
  // The spool's errors. A full disk fails every write while it lasts, and the engine logs
  // what each failure did to its message: the same cause (the system's error, the text after
  // the last ": ") is said once in kErrorReportInterval, with how many more there were.
  struct {
    std::string cause;
    std::chrono::steady_clock::time_point said{};
    std::uint64_t more = 0;
  } spool_errors;
  void spool_error(const std::string& message) {
    const auto colon = message.rfind(": ");
    const std::string cause = colon == std::string::npos ? message : message.substr(colon + 2);
    const auto now = std::chrono::steady_clock::now();
    if (cause == spool_errors.cause && now - spool_errors.said < kErrorReportInterval) {
      ++spool_errors.more;
      return;
    }
    std::string line = "spool: " + message;
    if (spool_errors.more > 0)
      line += " (" + std::to_string(spool_errors.more) +
              " more like the previous spool error were not logged)";
    spool_errors = {cause, now, 0};
    notice(line);
  }

  std::unique_ptr<uv::LoopClock> clock;
  std::unique_ptr<spool::DurableStorage> spool;
  std::unique_ptr<ares::AresResolver> resolver;
  std::unique_ptr<uv::UvTransport> transport;
  std::optional<RouteTable> routes;
  std::unique_ptr<Metrics> metrics;
  std::unique_ptr<Queue> queue;
  std::shared_ptr<uv::MtaStsSource> mta_sts;  // [mta_sts]; on the resolver and transport
  std::unique_ptr<Deliverer> deliverer;
  std::unique_ptr<uv::SmtpListener> listener;
  std::shared_ptr<const uv::PasswordFile> credentials;  // [listen.auth]; swapped on SIGHUP
  std::unique_ptr<ControlServer> control;
  std::unique_ptr<MaildropPickup> maildrop;
  std::unique_ptr<MetricsServer> metrics_server;

  uv_signal_t* sig_term = nullptr;
  uv_signal_t* sig_int = nullptr;
  uv_signal_t* sig_hup = nullptr;
  uv_timer_t* once_timer = nullptr;
  TimePoint pass_start{};  // --single-pass: what was due then is tried, once
  int once_quiet_checks = 0;

  bool started = false;
  bool stopping = false;
  bool finished = false;
  bool listener_closed = true;
  bool deliverer_stopped = true;
  int exit_status = kExitOk;
  std::function<void(int)> on_finished;

  Impl(uv_loop_t* l, RelayConfig c, RelayOptions o) : loop(l), config(std::move(c)), options(o) {}

  ~Impl() {
    teardown();
    // The sinks go last: teardown may still log.
    if (log_file) std::fclose(log_file);
  }

  std::error_code fail(int status, Error e) {
    start_status = status;
    error = std::move(e);
    if (log) notice("not started: " + error.message);
    teardown();
    return error.code ? error.code : make_error_code(errc::bad_state);
  }

  // --- the log ------------------------------------------------------------------------------

  void write_log(const std::string& text) {
    std::FILE* out = log_file ? log_file : stdout;
    std::fwrite(text.data(), 1, text.size(), out);
    std::fflush(out);  // a record is visible (and survives a crash) once written
  }

  std::error_code open_log() {
    log_to_stdout = config.log.empty() || config.log == "-";
    if (!log_to_stdout) {
      log_file = std::fopen(config.log.c_str(), "ae");
      if (!log_file) {
        const int e = errno;
        error = Error(std::error_code(e, std::generic_category()),
                      "open log " + config.log + ": " + std::strerror(e));
        return error.code;
      }
    }
    LogFormat format;
    log = std::make_unique<MessagingServerLog>([this](const std::string& text) { write_log(text); },
                                               format);
    fanout.add(*log);
    return {};
  }

  std::error_code reopen_log() {
    if (log_to_stdout) return {};
    std::FILE* f = std::fopen(config.log.c_str(), "ae");
    if (!f) {
      const int e = errno;
      const std::string text = "reopen log " + config.log + ": " + std::strerror(e) +
                               " (still writing to the previous file)";
      notice(text);
      std::fprintf(stderr, "mailq-relay: %s\n", text.c_str());
      return std::error_code(e, std::generic_category());
    }
    std::FILE* old = log_file;
    log_file = f;
    if (old) std::fclose(old);
    notice("log reopened");
    return {};
  }

  void notice(const std::string& text) {
    Event e;
    e.kind = EventKind::notice;
    e.time = clock ? clock->now() : std::chrono::system_clock::now();
    e.source_channel = kRelayChannel;
    e.diagnostic.push_back(text);
    fanout.on_event(e);
  }

  // --- start --------------------------------------------------------------------------------

  std::error_code start() {
    if (started) return make_error_code(errc::bad_state);
    started = true;
    if (auto ec = open_log()) return fail(kExitCantCreate, error);

    clock = std::make_unique<uv::LoopClock>(loop, &reporter);

    spool::SpoolOptions so;
    so.on_error = [this](const Error& e) { spool_error(e.message); };
    spool::SegmentOptions sego;
    sego.on_error = so.on_error;
    const auto opening = std::chrono::steady_clock::now();
    const spool::Layout layout = spool::choose_layout(config.spool, config.spool_layout);
    auto opened = spool::open_spool(config.spool, *clock, layout, so, sego);
    // The recovery time the started notice gives: opening the spool and loading it, not the
    // sockets and the resolver set up between.
    std::chrono::steady_clock::duration recovery = std::chrono::steady_clock::now() - opening;
    if (!opened) {
      const bool locked = opened.error().code == errc::in_use;
      std::string hint = locked ? " (is another mailq-relay running on it?)" : "";
      if (auto found = spool::detect_layout(config.spool); found && *found != layout)
        hint = fmt::format(" (set spool_layout = \"{}\" to run on it)", spool::to_string(*found));
      return fail(locked ? kExitUnavailable : kExitCantCreate,
                  Error(opened.error().code, opened.error().message + hint));
    }
    spool = std::move(opened.value());

    auto routes_result = config.route_table();
    if (!routes_result) return fail(kExitConfig, routes_result.error());
    routes.emplace(std::move(routes_result.value()));

    ares::AresResolverOptions ro = config.resolver;
    ro.error_reporter = &reporter;
    auto res = ares::AresResolver::open(loop, *clock, ro);
    if (!res) return fail(kExitConfig, Error(res.error().code, "resolver: " + res.error().message));
    resolver = std::move(res.value());

    uv::UvTransportOptions to;
    to.error_reporter = &reporter;
    transport = std::make_unique<uv::UvTransport>(loop, *clock, to);

    QueueConfig qc = config.queue;
    qc.error_reporter = &reporter;  // one rate limit for the adapters and the queue
    queue = std::make_unique<Queue>(*spool, *routes, *clock, &fanout, qc);
    metrics = std::make_unique<Metrics>(queue.get());
    fanout.add(*metrics);

    // The sockets first, so that a busy port or a live relay stops us before any delivery.
    if (!options.once) {
      control = std::make_unique<ControlServer>(
          loop, config.control,
          [this](ControlRequest request, std::function<void(ControlResponse)> respond) {
            on_control(std::move(request), std::move(respond));
          },
          config.listen.max_message_size);
      if (auto ec = control->start()) {
        const int status = ec == std::errc::address_in_use ? kExitUnavailable : kExitCantCreate;
        return fail(status, control->last_error());
      }
      note_control_path();
      if (!config.listen.address.empty()) {
        if (auto ec = start_listener()) return ec;
      }
      if (!config.metrics.empty()) {
        auto hp = HostPort::parse(config.metrics);
        if (!hp)
          return fail(kExitConfig,
                      Error(errc::invalid_parameter, "metrics: " + hp.error().message));
        metrics_server = std::make_unique<MetricsServer>(loop, hp->host, hp->port,
                                                         [this] { return render_metrics(); });
        if (auto ec = metrics_server->start()) {
          Error e = metrics_server->last_error();
          if (e.message.empty()) e.message = "metrics " + config.metrics + ": " + ec.message();
          return fail(kExitUnavailable, e);
        }
      }
    }

    RecoveryReport report;
    const auto loading = std::chrono::steady_clock::now();
    auto recovered = queue->recover(&report);
    recovery += std::chrono::steady_clock::now() - loading;
    if (!recovered) {
      const Error& e = recovered.error();
      return fail(kExitCantCreate,
                  Error(e.code, "recover spool " + config.spool + ": " +
                                    (e.message.empty() ? e.code.message() : e.message)));
    }
    for (const auto& p : report.problems) notice("spool recovery: " + p);
    if (report.rerouted) notice(rerouted_notice(report));

    DelivererConfig dc = config.deliverer;
    dc.domain_state = config.domain_state;
    // --once ends with its last job: a connection with nothing to do says QUIT at once rather
    // than wait [delivery] idle_timeout for work that will not come.
    if (options.once) dc.idle_timeout = Duration{0};
    if (config.mta_sts) {
      auto sts = uv::MtaStsSource::open(*resolver, *transport, *clock, *config.mta_sts);
      if (!sts)
        return fail(kExitCantCreate, Error(sts.error().code, "mta_sts: " + sts.error().message));
      mta_sts = std::move(sts.value());
      dc.mta_sts = mta_sts;
    }
    deliverer = std::make_unique<Deliverer>(*queue, *resolver, *transport, dc);
    deliverer_stopped = false;

    if (options.handle_signals) install_signals();

    const double recovery_seconds = std::chrono::duration<double>(recovery).count();
    std::string what =
        fmt::format("started: spool {} ({}), {} recovered in {:.2f} s", config.spool,
                    spool::to_string(layout), messages(report.recovered), recovery_seconds);
    if (report.quarantined) what += fmt::format(", {} quarantined", report.quarantined);
    if (listener) what += fmt::format(", listening on {}", config.listen.address);
    if (control) what += ", control " + config.control;
    if (metrics_server) what += ", metrics " + config.metrics;
    if (options.once) what += ", --once";
    notice(what);
    for (const auto& w : config_warnings(config)) notice("configuration: " + w);

    deliverer->start();
    if (options.once && options.single_pass) {
      pass_start = clock->now();
      deliverer->limit_to_due_by(pass_start);
    }

    // What mailq-send left in the maildrop, now and as it comes.
    MaildropPickup::Options mo;
    mo.spool = config.spool;
    mo.source_channel = kSubmitChannel;
    if (config.queue.max_message_size != 0)
      mo.max_file_size = config.queue.max_message_size + (1u << 20);  // the envelope's room
    mo.notice = [this](const std::string& m) { notice(m); };
    maildrop = std::make_unique<MaildropPickup>(loop, *queue, mo);
    if (auto started_pickup = maildrop->start(); !started_pickup)
      notice("maildrop: " + started_pickup.error().message);
    if (options.once) start_once_watch();
    return {};
  }

  // SIGHUP: the log file, the listener's certificate and the credentials are opened again
  // (for logrotate, a renewed certificate, a changed password). What cannot be read keeps its
  // previous version, with a notice.
  void reload() {
    (void)reopen_log();
    if (listener && !config.listen.tls_certificate.empty()) {
      if (auto r = listener->reload_tls(); !r) {
        notice("listener: TLS certificate not reloaded (the previous one stays): " +
               r.error().message);
      } else {
        notice("listener: TLS certificate reloaded: " + listener->tls_certificate());
      }
    }
    if (!config.listen.auth_credentials.empty()) {
      if (auto loaded = load_credentials(); !loaded) {
        notice("listener: credentials not reloaded (the previous ones stay): " +
               loaded.error().message);
      } else {
        credentials = std::move(loaded.value());
      }
    }
  }

  Result<std::shared_ptr<const uv::PasswordFile>> load_credentials() {
    auto loaded = uv::PasswordFile::load(config.listen.auth_credentials);
    if (!loaded) return loaded;
    notice(fmt::format("listener: credentials {}: {} user{}{}", config.listen.auth_credentials,
                       loaded.value()->size(), loaded.value()->size() == 1 ? "" : "s",
                       loaded.value()->world_readable()
                           ? " (warning: the file is readable by every user: chmod o-r)"
                           : ""));
    return loaded;
  }

  // [listen.tls] and [listen.auth] on the listener's options and callbacks.
  std::error_code secure_listener(uv::SmtpListenerOptions& lo, SmtpServerSession::Callbacks& cb) {
    const ListenConfig& l = config.listen;
    lo.tls_certificate_file = l.tls_certificate;
    lo.tls_key_file = l.tls_key;
    lo.server.require_tls = l.tls_required;
    if (l.auth_credentials.empty()) return {};
    auto loaded = load_credentials();
    if (!loaded) return fail(kExitConfig, loaded.error());
    credentials = std::move(loaded.value());
    lo.server.auth.enabled = true;
    lo.server.auth.required = l.auth_required;
    lo.server.auth.allow_plaintext = l.auth_plaintext;
    lo.server.auth.max_failures = l.auth_max_failures;
    // Who may connect: the relay networks and those who may authenticate. Who may send
    // without AUTH: the relay networks (nobody with auth.required).
    lo.allow_client = [networks = l.networks, auth_clients = l.auth_clients](const std::string& a) {
      return in_networks(networks, a) || in_networks(auth_clients, a);
    };
    lo.trusted_client = [networks = l.networks](const std::string& a) {
      return in_networks(networks, a);
    };
    cb.authenticate = uv::password_authenticator(loop, [this] { return credentials; });
    cb.check_sender = [this](const SenderCheck& c) {
      if (c.auth_user.empty() || !credentials ||
          credentials->may_send_as(c.auth_user, c.reverse_path))
        return Reply(250, "2.1.0", "Ok");
      // Postfix's reject_sender_login_mismatch, in its words.
      return Reply(
          553, "5.7.1",
          fmt::format("<{}>: Sender address rejected: not owned by user {}",
                      c.reverse_path ? c.reverse_path->to_string() : std::string(), c.auth_user));
    };
    return {};
  }

  std::error_code start_listener() {
    uv::SmtpListenerOptions lo;
    lo.host = config.listen.host;
    lo.port = config.listen.port;
    lo.server.hostname = config.helo;
    lo.server.limits.max_message_size = config.listen.max_message_size;
    lo.server.limits.max_recipients = config.listen.max_recipients;
    lo.server.limits.max_received_headers = config.listen.max_received_headers;
    lo.max_sessions = config.listen.max_sessions;
    lo.idle_timeout = config.listen.idle_timeout;
    lo.storage_path = config.spool;
    lo.min_free_space = config.listen.min_free_space;
    lo.allow_client = [networks = config.listen.networks](const std::string& a) {
      return in_networks(networks, a);
    };
    lo.on_session_event = [this](const std::string& client, const std::string& what) {
      // Connects, TLS, logins and clean closes are routine; refusals and failures are worth a
      // line (failed logins are what fail2ban and operators look for).
      if (what.rfind("reject", 0) == 0 || what.rfind("refuse", 0) == 0 ||
          what.rfind("tls failed", 0) == 0 || what.rfind("auth failed", 0) == 0 ||
          what.rfind("auth unavailable", 0) == 0 || what.rfind("storage", 0) == 0)
        notice("listener: " + client + " " + what);
    };
    SmtpServerSession::Callbacks cb;
    cb.on_message = [this](ReceivedMessage m, std::function<void(Reply)> done) {
      on_received(std::move(m), std::move(done));
    };
    if (auto ec = secure_listener(lo, cb)) return ec;
    lo.error_reporter = &reporter;
    const bool bad_tls_files = !lo.tls_certificate_file.empty();
    auto opened = uv::SmtpListener::open(loop, lo, cb);
    if (!opened) {
      const bool config_error = bad_tls_files && opened.error().code == errc::invalid_parameter;
      return fail(config_error ? kExitConfig : kExitUnavailable, opened.error());
    }
    listener = std::move(opened.value());
    if (!config.listen.tls_certificate.empty())
      notice("listener: STARTTLS with " + listener->tls_certificate());
    listener_closed = false;
    return {};
  }

  void install_signals() {
    auto start = [this](uv_signal_t*& h, int signum, uv_signal_cb cb) {
      h = new_handle<uv_signal_t>();
      uv_signal_init(loop, h);
      h->data = this;
      uv_signal_start(h, cb, signum);
    };
    start(sig_term, SIGTERM, [](uv_signal_t* h, int) {
      if (auto* self = static_cast<Impl*>(h->data)) self->shutdown("SIGTERM");
    });
    start(sig_int, SIGINT, [](uv_signal_t* h, int) {
      if (auto* self = static_cast<Impl*>(h->data)) self->shutdown("SIGINT");
    });
    start(sig_hup, SIGHUP, [](uv_signal_t* h, int) {
      if (auto* self = static_cast<Impl*>(h->data)) self->reload();
    });
  }

  // --- receiving ----------------------------------------------------------------------------

  void on_received(ReceivedMessage m, std::function<void(Reply)> done) {
    if (!queue) return done(Reply(421, "4.3.2", "Service shutting down"));
    EnqueueOptions eo;
    eo.source_channel = kListenerChannel;
    // The trace field RFC 5321 §4.4 asks of every server that accepts a message, naming
    // the queue id the message gets.
    eo.id = queue->reserve_id();
    std::string body = received_header(m, config.helo, eo.id.to_string(), clock->now());
    body += m.body;
    queue->enqueue(
        m.envelope, std::move(body),
        [done = std::move(done)](Result<MessageId> r) {
          if (r)
            done(Reply(250, "2.0.0", "Ok: queued as " + r.value().to_string()));
          else
            done(enqueue_refusal(r.error()));
        },
        eo);
  }

  void on_control(ControlRequest request, std::function<void(ControlResponse)> respond) {
    if (stopping || !queue) return respond(ControlResponse::failure("the relay is shutting down"));
    if (request.argv[0] == "submit") return submit(std::move(request), std::move(respond));
    CommandContext ctx{*queue, *clock, deliverer ? &deliverer->domains() : nullptr, deliverer.get(),
                       [this] { return extra_status(); }};
    respond(execute_command(ctx, request.argv));
  }

  void submit(ControlRequest request, std::function<void(ControlResponse)> respond) {
    // "submit SIZE FROM RCPT..." (the wire parser checked the shape and the size).
    std::string from = request.argv[2];
    if (from == "<>") from.clear();
    std::vector<std::string> to(request.argv.begin() + 3, request.argv.end());
    auto env = make_envelope(from, to);
    if (!env) return respond(ControlResponse::failure("submit: " + env.error().message));
    EnqueueOptions eo;
    eo.source_channel = kSubmitChannel;
    queue->enqueue(
        env.value(), std::move(request.body),
        [respond](Result<MessageId> r) {
          if (r)
            respond(ControlResponse::success(r.value().to_string() + "\n"));
          else
            respond(ControlResponse::failure("submit: " + r.error().message));
        },
        eo);
  }

  std::string extra_status() const {
    std::string out;
    if (listener) {
      const auto s = listener->stats();
      out += fmt::format(
          "listener: {} (port {}): {} sessions open, {} accepted, {} refused; {} messages "
          "received, {} queued\n",
          config.listen.address, listener->port(), s.sessions_open, s.sessions_accepted,
          s.sessions_refused, s.messages_received, s.messages_accepted);
    } else {
      out += "listener: none\n";
    }
    out += "control: " + config.control + "\n";
    if (maildrop)
      out += fmt::format("maildrop: {} picked up, {} waiting, {} set aside in maildrop/corrupt\n",
                         maildrop->picked_up(), maildrop->pending(), maildrop->quarantined());
    if (metrics_server) out += fmt::format("metrics: http://{}/metrics\n", config.metrics);
    return out;
  }

  std::string render_metrics() const {
    Metrics::Sources s;
    s.queue = queue.get();
    s.domains = deliverer ? &deliverer->domains() : nullptr;
    s.deliverer = deliverer.get();
    s.listener = listener.get();
    if (listener) s.listener_stats = listener->stats();
    s.now = clock ? clock->now() : std::chrono::system_clock::now();
    return metrics ? metrics->render(s) : std::string();
  }

  // --- --once -------------------------------------------------------------------------------

  void start_once_watch() {
    once_timer = new_handle<uv_timer_t>();
    uv_timer_init(loop, once_timer);
    once_timer->data = this;
    uv_timer_start(
        once_timer,
        [](uv_timer_t* t) {
          auto* self = static_cast<Impl*>(t->data);
          if (self) self->once_check();
        },
        kOnceCheckMs, kOnceCheckMs);
  }

  void once_check() {
    if (stopping || !queue || !deliverer) return;
    // `idle()` also waits for reusable connections to reach [delivery] idle_timeout: a job
    // between DNS and a session is not visible otherwise.
    const TimePoint limit = options.single_pass ? pass_start : clock->now();
    const bool quiet = deliverer->idle() && spool->pending_inserts() == 0 &&
                       (!maildrop || maildrop->pending() == 0) && deliverer->next_due() > limit;
    // Twice in a row: work handed over through zero-delay timers is visible by then.
    once_quiet_checks = quiet ? once_quiet_checks + 1 : 0;
    if (once_quiet_checks < 2) return;
    const std::size_t left = queue->size();
    exit_status = left == 0 ? kExitOk : kExitTempFail;
    shutdown(left == 0 ? "--once: the queue is empty"
                       : fmt::format("--once: nothing due, {} in the queue", messages(left)));
  }

  // --- shutdown -----------------------------------------------------------------------------

  void shutdown(const std::string& reason) {
    if (stopping || finished) return;
    stopping = true;
    notice("stopping: " + reason);
    close_handle(once_timer);
    if (maildrop) maildrop->close();  // what arrives now waits for the next start
    // The control socket stays open until the end: a `submit` in progress gets its queue id
    // (new requests are refused while stopping).
    if (metrics_server) metrics_server->close();
    if (listener && !listener_closed) {
      listener->close([this] {
        listener_closed = true;
        maybe_finish();
      });
    }
    if (deliverer && !deliverer_stopped) {
      deliverer->stop([this] {
        deliverer_stopped = true;
        maybe_finish();
      });
    }
    maybe_finish();
  }

  void maybe_finish() {
    if (finished || !stopping || !listener_closed || !deliverer_stopped) return;
    finished = true;
    if (!clock) {  // never started (or its start failed): nothing to wait for
      teardown();
      if (on_finished) on_finished(exit_status);
      return;
    }
    // Run from a zero-delay timer: the callbacks that got us here belong to the objects
    // about to be destroyed.
    clock->schedule(Duration{0}, [this] {
      const std::size_t left = queue ? queue->size() : 0;
      notice(fmt::format("stopped: {} in the queue", messages(left)));
      teardown();
      if (on_finished) on_finished(exit_status);
    });
  }

  // Where the tools find the control socket from the spool alone: `<spool>/control.path`
  // holds its path when the configuration moved it from `<spool>/control.sock`.
  std::string control_path_note() const { return config.spool + "/" + kControlPathFile; }
  void note_control_path() {
    const std::string note = control_path_note();
    if (config.control == config.spool + "/control.sock") {
      ::unlink(note.c_str());
      return;
    }
    const std::string tmp = note + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "w");
    bool ok = f && std::fprintf(f, "%s\n", config.control.c_str()) > 0;
    if (f) ok = std::fclose(f) == 0 && ok;
    if (!ok || std::rename(tmp.c_str(), note.c_str()) != 0) {
      notice("cannot write " + note + " (" + std::strerror(errno) +
             "): the tools find the control socket with --config or --control only");
      ::unlink(tmp.c_str());
    }
  }

  void teardown() {
    close_handle(once_timer);
    close_handle(sig_term);
    close_handle(sig_int);
    close_handle(sig_hup);
    // Pending inserts complete first, while the queue, the listener sessions and the control
    // connections waiting for them still exist: their clients get the answer.
    if (spool && queue) spool->flush();
    metrics_server.reset();
    if (control) ::unlink(control_path_note().c_str());
    control.reset();
    maildrop.reset();
    listener.reset();
    deliverer.reset();
    mta_sts.reset();  // its fetches use the transport, resolver and clock
    queue.reset();
    spool.reset();
    resolver.reset();
    transport.reset();
    clock.reset();
  }
};

Relay::Relay(uv_loop_t* loop, RelayConfig config, RelayOptions options)
    : impl_(std::make_unique<Impl>(loop, std::move(config), options)) {}

Relay::~Relay() = default;

std::error_code Relay::start() {
  return impl_->start();
}

const Error& Relay::last_error() const noexcept {
  return impl_->error;
}

int Relay::start_exit_status() const noexcept {
  return impl_->start_status;
}

void Relay::shutdown(const std::string& reason) {
  impl_->shutdown(reason);
}

void Relay::set_on_finished(std::function<void(int)> fn) {
  impl_->on_finished = std::move(fn);
}

std::error_code Relay::reopen_log() {
  return impl_->reopen_log();
}

}  // namespace mailq::relay
