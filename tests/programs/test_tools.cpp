// mailq-send and mailq-queue, the real binaries run as child processes on a temporary spool:
// submission by arguments and by headers, the refusals (sysexits 64 / 65, nothing queued),
// the reports and the operator verbs on a spool no relay holds, and the path through a
// relay's control socket (a ControlServer of the test standing in for mailq-relay).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "examples/relay/control.h"
#include "examples/relay/maildrop.h"
#include "mailq/queue.h"
#include "mailq/spool/file_spool.h"
#include "mailq/spool/layout.h"
#include "support/daemon.h"
#include "support/opened_spool.h"
#include "support/servers.h"
#include "support/test_loop.h"
#include "support/tool_runner.h"

using namespace mailq;
using namespace mailq::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

#if defined(MAILQ_SEND_BIN) && defined(MAILQ_QUEUE_BIN)

namespace {

// Fixed Date and Message-ID: mailq-send adds neither, so sizes are known.
const char* const kMessage =
    "From: Alice Example <alice@example.org>\n"
    "To: bob@example.com\n"
    "Date: Tue, 03 Jan 2023 15:48:55 +0100\n"
    "Message-ID: <fixed.1@example.org>\n"
    "Subject: hello\n"
    "\n"
    "Hello Bob.\n";

struct Spool {
  TempDir dir;
  std::string path() const { return dir.file("spool"); }

