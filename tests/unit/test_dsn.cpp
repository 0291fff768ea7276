#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "mailq/dsn.h"

using namespace mailq;

namespace {

TimePoint utc(int y, unsigned m, unsigned d, int hh, int mm, int ss) {
  y -= m <= 2;
  const int era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  const long days = era * 146097L + static_cast<long>(doe) - 719468L;
  return TimePoint{std::chrono::seconds(days * 86400L + hh * 3600L + mm * 60L + ss)};
}

std::string lower(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

// Checks the transport invariants of a message: CRLF only, no line over 998 octets.
void check_lines(const std::string& m) {
  for (std::size_t i = 0; i < m.size(); ++i) {
    if (m[i] == '\n') {
      INFO("bare LF at " << i);
      REQUIRE(i > 0);
      REQUIRE(m[i - 1] == '\r');
    }
    if (m[i] == '\r') {
      INFO("bare CR at " << i);
      REQUIRE(i + 1 < m.size());
      REQUIRE(m[i + 1] == '\n');
    }
  }
  std::size_t start = 0;
  while (start < m.size()) {
    std::size_t end = m.find("\r\n", start);
    if (end == std::string::npos) end = m.size();
    INFO("line at " << start);
    REQUIRE(end - start <= 998);
    start = end + 2;
  }
  REQUIRE(m.size() >= 2);
  REQUIRE(m.compare(m.size() - 2, 2, "\r\n") == 0);
}

struct Entity {
  std::vector<std::pair<std::string, std::string>> fields;  // name lowercased, unfolded value
  std::string body;

  std::vector<std::string> all(const std::string& name) const {
    std::vector<std::string> out;
    for (const auto& f : fields) {
      if (f.first == lower(name)) out.push_back(f.second);
    }
    return out;
  }
  std::string get(const std::string& name) const {
    auto v = all(name);
    INFO("field " << name);
    REQUIRE(v.size() == 1);
    return v[0];
  }
  bool has(const std::string& name) const { return !all(name).empty(); }
};

// A header section (RFC 5322 §2.2, unfolded by removing the CRLF before WSP) and its body.
std::vector<std::pair<std::string, std::string>> parse_fields(const std::string& section) {
  std::vector<std::pair<std::string, std::string>> fields;
  std::size_t start = 0;
  while (start < section.size()) {
    std::size_t end = section.find("\r\n", start);
    if (end == std::string::npos) end = section.size();
    const std::string line = section.substr(start, end - start);
    start = end + 2;
    if (line.empty()) continue;
    if (line[0] == ' ' || line[0] == '\t') {
      REQUIRE(!fields.empty());
      fields.back().second += line;
      continue;
    }
    const std::size_t colon = line.find(':');
    INFO("header line: " << line);
    REQUIRE(colon != std::string::npos);
    for (std::size_t i = 0; i < colon; ++i) REQUIRE((line[i] > 32 && line[i] < 127));
    std::string value = line.substr(colon + 1);
    fields.emplace_back(lower(line.substr(0, colon)), value);
  }
  for (auto& f : fields) {
    std::size_t b = f.second.find_first_not_of(" \t");
    f.second = b == std::string::npos ? "" : f.second.substr(b);
  }
  return fields;
}

Entity parse_entity(const std::string& text) {
  Entity e;
  std::size_t split = text.find("\r\n\r\n");
  if (text.rfind("\r\n", 0) == 0) {
    e.body = text.substr(2);
    return e;
  }
  REQUIRE(split != std::string::npos);
  e.fields = parse_fields(text.substr(0, split + 2));
  e.body = text.substr(split + 4);
  return e;
}

std::string boundary_of(const std::string& content_type) {
  const std::string key = "boundary=\"";
  std::size_t b = content_type.find(key);
  REQUIRE(b != std::string::npos);
  b += key.size();
  std::size_t e = content_type.find('"', b);
  REQUIRE(e != std::string::npos);
  return content_type.substr(b, e - b);
}

// RFC 2046 §5.1.1: parts between "--boundary" lines, up to "--boundary--".
std::vector<Entity> split_parts(const std::string& body, const std::string& boundary) {
  const std::string delim = "--" + boundary;
  std::vector<Entity> parts;
  std::size_t pos = body.find(delim + "\r\n");
  REQUIRE(pos != std::string::npos);
  REQUIRE((pos == 0 || body.compare(pos - 2, 2, "\r\n") == 0));
  pos += delim.size() + 2;
  while (true) {
    std::size_t next = body.find("\r\n" + delim, pos);
    REQUIRE(next != std::string::npos);
    parts.push_back(parse_entity(body.substr(pos, next - pos)));
    pos = next + 2 + delim.size();
    if (body.compare(pos, 2, "--") == 0) break;
    REQUIRE(body.compare(pos, 2, "\r\n") == 0);
    pos += 2;
  }
  return parts;
}

// Status groups of a message/delivery-status body: blocks separated by empty lines.
std::vector<std::vector<std::pair<std::string, std::string>>> status_groups(
    const std::string& body) {
  std::vector<std::vector<std::pair<std::string, std::string>>> groups;
  std::size_t start = 0;
  while (start < body.size()) {
    std::size_t end = body.find("\r\n\r\n", start);
    if (end == std::string::npos) end = body.size();
    const std::string block = body.substr(start, end - start);
    if (!block.empty()) groups.push_back(parse_fields(block + "\r\n"));
    start = end + 4;
  }
  return groups;
}

std::string field(const std::vector<std::pair<std::string, std::string>>& group,
                  const std::string& name) {
  for (const auto& f : group) {
    if (f.first == lower(name)) return f.second;
  }
  return "<absent>";
}

const char* kOriginal =
    "From: Sender <sender@example.org>\r\n"
    "To: user@example.com, other@example.net\r\n"
    "Subject: quarterly report\r\n"
    "Message-ID: <abc123@example.org>\r\n"
    "\r\n"
    "Hello,\r\n"
    "the report is attached.\r\n";

DsnInput failed_input() {
  DsnInput in;
  in.reporting_mta = "mx.example.net";
  in.from_address = "MAILER-DAEMON@mx.example.net";
  in.to_address = "sender@example.org";
  in.envid = "QQ314159";
  in.arrival = utc(2023, 1, 3, 14, 48, 55);
  in.now = utc(2023, 1, 3, 15, 48, 55);
  in.original_message_id = "<abc123@example.org>";
  in.boundary_seed = "01J9ZK3D2ZP7F";
  in.original = kOriginal;

  DsnRecipient a;
  a.final_recipient = "user@example.com";
  a.original_recipient = "rfc822;User@Example.COM";
  a.action = DsnAction::failed;
  a.reply = Reply(550, "5.1.1", "<user@example.com>: Recipient address rejected");
  a.remote_mta = "mx1.example.com";
  a.last_attempt = utc(2023, 1, 3, 15, 48, 54);
  in.recipients.push_back(a);

  DsnRecipient b;
  b.final_recipient = "other@example.net";
  b.action = DsnAction::failed;
  b.reply = Reply(550, "5.4.7",
                  "[internal] message expired in the queue; last error: 421 4.4.4 [internal] "
                  "domain does not resolve");
  b.last_attempt = utc(2023, 1, 3, 15, 48, 55);
  in.recipients.push_back(b);
  return in;
}

}  // namespace

TEST_CASE("rfc5322_date renders UTC date-times", "[dsn]") {
  CHECK(rfc5322_date(utc(2023, 1, 3, 15, 48, 55)) == "Tue, 03 Jan 2023 15:48:55 +0000");
  CHECK(rfc5322_date(utc(1998, 1, 15, 10, 31, 5) + std::chrono::milliseconds(180)) ==
        "Thu, 15 Jan 1998 10:31:05 +0000");
  CHECK(rfc5322_date(utc(2024, 2, 29, 0, 0, 0)) == "Thu, 29 Feb 2024 00:00:00 +0000");
  CHECK(rfc5322_date(utc(1999, 12, 31, 23, 59, 59)) == "Fri, 31 Dec 1999 23:59:59 +0000");
}

TEST_CASE("dsn_status uses the enhanced code, else the reply class", "[dsn]") {
  CHECK(dsn_status(Reply(550, "5.1.1", "x")) == "5.1.1");
  CHECK(dsn_status(Reply(556, "5.1.10", "x")) == "5.1.10");
  CHECK(dsn_status(Reply(451, "4.4.1", "x")) == "4.4.1");
  CHECK(dsn_status(Reply(550, "", "x")) == "5.0.0");
  CHECK(dsn_status(Reply(421, "", "x")) == "4.0.0");
  CHECK(dsn_status(Reply(250, "", "x")) == "2.0.0");
  CHECK(dsn_status(Reply(550, "5.1", "x")) == "5.0.0");       // malformed
  CHECK(dsn_status(Reply(550, "3.1.1", "x")) == "5.0.0");     // no such class
  CHECK(dsn_status(Reply(550, "5.1234.1", "x")) == "5.0.0");  // too many digits
  CHECK(dsn_status(Reply(550, "5.1.1 ", "x")) == "5.0.0");
}

TEST_CASE("build_dsn: a failure report, headers only, RFC 3464 structure", "[dsn]") {
  const DsnInput in = failed_input();
  const std::string m = build_dsn(in);
  check_lines(m);

  const Entity top = parse_entity(m);
  CHECK(top.get("From") == "Mail Delivery System <MAILER-DAEMON@mx.example.net>");
  CHECK(top.get("To") == "<sender@example.org>");
  CHECK(top.get("Subject") == "Undelivered Mail Returned to Sender");
  CHECK(top.get("Date") == "Tue, 03 Jan 2023 15:48:55 +0000");
  CHECK(top.get("Message-ID") == "<20230103154855.01J9ZK3D2ZP7F@mx.example.net>");
  CHECK(top.get("In-Reply-To") == "<abc123@example.org>");
  CHECK(top.get("References") == "<abc123@example.org>");
  CHECK(top.get("Auto-Submitted") == "auto-replied");
  CHECK(top.get("MIME-Version") == "1.0");
  const std::string ct = top.get("Content-Type");
  CHECK(ct.rfind("multipart/report; report-type=delivery-status;", 0) == 0);
  const std::string boundary = boundary_of(ct);
  CHECK(boundary == "01J9ZK3D2ZP7F/1672760935/mx.example.net");

  const auto parts = split_parts(top.body, boundary);
  REQUIRE(parts.size() == 3);

  // 1: for people.
  CHECK(parts[0].get("Content-Type") == "text/plain; charset=us-ascii");
  const std::string& text = parts[0].body;
  CHECK(text.find("This is the mail system at mx.example.net.") != std::string::npos);
  CHECK(text.find("<user@example.com>: delivery failed permanently\r\n"
                  "    Remote server: mx1.example.com\r\n"
                  "    Reply: 550 5.1.1 <user@example.com>: Recipient address rejected\r\n") !=
        std::string::npos);
  CHECK(text.find("<other@example.net>: delivery failed permanently\r\n"
                  "    Reply: 550 5.4.7 [internal] message expired in the queue; last error:\r\n"
                  "      421 4.4.4 [internal] domain does not resolve\r\n") != std::string::npos);

  // 2: for machines.
  CHECK(parts[1].get("Content-Type") == "message/delivery-status");
  const auto groups = status_groups(parts[1].body);
  REQUIRE(groups.size() == 3);
  const std::vector<std::pair<std::string, std::string>> per_message = {
      {"reporting-mta", "dns; mx.example.net"},
      {"original-envelope-id", "QQ314159"},
      {"arrival-date", "Tue, 03 Jan 2023 14:48:55 +0000"},
  };
  CHECK(groups[0] == per_message);
  const std::vector<std::pair<std::string, std::string>> first = {
      {"original-recipient", "rfc822; User@Example.COM"},
      {"final-recipient", "rfc822; user@example.com"},
      {"action", "failed"},
      {"status", "5.1.1"},
      {"remote-mta", "dns; mx1.example.com"},
      {"diagnostic-code", "smtp; 550 5.1.1 <user@example.com>: Recipient address rejected"},
      {"last-attempt-date", "Tue, 03 Jan 2023 15:48:54 +0000"},
  };
  CHECK(groups[1] == first);
  const std::vector<std::pair<std::string, std::string>> second = {
      {"final-recipient", "rfc822; other@example.net"},
      {"action", "failed"},
      {"status", "5.4.7"},
      // mailq's own reply, not a server's: not of type smtp.
      {"diagnostic-code",
       "X-mailq; 550 5.4.7 [internal] message expired in the queue; last error: 421 4.4.4 "
       "[internal] domain does not resolve"},
      {"last-attempt-date", "Tue, 03 Jan 2023 15:48:55 +0000"},
  };
  CHECK(groups[2] == second);

  // 3: the original's header section only.
  CHECK(parts[2].get("Content-Type") == "text/rfc822-headers");
  CHECK(parts[2].body ==
        "From: Sender <sender@example.org>\r\n"
        "To: user@example.com, other@example.net\r\n"
        "Subject: quarterly report\r\n"
        "Message-ID: <abc123@example.org>\r\n");
  CHECK(m.find("the report is attached") == std::string::npos);
}

TEST_CASE("build_dsn: RET=FULL returns the whole original as message/rfc822", "[dsn]") {
  DsnInput in = failed_input();
  in.ret = DsnRet::full;
  // Bare LF line endings in the stored original become CRLF.
  const std::string original =
      "From: Sender <sender@example.org>\nSubject: hi\n\nline one\nline two\r\n";
  in.original = original;
  const std::string m = build_dsn(in);
  check_lines(m);
  const Entity top = parse_entity(m);
  const auto parts = split_parts(top.body, boundary_of(top.get("Content-Type")));
  REQUIRE(parts.size() == 3);
  CHECK(parts[2].get("Content-Type") == "message/rfc822");
  CHECK(parts[2].body ==
        "From: Sender <sender@example.org>\r\nSubject: hi\r\n\r\nline one\r\nline two\r\n");
  // The returned message is itself a parsable entity.
  const Entity inner = parse_entity(parts[2].body);
  CHECK(inner.get("Subject") == "hi");
}

TEST_CASE("build_dsn: UTF-8 headers come back as message/global or message/global-headers",
          "[dsn][utf8]") {
  DsnInput in = failed_input();
  in.original = "From: Jörg <joerg@example.org>\r\nSubject: Grüße\r\n\r\nbody\r\n";
  for (DsnRet ret : {DsnRet::unspecified, DsnRet::full}) {
    in.ret = ret;
    const std::string m = build_dsn(in);
    check_lines(m);
    const Entity top = parse_entity(m);
    const auto parts = split_parts(top.body, boundary_of(top.get("Content-Type")));
    REQUIRE(parts.size() == 3);
    CHECK(parts[2].get("Content-Type") ==
          (ret == DsnRet::full ? "message/global" : "message/global-headers"));
    CHECK(parts[2].get("Content-Transfer-Encoding") == "8bit");
  }
  // 8-bit in the body alone: the header section is ASCII, message/rfc822 holds it.
  in.original = "From: j@example.org\r\nSubject: x\r\n\r\nGrüße\r\n";
  in.ret = DsnRet::full;
  const Entity top = parse_entity(build_dsn(in));
  const auto parts = split_parts(top.body, boundary_of(top.get("Content-Type")));
  REQUIRE(parts.size() == 3);
  CHECK(parts[2].get("Content-Type") == "message/rfc822");
}

TEST_CASE("build_dsn: a delay notice", "[dsn]") {
  DsnInput in = failed_input();
  in.recipients.resize(1);
  in.recipients[0].action = DsnAction::delayed;
  in.recipients[0].reply = Reply(421, "4.4.4", "[internal] domain does not resolve");
  in.recipients[0].remote_mta.clear();
  in.recipients[0].will_retry_until = utc(2023, 1, 8, 14, 48, 55);
  const std::string m = build_dsn(in);
  check_lines(m);
  const Entity top = parse_entity(m);
  CHECK(top.get("Subject") == "Delayed Mail (still being retried)");
  const auto parts = split_parts(top.body, boundary_of(top.get("Content-Type")));
  REQUIRE(parts.size() == 3);
  const auto groups = status_groups(parts[1].body);
  REQUIRE(groups.size() == 2);
  CHECK(field(groups[1], "Action") == "delayed");
  CHECK(field(groups[1], "Status") == "4.4.4");
  CHECK(field(groups[1], "Remote-MTA") == "<absent>");
  CHECK(field(groups[1], "Will-Retry-Until") == "Sun, 08 Jan 2023 14:48:55 +0000");
  CHECK(parts[0].body.find("Will retry until: Sun, 08 Jan 2023 14:48:55 +0000") !=
        std::string::npos);
}

TEST_CASE("build_dsn: Status agrees with Action, missing replies get a class default", "[dsn]") {
  DsnInput in = failed_input();
  in.recipients.resize(1);
  in.recipients[0].reply = Reply(451, "4.4.1", "deferred, then bounced by the operator");
  in.recipients[0].original_recipient.clear();
  DsnRecipient none;
  none.final_recipient = "x@example.com";
  none.action = DsnAction::failed;
  in.recipients.push_back(none);
  const std::string m = build_dsn(in);
  const Entity top = parse_entity(m);
  const auto parts = split_parts(top.body, boundary_of(top.get("Content-Type")));
  const auto groups = status_groups(parts[1].body);
  REQUIRE(groups.size() == 3);
  CHECK(field(groups[1], "Status") == "5.4.1");
  CHECK(field(groups[1], "Original-Recipient") == "<absent>");
  CHECK(field(groups[2], "Status") == "5.0.0");
  CHECK(field(groups[2], "Diagnostic-Code") == "<absent>");
  CHECK(field(groups[2], "Last-Attempt-Date") == "<absent>");
}

TEST_CASE("build_dsn: input values cannot inject header fields or MIME parts", "[dsn][security]") {
  DsnInput in = failed_input();
  in.to_address = "sender@example.org\r\nBcc: victim@example.com";
  in.envid = "id\r\nBcc: victim@example.com";
  in.original_message_id = "<x@y>\nBcc: victim@example.com";
  in.recipients[0].reply.text = "rejected\r\nBcc: victim@example.com\r\n\r\n--injected";
  in.recipients[0].remote_mta = "mx\r\nX-Evil: 1";
  const std::string m = build_dsn(in);
  check_lines(m);
  CHECK(m.find("\r\nBcc:") == std::string::npos);
  CHECK(m.find("\r\nX-Evil:") == std::string::npos);
  CHECK(m.find("\r\n--injected") == std::string::npos);
  const Entity top = parse_entity(m);
  CHECK(top.get("To") == "<sender@example.org Bcc: victim@example.com>");
  const auto parts = split_parts(top.body, boundary_of(top.get("Content-Type")));
  REQUIRE(parts.size() == 3);
  const auto groups = status_groups(parts[1].body);
  REQUIRE(groups.size() == 3);
  CHECK(field(groups[0], "Original-Envelope-Id") == "id Bcc: victim@example.com");
}

TEST_CASE("build_dsn: long values are folded, no line exceeds 998 octets", "[dsn]") {
  DsnInput in = failed_input();
  std::string words;
  for (int i = 0; i < 400; ++i) words += "word" + std::to_string(i) + " ";
  words.pop_back();
  in.recipients[0].reply = Reply(550, "5.7.1", words);
  in.recipients[1].reply = Reply(550, "5.7.1", std::string(5000, 'x'));
  in.ret = DsnRet::full;
  const std::string original = "Subject: long\r\n\r\n" + std::string(3000, 'y') + "\r\n";
  in.original = original;  // DsnInput::original is a view
  const std::string m = build_dsn(in);
  check_lines(m);
  const Entity top = parse_entity(m);
  const auto parts = split_parts(top.body, boundary_of(top.get("Content-Type")));
  REQUIRE(parts.size() == 3);
  const auto groups = status_groups(parts[1].body);
  // Folding at spaces keeps the value: unfolding gives it back exactly.
  CHECK(field(groups[1], "Diagnostic-Code") == "smtp; 550 5.7.1 " + words);
  // Header lines are folded near 78 columns when there is a space to fold at.
  std::size_t start = 0;
  const std::string& ds = parts[1].body;
  while (start < ds.size()) {
    std::size_t end = ds.find("\r\n", start);
    const std::string line = ds.substr(start, end - start);
    if (line.find("xxxxxxxxxx") == std::string::npos) CHECK(line.size() <= 78);
    start = end + 2;
  }
  // The run of 5000 octets without a space survives, split across continuation lines.
  std::string unfolded = field(groups[2], "Diagnostic-Code");
  std::string xs;
  for (char c : unfolded) {
    if (c == 'x') xs += c;
  }
  CHECK(xs.size() == 5000);
  // The overlong line of the original is broken, not lost.
  std::size_t ys = 0;
  for (char c : parts[2].body) ys += c == 'y';
  CHECK(ys == 3000);
}

TEST_CASE("build_dsn: the boundary never occurs inside a part", "[dsn]") {
  DsnInput in = failed_input();
  in.ret = DsnRet::full;
  // An original that contains exactly the boundary the first try would use.
  const std::string original =
      "Subject: trap\r\n\r\n--01J9ZK3D2ZP7F/1672760935/mx.example.net\r\n"
      "--01J9ZK3D2ZP7F/1672760935/mx.example.net--\r\n";
  in.original = original;
  const std::string m = build_dsn(in);
  check_lines(m);
  const Entity top = parse_entity(m);
  const std::string boundary = boundary_of(top.get("Content-Type"));
  CHECK(boundary != "01J9ZK3D2ZP7F/1672760935/mx.example.net");
  const auto parts = split_parts(top.body, boundary);
  REQUIRE(parts.size() == 3);
  CHECK(parts[2].body.find("--01J9ZK3D2ZP7F/1672760935/mx.example.net--") != std::string::npos);

  // Different seeds give different boundaries.
  DsnInput other = failed_input();
  other.boundary_seed = "01J9ZK3D2ZP7G";
  const Entity top2 = parse_entity(build_dsn(other));
  CHECK(boundary_of(top2.get("Content-Type")) !=
        boundary_of(parse_entity(build_dsn(failed_input())).get("Content-Type")));
}

TEST_CASE("build_dsn: no original, no third part, defaults for missing fields", "[dsn]") {
  DsnInput in = failed_input();
  in.original = {};
  in.envid.clear();
  in.original_message_id.clear();
  in.from_address.clear();
  in.arrival = TimePoint{};
  const std::string m = build_dsn(in);
  check_lines(m);
  const Entity top = parse_entity(m);
  CHECK(top.get("From") == "Mail Delivery System <MAILER-DAEMON@mx.example.net>");
  CHECK_FALSE(top.has("In-Reply-To"));
  CHECK_FALSE(top.has("References"));
  const auto parts = split_parts(top.body, boundary_of(top.get("Content-Type")));
  REQUIRE(parts.size() == 2);
  const auto groups = status_groups(parts[1].body);
  CHECK(field(groups[0], "Original-Envelope-Id") == "<absent>");
  CHECK(field(groups[0], "Arrival-Date") == "<absent>");
}

TEST_CASE("build_dsn: internationalised addresses use message/global-delivery-status", "[dsn]") {
  DsnInput in = failed_input();
  in.recipients.resize(1);
  in.recipients[0].final_recipient = "j\xc3\xb6rg@example.com";
  in.recipients[0].original_recipient.clear();
  const std::string m = build_dsn(in);
  check_lines(m);
  const Entity top = parse_entity(m);
  CHECK(top.get("Content-Transfer-Encoding") == "8bit");
  const auto parts = split_parts(top.body, boundary_of(top.get("Content-Type")));
  REQUIRE(parts.size() == 3);
  CHECK(parts[0].get("Content-Type") == "text/plain; charset=utf-8");
  CHECK(parts[1].get("Content-Type") == "message/global-delivery-status");
  const auto groups = status_groups(parts[1].body);
  CHECK(field(groups[1], "Final-Recipient") == "utf-8; j\xc3\xb6rg@example.com");
}

TEST_CASE("build_dsn: folding keeps any value intact and every line within limits", "[dsn]") {
  std::uint64_t state = 88172645463325252ull;
  auto next = [&] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  for (int round = 0; round < 200; ++round) {
    std::string text;
    const int words = static_cast<int>(next() % 40) + 1;
    for (int w = 0; w < words; ++w) {
      if (w > 0) text += ' ';
      // Mostly short words, sometimes runs long enough to force a hard split.
      const std::size_t len = next() % 8 == 0 ? next() % 2500 + 1 : next() % 20 + 1;
      text.append(len, static_cast<char>('a' + next() % 26));
    }
    DsnInput in = failed_input();
    in.recipients[0].reply = Reply(550, "5.7.1", text);
    const std::string m = build_dsn(in);
    check_lines(m);
    const Entity top = parse_entity(m);
    const auto parts = split_parts(top.body, boundary_of(top.get("Content-Type")));
    REQUIRE(parts.size() == 3);
    const auto groups = status_groups(parts[1].body);
    REQUIRE(groups.size() == 3);
    // Unfolding gives the value back, except that a hard split adds one space.
    std::string got = field(groups[1], "Diagnostic-Code");
    std::string want = "smtp; 550 5.7.1 " + text;
    auto strip = [](std::string s) {
      s.erase(std::remove(s.begin(), s.end(), ' '), s.end());
      return s;
    };
    CHECK(strip(got) == strip(want));
    bool long_word = false;
    std::size_t run = 0;
    for (char c : want) {
      run = c == ' ' ? 0 : run + 1;
      long_word = long_word || run > 900;
    }
    if (!long_word) CHECK(got == want);
  }
}
