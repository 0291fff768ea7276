// The fuzz targets' seed corpora, replayed through the very entry points libFuzzer drives
// (fuzz/targets/*.h), so that every seed and every fixed crash runs in the normal, ASan and
// valgrind builds too; and the bugs the fuzzers found, pinned one by one.
//
// Targets of the core library are replayed here; the spool and DNS ones in
// tests/integration/test_fuzz_corpora.cpp, the relay's in tests/programs/. A broken invariant
// aborts with its condition and the input's file name. A crash found by scripts/fuzz.sh is
// fixed, then its input is copied from fuzz/crashes/ into fuzz/corpus/<target>/ (where this
// test replays it for good) and, when it shows a behaviour worth naming, pinned below.
#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "../../fuzz/targets/address.h"
#include "../../fuzz/targets/corpus.h"
#include "../../fuzz/targets/record_codec.h"
#include "../../fuzz/targets/smtp_client.h"
#include "../../fuzz/targets/smtp_reply.h"
#include "../../fuzz/targets/smtp_server.h"
#include "mailq/address.h"
#include "mailq/smtp_client.h"

using namespace mailq;

TEST_CASE("Fuzz corpus replay: SMTP reply parser", "[fuzz][smtp]") {
  CHECK(mailq::fuzz::replay_corpus(__FILE__, "smtp_reply", fuzz::run_smtp_reply) >= 10);
}

TEST_CASE("Fuzz corpus replay: SmtpClient sessions", "[fuzz][smtp][client]") {
  CHECK(mailq::fuzz::replay_corpus(__FILE__, "smtp_client", fuzz::run_smtp_client) >= 15);
}

TEST_CASE("Fuzz corpus replay: SmtpServerSession sessions", "[fuzz][smtp][server]") {
  CHECK(mailq::fuzz::replay_corpus(__FILE__, "smtp_server", fuzz::run_smtp_server) >= 10);
}

TEST_CASE("Fuzz corpus replay: addresses and envelopes", "[fuzz][address]") {
  CHECK(mailq::fuzz::replay_corpus(__FILE__, "address", fuzz::run_address) >= 10);
}

TEST_CASE("Fuzz corpus replay: the record codec", "[fuzz][codec]") {
  CHECK(mailq::fuzz::replay_corpus(__FILE__, "record_codec", fuzz::run_record_codec) >= 5);
}

TEST_CASE("Fuzz harness: the client target checks the bytes a real session writes",
          "[fuzz][smtp][client]") {
  // The session target must reach a delivered transaction on its seed, else its invariants
  // about MAIL/RCPT/DATA and the body would guard nothing. Re-run the seed's server bytes by
  // hand and look at what the client wrote.
  const std::string seed =
      fuzz::read_file(fuzz::corpus_dir(__FILE__, "smtp_client").string() + "/plain_pipelined");
  REQUIRE(seed.size() > 4);
  SmtpClientOptions o;
  o.helo_name = "client.example.org";
  o.tls = TlsPolicy::none;
  SmtpClient c(o);
  const TimePoint now{std::chrono::hours(1000)};
  c.on_connected(now);
  std::string wrote;
  const std::string_view server = std::string_view(seed).substr(4);
  // Greeting and EHLO reply first (up to the PIPELINING session being ready).
  const std::size_t ehlo_end = server.find("250 STARTTLS\r\n") + 14;
  c.on_data(server.substr(0, server.find("\r\n") + 2), now);
  wrote += c.take_output();
  c.on_data(server.substr(server.find("\r\n") + 2, ehlo_end - server.find("\r\n") - 2), now);
  wrote += c.take_output();
  REQUIRE(c.ready());
  SmtpTransaction t;
  t.reverse_path = "sender@example.org";
  t.recipients.push_back({"rcpt@example.net", kNotifyDefault, ""});
  t.body = std::make_shared<const std::string>("Subject: hi\r\n\r\nHello.\r\n");
  REQUIRE(c.send(t, now));
  wrote += c.take_output();
  // Up to the 354, then the rest: the reply to the final dot may only come once the body
  // was taken.
  const std::size_t go_ahead = server.find("354 ");
  const std::size_t after_354 = server.find("\r\n", go_ahead) + 2;
  c.on_data(server.substr(ehlo_end, after_354 - ehlo_end), now);
  wrote += c.take_output();
  c.on_data(server.substr(after_354), now);
  wrote += c.take_output();
  CHECK(c.transactions() == 1);
  CHECK(wrote ==
        "EHLO client.example.org\r\n"
        "MAIL FROM:<sender@example.org> SIZE=23\r\n"
        "RCPT TO:<rcpt@example.net>\r\n"
        "DATA\r\n"
        "Subject: hi\r\n\r\nHello.\r\n.\r\n");
}

// Found by fuzz_address (fuzz/corpus/address/orcpt_type_atom): Envelope::validate accepted
// any RFC 5322 atom as the ORCPT address type ("x#y;a@example.net"), SmtpClient::send only
// [A-Za-z0-9-]: such a message was accepted at enqueue and then bounced by the Deliverer with
// "554 5.6.0 [internal] envelope refused by the SMTP client". The two must agree.
TEST_CASE("Envelope::validate and SmtpClient::send agree on ORCPT address types",
          "[fuzz][address][dsn]") {
  for (const char* orcpt : {"x#y;a@example.net", "rfc+822;a@example.net", "a!b;a@example.net",
                            "rfc822;a@example.net", "utf-8;a@example.net"}) {
    INFO(orcpt);
    auto env = make_envelope("s@example.org", {"a@example.net"});
    REQUIRE(env.ok());
    env->recipients[0].orcpt = orcpt;
    const bool valid = !env->validate();

    auto client = fuzz::address_detail::ready_client(TimePoint{std::chrono::hours(1000)});
    SmtpTransaction t;
    t.reverse_path = "s@example.org";
    t.recipients.push_back({"a@example.net", kNotifyDefault, orcpt});
    t.body = std::make_shared<const std::string>("x\r\n");
    const bool sent = client->send(t, TimePoint{std::chrono::hours(1000)});
    CHECK(valid == sent);
  }
}