  ToolRun send(std::vector<std::string> args, std::string_view input = kMessage) {
    std::vector<std::string> argv{MAILQ_SEND_BIN, "--spool", path()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_tool(argv, input, {"TZ=UTC"});
  }
  ToolRun queue(std::vector<std::string> args) {
    std::vector<std::string> argv{MAILQ_QUEUE_BIN, "--spool", path(), "--utc"};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_tool(argv, {}, {"TZ=UTC"});
  }
  std::string sent_id(std::vector<std::string> args, std::string_view input = kMessage) {
    ToolRun r = send(std::move(args), input);
    INFO(r.err);
    REQUIRE(r.status == 0);
    REQUIRE(r.err.empty());
    REQUIRE(r.out.size() == 14);
    REQUIRE(r.out.back() == '\n');
    MessageId id;
    REQUIRE(MessageId::parse(r.out.substr(0, 13), &id));
    return r.out.substr(0, 13);
  }
  std::string ok(std::vector<std::string> args) {
    ToolRun r = queue(std::move(args));
    INFO(r.err);
    REQUIRE(r.status == 0);
    CHECK(r.err.empty());
    return r.out;
  }

  // What a relay does first at start-up: the maildrop's files into the queue.
  void pick_up() {
    OpenedSpool opened(path());
    std::vector<std::string> problems;
    const std::size_t before = relay::list_maildrop(path())->size();
    CHECK(opened.import_maildrop([&](const std::string& m) { problems.push_back(m); }) == before);
    CHECK(problems.empty());
    CHECK(relay::list_maildrop(path())->empty());
  }

  // What the spool holds, read the way the relay would at start-up (the maildrop picked up).
  using Stored = OpenedSpool::Stored;
  std::vector<Stored> stored() {
    pick_up();
    return OpenedSpool(path()).stored();
  }
};

std::vector<std::string> addresses(const MessageRecord& m) {
  std::vector<std::string> out;
  for (const auto& r : m.recipients) out.push_back(r.address);
  return out;
}

}  // namespace

TEST_CASE("mailq-send queues a message for the argument recipients and prints its id",
          "[tools][send]") {
  Spool s;
  std::string id = s.sent_id({"-f", "sender@example.org", "bob@example.com", "carol@example.net"});
  // In the maildrop, under the id it printed, until a relay picks it up.
  MessageId parsed;
  REQUIRE(MessageId::parse(id, &parsed));
  CHECK(relay::list_maildrop(s.path()).value() == std::vector<MessageId>{parsed});
  CHECK(fs::is_empty(s.path() + "/maildrop/tmp"));
  auto stored = s.stored();
  REQUIRE(stored.size() == 1);
  CHECK(stored[0].record.id.to_string() == id);
  CHECK(stored[0].record.reverse_path == "sender@example.org");
  CHECK(stored[0].record.source_channel == "local");
  CHECK(addresses(stored[0].record) ==
        std::vector<std::string>{"bob@example.com", "carol@example.net"});
  // LF line ends are stored as CRLF; nothing is added to a message that has Date and
  // Message-ID already.
  CHECK(stored[0].body ==
        "From: Alice Example <alice@example.org>\r\n"
        "To: bob@example.com\r\n"
        "Date: Tue, 03 Jan 2023 15:48:55 +0100\r\n"
        "Message-ID: <fixed.1@example.org>\r\n"
        "Subject: hello\r\n"
        "\r\n"
        "Hello Bob.\r\n");
}

TEST_CASE("mailq-send -t takes To, Cc and Bcc (display names, groups, folding) and drops Bcc",
          "[tools][send]") {
  Spool s;
  const std::string message =
      "From: \"Alice, A.\" <alice@example.org>\r\n"
      "To: \"Bob, B.\" <bob@example.com>,\r\n"
      "  carol@example.net (Carol)\r\n"
      "Cc: team: dave@example.com, Eve <eve@Example.COM>;, undisclosed-recipients:;\r\n"
      "Bcc: secret@example.com,\r\n"
      "\tbob@EXAMPLE.com\r\n"
      "Subject: t\r\n"
      "\r\n"
      "body\r\n";
  std::string id = s.sent_id({"-t", "extra@example.org"}, message);
  auto stored = s.stored();
  REQUIRE(stored.size() == 1);
  // The From address is the sender; duplicates (domain case aside) are dropped.
  CHECK(stored[0].record.reverse_path == "alice@example.org");
  CHECK(addresses(stored[0].record) ==
        std::vector<std::string>{"extra@example.org", "bob@example.com", "carol@example.net",
                                 "dave@example.com", "eve@Example.COM", "secret@example.com"});
  const std::string& body = stored[0].body;
  CHECK(body.find("Bcc") == std::string::npos);
  CHECK(body.find("secret") == std::string::npos);
  CHECK(body.rfind("From: \"Alice, A.\" <alice@example.org>\r\nTo: \"Bob, B.\" "
                   "<bob@example.com>,\r\n  carol@example.net (Carol)\r\nCc: team: ",
                   0) == 0);
  // Date and Message-ID were missing: added.
  CHECK(body.find("\r\nDate: ") != std::string::npos);
  CHECK(body.find("\r\nMessage-ID: <") != std::string::npos);
  CHECK(body.substr(body.size() - 8) == "\r\nbody\r\n");
}

TEST_CASE("mailq-send -t reads domain literals and drops obsolete source routes", "[tools][send]") {
  Spool s;
  s.sent_id({"-t", "-f", "<>"},
            "To: x@[IPv6:::1], list: y@[127.0.0.1];\n"
            "Cc: Zed <@relay.example,@other.example:z@example.com>\n"
            "Subject: literals\n\nbody\n");
  auto stored = s.stored();
  REQUIRE(stored.size() == 1);
  CHECK(stored[0].record.reverse_path.empty());
  CHECK(addresses(stored[0].record) ==
        std::vector<std::string>{"x@[IPv6:::1]", "y@[127.0.0.1]", "z@example.com"});
  // No From header and a null sender: none is made up.
  CHECK(stored[0].body.find("From:") == std::string::npos);
}

TEST_CASE("mailq-send refuses bad addresses with 64 and bad messages with 65, queuing nothing",
          "[tools][send]") {
  Spool s;
  struct Case {
    std::vector<std::string> args;
    std::string input;
    int status;
    std::string err;
  };
  const std::vector<Case> cases = {
      {{"bob@example.com", "not an address"},
       kMessage,
       64,
       "mailq-send: bad recipient address \"not an address\": missing '@' between local part "
       "and domain\n"},
      {{"-f", "bad@", "bob@example.com"},
       kMessage,
       64,
       "mailq-send: bad sender address \"bad@\": empty domain\n"},
      {{},
       kMessage,
       64,
       "mailq-send: no recipients: give addresses as arguments, or -t to read them from the "
       "headers\n"},
      {{"-t"},
       "Subject: nobody\n\nx\n",
       64,
       "mailq-send: no recipients: the To, Cc and Bcc headers name nobody and no address was "
       "given\n"},
      {{"bob@example.com"},
       "",
       65,
       "mailq-send: empty message: nothing was read from standard input\n"},
      {{"bob@example.com"},
       "\n\r\n  \n",
       65,
       "mailq-send: empty message: nothing was read from standard input\n"},
      {{"bob@example.com"},
       std::string("Subject: x\n\nNUL\0here\n", 20),
       65,
       "mailq-send: the message contains a NUL octet on line 3\n"},
      {{"bob@example.com"},
       "Subject: x\n\n" + std::string(999, 'a') + "\n",
       65,
       "mailq-send: line 3 of the message is longer than 998 octets (RFC 5322 2.1.1); encode "
       "the body (quoted-printable or base64)\n"},
      {{"--bogus", "bob@example.com"}, kMessage, 64, ""},
  };
  for (const auto& c : cases) {
    INFO(c.err);
    ToolRun r = s.send(c.args, c.input);
    CHECK(r.status == c.status);
    CHECK(r.out.empty());
    if (!c.err.empty())
      CHECK(r.err == c.err);
    else
      CHECK(r.err.rfind("mailq-send: unknown option --bogus\nusage: mailq-send", 0) == 0);
  }
  // Exactly 998 octets is allowed.
  s.sent_id({"bob@example.com"}, "Subject: x\n\n" + std::string(998, 'a') + "\n");
  CHECK(s.stored().size() == 1);
}

TEST_CASE("mailq-send refuses a CR, LF or control in any argument: no recipient is injected",
          "[tools][send][security]") {
  Spool s;
  s.sent_id({"bob@example.com"});  // the spool exists: a refusal cannot be "no spool"
  REQUIRE(s.stored().size() == 1);
  struct Case {
    std::vector<std::string> args;
    std::string err;
  };
  const std::vector<Case> cases = {
      // The attack: an address from a web form, with an SMTP command after a line break.
      {{"r@t.test\r\nRCPT TO:<evil@x.test>"},
       "mailq-send: argument 3 (\"r@t.test\\r\\nRCPT TO:<evil@x.test>\") contains a line break "
       "(CR or LF), which no address, path or option value may hold: refused, nothing was "
       "done\n"},
      {{"bob@example.com", "r@t.test\nevil@x.test"},
       "mailq-send: argument 4 (\"r@t.test\\nevil@x.test\") contains a line break (CR or LF), "
       "which no address, path or option value may hold: refused, nothing was done\n"},
      {{"r@t.test\revil@x.test"},
       "mailq-send: argument 3 (\"r@t.test\\revil@x.test\") contains a line break (CR or LF), "
       "which no address, path or option value may hold: refused, nothing was done\n"},
      {{"-f", "a@b.test\r\nRCPT TO:<evil@x.test>", "bob@example.com"},
       "mailq-send: argument 4 (\"a@b.test\\r\\nRCPT TO:<evil@x.test>\") contains a line break "
       "(CR or LF), which no address, path or option value may hold: refused, nothing was "
       "done\n"},
      {{"--", "bob@example.com\x01"},
       "mailq-send: argument 4 (\"bob@example.com\\x01\") contains a control character, which "
       "no address, path or option value may hold: refused, nothing was done\n"},
      {{"bob@example.com\x7f"},
       "mailq-send: argument 3 (\"bob@example.com\\x7f\") contains a control character, which "
       "no address, path or option value may hold: refused, nothing was done\n"},
  };
  for (const auto& c : cases) {
    INFO(c.err);
    ToolRun r = s.send(c.args);
    CHECK(r.status == 64);
    CHECK(r.out.empty());
    CHECK(r.err == c.err);
  }
  // The header section read with -t (and the From header that names the sender): a bare CR
  // would start a new line, a control is no address list.
  const std::vector<std::pair<std::string, std::string>> messages = {
      {"To: r@t.test\rRCPT TO:<evil@x.test>\nSubject: x\n\nbody\n",
       "mailq-send: line 1 of the message holds a bare CR (a CR not followed by LF); lines end "
       "with LF or CRLF\n"},
      {"To: r@t.test\x0b<evil@x.test>\nSubject: x\n\nbody\n",
       "mailq-send: the To header holds a control character (\" r@t.test\\x0b<evil@x.test>\"): "
       "refused, nothing was queued\n"},
      {"To: r@t.test\nCc: a@b.test,\n \x1b[2Jevil@x.test\nSubject: x\n\nbody\n",
       "mailq-send: the Cc header holds a control character (\" a@b.test, \\x1b[2Jevil@x.test\"): "
       "refused, nothing was queued\n"},
  };
  for (const auto& [input, err] : messages) {
    INFO(err);
    ToolRun r = s.send({"-t"}, input);
    CHECK(r.status == 65);
    CHECK(r.out.empty());
    CHECK(r.err == err);
  }
  // A From header with a control decides nothing once -f names the sender; without -f it is
  // refused.
  const std::string bad_from = "From: a@b.test\x0b<evil@x.test>\nSubject: x\n\nbody\n";
  ToolRun r = s.send({"bob@example.com"}, bad_from);
  CHECK(r.status == 65);
  CHECK(r.err ==
        "mailq-send: the From header holds a control character "
        "(\" a@b.test\\x0b<evil@x.test>\"): refused, nothing was queued\n");
  s.sent_id({"-f", "a@b.test", "bob@example.com"}, bad_from);
  // Nothing of the refused submissions was queued: the first message and the last only, and
  // no evil@x.test anywhere.
  auto stored = s.stored();
  REQUIRE(stored.size() == 2);
  for (const auto& m : stored)
    CHECK(addresses(m.record) == std::vector<std::string>{"bob@example.com"});
  // A tab is whitespace, not a control: a display name with one still works.
  s.sent_id({"Bob\t<bob@example.com>"});
  CHECK(s.stored().size() == 3);
}

TEST_CASE("mailq-queue refuses a CR, LF or control in any argument", "[tools][queue][security]") {
  Spool s;
  std::string id = s.sent_id({"bob@example.com"});
  s.pick_up();
  ToolRun r = s.queue({"hold", id + "\nflush"});
  CHECK(r.status == 64);
  CHECK(r.err == "mailq-queue: argument 5 (\"" + id +
                     "\\nflush\") contains a line break (CR or LF), which no address, path or "
                     "option value may hold: refused, nothing was done\n");
  r = s.queue({"list", "--error", "refused\r\nx"});
  CHECK(r.status == 64);
  // The message is not held.
  CHECK(s.ok({"show", id}).find("held: no\n") != std::string::npos);
}

TEST_CASE("mailq-send exits 75 (try again later) when the spool cannot take the message",
          "[tools][send]") {
  TempDir dir;
  const std::string not_a_dir = dir.file("file");
  write_file(not_a_dir, "x");
  ToolRun r = run_tool({MAILQ_SEND_BIN, "--spool", not_a_dir, "bob@example.com"}, kMessage);
  CHECK(r.status == 75);
  CHECK(r.out.empty());
  CHECK(r.err == "mailq-send: cannot write into the maildrop: the spool " + not_a_dir +
                     " is not a directory\n");
  CHECK(read_file(not_a_dir) == "x");
}

TEST_CASE("mailq-queue list, summary and show read a spool no relay holds", "[tools][queue]") {
  Spool s;
  std::string a = s.sent_id({"bob@example.com", "carol@example.net"});
  std::string b = s.sent_id({"-f", "<>", "dave@example.com"});
  s.pick_up();

  CHECK(s.ok({"list"}) ==
        "ID             AGE  SIZE  STATE   SENDER             RECIPIENTS                         "
        "DESTINATION              LAST ERROR\n" +
            a +
            "   0m   166  queued  alice@example.org  bob@example.com,carol@example.net  "
            "example.com,example.net  -\n" +
            b +
            "   0m   166  queued  <>                 dave@example.com                   "
            "example.com              -\n"
            "2 messages, 3 recipients pending\n");
  CHECK(s.ok({"list", "--destination", "example.net"}).find(b) == std::string::npos);
  CHECK(s.ok({"list", "--min-age=1h"}) == "no message matches\n");

  CHECK(s.ok({"summary"}) ==
        "DESTINATION  T  0-5m  5-10m  10-20m  20-40m  40-80m  80-160m  160-320m  320m+  HELD\n"
        "TOTAL        2     2      0       0       0       0        0         0      0     0\n"
        "example.com  2     2      0       0       0       0        0         0      0     0\n"
        "example.net  1     1      0       0       0       0        0         0      0     0\n");

  std::string show = s.ok({"show", b});
  const std::string arrival = "arrival: ";
  std::size_t at = show.find(arrival);
  REQUIRE(at != std::string::npos);
  std::size_t eol = show.find('\n', at);
  CHECK(show.substr(eol - 13) == " UTC (0m ago)\n" + show.substr(eol + 1));
  show.erase(at + arrival.size(), eol - at - arrival.size());
  CHECK(show == "id: " + b + "\nqueue file: segments/0000000000000001.seg#ZZ" + b +
                    ".00\n"
                    "arrival: \n"
                    "size: 166 octets\n"
                    "sender: <>\n"
                    "source channel: local\n"
                    "message-id: <fixed.1@example.org>\n"
                    "held: no\n"
                    "delivery attempts: 0\n"
                    "recipients:\n"
                    "  dave@example.com: queued, 0 attempts, destination example.com via "
                    "default-non-local-route\n"
                    "    next attempt: due now\n"
                    "Transient Delivery Attempts | Failure Time | Details | Recipient |\n"
                    "(no transient delivery attempts)\n");
}

TEST_CASE("mailq-queue hold, release, delete and bounce act on the spool directly",
          "[tools][queue]") {
  Spool s;
  std::string a = s.sent_id({"bob@example.com"});
  std::string b = s.sent_id({"carol@example.net"});
  std::string c = s.sent_id({"dave@example.com"});
  s.pick_up();

  CHECK(s.ok({"hold", a}) == "held " + a + "\n");
  CHECK(s.ok({"hold", "example.com"}) == "held 1 message for example.com\n");
  CHECK(s.ok({"list", "--held"}).find("2 messages, 2 recipients pending\n") != std::string::npos);
  for (const auto& st : s.stored()) CHECK(st.record.held == (st.record.id.to_string() != b));
  CHECK(s.ok({"release", "example.com"}) == "released 2 messages for example.com\n");
  for (const auto& st : s.stored()) CHECK_FALSE(st.record.held);

  CHECK(s.ok({"delete", b}) == "deleted " + b + " (1 recipient not notified)\n");
  CHECK(s.ok({"bounce", c}) ==
        "bounced " + c + " (1 recipient), delivery status notification to alice@example.org\n");
  auto stored = s.stored();
  REQUIRE(stored.size() == 2);
  CHECK(stored[0].record.id.to_string() == a);
  // The delivery status notification waits in the spool for the relay.
  CHECK(stored[1].record.reverse_path.empty());
  CHECK(addresses(stored[1].record) == std::vector<std::string>{"alice@example.org"});
  CHECK(stored[1].body.find(c) != std::string::npos);

  ToolRun r = s.queue({"delete", b});
  CHECK(r.status == 1);
  CHECK(r.out.empty());
  CHECK(r.err == "mailq-queue: no message " + b + "\n");
}

TEST_CASE(
    "the tools find a segment spool in its directory: mailq-send adds to it, mailq-queue "
    "reads and changes it",
    "[tools][segments]") {
  Spool s;
  {
    ManualClock clock;
    auto created = spool::open_spool(s.path(), clock, spool::Layout::segments);
    INFO((created ? std::string() : created.error().message));
    REQUIRE(created);
  }
  std::string a = s.sent_id({"bob@example.com"});
  std::string b = s.sent_id({"carol@example.net"});
  s.pick_up();
  CHECK_FALSE(fs::exists(s.path() + "/queue"));
  CHECK(spool::detect_layout(s.path()) == spool::Layout::segments);

  const std::string list = s.ok({"list"});
  CHECK(list.find(a + "   0m   166  queued  alice@example.org  bob@example.com") !=
        std::string::npos);
  CHECK(list.find("2 messages, 2 recipients pending\n") != std::string::npos);
  CHECK(s.ok({"hold", a}) == "held " + a + "\n");
  CHECK(s.ok({"delete", b}) == "deleted " + b + " (1 recipient not notified)\n");
  auto stored = s.stored();
  REQUIRE(stored.size() == 1);
  CHECK(stored[0].record.id.to_string() == a);
  CHECK(stored[0].record.held);
  CHECK(stored[0].body.find("Hello Bob.\r\n") != std::string::npos);
}

TEST_CASE("mailq-queue refuses what it cannot do offline, with documented exit statuses",
          "[tools][queue]") {
  Spool s;
  s.sent_id({"bob@example.com"});
  s.pick_up();
  ToolRun r = s.queue({"flush"});
  CHECK(r.status == 1);
  CHECK(r.err ==
        "mailq-queue: flush needs a running mailq-relay (it acts on the relay's delivery "
        "state)\n");
  r = s.queue({"reset-domains"});
  CHECK(r.status == 1);
  r = s.queue({"status"});
  CHECK(r.status == 0);
  CHECK(r.out ==
        "queue: 1 message, 1 recipient pending, 0 held, 1 destination\n"
        "relay: not running (domain states and connections need a running mailq-relay)\n");
  r = s.queue({"frobnicate"});
  CHECK(r.status == 1);
  CHECK(r.err == "mailq-queue: unknown verb 'frobnicate' (try 'help')\n");
  r = s.queue({});
  CHECK(r.status == 64);
  CHECK(r.err.rfind("mailq-queue: no verb given\nusage: mailq-queue", 0) == 0);
  r = run_tool({MAILQ_QUEUE_BIN, "--spool", s.dir.file("missing"), "list"});
  CHECK(r.status == 66);
  CHECK(r.err == "mailq-queue: no spool at " + s.dir.file("missing") + "\n");
  CHECK_FALSE(::access(s.dir.file("missing").c_str(), F_OK) == 0);
  r = run_tool({MAILQ_QUEUE_BIN, "--help"});
  CHECK(r.status == 0);
  CHECK(r.out.find("exit status: 0 done; 1 the verb failed") != std::string::npos);
}

TEST_CASE("with --config the tools take the spool from the file, the relay routes what it picks up",
          "[tools][send][queue][config]") {
  Spool s;
  const std::string config = s.dir.file("relay.toml");
  const std::uint16_t closed = free_tcp_port();
  REQUIRE(closed != 0);
  write_file(config, "spool = \"" + s.path() + "\"\nlog = \"" + s.dir.file("mail.log") +
                         "\"\nhelo = \"mx.test.example\"\n"
                         "[resolver]\nservers = [\"127.0.0.1:" +
                         std::to_string(closed) +
                         "\"]\ntimeout = \"200ms\"\n"
                         "[[route]]\nname = \"tcp_internal\"\ndomains = [\"internal.example\"]\n"
                         "hosts = [\"127.0.0.1:" +
                         std::to_string(closed) + "\"]\n");
  ToolRun r = run_tool({MAILQ_SEND_BIN, "--config", config, "-f", "a@example.org",
                        "x@internal.example", "y@other.example"},
                       kMessage, {"TZ=UTC"});
  INFO(r.err);
  REQUIRE(r.status == 0);
  const std::string id = r.out.substr(0, 13);
  CHECK(fs::exists(s.path() + "/maildrop/" + id));
  // Offline, mailq-queue says what waits in the maildrop.
  r = run_tool({MAILQ_QUEUE_BIN, "--config", config, "--utc", "summary"});
  CHECK(r.status == 0);
  CHECK(r.out.find("maildrop: 1 message in the maildrop, waiting for a relay to pick it up\n") !=
        std::string::npos);
  r = run_tool({MAILQ_QUEUE_BIN, "--config", config, "show", id});
  CHECK(r.status == 0);
  CHECK(r.out == "id: " + id +
                     "\nin the maildrop: waiting for a relay to pick it up\nsender: "
                     "a@example.org\nsize: 166 octets\nrecipients:\n  x@internal.example\n"
                     "  y@other.example\n");

#if defined(MAILQ_RELAY_BIN)
  // A relay (here one pass, every connection refused) queues it under that id with its own
  // routes, the E records in its log.
  r = run_tool({MAILQ_RELAY_BIN, "--config", config, "--once"});
  INFO(r.out + r.err);
  CHECK(r.status == 75);  // deferred: still in the queue
  const std::string log = read_file(s.dir.file("mail.log"));
  // A new spool is a segment spool: the queue file field names the segment file, which
  // exists, and the message.
  CHECK(log.find("local          tcp_internal E 1\n a@example.org rfc822;x@internal.example "
                 "x@internal.example\n segments/0000000000000001.seg#ZZ" +
                 id + ".00\n <fixed.1@example.org>\n") != std::string::npos);
  CHECK(std::filesystem::is_regular_file(s.path() + "/segments/0000000000000001.seg"));
  CHECK(log.find(" default-non-local-route E 1\n a@example.org rfc822;y@other.example "
                 "y@other.example\n") != std::string::npos);
  CHECK_FALSE(fs::exists(s.path() + "/maildrop/" + id));

  r = run_tool({MAILQ_QUEUE_BIN, "--config", config, "--utc", "summary"});
  CHECK(r.status == 0);
  CHECK(r.err.empty());
  CHECK(r.out ==
        "DESTINATION    T  0-5m  5-10m  10-20m  20-40m  40-80m  80-160m  160-320m  320m+  HELD\n"
        "TOTAL          1     1      0       0       0       0        0         0      0     0\n"
        "other.example  1     1      0       0       0       0        0         0      0     0\n"
        "tcp_internal   1     1      0       0       0       0        0         0      0     0\n");
  CHECK(run_tool({MAILQ_QUEUE_BIN, "--config", config, "hold", "tcp_internal"}).out ==
        "held 1 message for tcp_internal\n");
  // Without the configuration the static route is unknown: said on standard error.
  r = s.queue({"summary"});
  CHECK(r.err ==
        "mailq-queue: note: route tcp_internal not known without --config: destinations show "
        "as domains\n");
#endif

  write_file(config, "spool = 3\n");
  r = run_tool({MAILQ_SEND_BIN, "--config", config, "bob@example.com"}, kMessage);
  CHECK(r.status == 78);
  CHECK(r.err == "mailq-send: " + config + ":1: spool: expected a string, got an integer\n");
  r = run_tool({MAILQ_QUEUE_BIN, "--config", config, "list"});
  CHECK(r.status == 78);
}

namespace {

// Stands in for mailq-relay: holds the spool's lock and answers on its control socket.
struct FakeRelay {
  Spool& spool;
  int lock_fd = -1;
  std::mutex mu;
  std::vector<relay::ControlRequest> requests;

