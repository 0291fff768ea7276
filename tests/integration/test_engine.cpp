// The Engine as host developers use it: short host programs on their own uv loop, against
// Postfix's smtp-sink on 127.0.0.1.
#include <catch2/catch.hpp>

#include <atomic>
#include <functional>
#include <map>
#include <set>
#include <thread>

#include "mailq/engine.h"
#include "mailq/testing/storage_conformance.h"
#include "mailq/uv/loop_clock.h"
#include "support/bytes_storage.h"
#include "support/servers.h"
#include "support/test_loop.h"

using namespace mailq;
using namespace mailq::test;

namespace {

constexpr const char* kBody = "Subject: engine\r\nMessage-ID: <engine@mailq.test>\r\n\r\nhello\r\n";

// A config for a host: a spool in `dir`, every domain through one smart host at `port`, fast
// retries, no DNS server needed.
EngineConfig config_for(const TempDir& dir, std::uint16_t port,
                        spool::Layout layout = spool::Layout::segments) {
  EngineConfig c;
  c.spool.directory = dir.file("spool");
  c.spool.layout = layout;
  Route relay;
  relay.name = "tcp_relay";
  relay.hosts = {{"127.0.0.1", port}};
  relay.tls = TlsPolicy::none;
  relay.timeouts.connect = Duration(2000);
  REQUIRE(c.routes.add(relay));
  REQUIRE(c.routes.set_default("tcp_relay"));
  c.resolver.nameservers = {"127.0.0.1:1"};  // never asked: the route is static
  c.queue.retry.jitter = 0;
  c.queue.reporting_mta = "engine.mailq.test";
  c.delivery.helo_name = "engine.mailq.test";
  c.delivery.idle_timeout = Duration(200);
  return c;
}

Envelope envelope(int i) {
  auto env = make_envelope("host@mailq.test", {"user" + std::to_string(i) + "@example.com"});
  REQUIRE(env);
  return env.value();
}

// A first run of a host: three messages submitted to a destination that refuses them, all
// deferred, the engine stopped. Their ids.
std::vector<MessageId> leave_three_deferred(EngineConfig c) {
  std::vector<MessageId> queued;
  TestLoop loop;
  std::size_t deferred = 0;
  c.on_idle = [&](const EngineIdle& idle) { deferred = idle.queued; };
  auto engine = Engine::open(loop.get(), std::move(c));
  REQUIRE(engine);
  for (int i = 0; i < 3; ++i)
    engine.value()->submit(envelope(i), kBody, [&](Result<MessageId> r) {
      REQUIRE(r);
      queued.push_back(r.value());
    });
  REQUIRE(loop.run_until([&] { return deferred == 3; }));
  bool stopped = false;
  engine.value()->stop([&] { stopped = true; });
  REQUIRE(loop.run_until([&] { return stopped; }));
  engine.value().reset();
  CHECK(loop.close() == 0);
  return queued;
}

// The second run of that host: the three messages recovered before new work, made due (the
// refused connections deferred them), delivered to `sink`; `after` runs once they are, then
// the engine stops.
void recover_and_deliver(EngineConfig c, SmtpSink& sink, const std::vector<MessageId>& queued,
                         const std::function<void()>& after = {}) {
  TestLoop loop;
  std::size_t finished = 0;
  c.on_message_done = [&](const MessageRecord& m) {
    CHECK(m.recipients[0].state == RecipientState::delivered);
    ++finished;
  };
  auto engine = Engine::open(loop.get(), std::move(c));
  REQUIRE(engine);
  Engine& e = *engine.value();
  CHECK(e.recovery().recovered == 3);
  for (MessageId id : queued) CHECK(e.find(id));
  CHECK(e.flush() == 3);
  REQUIRE(loop.run_until([&] { return finished == 3; }));
  CHECK(sink.wait_for_dumps(3).size() == 3);
  if (after) after();
  bool stopped = false;
  e.stop([&] { stopped = true; });
  REQUIRE(loop.run_until([&] { return stopped; }));
  engine.value().reset();
  CHECK(loop.close() == 0);
}

}  // namespace

