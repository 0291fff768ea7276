// mailq-relay — metrics in the Prometheus text exposition format (version 0.0.4).
//
// `Metrics` is an EventSink (put it in the relay's FanoutSink) counting deliveries,
// deferrals and bounces by enhanced status code, destinations marked down, and a delivery
// latency histogram (arrival to delivery). `render` adds the gauges read at scrape time:
// queue depth by destination, recipients pending, held messages, domains down, connections
// open, connection and DNS failures, listener sessions. `MetricsServer` answers
// `GET /metrics` on a loopback HTTP port (anything else: 404; bad requests: 400; bounded).
#pragma once

#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "mailq/deliverer.h"
#include "mailq/domain_state.h"
#include "mailq/events.h"
#include "mailq/queue.h"
#include "mailq/uv_server.h"

namespace mailq::relay {

class Metrics final : public EventSink {
 public:
  explicit Metrics(const Queue* queue = nullptr) : queue_(queue) {}
  void on_event(const Event& event) override;

  struct Sources {
    const Queue* queue = nullptr;
    const DomainStateTable* domains = nullptr;
    const Deliverer* deliverer = nullptr;
    const uv::SmtpListener* listener = nullptr;
    TimePoint now{};
  };
  /// The whole exposition text, metric families sorted, label values escaped.
  std::string render(const Sources& sources) const;

 private:
  const Queue* queue_;
  std::map<std::string, std::uint64_t> delivered_, deferred_, bounced_;  // by enhanced code
  std::uint64_t marked_down_ = 0;
  std::vector<std::uint64_t> latency_buckets_;  // cumulative at render
  double latency_sum_ = 0;
  std::uint64_t latency_count_ = 0;
};

class MetricsServer {
 public:
  MetricsServer(uv_loop_t* loop, std::string host, std::uint16_t port,
                std::function<std::string()> render);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;
  std::error_code start();
  std::uint16_t port() const noexcept;
  void close();
  const Error& last_error() const noexcept;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace mailq::relay