  explicit FakeRelay(Spool& s) : spool(s) {
    // The spool exists (a first submission made it); take its lock as the relay does.
    lock_fd = ::open((s.path() + "/lock").c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(lock_fd >= 0);
    REQUIRE(::flock(lock_fd, LOCK_EX | LOCK_NB) == 0);
  }
  ~FakeRelay() { ::close(lock_fd); }

  // Runs `tool` on a thread while `loop` serves the control socket.
  ToolRun serve(TestLoop& loop, std::function<ToolRun()> tool) {
    auto fut = std::async(std::launch::async, std::move(tool));
    uv_timer_t tick;
    uv_timer_init(loop.get(), &tick);
    uv_timer_start(
        &tick, [](uv_timer_t*) {}, 5, 5);
    bool ready = loop.run_until([&] { return fut.wait_for(0s) == std::future_status::ready; }, 90s);
    uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
    loop.run_for(1ms);
    REQUIRE(ready);
    return fut.get();
  }
};

}  // namespace

TEST_CASE(
    "with a relay holding the spool, mailq-queue and mailq-send --control go through its "
    "control socket, and mailq-send alone through the maildrop",
    "[tools][send][queue][control]") {
  Spool s;
  s.sent_id({"bob@example.com"});
  s.pick_up();  // creates the spool
  FakeRelay relay(s);
  const std::string socket = s.path() + "/control.sock";
  const MessageId answered{0x123456789abcull};
  TestLoop loop;
  relay::ControlServer server(
      loop.get(), s.path() + "/control.sock",
      [&](relay::ControlRequest req, std::function<void(relay::ControlResponse)> respond) {
        std::lock_guard<std::mutex> lock(relay.mu);
        relay.requests.push_back(req);
        if (req.argv[0] == "submit")
          respond(relay::ControlResponse::success(answered.to_string() + "\n"));
        else if (req.argv[0] == "delete")
          respond(relay::ControlResponse::failure("no message 01J9ZK3D2ZP7F"));
        else
          respond(relay::ControlResponse::success("served " + req.argv[0] + "\n"));
      });
  REQUIRE_FALSE(server.start());

  ToolRun r = relay.serve(loop, [&] {
    return s.send({"--control", socket, "-f", "<>", "carol@example.net", "dave@example.com"});
  });
  INFO(r.err);
  CHECK(r.status == 0);
  CHECK(r.out == answered.to_string() + "\n");
  {
    std::lock_guard<std::mutex> lock(relay.mu);
    REQUIRE(relay.requests.size() == 1);
    const auto& req = relay.requests[0];
    std::string body(
        "From: Alice Example <alice@example.org>\r\nTo: bob@example.com\r\nDate: Tue, 03 Jan "
        "2023 15:48:55 +0100\r\nMessage-ID: <fixed.1@example.org>\r\nSubject: hello\r\n\r\nHello "
        "Bob.\r\n");
    CHECK(req.argv == std::vector<std::string>{"submit", std::to_string(body.size()), "<>",
                                               "carol@example.net", "dave@example.com"});
    CHECK(req.body == body);
  }

  r = relay.serve(loop, [&] {
    return s.queue({"list", "--error", "connection refused", "--min-age=1h"});
  });
  CHECK(r.status == 0);
  CHECK(r.out == "served list\n");
  r = relay.serve(loop, [&] { return s.queue({"delete", "01J9ZK3D2ZP7F"}); });
  CHECK(r.status == 1);
  CHECK(r.err == "mailq-queue: no message 01J9ZK3D2ZP7F\n");
  {
    std::lock_guard<std::mutex> lock(relay.mu);
    REQUIRE(relay.requests.size() == 3);
    CHECK(relay.requests[1].argv ==
          std::vector<std::string>{"list", "--error", "connection%20refused", "--min-age", "1h"});
  }

  // DSN options cannot cross the socket: said, nothing sent.
  r = s.send({"--control", socket, "-N", "never", "bob@example.com"});
  CHECK(r.status == 64);
  CHECK(r.err ==
        "mailq-send: -N, -R and -V cannot cross the relay's control socket: submit without "
        "--control (through the maildrop)\n");

  // The relay's socket gone: with --control the submitter says "try later"...
  server.close();
  loop.run_for(10ms);
  r = s.send({"--control", socket, "bob@example.com"});
  CHECK(r.status == 75);
  CHECK(r.err.rfind("mailq-send: no relay answers on its control socket: connect ", 0) == 0);
  // ... and without it the message goes into the maildrop, although the spool is locked.
  std::string dropped = s.sent_id({"erin@example.com"});
  MessageId dropped_id;
  REQUIRE(MessageId::parse(dropped, &dropped_id));
  CHECK(relay::list_maildrop(s.path()).value() == std::vector<MessageId>{dropped_id});
  r = s.queue({"list"});
  CHECK(r.status == 69);
  CHECK(loop.close() == 0);
}

#endif  // MAILQ_SEND_BIN && MAILQ_QUEUE_BIN

#if defined(MAILQ_SEND_BIN) && defined(MAILQ_QUEUE_BIN) && defined(MAILQ_RELAY_BIN)

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("the tools against a running mailq-relay: submit, reports and every control verb",
          "[tools][send][queue][relay]") {
  TempDir dir;
  const std::string spool = dir.file("spool");
  const std::string config = dir.file("relay.toml");
  // A static route to a loopback port nobody listens on: every connection is refused, and
  // the third failure marks the destination down (seed 000).
  const std::uint16_t closed = free_tcp_port();
  REQUIRE(closed != 0);
  write_file(config, "spool = \"" + spool + "\"\nlog = \"" + dir.file("mail.log") +
                         "\"\nhelo = \"mx.test.example\"\n"
                         "[resolver]\nservers = [\"127.0.0.1:" +
                         std::to_string(closed) +
                         "\"]\ntimeout = \"200ms\"\n"
                         "[domain_state]\nfailure_threshold = 3\ndown_interval = \"15m\"\n"
                         "[[route]]\nname = \"tcp_internal\"\ndomains = [\"internal.example\"]\n"
                         "hosts = [\"127.0.0.1:" +
                         std::to_string(closed) + "\"]\n");
  Daemon relay;
  std::string error;
  REQUIRE(relay.start({MAILQ_RELAY_BIN, "--config", config}, dir.file("relay.out"), &error));
  auto queue = [&](std::vector<std::string> args) {
    std::vector<std::string> argv{MAILQ_QUEUE_BIN, "--config", config};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_tool(argv);
  };
  // Up when its control socket exists (made after the spool's lock is taken: a tool run
  // before that would open the spool itself and keep the relay out).
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline &&
         ::access((spool + "/control.sock").c_str(), F_OK) != 0) {
    REQUIRE(relay.running());
    std::this_thread::sleep_for(20ms);
  }
  ToolRun st = queue({"status"});
  INFO(read_file(dir.file("relay.out")));
  REQUIRE(st.status == 0);
  CHECK(st.out.rfind("queue: 0 messages, 0 recipients pending, 0 held, 0 destinations\n", 0) == 0);

