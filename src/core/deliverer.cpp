#include "mailq/deliverer.h"

#include <algorithm>
#include <deque>
#include <map>
#include <new>
#include <random>
#include <unordered_map>

#include "core/mx.h"
#include "core/text.h"
#include "mailq/smtp_client.h"

namespace mailq {

namespace {

// Connect errors that come from this host running short of a resource, not from the peer.
bool is_local_shortage(std::error_code ec) {
  return ec == std::errc::too_many_files_open || ec == std::errc::too_many_files_open_in_system ||
         ec == std::errc::not_enough_memory || ec == std::errc::no_buffer_space;
}

constexpr std::size_t kJobsPerSession = 4;

std::string endpoint_detail(const std::string& host, const Endpoint& local,
                            const Endpoint& remote) {
  // Seed 002: "dns;host.some.org (TCP|206.184.139.12|2788|192.1.1.1|25)".
  return "dns;" + host + " (TCP|" + local.address + "|" + std::to_string(local.port) + "|" +
         remote.address + "|" + std::to_string(remote.port) + ")";
}

}  // namespace

struct Deliverer::Impl {
  struct Run;

  // One SMTP session to one target, carrying jobs of its run in turn.
  struct Session : ConnectionHandler, std::enable_shared_from_this<Session> {
    Impl* impl = nullptr;
    std::weak_ptr<Run> run;
    detail::Target target;
    SmtpClient client;
    std::unique_ptr<Connection> conn;
    TimerId deadline_timer = kNoTimer;
    TimePoint deadline_at = TimePoint::max();
    TimerId idle_timer = kNoTimer;
    TimePoint opened{};
    bool ready = false;
    bool dead = false;
    bool plaintext_retry = false;
    std::optional<Job> job;
    std::string remote;  // "dns;host (TCP|...)"
    std::uint32_t messages = 0;

    Session(Impl* i, std::shared_ptr<Run> r, detail::Target t, SmtpClientOptions o)
        : impl(i), run(r), target(std::move(t)), client(std::move(o)) {}
    ~Session() override { cancel_timers(); }

    void cancel_timers() {
      if (deadline_timer != kNoTimer) impl->clock.cancel(deadline_timer);
      if (idle_timer != kNoTimer) impl->clock.cancel(idle_timer);
      deadline_timer = idle_timer = kNoTimer;
    }

    void on_connect(std::error_code ec) override {
      if (dead) return;
      if (ec) {
        // A shortage of this host (no descriptor, no memory for a socket) says nothing about
        // the destination: it must not count towards marking it down.
        impl->connection_failed(*this, connect_failure_text(ec), /*counts=*/!is_local_shortage(ec));
        return;
      }
      remote = endpoint_detail(target.host, conn->local_endpoint(), conn->remote_endpoint());
      client.on_connected(impl->clock.now());
      pump();
    }
    void on_read(std::string_view data) override {
      if (dead) return;
      client.on_data(data, impl->clock.now());
      pump();
    }
    void on_tls(std::error_code ec, const TlsInfo& info) override {
      if (dead) return;
      if (ec) {
        std::string why = conn ? conn->last_error() : std::string();
        client.on_tls_failed(why.empty() ? ec.message() : why, impl->clock.now());
      } else
        client.on_tls_established(info, impl->clock.now());
      pump();
    }
    void on_close(std::error_code ec) override {
      if (dead) return;
      client.on_closed(ec ? ec.message() : std::string("connection closed by the server"),
                       impl->clock.now());
      pump();
      if (!dead) impl->end_session(*this);
    }

    bool in_pump = false;

    void pump() {
      if (in_pump) return;             // the outer pump writes what this call would have written
      auto self = shared_from_this();  // events may end the session
      in_pump = true;
      while (!dead) {
        if (client.has_output() && conn) {
          std::string out = client.take_output();
          conn->write(out);
        }
        auto ev = client.next_event();
        if (!ev) break;
        impl->handle_event(*this, std::move(*ev));
      }
      in_pump = false;
      if (!dead) arm_deadline();
    }

    void arm_deadline() {
      TimePoint d = client.deadline();
      if (d == deadline_at) return;
      if (deadline_timer != kNoTimer) impl->clock.cancel(deadline_timer);
      deadline_timer = kNoTimer;
      deadline_at = d;
      if (d == TimePoint::max()) return;
      auto wait = std::chrono::duration_cast<Duration>(d - impl->clock.now());
      std::weak_ptr<Session> weak = shared_from_this();
      deadline_timer = impl->clock.schedule(std::max(wait, Duration{0}), [weak] {
        auto s = weak.lock();
        if (!s || s->dead) return;
        s->deadline_timer = kNoTimer;
        s->deadline_at = TimePoint::max();
        s->client.on_timeout(s->impl->clock.now());
        s->pump();
      });
    }
  };