TEST_CASE(
    "Engine: a host on its own uv loop delivers 100 messages and stops when the engine is "
    "drained",
    "[engine]") {
  SmtpSink sink;
  std::string err;
  REQUIRE(sink.start(&err));
  TempDir dir;
  TestLoop loop;
  EngineConfig c = config_for(dir, sink.port());
  std::size_t done = 0, delivered = 0;
  std::unique_ptr<Engine> engine;
  c.on_message_done = [&](const MessageRecord& m) {
    for (auto& r : m.recipients) delivered += r.state == RecipientState::delivered;
  };
  bool stopped = false;
  c.on_idle = [&](const EngineIdle& idle) {
    if (idle.queued == 0 && done == 100) engine->stop([&] { stopped = true; });
  };
  auto opened = Engine::open(loop.get(), std::move(c));
  REQUIRE(opened);
  engine = std::move(opened.value());
  for (int i = 0; i < 100; ++i)
    engine->submit(envelope(i), kBody, [&](Result<MessageId> r) {
      CHECK(r);
      ++done;
    });
  // The loop ends by itself once the engine has stopped: nothing of it is left on the loop.
  REQUIRE(loop.run_until([&] { return stopped; }, std::chrono::seconds(60)));
  CHECK(uv_run(loop.get(), UV_RUN_DEFAULT) == 0);
  engine.reset();
  CHECK(sink.wait_for_dumps(100).size() == 100);
  CHECK(done == 100);
  CHECK(delivered == 100);
  CHECK(loop.close() == 0);
}

TEST_CASE("Engine: a host with its own Resolver: a fixed table instead of DNS", "[engine]") {
  SmtpSink sink;
  std::string err;
  REQUIRE(sink.start(&err));
  TempDir dir;
  TestLoop loop;
  EngineConfig c = config_for(dir, sink.port());
  Route mx;
  mx.name = "tcp_local";
  mx.mx_port = sink.port();
  mx.allow_internal_mx = {Network::parse("127.0.0.0/8").value(),
                          Network::parse("::1").value()};  // the sink is on loopback
  mx.tls = TlsPolicy::none;
  REQUIRE(c.routes.add(mx));
  REQUIRE(c.routes.set_default("tcp_local"));
  auto clock = std::make_unique<uv::LoopClock>(loop.get());
  auto table = std::make_unique<StaticResolver>(*clock);
  table->set_mx("example.com", {{10, "mx.example.com"}});
  table->set_addresses("mx.example.com", {"127.0.0.1"});
  StaticResolver* resolver = table.get();
  c.parts.clock = std::move(clock);
  c.parts.resolver = std::move(table);
  std::vector<MessageRecord> finished;
  c.on_message_done = [&](const MessageRecord& m) { finished.push_back(m); };
  auto engine = Engine::open(loop.get(), std::move(c));
  REQUIRE(engine);
  Engine& e = *engine.value();
  e.submit(envelope(1), kBody, [](Result<MessageId> r) { CHECK(r); });
  REQUIRE(loop.run_until([&] { return !finished.empty(); }));
  CHECK(finished[0].recipients[0].state == RecipientState::delivered);
  CHECK(finished[0].recipients[0].remote_mta == "mx.example.com");
  CHECK(resolver->queries() >= 2);  // the MX and the host's addresses came from the table
  bool stopped = false;
  e.stop([&] { stopped = true; });
  REQUIRE(loop.run_until([&] { return stopped; }));
  engine.value().reset();
  CHECK(loop.close() == 0);
}