  // Submissions go through the socket (the relay holds the spool's lock).
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) {
    ToolRun r = run_tool({MAILQ_SEND_BIN, "--config", config, "-f", "alice@example.org",
                          "u" + std::to_string(i) + "@internal.example"},
                         kMessage);
    INFO(r.err);
    REQUIRE(r.status == 0);
    REQUIRE(r.out.size() == 14);
    ids.push_back(r.out.substr(0, 13));
    // One at a time, so that three refused connections come before the fourth message.
    const auto until = std::chrono::steady_clock::now() + 30s;
    while (std::chrono::steady_clock::now() < until &&
           !contains(queue({"show", ids.back()}).out, "last reply: "))
      std::this_thread::sleep_for(20ms);
  }
  st = queue({"status"});
  CHECK(contains(st.out, "domains: 1 down\n  tcp_internal: down until "));
  CHECK(contains(st.out,
                 "3 consecutive connection failures, last: TCP active open: Failed "
                 "connect() Error: connection refused\n"));

  // The error filter with a space crosses the socket percent-encoded.
  ToolRun r = queue({"list", "--error", "marked down"});
  CHECK(r.status == 0);
  CHECK(contains(r.out, ids[3] + "   0m   166  deferred  alice@example.org  u3@internal.example"));
  CHECK(contains(r.out, "1 message, 1 recipient pending\n"));
  r = queue({"show", ids[3]});
  CHECK(contains(r.out, "    destination down until "));
  CHECK(contains(r.out, "Attempted Delivery to: tcp_internal | "));
  CHECK(contains(r.out,
                 " | 451 4.4.1 [internal] connection was not attempted: domain is marked "
                 "down (too many connection failures) | u3@internal.example |\n"));

