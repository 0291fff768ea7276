// The maildrop: its file format (every truncation refused), the import a relay does at
// start (a file queued before is not queued twice; a taken id gets a new one), mailq-send's
// submission into it (in parallel, beside a locked spool, with sendmail's DSN options, -F,
// -bs through swaks, -bp, -q and the names a host links it by), and a relay setting aside a
// file it cannot read.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "examples/relay/maildrop.h"
#include "examples/relay/tools.h"
#include "mailq/queue.h"
#include "mailq/spool/file_spool.h"
#include "mailq/spool/layout.h"
#include "support/daemon.h"
#include "support/opened_spool.h"
#include "support/powercut.h"
#include "support/servers.h"
#include "support/tool_runner.h"

using namespace mailq;
using namespace mailq::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

const char* const kMessage =
    "From: Alice Example <alice@example.org>\n"
    "To: bob@example.com\n"
    "Date: Tue, 03 Jan 2023 15:48:55 +0100\n"
    "Message-ID: <fixed.1@example.org>\n"
    "Subject: hello\n"
    "\n"
    "Hello Bob.\n";

relay::MaildropEntry sample_entry() {
  relay::MaildropEntry e;
  e.id = MessageId{0x0123456789abcull};
  e.submitted = TimePoint(std::chrono::milliseconds(1700000000123));
  auto env = make_envelope("alice@example.org", {"bob@example.com", "\"odd one\"@example.net"});
  REQUIRE(env);
  e.envelope = env.value();
  e.envelope.ret = DsnRet::headers;
  e.envelope.envid = "QQ314159";
  e.envelope.recipients[0].notify = kNotifySuccess | kNotifyFailure;
  e.envelope.recipients[1].orcpt = "rfc822;odd@example.net";
  e.body = "Subject: x\r\n\r\nbody\r\n";
  return e;
}

using Stored = OpenedSpool::Stored;

std::vector<Stored> read_spool(const std::string& path) {
  return OpenedSpool(path).stored();
}

}  // namespace

TEST_CASE("a maildrop file reads back what was written, and no truncation of it reads",
          "[maildrop]") {
  const relay::MaildropEntry e = sample_entry();
  const std::string bytes = relay::encode_maildrop(e);
  CHECK(bytes ==
        "mailq-maildrop 1\nsubmitted 1700000000123\nfrom alice@example.org\nret hdrs\n"
        "envid QQ314159\nrcpt bob@example.com\nnotify 6\nrcpt \"odd one\"@example.net\n"
        "orcpt rfc822;odd@example.net\nsize 20\n\nSubject: x\r\n\r\nbody\r\n");
  auto back = relay::decode_maildrop(bytes, e.id);
  REQUIRE(back);
  CHECK(back->id == e.id);
  CHECK(back->submitted == e.submitted);
  CHECK(back->envelope.reverse_path->to_string() == "alice@example.org");
  CHECK(back->envelope.ret == DsnRet::headers);
  CHECK(back->envelope.envid == "QQ314159");
  REQUIRE(back->envelope.recipients.size() == 2);
  CHECK(back->envelope.recipients[0].notify == (kNotifySuccess | kNotifyFailure));
  CHECK(back->envelope.recipients[1].address.to_string() == "\"odd one\"@example.net");
  CHECK(back->envelope.recipients[1].orcpt == "rfc822;odd@example.net");
  CHECK(back->body == e.body);
  // Every cut is refused: a file never reads as a shorter message.
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    INFO(n);
    CHECK_FALSE(relay::decode_maildrop(std::string_view(bytes).substr(0, n), e.id));
  }
  // Nor with bytes added, nor with what the format does not have.
  CHECK(relay::decode_maildrop(bytes + "x", e.id).error().message ==
        "the body has 21 octets where the envelope says 20");
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"mailq-maildrop 2\n", "not a maildrop file (its first line is not \"mailq-maildrop 1\")"},
      {"mailq-maildrop 1\nsubmitted 1\nfrom <>\nbcc x@y.test\nsize 0\n\n",
       "line 4: unknown key \"bcc\""},
      // A time no clock of nanoseconds holds (found by the fuzzer: an overflow).
      {"mailq-maildrop 1\nsubmitted 12700000000123\nfrom <>\n",
       "line 2: bad value of \"submitted\""},
      {"mailq-maildrop 1\nsubmitted 1\nfrom <>\nnotify 2\nsize 0\n\n",
       "line 4: no recipient before \"notify\""},
      {"mailq-maildrop 1\nsubmitted 1\nfrom <>\nrcpt a@b.test\nnotify 3\nsize 1\n\nx",
       "line 5: bad value of \"notify\""},
      {"mailq-maildrop 1\nsubmitted 1\nrcpt a@b.test\nsize 1\n\nx",
       "the envelope lacks one of \"from\", \"submitted\" and \"size\""},
      {"mailq-maildrop 1\nsubmitted 1\nfrom <>\nrcpt a@\nsize 1\n\nx",
       "line 4: recipient: empty domain"},
  };
  for (const auto& [input, why] : bad) {
    auto r = relay::decode_maildrop(input, e.id);
    REQUIRE_FALSE(r);
    CHECK(r.error().message == why);
  }
  // The envelope's own checks: a control character in the ENVID, no recipient.
  auto r = relay::decode_maildrop(
      "mailq-maildrop 1\nsubmitted 1\nfrom <>\nenvid a\x01z\nrcpt a@b.test\nsize 1\n\nx", e.id);
  CHECK_FALSE(r);
  r = relay::decode_maildrop("mailq-maildrop 1\nsubmitted 1\nfrom <>\nsize 1\n\nx", e.id);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == errc::no_recipients);
}