TEST_CASE(
    "Engine: a host with its own Storage, run through the conformance suite, keeps mail across "
    "a restart",
    "[engine][conformance]") {
  // The host checks its storage against the contract first, as storage.h asks, on a scratch
  // disk of its own.
  {
    auto scratch = std::make_shared<Disk>();
    const auto failures =
        testing::check_storage_conformance([scratch](Clock&) -> std::unique_ptr<Storage> {
          return std::make_unique<BytesStorage>(scratch);
        });
    std::string lines;
    for (const auto& f : failures) lines += f + "\n";
    INFO(lines);
    REQUIRE(failures.empty());
  }
  auto disk = std::make_shared<Disk>();
  TempDir dir;
  const std::uint16_t closed_port = free_tcp_port();  // nothing listens: connections refused
  EngineConfig first = config_for(dir, closed_port);
  first.spool.directory.clear();  // the host's storage instead of a spool
  first.parts.storage = std::make_unique<BytesStorage>(disk);
  const std::vector<MessageId> queued = leave_three_deferred(std::move(first));
  // What the host's database holds: the three messages, each with its refused attempts.
  REQUIRE(disk->messages.size() == 3);
  for (const auto& [id, m] : disk->messages) CHECK_FALSE(m.attempts.empty());

  SmtpSink sink;
  std::string err;
  REQUIRE(sink.start(&err));
  EngineConfig c = config_for(dir, sink.port());
  c.spool.directory.clear();
  c.parts.storage = std::make_unique<BytesStorage>(disk);  // a new instance, the same database
  recover_and_deliver(std::move(c), sink, queued, [&] {
    CHECK(disk->messages.empty());  // delivered mail leaves the host's database
  });
}

TEST_CASE(
    "Engine: four threads submit 200 messages, every done runs once, on the loop thread, and "
    "every message is delivered",
    "[engine][threads]") {
  SmtpSink sink;
  std::string err;
  REQUIRE(sink.start(&err));
  TempDir dir;
  TestLoop loop;
  EngineConfig c = config_for(dir, sink.port());
  std::size_t delivered = 0;
  c.on_message_done = [&](const MessageRecord&) { ++delivered; };
  auto opened = Engine::open(loop.get(), std::move(c));
  REQUIRE(opened);
  Engine& engine = *opened.value();
  const std::thread::id loop_thread = std::this_thread::get_id();
  std::atomic<int> submitted{0};
  std::size_t done = 0, ok = 0;
  bool wrong_thread = false;
  std::set<std::uint64_t> ids;
  // The envelopes are made here: Catch2's assertions (in envelope()) are not thread-safe.
  std::vector<Envelope> envelopes;
  for (int t = 0; t < 4; ++t)
    for (int i = 0; i < 50; ++i) envelopes.push_back(envelope(t * 100 + i));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        engine.submit(envelopes[static_cast<std::size_t>(t * 50 + i)], kBody,
                      [&](Result<MessageId> r) {
                        wrong_thread = wrong_thread || std::this_thread::get_id() != loop_thread;
                        ++done;
                        if (r) {
                          ++ok;
                          ids.insert(r.value().value);
                        }
                      });
        ++submitted;
      }
    });
  }
  REQUIRE(loop.run_until([&] { return submitted == 200 && delivered == 200; },
                         std::chrono::seconds(60)));
  for (auto& t : threads) t.join();
  CHECK_FALSE(wrong_thread);
  CHECK(done == 200);
  CHECK(ok == 200);
  CHECK(ids.size() == 200);
  CHECK(sink.wait_for_dumps(200).size() == 200);
  bool stopped = false;
  engine.stop([&] { stopped = true; });
  REQUIRE(loop.run_until([&] { return stopped; }));
  // After stop: refused at once, on the calling thread.
  bool refused = false;
  const Envelope last = envelope(999);
  std::thread late([&] {
    engine.submit(last, kBody, [&](Result<MessageId> r) {
      refused = !r && r.error().code == errc::shutting_down;
    });
  });
  late.join();
  CHECK(refused);
  opened.value().reset();
  CHECK(loop.close() == 0);
}

TEST_CASE("Engine: what a restart finds in the spool is recovered before new work, and delivered",
          "[engine]") {
  TempDir dir;
  const std::uint16_t closed_port = free_tcp_port();  // nothing listens: connections refused
  const std::vector<MessageId> queued =
      leave_three_deferred(config_for(dir, closed_port, spool::Layout::files));
  SmtpSink sink;
  std::string err;
  REQUIRE(sink.start(&err));
  recover_and_deliver(config_for(dir, sink.port(), spool::Layout::files), sink, queued);
}