  CHECK(queue({"hold", "tcp_internal"}).out == "held 4 messages for tcp_internal\n");
  CHECK(queue({"flush"}).out.rfind("flush: 0 messages made due\n  tcp_internal is down until ",
                                   0) == 0);
  CHECK(queue({"release", ids[0]}).out == "released " + ids[0] + "\n");
  CHECK(queue({"reset-domains"}).out ==
        "reset-domains: 1 destination no longer down: tcp_internal\n");
  CHECK(queue({"delete", ids[1]}).out == "deleted " + ids[1] + " (1 recipient not notified)\n");
  CHECK(queue({"bounce", ids[2]}).out ==
        "bounced " + ids[2] +
            " (1 recipient), delivery status notification to alice@example.org\n");
  r = queue({"delete", ids[1]});
  CHECK(r.status == 1);
  CHECK(r.err == "mailq-queue: no message " + ids[1] + "\n");

  // After the relay stops, the same spool reads the same offline.
  REQUIRE(relay.signal(SIGTERM));
  CHECK(relay.wait(30s) == 0);
  r = queue({"list", "--held"});
  CHECK(r.status == 0);
  CHECK(contains(r.out, ids[3] + "   0m   166  held"));
  CHECK(contains(r.out, "1 message, 1 recipient pending\n"));
}