  // The work for one destination: its jobs, its resolved targets, its sessions.
  struct Run : std::enable_shared_from_this<Run> {
    std::string key;
    Route route;
    std::string domain;  // for MX routes
    std::deque<Job> jobs;
    std::vector<std::shared_ptr<Session>> sessions;
    enum class Phase { fresh, resolving, resolved } phase = Phase::fresh;
    std::vector<detail::Target> targets;
    std::size_t next_target = 0;
    TimePoint resolved_at{};
    std::string last_failure;  // diagnostic of the last connection-level failure
    Reply last_failure_reply;
    std::size_t parallel_cap = SIZE_MAX;  // lowered when extra sessions are refused
    bool more_due = false;  // a cycle took its full share: more of the backlog may be due
  };

  Queue& queue;
  const RouteTable& routes;
  DomainStateTable& domains;
  Resolver& resolver;
  Transport& transport;
  Clock& clock;
  EventSink* sink;
  const DelivererConfig& config;
  std::mt19937_64 rng{std::random_device{}()};
  std::unordered_map<std::string, std::shared_ptr<Run>> runs;
  std::map<std::string, TimePoint> broken_tls;  // "address:port" -> until
  TimerId cycle_timer = kNoTimer;
  bool started = false;
  bool stopping = false;
  std::function<void()> stop_done;
  std::size_t sessions_open = 0;
  std::deque<std::weak_ptr<Run>> waiting_for_slot;
  DelivererStats stats;
  std::shared_ptr<int> alive = std::make_shared<int>(0);

  Impl(Queue& q, const RouteTable& r, DomainStateTable& d, Resolver& res, Transport& t, Clock& c,
       EventSink* s, const DelivererConfig& cfg)
      : queue(q),
        routes(r),
        domains(d),
        resolver(res),
        transport(t),
        clock(c),
        sink(s),
        config(cfg) {}

  ~Impl() {
    if (cycle_timer != kNoTimer) clock.cancel(cycle_timer);
    queue.set_new_work_listener(nullptr);
    queue.set_due_now_listener(nullptr);
    // Jobs in flight go back to the queue unattempted; connections close silently.
    for (auto& [key, run] : runs) {
      for (auto& s : run->sessions) {
        s->dead = true;
        s->cancel_timers();
        s->conn.reset();
        if (s->job) queue.untake(*s->job);
      }
      for (auto& j : run->jobs) queue.untake(j);
    }
    runs.clear();
  }

  detail::SinkGuard sink_guard;

  void emit(Event&& ev) { sink_guard.deliver(sink, ev, config.error_handler, clock.now()); }

  void notice(EventKind kind, const std::string& destination, std::string text) {
    Event ev;
    ev.kind = kind;
    ev.time = clock.now();
    ev.destination = destination;
    ev.diagnostic.push_back(std::move(text));
    emit(std::move(ev));
  }

  // --- scheduling ---------------------------------------------------------------------

  void arm_cycle() {
    if (cycle_timer != kNoTimer) clock.cancel(cycle_timer);
    std::weak_ptr<int> life = alive;
    cycle_timer = clock.schedule(config.cycle, [this, life] {
      if (life.expired()) return;
      cycle_timer = kNoTimer;
      run_cycle();
      arm_cycle();
    });
  }

  void run_cycle() {
    if (stopping) return;
    stats.cycles++;
    const TimePoint now = clock.now();
    for (const auto& key : queue.due_destinations(now)) {
      auto jobs = queue.take_due(key, now, config.max_jobs_per_destination_per_cycle);
      bool full = jobs.size() >= config.max_jobs_per_destination_per_cycle;
      for (auto& j : jobs) add_job(std::move(j));
      if (auto it = runs.find(key); it != runs.end()) it->second->more_due = full;
    }
    kick_all();
  }

  void new_work(MessageId id) {
    if (stopping || !started) return;
    for (auto& j : queue.take_message(id)) add_job(std::move(j));
    kick_all();
  }

  std::vector<std::shared_ptr<Run>> pending_kicks;

  void add_job(Job job) {
    if (job.recipients.empty()) {
      queue.untake(job);
      return;
    }
    auto it = runs.find(job.destination);
    if (it == runs.end()) {
      auto run = std::make_shared<Run>();
      run->key = job.destination;
      const std::optional<MessageRecord> m = queue.find(job.id);
      if (!m) {  // removed by an event sink meanwhile
        queue.untake(job);
        return;
      }
      const RecipientRecord& r = m->recipients[job.recipients.front()];
      const Route* route = routes.find(r.route);
      std::string domain = detail::to_lower(detail::domain_of(r.address));
      run->route = route ? *route : routes.lookup(domain);
      run->domain = domain;
      it = runs.emplace(job.destination, run).first;
    }
    it->second->jobs.push_back(std::move(job));
    pending_kicks.push_back(it->second);
  }