TEST_CASE(
    "Engine: operator calls do what they say: hold, release, bounce, remove with errors in "
    "words, reset_down releases what the marks held, backpressure past max_queued_messages",
    "[engine]") {
  TempDir dir;
  TestLoop loop;
  const std::uint16_t closed_port = free_tcp_port();
  EngineConfig c = config_for(dir, closed_port);
  c.delivery.domain_state = {1, Duration(std::chrono::minutes(15))};  // one refusal: down
  c.max_queued_messages = 3;
  std::vector<std::string> down, up;
  c.on_destination_down = [&](const std::string& d, TimePoint until, const std::string& why) {
    CHECK(until > TimePoint{});
    CHECK(why.find("connection refused") != std::string::npos);
    down.push_back(d);
  };
  c.on_destination_up = [&](const std::string& d) { up.push_back(d); };
  std::map<std::uint64_t, RecipientState> finals;
  c.on_message_done = [&](const MessageRecord& m) { finals[m.id.value] = m.recipients[0].state; };
  auto opened = Engine::open(loop.get(), std::move(c));
  REQUIRE(opened);
  Engine& e = *opened.value();

  std::vector<MessageId> ids;
  std::vector<Error> refused;
  for (int i = 0; i < 4; ++i)
    e.submit(envelope(i), kBody, [&](Result<MessageId> r) {
      if (r)
        ids.push_back(r.value());
      else
        refused.push_back(r.error());
    });
  REQUIRE(loop.run_until([&] { return ids.size() + refused.size() == 4 && !down.empty(); }));
  REQUIRE(ids.size() == 3);
  REQUIRE(refused.size() == 1);
  CHECK(refused[0].code == errc::queue_full);
  CHECK(refused[0].message.find("max_queued_messages") != std::string::npos);
  CHECK(down == std::vector<std::string>{"tcp_relay"});
  CHECK(e.domains().is_down("tcp_relay", e.clock().now()));

  REQUIRE(e.hold(ids[0]));
  CHECK(e.find(ids[0])->held);
  REQUIRE(e.release(ids[0]));
  CHECK_FALSE(e.find(ids[0])->held);
  auto missing = e.hold(MessageId{12345});
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code == errc::not_found);
  CHECK(missing.error().message == "hold 0000000000C1S: no such message in the queue");
  REQUIRE(e.remove(ids[1]));
  CHECK_FALSE(e.find(ids[1]));
  REQUIRE(e.bounce(ids[2], "no longer wanted"));
  CHECK(finals[ids[2].value] == RecipientState::bounced);
  CHECK(finals.count(ids[1].value) == 0);  // a removal is not a finished message

  // The mark holds the rest back; resetting it releases it at once.
  CHECK(e.reset_down() == std::vector<std::string>{"tcp_relay"});
  CHECK(up == std::vector<std::string>{"tcp_relay"});
  CHECK_FALSE(e.domains().is_down("tcp_relay", e.clock().now()));

  bool stopped = false;
  e.stop([&] { stopped = true; });
  REQUIRE(loop.run_until([&] { return stopped; }));
  CHECK_FALSE(e.hold(ids[0]));  // after stop: an error, not a crash
  opened.value().reset();
  CHECK(loop.close() == 0);
}

TEST_CASE("Engine::open says what failed, naming the part", "[engine]") {
  TestLoop loop;
  TempDir dir;
  EngineConfig none;
  none.resolver.nameservers = {"127.0.0.1:1"};
  auto r = Engine::open(loop.get(), std::move(none));
  REQUIRE_FALSE(r);
  CHECK(r.error().message == "spool: no directory (EngineConfig::spool)");

  // A spool another engine holds.
  EngineConfig first = config_for(dir, 1);
  auto a = Engine::open(loop.get(), std::move(first));
  REQUIRE(a);
  EngineConfig second = config_for(dir, 1);
  auto b = Engine::open(loop.get(), std::move(second));
  REQUIRE_FALSE(b);
  CHECK(b.error().message.find("is in use by another process") != std::string::npos);
  bool stopped = false;
  a.value()->stop([&] { stopped = true; });
  REQUIRE(loop.run_until([&] { return stopped; }));
  a.value().reset();
  CHECK(loop.close() == 0);
}