#endif  // MAILQ_SEND_BIN && MAILQ_QUEUE_BIN && MAILQ_RELAY_BIN

TEST_CASE(
    "a relay whose configuration moved its control socket tells the tools where, in the "
    "spool: --spool alone finds it",
    "[tools][queue][relay][control]") {
  TempDir dir;
  const std::string spool = dir.file("spool");
  const std::string config = dir.file("relay.toml");
  const std::string socket = dir.file("elsewhere.sock");
  const std::uint16_t closed = free_tcp_port();
  REQUIRE(closed != 0);
  write_file(config, "spool = \"" + spool + "\"\nlog = \"" + dir.file("mail.log") +
                         "\"\ncontrol = \"" + socket + "\"\n[resolver]\nservers = [\"127.0.0.1:" +
                         std::to_string(closed) + "\"]\ntimeout = \"200ms\"\n");
  Daemon relay;
  std::string error;
  REQUIRE(relay.start({MAILQ_RELAY_BIN, "--config", config}, dir.file("relay.out"), &error));
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline && ::access(socket.c_str(), F_OK) != 0) {
    REQUIRE(relay.running());
    std::this_thread::sleep_for(20ms);
  }
  INFO(read_file(dir.file("relay.out")));
  CHECK(read_file(spool + "/control.path") == socket + "\n");
  // Only the spool: the relay answers (an offline status would say so), and a submission
  // goes through it (the spool itself is locked by the relay).
  ToolRun st = run_tool({MAILQ_QUEUE_BIN, "--spool", spool, "status"});
  INFO(st.err);
  REQUIRE(st.status == 0);
  CHECK(st.out.find("control: " + socket + "\n") != std::string::npos);
  ToolRun sent = run_tool(
      {MAILQ_SEND_BIN, "--spool", spool, "-f", "alice@example.org", "bob@example.com"}, kMessage);
  INFO(sent.err);
  CHECK(sent.status == 0);
  REQUIRE(relay.signal(SIGTERM));
  CHECK(relay.wait(30s) == 0);
  CHECK(::access((spool + "/control.path").c_str(), F_OK) != 0);  // gone with the relay
}