  void kick_all() {
    auto kicks = std::move(pending_kicks);
    pending_kicks.clear();
    for (auto& r : kicks) kick(r);
  }

  // Moves a run forward: domain state, resolution, sessions.
  void kick(const std::shared_ptr<Run>& run) {
    if (runs.count(run->key) == 0 || runs[run->key] != run) return;
    const TimePoint now = clock.now();
    if (!run->jobs.empty() && domains.is_down(run->key, now) && live_sessions(*run) == 0) {
      defer_down(*run);
    }
    if (run->jobs.empty()) {
      maybe_finish(run);
      return;
    }
    if (run->phase == Run::Phase::resolving) return;
    if (run->phase == Run::Phase::fresh ||
        (live_sessions(*run) == 0 && now - run->resolved_at > Duration(std::chrono::minutes(1)))) {
      resolve(run);
      return;
    }
    // Hand jobs to idle sessions first.
    for (auto& s : run->sessions) {
      if (run->jobs.empty()) break;
      if (!s->dead && s->ready && !s->job && s->client.ready()) start_job(*s);
    }
    open_sessions(run);
  }

  std::size_t live_sessions(const Run& run) const {
    std::size_t n = 0;
    for (auto& s : run.sessions)
      if (!s->dead) ++n;
    return n;
  }

  void open_sessions(const std::shared_ptr<Run>& run) {
    if (stopping) return;
    std::size_t cap = std::min<std::size_t>(run->route.max_connections, run->parallel_cap);
    // Until one session has succeeded, connect to one target at a time: a dead destination
    // costs one connection attempt per target, not one per job.
    bool any_ready = std::any_of(run->sessions.begin(), run->sessions.end(),
                                 [](auto& s) { return !s->dead && s->ready; });
    if (!any_ready) cap = 1;
    while (true) {
      std::size_t live = live_sessions(*run);
      std::size_t busy = 0;
      for (auto& s : run->sessions)
        if (!s->dead && s->job) ++busy;
      // Slow start: one session per kJobsPerSession outstanding jobs, up to the cap.
      std::size_t desired = (run->jobs.size() + busy + kJobsPerSession - 1) / kJobsPerSession;
      if (run->jobs.empty() || live >= cap || live >= desired) break;
      if (sessions_open >= config.max_connections) {
        waiting_for_slot.push_back(run);
        break;
      }
      if (run->next_target >= run->targets.size()) {
        if (live == 0) fail_run(run);
        break;
      }
      open_session(run, run->targets[run->next_target], false);
    }
  }

  void open_session(const std::shared_ptr<Run>& run, const detail::Target& target, bool plaintext) {
    SmtpClientOptions o;
    o.helo_name = run->route.helo.empty() ? config.helo_name : run->route.helo;
    o.tls = run->route.tls;
    std::string tls_key = target.address + ":" + std::to_string(target.port);
    auto bt = broken_tls.find(tls_key);
    if (bt != broken_tls.end() && bt->second <= clock.now()) {
      broken_tls.erase(bt);
      bt = broken_tls.end();
    }
    if (o.tls == TlsPolicy::opportunistic && (plaintext || bt != broken_tls.end()))
      o.tls = TlsPolicy::none;
    o.tls_server_name = target.host;
    o.ca_file = run->route.ca_file;
    o.auth = run->route.auth;
    o.auth_over_plaintext = run->route.auth_over_plaintext;
    o.timeouts = run->route.timeouts;
    auto s = std::make_shared<Session>(this, run, target, std::move(o));
    s->plaintext_retry = plaintext;
    s->opened = clock.now();
    run->sessions.push_back(s);
    ++sessions_open;
    stats.connections_opened++;
    ConnectOptions co;
    co.connect_timeout = run->route.timeouts.connect;
    co.source_address = run->route.source_address;
    s->conn = transport.connect(Endpoint{target.address, target.port}, co, *s);
  }

  // --- resolution ---------------------------------------------------------------------

