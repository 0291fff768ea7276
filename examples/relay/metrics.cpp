// mailq-relay — Prometheus metrics: counting events, rendering text format 0.0.4, and a small
// loopback HTTP server for the scrapes.
#include "examples/relay/metrics.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <set>

#include <fmt/format.h>

#include "mailq/net.h"

namespace mailq::relay {
namespace {

// Label values: backslash, double quote and line feed escaped (text format 0.0.4).
std::string escape_label(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

// HELP text: backslash and line feed escaped.
std::string escape_help(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string format_value(double v) {
  return fmt::format("{}", v);
}

// One metric family while rendering: its header and sample lines.
struct Family {
  std::string help;
  std::string type;
  std::vector<std::string> samples;
};

class Exposition {
 public:
  Family& family(const std::string& name, std::string help, std::string type) {
    Family& f = families_[name];
    f.help = std::move(help);
    f.type = std::move(type);
    return f;
  }
  void scalar(const std::string& name, std::string help, std::string type, std::uint64_t v) {
    family(name, std::move(help), std::move(type)).samples.push_back(fmt::format("{} {}", name, v));
  }
  void labelled(const std::string& name, std::string help, std::string type, std::string_view label,
                const std::map<std::string, std::uint64_t>& values) {
    Family& f = family(name, std::move(help), std::move(type));
    for (const auto& [k, v] : values)
      f.samples.push_back(fmt::format("{}{{{}=\"{}\"}} {}", name, label, escape_label(k), v));
  }
  std::string text() const {
    std::string out;
    for (const auto& [name, f] : families_) {
      out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, escape_help(f.help), name, f.type);
      for (const auto& s : f.samples) {
        out += s;
        out += '\n';
      }
    }
    return out;
  }

 private:
  std::map<std::string, Family> families_;  // sorted by name
};

}  // namespace

// --- Metrics -------------------------------------------------------------------------------

const std::vector<double>& Metrics::latency_bounds() {
  // From a first-attempt delivery (well under a second) to the retry intervals of a message
  // that waited days: the buckets follow the queue's time scales.
  static const std::vector<double> kBounds = {
      0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 14400, 43200, 86400, 259200, 432000};
  return kBounds;
}

std::string Metrics::status_label(const Reply& reply) {
  if (!reply.enhanced.empty()) return reply.enhanced;
  if (reply.code >= 200 && reply.code < 600) return fmt::format("{}.0.0", reply.code / 100);
  return "unknown";
}

void Metrics::on_event(const Event& event) {
  switch (event.kind) {
    case EventKind::delivered: {
      delivered_[status_label(event.reply)]++;
      if (event.arrival == TimePoint{}) break;  // unknown arrival: no latency to observe
      const auto& bounds = latency_bounds();
      if (latency_buckets_.size() != bounds.size()) latency_buckets_.assign(bounds.size(), 0);
      double seconds =
          std::max(0.0, std::chrono::duration<double>(event.time - event.arrival).count());
      auto it = std::lower_bound(bounds.begin(), bounds.end(), seconds);  // le: inclusive
      if (it != bounds.end()) latency_buckets_[static_cast<std::size_t>(it - bounds.begin())]++;
      latency_sum_ += seconds;
      latency_count_++;
      break;
    }
    case EventKind::deferred:
      deferred_[status_label(event.reply)]++;
      break;
    case EventKind::returned:
      bounced_[status_label(event.reply)]++;
      break;
    case EventKind::destination_down:
      marked_down_++;
      break;
    default:
      break;
  }
}

std::string Metrics::render(const Sources& sources) const {
  Exposition x;
  x.labelled("mailq_deliveries_total",
             "Recipients delivered (accepted by the next hop), by enhanced status code.", "counter",
             "status", delivered_);
  x.labelled("mailq_deferrals_total",
             "Transient failures of recipients (retried later), by enhanced status code.",
             "counter", "status", deferred_);
  x.labelled("mailq_bounces_total",
             "Recipients returned to the sender (permanent failure or expiry), by enhanced "
             "status code.",
             "counter", "status", bounced_);
  x.scalar("mailq_destinations_marked_down_total",
           "Times a destination was marked down after too many connection failures.", "counter",
           marked_down_);

  {
    Family& f = x.family("mailq_delivery_latency_seconds",
                         "Time from a message's arrival in the queue to the delivery of a "
                         "recipient.",
                         "histogram");
    const auto& bounds = latency_bounds();
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < bounds.size(); ++i) {
      if (i < latency_buckets_.size()) cumulative += latency_buckets_[i];
      f.samples.push_back(fmt::format("mailq_delivery_latency_seconds_bucket{{le=\"{}\"}} {}",
                                      format_value(bounds[i]), cumulative));
    }
    f.samples.push_back(
        fmt::format("mailq_delivery_latency_seconds_bucket{{le=\"+Inf\"}} {}", latency_count_));
    f.samples.push_back(
        fmt::format("mailq_delivery_latency_seconds_sum {}", format_value(latency_sum_)));
    f.samples.push_back(fmt::format("mailq_delivery_latency_seconds_count {}", latency_count_));
  }