TEST_CASE(
    "mailq-relay --once --single-pass tries each message due at the start once, even when its "
    "retry comes due before the run ends",
    "[tools][relay][once]") {
  TempDir dir;
  const std::string spool = dir.file("spool");
  const std::string config = dir.file("relay.toml");
  const std::string log = dir.file("mail.log");
  const std::uint16_t closed = free_tcp_port();
  REQUIRE(closed != 0);
  BlackholeListener blackhole;  // connections that never complete: 3 s of connect timeout
  std::string error;
  REQUIRE(blackhole.start(&error));
  // internal.example: refused at once, due again a second later (and a queue cycle every
  // second to take it), no down mark to stop the retries; slow.example keeps the run going
  // for three seconds.
  write_file(config, "spool = \"" + spool + "\"\nlog = \"" + log +
                         "\"\n[resolver]\nservers = [\"127.0.0.1:" + std::to_string(closed) +
                         "\"]\n[queue]\ncycle = \"1s\"\nretry = { min = \"1s\", max = \"1s\" }\n"
                         "[domain_state]\nfailure_threshold = 1000\n"
                         "[[route]]\nname = \"tcp_internal\"\ndomains = [\"internal.example\"]\n"
                         "hosts = [\"127.0.0.1:" +
                         std::to_string(closed) +
                         "\"]\n[[route]]\nname = \"tcp_slow\"\ndomains = [\"slow.example\"]\n"
                         "hosts = [\"127.0.0.1:" +
                         std::to_string(blackhole.endpoint().port) +
                         "\"]\ntimeouts = { connect = \"3s\" }\n");
  for (const char* to : {"u@internal.example", "v@slow.example"}) {
    ToolRun sent =
        run_tool({MAILQ_SEND_BIN, "--config", config, "-f", "alice@example.org", to}, kMessage);
    INFO(sent.err);
    REQUIRE(sent.status == 0);
  }
  auto attempts = [&](const std::string& channel) {
    std::size_t n = 0;
    const std::string text = read_file(log);
    for (std::size_t at = 0; (at = text.find(channel, at)) != std::string::npos; ++at)
      if (text.compare(text.find_first_not_of(' ', at + channel.size()), 2, "Q ") == 0) ++n;
    return n;
  };
  const auto start = std::chrono::steady_clock::now();
  ToolRun once = run_tool({MAILQ_RELAY_BIN, "--config", config, "--once", "--single-pass"});
  const auto took = std::chrono::steady_clock::now() - start;
  INFO(once.err);
  INFO(read_file(log));
  CHECK(once.status == 75);  // both remain
  CHECK(took >= 3s);         // the slow destination's connect timeout
  // Three retry times of internal.example passed during the run; it was tried once.
  CHECK(attempts("tcp_internal") == 1);
  CHECK(attempts("tcp_slow") == 1);
  CHECK(run_tool({MAILQ_RELAY_BIN, "--config", config, "--single-pass"}).status == 64);
}