  void resolve(const std::shared_ptr<Run>& run) {
    run->phase = Run::Phase::resolving;
    run->targets.clear();
    run->next_target = 0;
    std::weak_ptr<Run> weak = run;
    if (run->route.is_static()) {
      auto pending =
          std::make_shared<std::vector<std::vector<detail::Target>>>(run->route.hosts.size());
      auto left = std::make_shared<std::size_t>(run->route.hosts.size());
      auto problems = std::make_shared<std::vector<std::string>>();
      for (std::size_t i = 0; i < run->route.hosts.size(); ++i) {
        const RouteHost& h = run->route.hosts[i];
        if (detail::is_ip_literal(h.host)) {
          (*pending)[i].push_back({h.host, static_cast<std::uint16_t>(i), h.host, h.port});
          if (--*left == 0)
            clock.schedule(Duration{0}, [this, weak, pending, problems] {
              if (auto r = weak.lock()) static_resolved(r, *pending, *problems);
            });
          continue;
        }
        resolver.query_addresses(
            h.host, [this, weak, pending, left, problems, i, h](AddressAnswer a) {
              auto r = weak.lock();
              if (!r) return;
              if (a.status == DnsStatus::ok) {
                for (auto& addr : a.addresses)
                  (*pending)[i].push_back({h.host, static_cast<std::uint16_t>(i), addr, h.port});
              } else {
                problems->push_back(h.host + ": " + to_string(a.status) +
                                    (a.detail.empty() ? "" : " (" + a.detail + ")"));
              }
              if (--*left == 0) static_resolved(r, *pending, *problems);
            });
      }
      return;
    }
    resolver.query_mx(run->domain, [this, weak](MxAnswer a) {
      if (auto r = weak.lock()) mx_answered(r, std::move(a));
    });
  }

  void static_resolved(const std::shared_ptr<Run>& run,
                       const std::vector<std::vector<detail::Target>>& per_host,
                       const std::vector<std::string>& problems) {
    for (auto& v : per_host) run->targets.insert(run->targets.end(), v.begin(), v.end());
    if (run->targets.empty()) {
      std::string detail = "no address for the route's hosts";
      for (auto& p : problems) detail += "; " + p;
      resolution_failed(run, replies::domain_does_not_resolve(), detail, true);
      return;
    }
    resolved(run);
  }

  void mx_answered(const std::shared_ptr<Run>& run, MxAnswer a) {
    if (a.status == DnsStatus::ok && !a.records.empty()) {
      std::vector<MxRecord> plan;
      auto p = detail::plan_mx(std::move(a.records), config.local_names, rng, &plan);
      if (p == detail::MxPlan::null_mx) {
        resolution_failed(run, replies::null_mx(), "dns; " + run->domain + " has a null MX", true);
        return;
      }
      if (p == detail::MxPlan::loops_to_self) {
        resolution_failed(run, replies::mx_loops_to_self(),
                          "dns; the best MX for " + run->domain + " is this host", true);
        return;
      }
      if (p == detail::MxPlan::ok) {
        resolve_hosts(run, std::move(plan));
        return;
      }
      a.status = DnsStatus::no_data;  // MX records with no usable exchange
    }
    if (a.status == DnsStatus::ok || a.status == DnsStatus::no_data) {
      // Implicit MX (RFC 5321 §5.1): the domain itself, preference 0.
      resolve_hosts(run, {MxRecord{0, run->domain}});
      return;
    }
    if (a.status == DnsStatus::nxdomain) {
      std::string detail = "dns; " + run->domain + ": NXDOMAIN (4.4.4)";
      if (run->route.nxdomain_is_permanent)
        resolution_failed(run, replies::domain_does_not_exist(), detail, true);
      else
        resolution_failed(run, replies::domain_does_not_resolve(), detail, true);
      return;
    }
    // SERVFAIL, REFUSED, timeouts: always transient (4.4.3 in the log).
    stats.dns_failures++;
    resolution_failed(run, replies::domain_does_not_resolve(),
                      "dns; " + run->domain + " MX lookup failed: " + to_string(a.status) +
                          (a.detail.empty() ? "" : " (" + a.detail + ")") + " (4.4.3)",
                      true);
  }