  if (const Queue* q = sources.queue ? sources.queue : queue_) {
    QueueStats s = q->stats();
    x.scalar("mailq_queue_messages", "Messages in the queue.", "gauge", s.messages);
    x.scalar("mailq_queue_recipients_pending", "Recipients not yet delivered, bounced or expired.",
             "gauge", s.recipients_pending);
    x.scalar("mailq_queue_held", "Messages held by an operator.", "gauge", s.held);
    auto depth = q->depth_by_destination();
    if (max_destinations_ && depth.size() > max_destinations_) {
      std::stable_sort(depth.begin(), depth.end(),
                       [](const auto& a, const auto& b) { return a.second > b.second; });
      std::size_t other = 0;
      for (std::size_t i = max_destinations_; i < depth.size(); ++i) other += depth[i].second;
      depth.resize(max_destinations_);
      depth.emplace_back("(other)", other);
    }
    std::map<std::string, std::uint64_t> by_destination;
    for (const auto& [d, n] : depth) by_destination[d] += n;
    x.labelled("mailq_queue_depth", "Recipients pending per destination (domain or route).",
               "gauge", "destination", by_destination);
  }

  if (sources.domains) {
    TimePoint now = sources.now == TimePoint{} ? std::chrono::system_clock::now() : sources.now;
    std::uint64_t down = 0;
    for (const auto& st : sources.domains->snapshot())
      if (sources.domains->is_down(st.destination, now)) down++;
    x.scalar("mailq_domains_down", "Destinations marked down now.", "gauge", down);
  }

  if (sources.deliverer) {
    DelivererStats s = sources.deliverer->stats();
    x.scalar("mailq_connections_open", "Outgoing SMTP connections open.", "gauge",
             s.connections_open);
    x.scalar("mailq_connections_opened_total", "Outgoing SMTP connections established.", "counter",
             s.connections_opened);
    x.scalar("mailq_connection_failures_total",
             "Outgoing connection failures (refused, timed out, unreachable, no greeting).",
             "counter", s.connection_failures);
    x.scalar("mailq_dns_failures_total", "DNS resolutions that failed.", "counter", s.dns_failures);
    x.scalar("mailq_transactions_total", "SMTP transactions run (one message, one destination).",
             "counter", s.transactions);
    x.scalar("mailq_queue_cycles_total", "Queue cycles run.", "counter", s.cycles);
  }