TEST_CASE("importing the maildrop queues each file under its id, once", "[maildrop]") {
  TempDir dir;
  const std::string spool = dir.file("spool");
  auto env = make_envelope("alice@example.org", {"bob@example.com"});
  REQUIRE(env);
  auto a = relay::write_maildrop(spool, env.value(), "Subject: a\r\n\r\na\r\n");
  auto b = relay::write_maildrop(spool, env.value(), "Subject: b\r\n\r\nbb\r\n");
  REQUIRE(a);
  REQUIRE(b);
  CHECK(a.value() != b.value());
  CHECK(relay::list_maildrop(spool).value() ==
        std::vector<MessageId>{std::min(*a, *b), std::max(*a, *b)});
  // A's file back after the import, as when its removal did not survive a power cut.
  const std::string a_bytes = read_file(spool + "/maildrop/" + a->to_string());

  OpenedSpool opened(spool);
  Queue& q = *opened.queue;
  std::vector<std::string> notices;
  auto notice = [&](const std::string& m) { notices.push_back(m); };
  auto flush = [&] { opened.storage->flush(); };
  CHECK(relay::import_maildrop(spool, q, flush, notice) == 2);
  CHECK(notices.empty());
  CHECK(q.contains(*a));
  CHECK(q.contains(*b));
  CHECK(relay::list_maildrop(spool)->empty());

  write_file(spool + "/maildrop/" + a->to_string(), a_bytes);
  CHECK(relay::import_maildrop(spool, q, flush, notice) == 0);
  CHECK(q.size() == 2);
  CHECK(relay::list_maildrop(spool)->empty());

  // A different message under an id the queue has: queued, with a new id.
  auto other = relay::decode_maildrop(a_bytes, *a);
  REQUIRE(other);
  other->body += "more\r\n";
  write_file(spool + "/maildrop/" + a->to_string(), relay::encode_maildrop(other.value()));
  CHECK(relay::import_maildrop(spool, q, flush, notice) == 1);
  CHECK(q.size() == 3);

  // A file that does not read stays (the relay sets it aside), said.
  write_file(spool + "/maildrop/" + b->to_string(), "garbage");
  CHECK(relay::import_maildrop(spool, q, flush, notice) == 0);
  REQUIRE(notices.size() == 1);
  CHECK(notices[0] == spool + "/maildrop/" + b->to_string() +
                          ": not a maildrop file (its first line is not \"mailq-maildrop 1\")");
}