  void resolve_hosts(const std::shared_ptr<Run>& run, std::vector<MxRecord> hosts) {
    std::weak_ptr<Run> weak = run;
    auto per_host = std::make_shared<std::vector<std::vector<detail::Target>>>(hosts.size());
    auto problems = std::make_shared<std::vector<std::string>>();
    auto left = std::make_shared<std::size_t>(hosts.size());
    auto statuses = std::make_shared<std::vector<DnsStatus>>(hosts.size(), DnsStatus::ok);
    for (std::size_t i = 0; i < hosts.size(); ++i) {
      MxRecord mx = hosts[i];
      auto finish = [this, weak, per_host, problems, left, statuses] {
        if (--*left != 0) return;
        auto r = weak.lock();
        if (!r) return;
        for (auto& v : *per_host) r->targets.insert(r->targets.end(), v.begin(), v.end());
        if (!detail::cut_local_addresses(r->targets, config.local_addresses)) {
          resolution_failed(r, replies::mx_loops_to_self(),
                            "dns; the best MX for " + r->domain + " has this host's address", true);
          return;
        }
        if (r->targets.empty()) {
          std::string detail = "dns; no address for any MX host of " + r->domain;
          for (auto& p : *problems) detail += "; " + p;
          bool transient = std::any_of(statuses->begin(), statuses->end(), is_transient);
          if (transient) stats.dns_failures++;
          resolution_failed(r, replies::domain_does_not_resolve(), detail, true);
          return;
        }
        resolved(r);
      };
      if (detail::is_ip_literal(mx.exchange)) {
        // An MX pointing at an address literal is invalid (RFC 5321 §5.1) but common.
        (*per_host)[i].push_back({mx.exchange, mx.preference, mx.exchange, run->route.mx_port});
        clock.schedule(Duration{0}, finish);
        continue;
      }
      resolver.query_addresses(
          mx.exchange, [this, weak, per_host, problems, statuses, i, mx, finish](AddressAnswer a) {
            auto r = weak.lock();
            if (!r) return;
            (*statuses)[i] = a.status;
            if (a.status == DnsStatus::ok) {
              for (auto& addr : a.addresses)
                (*per_host)[i].push_back({mx.exchange, mx.preference, addr, r->route.mx_port});
            } else {
              problems->push_back(mx.exchange + ": " + to_string(a.status));
            }
            finish();
          });
    }
  }

  void resolved(const std::shared_ptr<Run>& run) {
    run->phase = Run::Phase::resolved;
    run->resolved_at = clock.now();
    run->next_target = 0;
    kick(run);
  }

  void resolution_failed(const std::shared_ptr<Run>& run, const Reply& reply,
                         const std::string& detail, bool counts) {
    run->phase = Run::Phase::fresh;
    auto jobs = std::move(run->jobs);
    run->jobs.clear();
    for (auto& job : jobs) finish_job(job, reply, {detail}, "", counts);
    maybe_finish(run);
  }

  // --- outcomes -----------------------------------------------------------------------

  void finish_job(const Job& job, const Reply& reply, std::vector<std::string> diagnostic,
                  const std::string& remote, bool counts) {
    std::vector<RecipientOutcome> outcomes;
    outcomes.reserve(job.recipients.size());
    for (auto idx : job.recipients) {
      RecipientOutcome o;
      o.index = idx;
      o.reply = reply;
      o.remote = remote;
      o.diagnostic = diagnostic;
      o.counts_as_attempt = counts;
      outcomes.push_back(std::move(o));
    }
    queue.complete(job, outcomes, counts);
  }

  void defer_down(Run& run) {
    // Seed 000: no connection, each message queued at once with the exact 451 4.4.1 text;
    // not a delivery attempt.
    const TimePoint until = domains.down_until(run.key, clock.now());
    auto jobs = std::move(run.jobs);
    run.jobs.clear();
    for (auto& job : jobs) {
      stats.skipped_down++;
      finish_job(job, replies::domain_marked_down(), {replies::domain_marked_down().to_string()},
                 "", false);
    }
    queue.set_not_before(run.key, until);
  }

  void fail_run(const std::shared_ptr<Run>& run) {
    // Every target failed at the connection level (or refused to talk): the jobs waiting for
    // a connection get the last failure. A real attempt.
    Reply reply =
        run->last_failure_reply.empty()
            ? replies::connection_failed(run->last_failure.empty() ? std::string("no usable host")
                                                                   : run->last_failure)
            : run->last_failure_reply;
    std::vector<std::string> diag{run->last_failure.empty() ? reply.to_string()
                                                            : run->last_failure};
    auto jobs = std::move(run->jobs);
    run->jobs.clear();
    for (auto& job : jobs) finish_job(job, reply, diag, "", true);
    run->phase = Run::Phase::fresh;  // resolve again next time
    if (domains.is_down(run->key, clock.now()))
      queue.set_not_before(run->key, domains.down_until(run->key, clock.now()));
    maybe_finish(run);
  }

  // More of this destination's backlog may be due (a cycle takes at most
  // max_jobs_per_destination_per_cycle): keep the sessions busy instead of waiting for the next
  // cycle. Only due jobs come back, so this ends.
  bool refill(Run& run) {
    // Only a cycle's backlog continues: a new message must not pull a waiting backlog along
    // (seed 000: after a down period the backlog waits for the next cycle).
    if (stopping || !started || !run.more_due || !run.jobs.empty()) return false;
    auto more = queue.take_due(run.key, clock.now(), config.max_jobs_per_destination_per_cycle);
    run.more_due = more.size() >= config.max_jobs_per_destination_per_cycle;
    for (auto& j : more) {
      if (j.recipients.empty())
        queue.untake(j);
      else
        run.jobs.push_back(std::move(j));
    }
    return !run.jobs.empty();
  }

