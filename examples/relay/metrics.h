// mailq-relay — metrics in the Prometheus text exposition format (version 0.0.4).
//
// `Metrics` is an EventSink (put it in the relay's FanoutSink) counting deliveries,
// deferrals and bounces by enhanced status code, destinations marked down, and a delivery
// latency histogram (arrival to delivery). `render` adds the gauges read at scrape time:
// queue depth by destination, recipients pending, held messages, domains down, connections
// open, connection and DNS failures, listener sessions. `MetricsServer` answers
// `GET /metrics` on a loopback HTTP port (anything else: 404; bad requests: 400; bounded).
//
// Families (each with its # HELP and # TYPE lines, sorted by name):
//   mailq_bounces_total{status}            counter  recipients returned ('R'), by status
//   mailq_deferrals_total{status}          counter  transient failures ('Q'), by status
//   mailq_deliveries_total{status}         counter  recipients delivered ('D'), by status
//   mailq_delivery_latency_seconds         histogram arrival to delivery of each recipient
//   mailq_destinations_marked_down_total   counter
//   mailq_queue_messages, mailq_queue_recipients_pending, mailq_queue_held      gauges
//   mailq_queue_depth{destination}         gauge    recipients pending per destination
//   mailq_domains_down                     gauge    (with `domains`)
//   mailq_connections_open, mailq_connections_opened_total,
//   mailq_connection_failures_total, mailq_dns_failures_total,
//   mailq_transactions_total, mailq_queue_cycles_total                 (with `deliverer`)
//   mailq_listener_sessions_open, mailq_listener_sessions_total,
//   mailq_listener_sessions_refused_total, mailq_listener_messages_received_total,
//   mailq_listener_messages_accepted_total                              (with a listener)
// The status label is the reply's enhanced status code ("2.0.0", "4.4.1"), or its class
// ("2.0.0", "4.0.0", "5.0.0") when the reply carried none, or "unknown" without a reply.
//
// Threading: everything on the loop thread.
#pragma once

#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mailq/deliverer.h"
#include "mailq/domain_state.h"
#include "mailq/events.h"
#include "mailq/queue.h"
#include "mailq/uv/smtp_listener.h"

namespace mailq::relay {

class Metrics final : public EventSink {
 public:
  /// Upper bounds (seconds) of the latency histogram buckets, +Inf implied.
  static const std::vector<double>& latency_bounds();

  explicit Metrics(const Queue* queue = nullptr) : queue_(queue) {}
  void on_event(const Event& event) override;

  struct Sources {
    const Queue* queue = nullptr;  ///< default: the one given to the constructor
    const DomainStateTable* domains = nullptr;
    const Deliverer* deliverer = nullptr;
    const uv::SmtpListener* listener = nullptr;  ///< its `stats()` are read at render
    /// The listener's counters when the caller read them itself (wins over `listener`).
    std::optional<uv::SmtpListenerStats> listener_stats;
    TimePoint now{};  ///< for "down" in `domains`; default: the system clock
  };
  /// The whole exposition text, metric families sorted, label values escaped.
  std::string render(const Sources& sources) const;

  /// At most this many `mailq_queue_depth` series (the deepest destinations); the others are
  /// summed into destination="(other)", so that a queue with mail for 100000 domains does not
  /// make 100000 series. Default 1000; 0 = no limit.
  void set_max_destinations(std::size_t n) { max_destinations_ = n; }

  /// "2.0.0", "4.4.1": the label a reply is counted under.
  static std::string status_label(const Reply& reply);

 private:
  const Queue* queue_;
  std::map<std::string, std::uint64_t> delivered_, deferred_, bounced_;  // by enhanced code
  std::uint64_t marked_down_ = 0;
  std::vector<std::uint64_t> latency_buckets_;  // per bucket; cumulated at render
  double latency_sum_ = 0;
  std::uint64_t latency_count_ = 0;
  std::size_t max_destinations_ = 1000;
};

/// A minimal HTTP/1.0 server for scrapes, on the relay's loop: one request per connection
/// (a request head of at most 8 KiB, read within the timeout), then the answer and close.
///   GET or HEAD /metrics  -> 200, Content-Type: text/plain; version=0.0.4; charset=utf-8
///   another path          -> 404;  another method -> 405;  a malformed or oversized head -> 400;
///   no complete head within the timeout -> 408;  `render` threw -> 500.
/// Only loopback addresses are accepted (metrics tell the world about the mail flow).
class MetricsServer {
 public:
  MetricsServer(uv_loop_t* loop, std::string host, std::uint16_t port,
                std::function<std::string()> render);
  /// Closes everything at once; the loop must run afterwards for the close callbacks.
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;
  /// Binds and listens (`port` 0: any free port). Errors (a non-loopback or non-numeric host:
  /// `errc::invalid_parameter`; bind/listen failures as std::errc) are described by
  /// `last_error()`: "metrics 127.0.0.1:9100: address already in use".
  std::error_code start();
  std::uint16_t port() const noexcept;  ///< the bound port
  /// Stops listening and closes open connections. Idempotent.
  void close();
  const Error& last_error() const noexcept;
  /// Time allowed for the request head, and for a slow client to take the answer.
  /// Default 10 s. Set before `start`.
  void set_timeout(Duration timeout);

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace mailq::relay