TEST_CASE("mailq-relay --once exits when its last job is done, not an idle_timeout later",
          "[tools][relay][once]") {
  TempDir dir;
  SmtpSink sink;
  std::string error;
  REQUIRE(sink.start(&error));
  const std::string config = dir.file("relay.toml");
  write_file(config,
             "spool = \"" + dir.file("spool") + "\"\nlog = \"" + dir.file("mail.log") +
                 "\"\n[resolver]\nservers = [\"127.0.0.1:" + std::to_string(free_tcp_port()) +
                 "\"]\n[delivery]\nidle_timeout = \"30s\"\n"
                 "[[route]]\nname = \"tcp_sink\"\ndefault = true\ntls = \"none\"\n"
                 "hosts = [\"127.0.0.1:" +
                 std::to_string(sink.port()) + "\"]\n");
  for (int i = 0; i < 3; ++i) {
    ToolRun sent = run_tool({MAILQ_SEND_BIN, "--config", config, "-f", "alice@example.org",
                             "u" + std::to_string(i) + "@example.com"},
                            kMessage);
    INFO(sent.err);
    REQUIRE(sent.status == 0);
  }
  const auto start = std::chrono::steady_clock::now();
  ToolRun once = run_tool({MAILQ_RELAY_BIN, "--config", config, "--once"});
  const auto took = std::chrono::steady_clock::now() - start;
  INFO(once.err);
  CHECK(once.status == 0);
  CHECK(sink.wait_for_dumps(3).size() == 3);
  CHECK(took < 15s);  // the idle connection would have kept it 30 s
}