  void maybe_finish(const std::shared_ptr<Run>& run) {
    if (!run->jobs.empty()) return;
    if (refill(*run)) {
      kick(run);
      return;
    }
    for (auto& s : run->sessions)
      if (!s->dead) {
        if (s->ready && !s->job) idle_or_quit(*s);
        return;
      }
    auto it = runs.find(run->key);
    if (it != runs.end() && it->second == run) runs.erase(it);
    wake_waiting();
    check_stopped();
  }

  // --- sessions -----------------------------------------------------------------------

  void connection_failed(Session& s, const std::string& diagnostic, bool counts) {
    auto run = s.run.lock();
    stats.connection_failures++;
    bool marked = false;
    if (run) {
      bool others_ready = std::any_of(run->sessions.begin(), run->sessions.end(), [&](auto& o) {
        return o.get() != &s && !o->dead && o->ready;
      });
      if (others_ready) {
        // An extra parallel session was refused: the destination is up, we were too eager.
        run->parallel_cap = std::max<std::size_t>(1, live_sessions(*run) - 1);
      } else {
        run->last_failure = diagnostic;
        run->last_failure_reply = Reply{};
        if (counts && domains.record_failure(run->key, clock.now(), diagnostic)) {
          marked = true;
          notice(EventKind::destination_down, run->key,
                 "destination " + run->key + " marked down: too many connection failures (" +
                     diagnostic + ")");
        }
        if (run->next_target < run->targets.size() &&
            run->targets[run->next_target].address == s.target.address &&
            run->targets[run->next_target].port == s.target.port)
          ++run->next_target;
      }
    }
    end_session(s);
    // The jobs of this attempt get the real failure (a counted attempt); only later messages
    // get the "domain is marked down" deferral.
    if (marked && run && live_sessions(*run) == 0) fail_run(run);
  }

  void handle_event(Session& s, SmtpEvent ev) {
    auto run = s.run.lock();
    if (auto* ready = std::get_if<smtp_event::Ready>(&ev)) {
      (void)ready;
      s.ready = true;
      if (run) {
        domains.record_success(run->key);
        run->parallel_cap = SIZE_MAX;
      }
      if (run && !run->jobs.empty())
        start_job(s);
      else
        idle_or_quit(s);
      if (run) open_sessions(run);
      return;
    }
    if (auto* st = std::get_if<smtp_event::StartTls>(&ev)) {
      if (s.conn) s.conn->start_tls(st->options);
      return;
    }
    if (auto* done = std::get_if<smtp_event::TransactionDone>(&ev)) {
      transaction_done(s, *done);
      return;
    }
    if (auto* failed = std::get_if<smtp_event::Failed>(&ev)) {
      session_failed(s, *failed);
      return;
    }
    if (std::holds_alternative<smtp_event::Closed>(ev)) {
      end_session(s);
      return;
    }
  }