#if defined(MAILQ_SEND_BIN) && defined(MAILQ_QUEUE_BIN)

namespace {

ToolRun send(const std::string& spool, std::vector<std::string> args,
             std::string_view input = kMessage) {
  std::vector<std::string> argv{MAILQ_SEND_BIN, "--spool", spool};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_tool(argv, input, {"TZ=UTC"});
}

// Imports the maildrop of `spool` (what a relay does at start) and returns what it holds.
std::vector<Stored> picked_up(const std::string& spool) {
  OpenedSpool(spool).import_maildrop([](const std::string& m) { FAIL(m); });
  return read_spool(spool);
}

}  // namespace

TEST_CASE("many mailq-send at once beside a spool a relay holds: every one queues",
          "[maildrop][tools][send]") {
  TempDir dir;
  const std::string spool = dir.file("spool");
  REQUIRE(picked_up(spool).empty());  // the spool exists, with its lock
  // The spool's lock taken, as by a running relay (whose socket is not there).
  const int lock_fd = ::open((spool + "/lock").c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(lock_fd >= 0);
  REQUIRE(::flock(lock_fd, LOCK_EX | LOCK_NB) == 0);

  constexpr int kThreads = 8, kEach = 12;
  std::vector<std::vector<ToolRun>> runs(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i)
        runs[t].push_back(send(spool, {"u" + std::to_string(t * kEach + i) + "@example.com"}));
    });
  for (auto& t : threads) t.join();
  ::close(lock_fd);

  std::set<std::string> ids;
  for (const auto& per_thread : runs)
    for (const auto& r : per_thread) {
      INFO(r.err);
      CHECK(r.status == 0);
      CHECK(r.err.empty());
      REQUIRE(r.out.size() == 14);
      ids.insert(r.out.substr(0, 13));
    }
  CHECK(ids.size() == kThreads * kEach);
  CHECK(relay::list_maildrop(spool)->size() == kThreads * kEach);
  CHECK(fs::is_empty(spool + "/maildrop/tmp"));
  const auto stored = picked_up(spool);
  REQUIRE(stored.size() == kThreads * kEach);
  std::set<std::string> rcpts;
  for (const auto& m : stored) {
    CHECK(ids.count(m.record.id.to_string()) == 1);
    rcpts.insert(m.record.recipients.at(0).address);
  }
  CHECK(rcpts.size() == kThreads * kEach);
}