  std::optional<uv::SmtpListenerStats> listener = sources.listener_stats;
  if (!listener && sources.listener) listener = sources.listener->stats();
  if (listener) {
    x.scalar("mailq_listener_sessions_open", "SMTP sessions of the listener open now.", "gauge",
             listener->sessions_open);
    x.scalar("mailq_listener_sessions_total", "SMTP sessions accepted by the listener.", "counter",
             listener->sessions_accepted);
    x.scalar("mailq_listener_sessions_refused_total",
             "SMTP clients refused (not allowed, or too many sessions).", "counter",
             listener->sessions_refused);
    x.scalar("mailq_listener_messages_received_total", "Messages received in full by the listener.",
             "counter", listener->messages_received);
    x.scalar("mailq_listener_messages_accepted_total",
             "Messages the listener accepted (durable in the spool, 250 sent).", "counter",
             listener->messages_accepted);
    x.scalar("mailq_listener_tls_handshakes_total", "STARTTLS handshakes completed.", "counter",
             listener->tls_handshakes);
    x.scalar("mailq_listener_tls_failures_total", "STARTTLS handshakes that failed.", "counter",
             listener->tls_failures);
    x.scalar("mailq_listener_auth_successes_total", "Successful AUTH logins.", "counter",
             listener->auth_successes);
    x.scalar("mailq_listener_auth_failures_total",
             "AUTH attempts refused for bad credentials (535).", "counter",
             listener->auth_failures);
    x.scalar("mailq_listener_storage_refusals_total",
             "MAIL commands refused for want of free space on the queue's file system "
             "(452 4.3.1).",
             "counter", listener->storage_refusals);
  }
  return x.text();
}

// --- MetricsServer -------------------------------------------------------------------------

namespace {

constexpr std::size_t kMaxHead = 8192;
constexpr std::size_t kMaxConnections = 64;
constexpr std::size_t kMaxDrain = 1u << 20;
constexpr Duration kLinger{std::chrono::seconds(2)};

std::error_code uv_error(int r) {
  return {-r, std::generic_category()};
}

}  // namespace

struct MetricsServer::Impl {
  struct Conn;

  uv_loop_t* loop;
  std::string host;
  std::uint16_t port;
  std::function<std::string()> render;
  Duration timeout{std::chrono::seconds(10)};
  uv_tcp_t* server = nullptr;  // freed by its close callback
  std::uint16_t bound_port = 0;
  Error last_error;
  std::set<Conn*> conns;

  // One client. Memory is freed when both handles are closed; `owner` is null from the
  // moment the close starts, so no callback touches the server after that.
  struct Conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    Impl* owner = nullptr;
    enum class State { reading, writing, draining, closing } state = State::reading;
    int handles_open = 2;
    std::string head;
    std::string response;
    std::size_t drained = 0;
    uv_write_t write_req;
    uv_shutdown_t shutdown_req;
    std::array<char, 4096> buffer;
  };

  void fail(std::error_code ec, std::string what) {
    last_error = Error(ec, fmt::format("metrics {}: {}", HostPort{host, port}.to_string(), what));
  }