  void start_job(Session& s) {
    auto run = s.run.lock();
    if (!run || run->jobs.empty()) return;
    if (s.idle_timer != kNoTimer) {
      clock.cancel(s.idle_timer);
      s.idle_timer = kNoTimer;
    }
    Job job = std::move(run->jobs.front());
    run->jobs.pop_front();
    // Unpacking the record, reading the body and building the transaction allocate: when
    // memory runs out the job goes back to the queue (deferred, not an attempt) instead of
    // being stranded in flight.
    const Reply out_of_memory(451, "4.3.0", "[internal] out of memory while preparing the message");
    std::optional<MessageRecord> m;
    try {
      m = queue.find(job.id);
    } catch (const std::bad_alloc&) {
      finish_job(job, out_of_memory, {out_of_memory.to_string()}, "", false);
      kick(run);
      return;
    }
    if (!m) {  // deleted meanwhile
      queue.untake(job);
      kick(run);
      return;
    }
    SmtpTransaction tx;
    try {
      auto body = queue.read_body(job.id);
      if (!body) {
        // The body is unreadable: defer with the storage error rather than lose the message.
        finish_job(job,
                   Reply(451, "4.3.0",
                         "[internal] cannot read the queued message: " + body.error().message),
                   {}, "", true);  // counted: the retry schedule spaces the next try
        kick(run);
        return;
      }
      tx.reverse_path = std::move(m->reverse_path);
      tx.ret = m->ret;
      tx.envid = std::move(m->envid);
      // SMTPUTF8 and BODY=8BITMIME: the client finds non-ASCII addresses and 8-bit bodies
      // itself (SmtpClient::send), so the body is scanned once.
      for (auto idx : job.recipients) {
        auto& r = m->recipients[idx];
        tx.recipients.push_back({std::move(r.address), r.notify, std::move(r.orcpt)});
      }
      tx.body = std::make_shared<const std::string>(std::move(body.value()));
    } catch (const std::bad_alloc&) {
      finish_job(job, out_of_memory, {out_of_memory.to_string()}, "", false);
      kick(run);
      return;
    }
    s.job = std::move(job);
    s.messages++;
    stats.jobs_in_flight++;
    bool sent = false;
    try {
      sent = s.client.send(std::move(tx), clock.now());
    } catch (const std::bad_alloc&) {
      // The client's state is unknown after a failed allocation: end the session too.
      Job j = std::move(*s.job);
      s.job.reset();
      stats.jobs_in_flight--;
      finish_job(j, out_of_memory, {out_of_memory.to_string()}, "", false);
      end_session(s);
      return;
    }
    if (!sent) {
      Job j = std::move(*s.job);
      s.job.reset();
      stats.jobs_in_flight--;
      finish_job(j, Reply(554, "5.6.0", "[internal] envelope refused by the SMTP client"), {}, "",
                 false);
    }
    s.pump();
  }

  void transaction_done(Session& s, const smtp_event::TransactionDone& done) {
    if (!s.job) return;
    Job job = std::move(*s.job);
    s.job.reset();
    stats.jobs_in_flight--;
    stats.transactions++;
    std::vector<RecipientOutcome> outcomes;
    for (std::size_t i = 0; i < job.recipients.size(); ++i) {
      RecipientOutcome o;
      o.index = job.recipients[i];
      o.reply = i < done.replies.size() ? done.replies[i]
                                        : replies::connection_lost("no reply for this recipient");
      o.remote = s.remote;
      o.relayed_without_dsn = o.reply.positive() && !s.client.capabilities().dsn;
      o.diagnostic.push_back(s.remote);
      if (o.reply.positive() && !done.data_intermediate.empty())
        o.diagnostic.push_back("(" + done.data_intermediate + ")");
      if (const auto& tls = s.client.tls())
        o.diagnostic.push_back("tls; " + tls->version + " " + tls->cipher +
                               (tls->verified ? " verified" : " unverified"));
      o.diagnostic.push_back("smtp; " + o.reply.to_string());
      outcomes.push_back(std::move(o));
    }
    queue.complete(job, outcomes, true);
    auto run = s.run.lock();
    if (!run || s.dead || !s.client.ready()) return;
    refill(*run);
    bool too_old = clock.now() - s.opened >= config.max_connection_age;
    if (s.messages >= run->route.max_messages_per_connection || too_old || stopping) {
      s.client.quit(clock.now());
      if (!run->jobs.empty()) open_sessions(run);
      return;
    }
    if (!run->jobs.empty())
      start_job(s);
    else
      idle_or_quit(s);
  }

  void session_failed(Session& s, const smtp_event::Failed& f) {
    auto run = s.run.lock();
    if (!run) {
      end_session(s);
      return;
    }
    if (!s.ready || f.connection_level) {
      if (f.tls_failure && run->route.tls == TlsPolicy::opportunistic && !s.plaintext_retry) {
        // Opportunistic TLS failed: retry this host once in plaintext on a new connection and
        // remember it as broken-TLS for a while.
        broken_tls[s.target.address + ":" + std::to_string(s.target.port)] =
            clock.now() + config.broken_tls_memory;
        auto target = s.target;
        end_session(s);
        if (!stopping) open_session(run, target, true);
        return;
      }
      if (f.connection_level) {
        connection_failed(s, (s.remote.empty() ? "" : s.remote + " ") + f.reply.to_string(), true);
        return;
      }
      // Not a connection failure (TLS policy, EHLO refused, AUTH refused...): next host, not
      // counted. Never a bounce from here: a misconfigured or misbehaving host before the
      // transaction (a 535 to AUTH, a 5xx to EHLO) defers the mail, as Postfix's soft bounce
      // does, so that fixing the configuration loses nothing.
      Reply soft = f.reply;
      if (soft.permanent()) {
        soft.code = 451;
        if (!soft.enhanced.empty()) soft.enhanced[0] = '4';
      }
      run->last_failure = s.remote.empty() ? soft.to_string() : s.remote + " " + soft.to_string();
      run->last_failure_reply = soft;
      if (run->next_target < run->targets.size() &&
          run->targets[run->next_target].address == s.target.address)
        ++run->next_target;
    }
    end_session(s);
  }