TEST_CASE("mailq-send takes sendmail's -N, -R, -V and -F (and -r, -C, ignored options)",
          "[maildrop][tools][send]") {
  TempDir dir;
  const std::string spool = dir.file("spool");
  ToolRun r = send(
      spool,
      {"-N", "success,delay", "-Rhdrs", "-V", "env-42", "-F", "Böb Q. Müller", "-r",
       "bob@example.org", "-oi", "-odb", "-v", "-B", "8BITMIME", "-L", "web", "carol@example.net"},
      "Subject: no from\n\nbody\n");
  INFO(r.err);
  REQUIRE(r.status == 0);
  auto stored = picked_up(spool);
  REQUIRE(stored.size() == 1);
  const MessageRecord& m = stored[0].record;
  CHECK(m.reverse_path == "bob@example.org");
  CHECK(m.envid == "env-42");
  CHECK(m.ret == DsnRet::headers);
  REQUIRE(m.recipients.size() == 1);
  CHECK(m.recipients[0].notify == (kNotifySuccess | kNotifyDelay));
  // The From header mailq-send adds carries the full name, RFC 2047 encoded.
  CHECK(stored[0].body.rfind("Subject: no from\r\nFrom: =?UTF-8?B?QsO2YiBRLiBNw7xsbGVy?= "
                             "<bob@example.org>\r\n",
                             0) == 0);

  r = send(spool, {"-N", "never", "-F", "Carol \"C\" Q", "-f", "c@example.org", "d@example.net"},
           "Subject: x\n\nbody\n");
  REQUIRE(r.status == 0);
  stored = picked_up(spool);
  REQUIRE(stored.size() == 2);
  for (const auto& s : stored) {
    if (s.record.reverse_path != "c@example.org") continue;
    CHECK(s.record.recipients[0].notify == kNotifyNever);
    CHECK(s.record.ret == DsnRet::unspecified);
    CHECK(s.body.find("\r\nFrom: \"Carol \\\"C\\\" Q\" <c@example.org>\r\n") != std::string::npos);
  }

  // What is wrong is said, nothing queued.
  const std::vector<std::pair<std::vector<std::string>, std::string>> bad = {
      {{"-N", "never,success", "x@example.com"},
       "mailq-send: -N never,success: give \"never\" or a comma-separated list of success, "
       "failure and delay\n"},
      {{"-N", "sometimes", "x@example.com"},
       "mailq-send: -N sometimes: give \"never\" or a comma-separated list of success, failure "
       "and delay\n"},
      {{"-R", "body", "x@example.com"}, "mailq-send: -R body: give \"full\" or \"hdrs\"\n"},
      {{"-V", std::string(101, 'e'), "x@example.com"}, ""},
      {{"-bd"},
       "mailq-send: unsupported mode -bd: mailq-send submits (-bm), speaks SMTP on standard "
       "input (-bs) and lists the queue (-bp); run mailq-relay for a daemon\n"},
      {{"-qRexample.com"},
       "mailq-send: -qR: mailq retries by destination with mailq-queue release and flush, not "
       "by a site pattern; use -q to retry everything\n"},
      {{"x@example.com", "-N"}, ""},
      {{"-F", std::string(1200, 'n'), "x@example.com"},
       "mailq-send: line 2 of the message to queue is longer than 998 octets (a header "
       "mailq-send adds: is the -F name that long?)\n"},
  };
  for (const auto& [args, err] : bad) {
    INFO(args[0]);
    r = send(spool, args, args[0] == "-F" ? "Subject: x\n\nbody\n" : kMessage);
    CHECK(r.status >= 64);
    CHECK(r.status <= 65);
    CHECK(r.out.empty());
    if (!err.empty())
      CHECK(r.err == err);
    else
      CHECK_FALSE(r.err.empty());
  }
  CHECK(relay::list_maildrop(spool)->empty());
}