  static void close_conn(Conn* c) {
    if (c->state == Conn::State::closing) return;
    c->state = Conn::State::closing;
    if (c->owner) c->owner->conns.erase(c);
    c->owner = nullptr;
    uv_timer_stop(&c->timer);
    auto closed = [](uv_handle_t* h) {
      Conn* conn = static_cast<Conn*>(h->data);
      if (--conn->handles_open == 0) delete conn;
    };
    uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&c->timer), closed);
  }

  static void arm(Conn* c, Duration d) {
    uv_timer_start(
        &c->timer,
        [](uv_timer_t* t) {
          Conn* conn = static_cast<Conn*>(t->data);
          if (conn->state == Conn::State::reading)
            respond(conn, 408, "Request Timeout", "request timeout\n", false);
          else
            close_conn(conn);
        },
        static_cast<std::uint64_t>(d.count()), 0);
  }

  static void respond(Conn* c, int code, std::string_view reason, std::string body, bool head_only,
                      std::string_view extra_headers = {}) {
    const bool ok = code == 200;
    c->response = fmt::format(
        "HTTP/1.0 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
        code, reason, ok ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain; charset=utf-8",
        body.size(), extra_headers);
    if (!head_only) c->response += body;
    c->state = Conn::State::writing;
    arm(c, c->owner ? c->owner->timeout : Duration(std::chrono::seconds(10)));
    uv_buf_t buf = uv_buf_init(c->response.data(), static_cast<unsigned>(c->response.size()));
    int r = uv_write(&c->write_req, reinterpret_cast<uv_stream_t*>(&c->tcp), &buf, 1,
                     [](uv_write_t* req, int status) {
                       Conn* conn = static_cast<Conn*>(req->data);
                       if (conn->state == Conn::State::closing) return;
                       if (status < 0) return close_conn(conn);
                       after_write(conn);
                     });
    if (r < 0) close_conn(c);
  }

  // The answer is with the kernel: send FIN, then read what the client still sends until it
  // closes (bounded), so that unread request bytes do not turn our close into a reset that
  // could destroy the answer before the client read it.
  static void after_write(Conn* c) {
    c->state = Conn::State::draining;
    arm(c, kLinger);
    int r = uv_shutdown(&c->shutdown_req, reinterpret_cast<uv_stream_t*>(&c->tcp),
                        [](uv_shutdown_t* req, int status) {
                          Conn* conn = static_cast<Conn*>(req->data);
                          if (conn->state == Conn::State::closing) return;
                          if (status < 0) close_conn(conn);
                        });
    if (r < 0) close_conn(c);
  }

  void handle_request(Conn* c, std::string_view head) {
    auto bad = [&](std::string why) { respond(c, 400, "Bad Request", why + "\n", false); };
    if (head.find('\0') != std::string_view::npos) return bad("NUL in request");
    auto eol = head.find('\n');
    std::string_view line = head.substr(0, eol);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    auto sp1 = line.find(' ');
    auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
      return bad("malformed request line");
    std::string_view method = line.substr(0, sp1);
    std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    std::string_view version = line.substr(sp2 + 1);
    if (method.empty() ||
        !std::all_of(method.begin(), method.end(), [](char ch) { return ch >= 'A' && ch <= 'Z'; }))
      return bad("malformed method");
    if (target.empty() || target.front() != '/') return bad("malformed request target");
    if (version != "HTTP/1.0" && version != "HTTP/1.1") return bad("unsupported HTTP version");
    if (std::any_of(line.begin(), line.end(),
                    [](unsigned char ch) { return ch < 0x20 || ch == 0x7f; }))
      return bad("control character in request line");
    // Header lines: "name: value" each; their content is not needed.
    std::string_view rest = eol == std::string_view::npos ? "" : head.substr(eol + 1);
    while (!rest.empty()) {
      auto e = rest.find('\n');
      std::string_view h = rest.substr(0, e);
      rest = e == std::string_view::npos ? "" : rest.substr(e + 1);
      if (!h.empty() && h.back() == '\r') h.remove_suffix(1);
      if (h.empty()) break;
      auto colon = h.find(':');
      if (colon == 0 || colon == std::string_view::npos) return bad("malformed header line");
    }
    std::string_view path = target.substr(0, target.find('?'));
    const bool head_only = method == "HEAD";
    if (method != "GET" && !head_only)
      return respond(c, 405, "Method Not Allowed", "only GET and HEAD\n", false,
                     "Allow: GET, HEAD\r\n");
    if (path != "/metrics")
      return respond(c, 404, "Not Found", "not found: try /metrics\n", head_only);
    std::string body;
    try {
      body = render ? render() : std::string();
    } catch (const std::exception& e) {
      return respond(c, 500, "Internal Server Error",
                     std::string("metrics failed: ") + e.what() + "\n", head_only);
    } catch (...) {
      return respond(c, 500, "Internal Server Error", "metrics failed\n", head_only);
    }
    respond(c, 200, "OK", std::move(body), head_only);
  }

  void on_data(Conn* c, std::string_view data) {
    if (c->state != Conn::State::reading) {
      c->drained += data.size();
      if (c->drained > kMaxDrain) close_conn(c);
      return;
    }
    c->head.append(data);
    // The head ends at an empty line (CRLF CRLF; a bare LF LF is tolerated).
    std::size_t end = c->head.find("\r\n\r\n");
    std::size_t lf = c->head.find("\n\n");
    if (end == std::string::npos || (lf != std::string::npos && lf < end)) end = lf;
    if (end != std::string::npos && end <= kMaxHead) {
      std::string head = c->head.substr(0, end);
      c->drained = c->head.size() - end;
      handle_request(c, head);
      return;
    }
    if (c->head.size() > kMaxHead)
      respond(c, 400, "Bad Request", "request head too large\n", false);
  }

  void on_connection() {
    auto* c = new Conn();
    uv_tcp_init(loop, &c->tcp);
    uv_timer_init(loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->write_req.data = c;
    c->shutdown_req.data = c;
    c->owner = this;
    conns.insert(c);
    if (uv_accept(reinterpret_cast<uv_stream_t*>(server), reinterpret_cast<uv_stream_t*>(&c->tcp)) <
            0 ||
        conns.size() > kMaxConnections) {
      close_conn(c);  // over the limit: closed without a word (scrapers retry)
      return;
    }
    arm(c, timeout);
    int r = uv_read_start(
        reinterpret_cast<uv_stream_t*>(&c->tcp),
        [](uv_handle_t* h, std::size_t, uv_buf_t* buf) {
          Conn* conn = static_cast<Conn*>(h->data);
          *buf = uv_buf_init(conn->buffer.data(), static_cast<unsigned>(conn->buffer.size()));
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
          Conn* conn = static_cast<Conn*>(s->data);
          if (conn->state == Conn::State::closing) return;
          if (n < 0) return close_conn(conn);  // EOF or error: nothing more to say
          if (n == 0) return;
          if (!conn->owner) return close_conn(conn);
          conn->owner->on_data(conn, std::string_view(buf->base, static_cast<std::size_t>(n)));
        });
    if (r < 0) close_conn(c);
  }

  void close() {
    if (server) {
      uv_close(reinterpret_cast<uv_handle_t*>(server),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
      server = nullptr;
    }
    auto open = conns;
    for (Conn* c : open) close_conn(c);
    conns.clear();
  }
};

MetricsServer::MetricsServer(uv_loop_t* loop, std::string host, std::uint16_t port,
                             std::function<std::string()> render)
    : impl_(std::make_shared<Impl>()) {
  impl_->loop = loop;
  impl_->host = std::move(host);
  impl_->port = port;
  impl_->render = std::move(render);
}

MetricsServer::~MetricsServer() {
  close();
}

void MetricsServer::set_timeout(Duration timeout) {
  impl_->timeout = std::max(timeout, Duration(1));
}

std::error_code MetricsServer::start() {
  Impl& s = *impl_;
  if (s.server) {
    s.fail(make_error_code(errc::bad_state), "already started");
    return s.last_error.code;
  }
  sockaddr_storage addr{};
  if (uv_ip4_addr(s.host.c_str(), s.port, reinterpret_cast<sockaddr_in*>(&addr)) != 0 &&
      uv_ip6_addr(s.host.c_str(), s.port, reinterpret_cast<sockaddr_in6*>(&addr)) != 0) {
    s.fail(make_error_code(errc::invalid_parameter), "not a numeric IP address");
    return s.last_error.code;
  }
  if (!is_loopback_address(s.host)) {
    s.fail(make_error_code(errc::invalid_parameter),
           "not a loopback address (metrics are served on 127.0.0.0/8 or ::1 only)");
    return s.last_error.code;
  }
  s.server = new uv_tcp_t;
  uv_tcp_init(s.loop, s.server);
  s.server->data = &s;
  int r = uv_tcp_bind(s.server, reinterpret_cast<const sockaddr*>(&addr), 0);
  if (r == 0)
    r = uv_listen(reinterpret_cast<uv_stream_t*>(s.server), 64, [](uv_stream_t* srv, int status) {
      if (status < 0) return;
      static_cast<Impl*>(srv->data)->on_connection();
    });
  if (r < 0) {
    s.fail(uv_error(r), uv_strerror(r));
    uv_close(reinterpret_cast<uv_handle_t*>(s.server),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    s.server = nullptr;
    return s.last_error.code;
  }
  sockaddr_storage bound{};
  int len = sizeof bound;
  uv_tcp_getsockname(s.server, reinterpret_cast<sockaddr*>(&bound), &len);
  s.bound_port =
      ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  s.last_error = Error();
  return {};
}

std::uint16_t MetricsServer::port() const noexcept {
  return impl_->bound_port;
}

void MetricsServer::close() {
  impl_->close();
}

const Error& MetricsServer::last_error() const noexcept {
  return impl_->last_error;
}

}  // namespace mailq::relay
