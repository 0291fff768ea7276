// Seed 002: "MTA Logging – Multiple Delivery Attempts", reproduced from a scripted run.
#include <sstream>

#include "engine_fixture.h"
#include "mailq/log.h"

using namespace mailq;
using namespace mailq::test;

namespace {
std::vector<std::string> split_records(const std::string& log) {
  // Records start at a line that does not begin with a space.
  std::vector<std::string> out;
  std::istringstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] != ' ')
      out.push_back(line + "\n");
    else if (!out.empty())
      out.back() += line + "\n";
  }
  return out;
}
}  // namespace

TEST_CASE(
    "Seed 002: E on enqueue, Q per failed attempt with ZZ -> ZY -> ZX, D with the dns, "
    "and smtp, 250 Ok detail",
    "[seed002][log][deliverer]") {
  QueueConfig qc = deterministic_queue_config();
  qc.retry.schedule = {Duration(2h), Duration(4h), Duration(4h)};
  Engine e({100, Duration(15min)}, qc);
  Route local;
  local.name = "tcp_local";
  local.allow_internal_mx = loopback_networks();
  REQUIRE(e.routes.add(local));
  REQUIRE(e.routes.set_default("tcp_local"));
  e.resolver.set_mx("some.org", {{10, "host.some.org"}});
  e.resolver.set_addresses("host.some.org", {"127.0.0.70"});
  auto& b = e.transport.at("127.0.0.70");
  b.mode = FakeTransport::Mode::refuse;
  b.error = std::errc::host_unreachable;
  b.script.data_reply = "354 All set, fire away";
  b.script.final_reply = "250 Ok";

  std::string log;
  LogFormat fmt;
  fmt.utc = true;
  MessagingServerLog writer([&](const std::string& rec) { log += rec; }, fmt);
  FanoutSink fan;
  fan.add(writer);
  fan.add(e.events);
  // Route the engine's events through the writer too.
  Queue queue(e.storage, e.routes, e.clock, &fan, qc);
  Deliverer deliverer(queue, e.resolver, e.transport);
  deliverer.start();

  auto env = make_envelope("adam@hosta.sesta.com", {"user@some.org"});
  REQUIRE(env);
  EnqueueOptions opts;
  opts.source_channel = "tcp_internal";
  MessageId id;
  queue.enqueue(
      env.value(), "Message-ID: <01IRUD7SVA3Q9UN2D4@sesta.com>\r\nSubject: hi\r\n\r\nhello\r\n",
      [&](Result<MessageId> r) {
        REQUIRE(r);
        id = r.value();
      },
      opts);
  e.settle();                                       // attempt 1: no route to host
  e.clock.advance(Duration(2h) + Duration(15min));  // attempt 2 at the first cycle after 2h
  b.error = std::errc::connection_refused;
  e.clock.advance(Duration(4h) + Duration(15min));  // attempt 3: connection refused
  b.mode = FakeTransport::Mode::smtp;
  e.clock.advance(Duration(4h) + Duration(15min));  // attempt 4: delivered
  REQUIRE(queue.find(id) == std::nullopt);

  auto recs = split_records(log);
  INFO(log);
  REQUIRE(recs.size() == 5);
  const std::string file = "queue/tcp_local/";
  const std::string idtxt = id.to_string();
  const char* names[] = {"ZZ", "ZZ", "ZY", "ZX", "ZW"};
  const char actions[] = {'E', 'Q', 'Q', 'Q', 'D'};
  for (int i = 0; i < 5; ++i) {
    INFO("record " << i << ":\n" << recs[i]);
    std::string head = recs[i].substr(0, recs[i].find('\n'));
    CHECK(head.find(std::string(" ") + actions[i] + " 1") != std::string::npos);
    CHECK(recs[i].find("\n adam@hosta.sesta.com rfc822;user@some.org user@some.org\n") !=
          std::string::npos);
    CHECK(recs[i].find(" " + file + names[i] + idtxt + ".00") != std::string::npos);
    CHECK(recs[i].find("\n <01IRUD7SVA3Q9UN2D4@sesta.com>\n") != std::string::npos);
  }
  CHECK(recs[0].find("tcp_internal") != std::string::npos);
  CHECK(recs[0].find("tcp_local") != std::string::npos);
  CHECK(recs[1].find("TCP active open: Failed connect()") != std::string::npos);
  CHECK(recs[1].find("Error: no route to host") != std::string::npos);
  CHECK(recs[2].find("Error: no route to host") != std::string::npos);
  CHECK(recs[3].find("Error: connection refused") != std::string::npos);
  CHECK(recs[4].find("\n dns;host.some.org (TCP|127.0.0.1|40000|127.0.0.70|25)\n") !=
        std::string::npos);
  CHECK(recs[4].find("\n (All set, fire away)\n") != std::string::npos);
  CHECK(recs[4].find("\n smtp; 250 Ok\n") != std::string::npos);
}