TEST_CASE("mailq-send -bs speaks SMTP on standard input: swaks submits through it",
          "[maildrop][tools][send][swaks]") {
  TempDir dir;
  const std::string spool = dir.file("spool");
  // By hand first: two messages in one session, pipelined.
  ToolRun r = send(spool, {"-bs"},
                   "EHLO client.test\r\nMAIL FROM:<a@example.org> RET=HDRS\r\n"
                   "RCPT TO:<b@example.com> NOTIFY=SUCCESS\r\nDATA\r\n"
                   "Subject: one\r\n\r\n..dot\r\n.\r\n"
                   "MAIL FROM:<>\r\nRCPT TO:<c@example.net>\r\nDATA\r\nSubject: two\r\n\r\n2\r\n"
                   ".\r\nQUIT\r\n");
  INFO(r.out + r.err);
  CHECK(r.status == 0);
  CHECK(r.out.rfind("220 ", 0) == 0);
  CHECK(r.out.find("\r\n250 2.0.0 Ok: queued as ") != std::string::npos);
  CHECK(r.out.find("\r\n221 ") != std::string::npos);
  auto stored = picked_up(spool);
  REQUIRE(stored.size() == 2);
  for (const auto& s : stored) {
    if (s.record.reverse_path == "a@example.org") {
      CHECK(s.record.ret == DsnRet::headers);
      CHECK(s.record.recipients.at(0).notify == kNotifySuccess);
      // The trace field a receiving server adds, naming the local user.
      CHECK(s.body.rfind(
                "Received: from client.test (uid " + std::to_string(::getuid()) + ")\r\n\tby ",
                0) == 0);
      CHECK(s.body.find(" (mailq-send) with ESMTP;\r\n\t") != std::string::npos);
      CHECK(s.body.size() > 24);
      CHECK(s.body.substr(s.body.size() - 24) == "\r\nSubject: one\r\n\r\n.dot\r\n");
    } else {
      CHECK(s.record.reverse_path.empty());
      CHECK(s.body.substr(s.body.size() - 21) == "\r\nSubject: two\r\n\r\n2\r\n");
    }
  }

  // swaks (not written here) drives it through a pipe, as it drives `sendmail -bs`.
  if (::access("/usr/bin/swaks", X_OK) != 0) {
    WARN("swaks is not installed: its half of the test is skipped");
    return;
  }
  r = run_tool({"/usr/bin/swaks", "--pipe",
                std::string(MAILQ_SEND_BIN) + " --spool " + spool + " -bs", "--from",
                "swaks@example.org", "--to", "rcpt@example.com", "--header", "Subject: swaks",
                "--body", "through a pipe"});
  INFO(r.out);
  CHECK(r.status == 0);
  CHECK(r.out.find("<-  250 2.0.0 Ok: queued as ") != std::string::npos);
  stored = picked_up(spool);
  REQUIRE(stored.size() == 3);
  bool found = false;
  for (const auto& s : stored)
    if (s.record.reverse_path == "swaks@example.org") {
      found = true;
      CHECK(s.record.recipients.at(0).address == "rcpt@example.com");
      CHECK(s.body.find("Subject: swaks\r\n") != std::string::npos);
      CHECK(s.body.find("through a pipe") != std::string::npos);
    }
  CHECK(found);
}

TEST_CASE("sendmail, mailq and newaliases: the names a host links mailq-send by",
          "[maildrop][tools][send]") {
  TempDir dir;
  const std::string spool = dir.file("spool");
  const std::string config = dir.file("relay.toml");
  write_file(config, "spool = \"" + spool + "\"\n");
  const std::string bin = dir.file("bin");
  fs::create_directory(bin);
  // The links sit beside mailq-queue, as an installation puts them.
  fs::create_symlink(MAILQ_SEND_BIN, bin + "/sendmail");
  fs::create_symlink(MAILQ_SEND_BIN, bin + "/mailq");
  fs::create_symlink(MAILQ_SEND_BIN, bin + "/newaliases");
  fs::create_symlink(MAILQ_QUEUE_BIN, bin + "/mailq-queue");
  const std::vector<std::string> env{"MAILQ_CONFIG=" + config, "TZ=UTC"};

  // `sendmail -t -i` as scripts call it: no option names the spool.
  ToolRun r = run_tool({bin + "/sendmail", "-t", "-i"}, kMessage, env);
  INFO(r.err);
  REQUIRE(r.status == 0);
  const std::string id = r.out.substr(0, 13);
  CHECK(fs::exists(spool + "/maildrop/" + id));
  // `mailq` and `sendmail -bp` list the queue, the maildrop included.
  r = run_tool({bin + "/mailq"}, {}, env);
  CHECK(r.status == 0);
  CHECK(r.out.find("maildrop: 1 message in the maildrop, waiting for a relay to pick it up:\n" +
                   id + "    0m   166  alice@example.org  bob@example.com\n") != std::string::npos);
  CHECK(run_tool({bin + "/sendmail", "-bp"}, {}, env).out == r.out);
  // `sendmail -q` is mailq-queue flush: it needs a running relay.
  r = run_tool({bin + "/sendmail", "-q"}, {}, env);
  CHECK(r.status == 1);
  CHECK(r.err ==
        "mailq-queue: flush needs a running mailq-relay (it acts on the relay's delivery "
        "state)\n");
  r = run_tool({bin + "/newaliases"}, {}, env);
  CHECK(r.status == 0);
  CHECK(r.err == "mailq-send: mailq keeps no alias database: nothing to rebuild\n");
  // Without MAILQ_CONFIG (and no system configuration) the spool must be named.
  if (::access(relay::kSystemConfig, F_OK) != 0) {
    r = run_tool({bin + "/sendmail", "bob@example.com"}, kMessage, {"MAILQ_CONFIG="});
    CHECK(r.status == 64);
    CHECK(r.err.rfind("mailq-send: --spool or --config is required (or MAILQ_CONFIG, or "
                      "/etc/mailq/mailq-relay.toml)\n",
                      0) == 0);
  }
}