  void idle_or_quit(Session& s) {
    if (s.dead || s.job) return;
    if (stopping) {
      s.client.quit(clock.now());
      return;
    }
    if (s.idle_timer != kNoTimer) return;
    std::weak_ptr<Session> weak = s.shared_from_this();
    s.idle_timer = clock.schedule(config.idle_timeout, [weak] {
      auto p = weak.lock();
      if (!p || p->dead) return;
      p->idle_timer = kNoTimer;
      if (!p->job && p->client.ready()) {
        p->client.quit(p->impl->clock.now());
        p->pump();
      }
    });
  }

  void end_session(Session& s) {
    if (s.dead) return;
    s.dead = true;
    s.cancel_timers();
    s.conn.reset();
    --sessions_open;
    auto run = s.run.lock();
    if (s.job) {
      // The client always reports a transaction before the session ends; this is a guard.
      Job job = std::move(*s.job);
      s.job.reset();
      stats.jobs_in_flight--;
      finish_job(job, replies::connection_lost("session ended"), {}, s.remote, true);
    }
    // Drop the session object after the current call stack unwinds.
    std::weak_ptr<Run> weak = run;
    Session* raw = &s;
    std::weak_ptr<int> life = alive;
    clock.schedule(Duration{0}, [this, weak, raw, life] {
      if (life.expired()) return;
      auto r = weak.lock();
      if (!r) return;
      r->sessions.erase(std::remove_if(r->sessions.begin(), r->sessions.end(),
                                       [raw](auto& p) { return p.get() == raw; }),
                        r->sessions.end());
      if (!r->jobs.empty())
        kick(r);
      else
        maybe_finish(r);
      wake_waiting();
    });
  }

  void wake_waiting() {
    while (!waiting_for_slot.empty() && sessions_open < config.max_connections) {
      auto r = waiting_for_slot.front().lock();
      waiting_for_slot.pop_front();
      if (r) kick(r);
    }
  }

  void check_stopped() {
    if (!stopping || !runs.empty() || !stop_done) return;
    auto done = std::move(stop_done);
    stop_done = nullptr;
    done();
  }
};

Deliverer::Deliverer(Queue& queue, const RouteTable& routes, DomainStateTable& domains,
                     Resolver& resolver, Transport& transport, Clock& clock, EventSink* sink,
                     DelivererConfig config)
    : config_(std::move(config)) {
  impl_ = std::make_unique<Impl>(queue, routes, domains, resolver, transport, clock, sink, config_);
  Impl* impl = impl_.get();
  queue.set_new_work_listener([impl](MessageId id) { impl->new_work(id); });
  queue.set_due_now_listener([impl] {
    if (impl->started) impl->run_cycle();
  });
}

Deliverer::~Deliverer() = default;

void Deliverer::start() {
  impl_->started = true;
  impl_->stopping = false;
  impl_->arm_cycle();
  impl_->run_cycle();
}

void Deliverer::stop(std::function<void()> done) {
  impl_->stopping = true;
  if (impl_->cycle_timer != kNoTimer) impl_->clock.cancel(impl_->cycle_timer);
  impl_->cycle_timer = kNoTimer;
  impl_->stop_done = std::move(done);
  // Jobs not yet on a session go back to the queue; idle sessions quit.
  std::vector<std::shared_ptr<Impl::Run>> runs;
  for (auto& [k, r] : impl_->runs) runs.push_back(r);
  for (auto& r : runs) {
    auto jobs = std::move(r->jobs);
    r->jobs.clear();
    for (auto& j : jobs) impl_->queue.untake(j);
    for (auto& s : r->sessions) {
      if (!s->dead && !s->job && s->ready && s->client.ready()) {
        s->client.quit(impl_->clock.now());
        s->pump();
      }
    }
    impl_->maybe_finish(r);
  }
  impl_->check_stopped();
}

void Deliverer::run_cycle() {
  impl_->run_cycle();
}

void Deliverer::flush() {
  impl_->queue.make_all_due();
  impl_->run_cycle();
}

void Deliverer::reset_domains() {
  for (const auto& d : impl_->domains.reset())
    impl_->notice(EventKind::destination_up, d, "destination " + d + " reset: no longer down");
  impl_->queue.clear_not_before();
  impl_->run_cycle();
}

bool Deliverer::idle() const noexcept {
  return impl_->runs.empty();
}

DelivererStats Deliverer::stats() const {
  DelivererStats s = impl_->stats;
  s.connections_open = impl_->sessions_open;
  return s;
}

}  // namespace mailq
