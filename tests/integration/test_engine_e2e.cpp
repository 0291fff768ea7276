// The whole engine over real sockets: LoopClock, UvTransport, Queue and Deliverer against
// Postfix's smtp-sink and a hostile listener on 127.0.0.0/8.
#include <catch2/catch.hpp>

#include <uv.h>

#include <memory>
#include <string>
#include <vector>

#include "mailq/deliverer.h"
#include "mailq/domain_state.h"
#include "mailq/queue.h"
#include "mailq/resolver.h"
#include "mailq/route.h"
#include "mailq/storage.h"
#include "mailq/uv/loop_clock.h"
#include "mailq/uv/transport.h"
#include "support/servers.h"
#include "support/test_loop.h"

using namespace mailq;
using namespace mailq::test;
using namespace std::chrono_literals;

namespace {

// A listener that accepts and resets every connection at once (SO_LINGER 0): a server that
// never greets. Counts the connections at the socket level.
class ResettingListener {
 public:
  ResettingListener(uv_loop_t* loop, const std::string& ip, std::uint16_t port) {
    server_ = new uv_tcp_t;
    uv_tcp_init(loop, server_);
    server_->data = this;
    sockaddr_in addr{};
    uv_ip4_addr(ip.c_str(), port, &addr);
    ok_ = uv_tcp_bind(server_, reinterpret_cast<const sockaddr*>(&addr), 0) == 0 &&
          uv_listen(reinterpret_cast<uv_stream_t*>(server_), 64, on_connection) == 0;
  }
  ~ResettingListener() { close(); }
  void close() {
    if (!server_) return;
    server_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(server_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    server_ = nullptr;
  }
  bool ok() const { return ok_; }
  int accepted = 0;

 private:
  static void on_connection(uv_stream_t* s, int status) {
    auto* self = static_cast<ResettingListener*>(s->data);
    if (status < 0 || !self) return;
    auto* client = new uv_tcp_t;
    uv_tcp_init(s->loop, client);
    if (uv_accept(s, reinterpret_cast<uv_stream_t*>(client)) == 0) ++self->accepted;
    uv_tcp_close_reset(client, [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
  }
  uv_tcp_t* server_ = nullptr;
  bool ok_ = false;
};

struct RealEngine {
  TestLoop loop;
  std::unique_ptr<uv::LoopClock> clock;
  MemoryStorage storage;
  RouteTable routes;
  MemorySink events;
  std::unique_ptr<StaticResolver> resolver;
  std::unique_ptr<uv::UvTransport> transport;
  std::unique_ptr<Queue> queue;
  std::unique_ptr<Deliverer> deliverer;

  RealEngine(std::uint16_t mx_port, DomainStateConfig dc) {
    clock = std::make_unique<uv::LoopClock>(loop.get());
    Route r;
    r.name = "tcp_local";
    r.mx_port = mx_port;
    r.allow_internal_mx = {Network::parse("127.0.0.0/8").value(),
                           Network::parse("::1").value()};  // the peers are on loopback
    r.tls = TlsPolicy::none;
    r.timeouts.connect = Duration(3s);
    r.timeouts.greeting = Duration(3s);
    REQUIRE(routes.add(r));
    REQUIRE(routes.set_default("tcp_local"));
    resolver = std::make_unique<StaticResolver>(*clock);
    transport = std::make_unique<uv::UvTransport>(loop.get(), *clock);
    QueueConfig qc;
    qc.retry.jitter = 0;
    queue = std::make_unique<Queue>(storage, routes, *clock, &events, qc);
    DelivererConfig del;
    del.idle_timeout = Duration(200ms);
    del.domain_state = dc;
    deliverer = std::make_unique<Deliverer>(*queue, *resolver, *transport, del);
  }
  ~RealEngine() {
    deliverer.reset();
    queue.reset();
    transport.reset();
    resolver.reset();
    clock.reset();
    std::string leftovers;
    CHECK(loop.close(&leftovers) == 0);
    INFO(leftovers);
  }

  MessageId send(const std::string& to) {
    auto env = make_envelope("sender@example.org", {to});
    REQUIRE(env);
    MessageId id;
    queue->enqueue(env.value(), "Subject: e2e\r\n\r\nhello over real sockets\r\n",
                   [&](Result<MessageId> r) {
                     REQUIRE(r);
                     id = r.value();
                   });
    return id;
  }
  RecipientState state(MessageId id) {
    const auto m = queue->find(id);
    return m ? m->recipients[0].state : RecipientState::delivered;
  }
};

}  // namespace

TEST_CASE(
    "Seed 000 over real sockets: a destination that never greets is marked down, the next "
    "message gets the 451 4.4.1 record without a connection, and delivery resumes after "
    "the interval",
    "[integration][seed000][e2e]") {
  SmtpSink sink;
  std::string err;
  REQUIRE(sink.start(&err));
  INFO(err);
  RealEngine e(sink.port(), {2, Duration(1500ms)});
  ResettingListener bad(e.loop.get(), "127.0.0.2", sink.port());
  REQUIRE(bad.ok());
  e.resolver->set_mx("example.com", {{10, "mx.example.com"}});
  e.resolver->set_addresses("mx.example.com", {"127.0.0.2"});
  e.deliverer->start();

  MessageId m1 = e.send("a@example.com");
  REQUIRE(e.loop.run_until([&] { return e.state(m1) == RecipientState::deferred; }, 10s));
  MessageId m2 = e.send("b@example.com");
  REQUIRE(e.loop.run_until([&] { return e.state(m2) == RecipientState::deferred; }, 10s));
  REQUIRE(bad.accepted == 2);
  REQUIRE(e.deliverer->domains().is_down("example.com", e.clock->now()));

  MessageId m3 = e.send("c@example.com");
  REQUIRE(e.loop.run_until([&] { return e.state(m3) == RecipientState::deferred; }, 10s));
  e.loop.run_for(200ms);
  CHECK(bad.accepted == 2);  // no connection was attempted: checked at the socket
  CHECK(e.queue->find(m3)->recipients[0].last_reply.to_string() ==
        "451 4.4.1 [internal] connection was not attempted: domain is marked down (too many "
        "connection failures)");
  CHECK(e.queue->find(m1)->recipients[0].last_reply.code == 421);

  // The server comes back (at another address); after the interval a new message goes at once.
  e.resolver->set_addresses("mx.example.com", {"127.0.0.1"});
  e.loop.run_for(1600ms);
  REQUIRE_FALSE(e.deliverer->domains().is_down("example.com", e.clock->now()));
  MessageId m4 = e.send("d@example.com");
  REQUIRE(e.loop.run_until([&] { return e.queue->find(m4) == std::nullopt; }, 10s));
  CHECK(sink.wait_for_dumps(1).size() == 1);
  // The backlog goes with the next queue cycle (a flush here does the same, the mark is gone).
  e.deliverer->flush();
  REQUIRE(e.loop.run_until([&] { return e.queue->size() == 0; }, 10s));
  CHECK(sink.wait_for_dumps(4).size() == 4);
  CHECK(bad.accepted == 2);
  bad.close();
  REQUIRE(e.loop.run_until([&] { return e.deliverer->idle(); }, 10s));
}

TEST_CASE(
    "Real sockets: a refused connection is logged with the seed 002 text and counted as an "
    "attempt",
    "[integration][e2e]") {
  std::uint16_t closed_port = free_tcp_port();
  RealEngine e(closed_port, {5, Duration(15min)});
  e.resolver->set_mx("example.com", {{10, "mx.example.com"}});
  e.resolver->set_addresses("mx.example.com", {"127.0.0.1"});
  e.deliverer->start();
  MessageId m = e.send("a@example.com");
  REQUIRE(e.loop.run_until([&] { return e.state(m) == RecipientState::deferred; }, 10s));
  const auto rec = e.queue->find(m);
  REQUIRE(rec);
  const auto& r = rec->recipients[0];
  CHECK(r.attempts == 1);
  bool logged = false;
  for (auto& ev : e.events.events)
    for (auto& d : ev.diagnostic)
      if (d == "TCP active open: Failed connect() Error: connection refused") logged = true;
  CHECK(logged);
  REQUIRE(e.loop.run_until([&] { return e.deliverer->idle(); }, 10s));
}

TEST_CASE(
    "Real sockets: many messages to smtp-sink are delivered byte for byte over reused "
    "connections",
    "[integration][e2e]") {
  SmtpSink sink;
  std::string err;
  REQUIRE(sink.start(&err));
  RealEngine e(sink.port(), {5, Duration(15min)});
  e.resolver->set_mx("example.com", {{10, "mx.example.com"}});
  e.resolver->set_addresses("mx.example.com", {"127.0.0.1"});
  e.deliverer->start();
  constexpr int kCount = 40;
  for (int i = 0; i < kCount; ++i) e.send("user" + std::to_string(i) + "@example.com");
  REQUIRE(e.loop.run_until([&] { return e.queue->size() == 0; }, 30s));
  auto dumps = sink.wait_for_dumps(kCount);
  REQUIRE(dumps.size() == kCount);
  for (auto& d : dumps)
    CHECK(d.find("\nSubject: e2e\n\nhello over real sockets\n") != std::string::npos);
  auto st = e.deliverer->stats();
  CHECK(st.connections_opened < static_cast<std::uint64_t>(kCount));
  CHECK(st.transactions == kCount);
  REQUIRE(e.loop.run_until([&] { return e.deliverer->idle(); }, 10s));
}

namespace {
struct TlsFixture {
  TempDir dir;
  TestPki pki;
  TlsFixture() {
    std::string err;
    REQUIRE(pki.generate(dir.path(), &err));
  }
};

void use_tls(RealEngine& e, TlsPolicy policy, const std::string& ca_file, std::uint16_t port) {
  Route r = *e.routes.find("tcp_local");
  r.tls = policy;
  r.ca_file = ca_file;
  r.mx_port = port;
  REQUIRE(e.routes.add(r));
  e.resolver->set_mx("example.com", {{10, TestPki::kServerName}});
  e.resolver->set_addresses(TestPki::kServerName, {"127.0.0.1"});
}

std::string delivery_detail(const RealEngine& e) {
  std::string all;
  for (auto& ev : e.events.events)
    for (auto& d : ev.diagnostic) all += d + "\n";
  return all;
}
}  // namespace

TEST_CASE(
    "Deliverer over STARTTLS with the verify policy: verified against the route's CA, the "
    "log says which protocol and cipher",
    "[integration][e2e][tls]") {
  TlsFixture f;
  AiosmtpdServer server(AiosmtpdServer::Tls::offered, f.pki.server_cert, f.pki.server_key);
  std::string err;
  REQUIRE(server.start(&err));
  RealEngine e(server.endpoint().port, {5, Duration(15min)});
  use_tls(e, TlsPolicy::verify, f.pki.ca_cert, server.endpoint().port);
  e.deliverer->start();
  MessageId m = e.send("user@example.com");
  REQUIRE(e.loop.run_until([&] { return e.queue->find(m) == std::nullopt; }, 20s));
  INFO(delivery_detail(e));
  CHECK(delivery_detail(e).find("tls; TLSv1.2 ") != std::string::npos);
  CHECK(delivery_detail(e).find(" verified\n") != std::string::npos);
  CHECK(server.wait_for_output("tls=1"));
  REQUIRE(e.loop.run_until([&] { return e.deliverer->idle(); }, 10s));
}

TEST_CASE(
    "Deliverer with the verify policy refuses a self-signed certificate: deferred with the "
    "reason, never sent in plaintext",
    "[integration][e2e][tls]") {
  TlsFixture f;
  AiosmtpdServer server(AiosmtpdServer::Tls::offered, f.pki.self_signed_cert,
                        f.pki.self_signed_key);
  std::string err;
  REQUIRE(server.start(&err));
  RealEngine e(server.endpoint().port, {5, Duration(15min)});
  use_tls(e, TlsPolicy::verify, f.pki.ca_cert, server.endpoint().port);
  e.deliverer->start();
  MessageId m = e.send("user@example.com");
  REQUIRE(e.loop.run_until([&] { return e.state(m) == RecipientState::deferred; }, 20s));
  const auto rec = e.queue->find(m);
  REQUIRE(rec);
  const auto& r = rec->recipients[0];
  INFO(r.last_reply.to_string());
  CHECK(r.last_reply.transient());
  CHECK(r.last_reply.to_string().find("certificate verification failed") != std::string::npos);
  CHECK_FALSE(e.deliverer->domains().is_down("example.com", e.clock->now()));
  e.loop.run_for(300ms);
  CHECK(server.output().find("DATA") == std::string::npos);
  REQUIRE(e.loop.run_until([&] { return e.deliverer->idle(); }, 10s));
}

TEST_CASE("Deliverer with the opportunistic policy encrypts without verifying",
          "[integration][e2e][tls]") {
  TlsFixture f;
  AiosmtpdServer server(AiosmtpdServer::Tls::offered, f.pki.self_signed_cert,
                        f.pki.self_signed_key);
  std::string err;
  REQUIRE(server.start(&err));
  RealEngine e(server.endpoint().port, {5, Duration(15min)});
  use_tls(e, TlsPolicy::opportunistic, "", server.endpoint().port);
  e.deliverer->start();
  MessageId m = e.send("user@example.com");
  REQUIRE(e.loop.run_until([&] { return e.queue->find(m) == std::nullopt; }, 20s));
  CHECK(delivery_detail(e).find(" unverified\n") != std::string::npos);
  CHECK(server.wait_for_output("tls=1"));
  REQUIRE(e.loop.run_until([&] { return e.deliverer->idle(); }, 10s));
}