#endif  // MAILQ_SEND_BIN && MAILQ_QUEUE_BIN

#if defined(MAILQ_RELAY_BIN) && defined(MAILQ_SEND_BIN) && defined(MAILQ_QUEUE_BIN)

TEST_CASE("a running relay queues what eight mailq-send write at once, under their ids",
          "[maildrop][relay][tools]") {
  TempDir dir;
  const std::string spool = dir.file("spool");
  const std::string config = dir.file("relay.toml");
  const std::uint16_t closed = free_tcp_port();
  REQUIRE(closed != 0);
  // Every destination a closed port: the messages stay queued, marked down after one try.
  write_file(config, "spool = \"" + spool + "\"\nlog = \"" + dir.file("mail.log") +
                         "\"\n[domain_state]\nfailure_threshold = 1\ndown_interval = \"1h\"\n"
                         "[[route]]\nname = \"nowhere\"\ndefault = true\nhosts = [\"127.0.0.1:" +
                         std::to_string(closed) + "\"]\n");
  Daemon relay;
  std::string error;
  REQUIRE(relay.start({MAILQ_RELAY_BIN, "--config", config}, dir.file("relay.out"), &error));
  const auto up = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < up &&
         ::access((spool + "/control.sock").c_str(), F_OK) != 0)
    std::this_thread::sleep_for(20ms);
  REQUIRE(relay.running());

  constexpr int kThreads = 8, kEach = 10;
  std::vector<std::vector<ToolRun>> runs(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i)
        runs[t].push_back(send(spool, {"r" + std::to_string(t * kEach + i) + "@example.com"}));
    });
  for (auto& t : threads) t.join();
  std::set<std::string> ids;
  for (const auto& per_thread : runs)
    for (const auto& r : per_thread) {
      CHECK(r.status == 0);
      if (r.out.size() == 14) ids.insert(r.out.substr(0, 13));
    }
  REQUIRE(ids.size() == kThreads * kEach);
  // All picked up (the maildrop empty) and each in the queue under the id its submitter got.
  const auto until = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < until && !relay::list_maildrop(spool)->empty())
    std::this_thread::sleep_for(20ms);
  CHECK(relay::list_maildrop(spool)->empty());
  ToolRun list = run_tool({MAILQ_QUEUE_BIN, "--spool", spool, "list"});
  CHECK(list.status == 0);
  for (const auto& id : ids) CHECK(list.out.find(id + " ") != std::string::npos);
  CHECK(list.out.find(std::to_string(kThreads * kEach) + " messages") != std::string::npos);
  REQUIRE(relay.signal(SIGTERM));
  CHECK(relay.wait(30s) == 0);
  const std::string log = read_file(dir.file("mail.log"));
  CHECK(log.find("maildrop: ") == std::string::npos);  // nothing set aside, nothing odd
}

TEST_CASE("a relay sets aside a maildrop file it cannot read, and says so", "[maildrop][relay]") {
  TempDir dir;
  const std::string spool = dir.file("spool");
  const std::string config = dir.file("relay.toml");
  write_file(config, "spool = \"" + spool + "\"\nlog = \"" + dir.file("mail.log") + "\"\n");
  fs::create_directories(spool + "/maildrop");
  const std::string id = MessageId{0x0123456789abcull}.to_string();
  write_file(spool + "/maildrop/" + id, "mailq-maildrop 1\nsubmitted 1\nfrom <>\n");
  write_file(spool + "/maildrop/README", "not a message: left alone");
  // What a hostile submitter can leave: a FIFO (opening it must not block the relay), a link
  // to a device (it must not be read), and many files the queue refuses at once (an empty
  // body: no recursion per file).
  const std::string fifo = MessageId{0x0123456789abdull}.to_string();
  REQUIRE(::mkfifo((spool + "/maildrop/" + fifo).c_str(), 0600) == 0);
  const std::string link = MessageId{0x0123456789abeull}.to_string();
  fs::create_symlink("/dev/zero", spool + "/maildrop/" + link);
  constexpr int kEmpty = 3000;
  for (int i = 0; i < kEmpty; ++i)
    write_file(spool + "/maildrop/" + MessageId{0x0123456700000ull + i}.to_string(),
               "mailq-maildrop 1\nsubmitted 1\nfrom <>\nrcpt a@b.test\nsize 0\n\n");
  ToolRun r = run_tool({MAILQ_RELAY_BIN, "--config", config, "--once"}, {}, {}, 120s);
  INFO(r.out + r.err);
  CHECK(r.status == 0);
  CHECK(fs::exists(spool + "/maildrop/corrupt/" + id));
  CHECK_FALSE(fs::exists(spool + "/maildrop/" + id));
  CHECK(fs::exists(spool + "/maildrop/README"));
  CHECK(fs::is_fifo(fs::symlink_status(spool + "/maildrop/corrupt/" + fifo)));
  CHECK(fs::is_symlink(fs::symlink_status(spool + "/maildrop/corrupt/" + link)));
  CHECK(relay::list_maildrop(spool)->empty());
  CHECK(fs::is_empty(spool + "/maildrop/active"));
  std::size_t set_aside = 0;
  for (const auto& e : fs::directory_iterator(spool + "/maildrop/corrupt")) {
    (void)e;
    ++set_aside;
  }
  CHECK(set_aside == kEmpty + 3);
  const std::string log = read_file(dir.file("mail.log"));
  auto set_aside_line = [&](const std::string& name, const std::string& why) {
    return "maildrop: " + name + " set aside in maildrop/corrupt: " + spool + "/maildrop/active/" +
           name + ": " + why;
  };
  CHECK(log.find(set_aside_line(id, "line 4: the envelope does not end (truncated file)")) !=
        std::string::npos);
  CHECK(log.find(set_aside_line(fifo, "not a regular file")) != std::string::npos);
  CHECK(log.find(set_aside_line(link, "a symbolic link, not a message file")) != std::string::npos);
  CHECK(log.find("empty message body") != std::string::npos);
}

#endif  // MAILQ_RELAY_BIN && MAILQ_SEND_BIN && MAILQ_QUEUE_BIN

TEST_CASE("what mailq-send said it filed survives a power cut, on a spool it made itself",
          "[maildrop][tools][send][powercut]") {
  PowerCutMount power;
  const std::string spool = power.path() + "/spool";  // made by the first mailq-send
  std::set<std::string> ids;
  for (int i = 0; i < 12; ++i) {
    const auto r = send(spool, {"u" + std::to_string(i) + "@example.com"});
    INFO(r.err);
    REQUIRE(r.status == 0);
    REQUIRE(r.out.size() == 14);
    ids.insert(r.out.substr(0, 13));
  }
  power.cut();
  INFO(power.stats());
  const auto listed = relay::list_maildrop(spool);
  REQUIRE(listed);
  std::set<std::string> found;
  for (MessageId id : listed.value()) {
    found.insert(id.to_string());
    const auto e = relay::read_maildrop_file(spool + "/maildrop/" + id.to_string(), id, 1 << 20);
    INFO(id.to_string());
    REQUIRE(e);
    CHECK(e.value().body.find("Hello Bob.") != std::string::npos);
  }
  CHECK(found == ids);
}
