// DKIM signing (mailq/dkim.h): RFC 8463's example reproduced bit for bit, RFC 6376's
// canonicalisation examples, and signatures checked by python3-dkim (dkimpy), a verifier
// mailq did not write, over both algorithms and both canonicalisations.
#include <catch2/catch.hpp>

#include <map>
#include <string>
#include <vector>

#include "dkim/canon.h"
#include "dkim/keys.h"
#include "mailq/dkim.h"
#include "support/dkim_verifier.h"
#include "support/servers.h"

using mailq::dkim::Canonicalization;
using mailq::dkim::KeyConfig;
using mailq::dkim::Signer;
using mailq::dkim::SignerConfig;
namespace detail = mailq::dkim::detail;
using mailq::test::TempDir;

namespace {

// RFC 8463 Appendix A: the message, the RFC 8032 §7.1 test key, the ed25519 signature.
const std::string kRfc8463Message =
    "From: Joe SixPack <joe@football.example.com>\r\n"
    "To: Suzie Q <suzie@shopping.example.net>\r\n"
    "Subject: Is dinner ready?\r\n"
    "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    "Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    "\r\n"
    "Hi.\r\n"
    "\r\n"
    "We lost the game.  Are you hungry yet?\r\n"
    "\r\n"
    "Joe.\r\n";
const std::string kRfc8463Field =
    "DKIM-Signature: v=1; a=ed25519-sha256; c=simple/simple; \r\n"
    " d=football.example.com; i=@football.example.com; \r\n"
    " q=dns/txt; s=brisbane; t=1518460054; h=from : to : \r\n"
    " subject : date : message-id : from : subject : date; \r\n"
    " bh=4bLNXImK9drULnmePzZNEBleUanJCX5PIsDIFoH4KTQ=; \r\n"
    " b=";
const std::string kRfc8463Signature =
    "9/dsDChY0YMTtD5Eyw3wx7x22BlSJP7M5ECbJ7GWrR45nXlTCGb8l0YBo0wBLR++X5LqmsxXaOYLLJe46l10AQ==";
const std::string kRfc8032Secret = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";
const std::string kRfc8032Public = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

std::string b64(const detail::Digest& d) {
  return detail::base64(d.data(), d.size());
}

// A message with what canonicalisation must get right: folded and repeated fields, white
// space runs and trailing white space, a line starting with a dot, trailing empty lines.
const std::string kTricky =
    "Received: from relay.example.net by mx.example.org; Sat, 5 Dec 2026 10:00:00 +0000\r\n"
    "From: \"Anna Example\" <anna@news.example.com>\r\n"
    "To: bob@example.org,\r\n"
    "\tcarol@example.org  \r\n"
    "Subject:   Quarterly   figures \t\r\n"
    "Reply-To: anna@news.example.com\r\n"
    "To: dave@example.org\r\n"
    "Date: Sat, 5 Dec 2026 10:00:00 +0000\r\n"
    "Message-ID: <q4.1@news.example.com>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=us-ascii\r\n"
    "\r\n"
    "Figures  attached.   \r\n"
    ".a line with a dot\r\n"
    "\t\r\n"
    "Anna\r\n"
    "\r\n"
    "\r\n";

struct Keys {
  TempDir dir;
  std::string rsa = dir.file("rsa.pem");
  std::string ed = dir.file("ed.pem");
  std::map<std::string, std::string> records;
  Keys() {
    std::string error;
    REQUIRE(mailq::test::openssl_key("rsa2048", rsa, &error));
    REQUIRE(mailq::test::openssl_key("ed25519", ed, &error));
  }
  // Publishes `file`'s public key (computed with openssl) for selector._domainkey.domain.
  void publish(const std::string& file, const std::string& selector, const std::string& domain) {
    std::string error;
    std::string txt = mailq::test::dkim_txt_with_openssl(file, &error);
    INFO(error);
    REQUIRE(!txt.empty());
    records[selector + "._domainkey." + domain] = txt;
  }
};

KeyConfig key(const std::string& file, const std::string& selector, const std::string& domain) {
  KeyConfig k;
  k.domain = domain;
  k.selector = selector;
  k.key_file = file;
  return k;
}

std::shared_ptr<const Signer> signer_of(std::vector<KeyConfig> keys) {
  SignerConfig c;
  c.keys = std::move(keys);
  auto s = Signer::create(c);
  INFO((s ? std::string() : s.error().message));
  REQUIRE(s);
  return *s;
}

const mailq::TimePoint kNow{std::chrono::seconds(1796000000)};

std::string signed_message(const Signer& s, const std::string& message) {
  auto fields = s.sign(message, kNow);
  INFO((fields ? std::string() : fields.error().message));
  REQUIRE(fields);
  return *fields + message;
}

std::vector<mailq::test::DkimResult> verify(const std::string& message,
                                            const std::map<std::string, std::string>& records) {
  std::string error;
  auto results = mailq::test::dkim_verify(message, 0, records, &error);
  INFO(error);
  REQUIRE(error.empty());
  return results;
}

bool all_pass(const std::vector<mailq::test::DkimResult>& results) {
  for (const auto& r : results) {
    UNSCOPED_INFO(r.domain << " " << r.selector << " " << r.algorithm << ": "
                           << (r.pass ? "pass" : "fail " + r.detail));
  }
  return !results.empty() &&
         std::all_of(results.begin(), results.end(), [](const auto& r) { return r.pass; });
}

std::string replace(std::string s, const std::string& from, const std::string& to) {
  auto at = s.find(from);
  REQUIRE(at != std::string::npos);
  return s.replace(at, from.size(), to);
}

}  // namespace

TEST_CASE("DKIM reproduces RFC 8463's ed25519-sha256 example signature", "[dkim]") {
  auto key = detail::PrivateKey::parse(kRfc8032Secret);
  REQUIRE(key);
  CHECK((*key)->algorithm() == mailq::dkim::Algorithm::ed25519_sha256);
  CHECK((*key)->public_key() == kRfc8032Public);

  auto parsed = detail::parse_message(kRfc8463Message);
  CHECK(b64(detail::body_hash(parsed.body, Canonicalization::simple)) ==
        "4bLNXImK9drULnmePzZNEBleUanJCX5PIsDIFoH4KTQ=");
  const std::vector<std::string> h = {"from",       "to",   "subject", "date",
                                      "message-id", "from", "subject", "date"};
  auto sig = (*key)->sign(
      detail::sha256(detail::signed_data(parsed, h, kRfc8463Field, Canonicalization::simple)));
  REQUIRE(sig);
  CHECK(detail::base64(reinterpret_cast<const unsigned char*>(sig->data()), sig->size()) ==
        kRfc8463Signature);
}

TEST_CASE("DKIM canonicalisation follows RFC 6376's examples", "[dkim]") {
  // RFC 6376 §3.4.5.
  const std::string message = "A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n";
  auto m = detail::parse_message(message);
  REQUIRE(m.fields.size() == 2);
  CHECK(m.fields[1].name == "B");
  CHECK(detail::canonical_header(m.fields[0], Canonicalization::relaxed) == "a:X\r\n");
  CHECK(detail::canonical_header(m.fields[1], Canonicalization::relaxed) == "b:Y Z\r\n");
  CHECK(detail::canonical_header(m.fields[1], Canonicalization::simple) == "B : Y\t\r\n\tZ  \r\n");
  CHECK(detail::canonical_body(m.body, Canonicalization::relaxed) == " C\r\nD E\r\n");
  CHECK(detail::canonical_body(m.body, Canonicalization::simple) == " C \r\nD \t E\r\n");
  // Empty bodies: one CRLF (simple), nothing (relaxed).
  CHECK(detail::canonical_body("", Canonicalization::simple) == "\r\n");
  CHECK(detail::canonical_body("\r\n\r\n", Canonicalization::simple) == "\r\n");
  CHECK(detail::canonical_body("", Canonicalization::relaxed).empty());
  CHECK(detail::canonical_body(" \t\r\n\r\n", Canonicalization::relaxed).empty());
  // The streamed hash is the hash of the canonical body.
  for (auto c : {Canonicalization::simple, Canonicalization::relaxed}) {
    auto parsed = detail::parse_message(kTricky);
    CHECK(b64(detail::body_hash(parsed.body, c)) ==
          b64(detail::sha256(detail::canonical_body(parsed.body, c))));
  }
}

TEST_CASE("DKIM h= names present fields once per instance, oversigned, taken from the bottom",
          "[dkim]") {
  auto m = detail::parse_message(kTricky);
  auto names =
      detail::signed_names(m, {"From", "To", "Cc", "Sender", "Subject"}, {"From", "To", "Subject"});
  CHECK(names == std::vector<std::string>{"from", "from", "to", "to", "to", "subject", "subject"});
  // Two instances of To: the first "to" in h= is the bottom one (dave), then bob and carol.
  const std::string data =
      detail::signed_data(m, {"to", "to", "to"}, "DKIM-Signature: b=", Canonicalization::relaxed);
  CHECK(data ==
        "to:dave@example.org\r\nto:bob@example.org, carol@example.org\r\ndkim-signature:b=");
}

TEST_CASE("DKIM signatures verify with python3-dkim over both algorithms and canonicalisations",
          "[dkim][dkimpy]") {
  Keys keys;
  keys.publish(keys.rsa, "r1", "example.com");
  keys.publish(keys.ed, "e1", "example.com");
  for (const auto& file : {keys.rsa, keys.ed}) {
    for (auto hc : {Canonicalization::simple, Canonicalization::relaxed}) {
      for (auto bc : {Canonicalization::simple, Canonicalization::relaxed}) {
        KeyConfig k = key(file, file == keys.rsa ? "r1" : "e1", "example.com");
        k.header_canon = hc;
        k.body_canon = bc;
        auto s = signer_of({k});
        const std::string sent = signed_message(*s, kTricky);
        INFO(sent.substr(0, sent.find("Received:")));
        CHECK(sent.find(std::string("c=") + std::string(mailq::dkim::to_string(hc)) + "/" +
                        std::string(mailq::dkim::to_string(bc)) + ";") != std::string::npos);
        CHECK(all_pass(verify(sent, keys.records)));
        // Tampering fails it: a changed body, a changed signed field.
        CHECK_FALSE(all_pass(verify(replace(sent, "Figures", "Figurez"), keys.records)));
        CHECK_FALSE(all_pass(verify(replace(sent, "Quarterly", "Yearly"), keys.records)));
      }
    }
  }
}

TEST_CASE("DKIM oversigns From and the listed fields, never Sender", "[dkim][dkimpy]") {
  Keys keys;
  keys.publish(keys.rsa, "r1", "example.com");
  auto s = signer_of({key(keys.rsa, "r1", "example.com")});
  const std::string sent = signed_message(*s, kTricky);
  REQUIRE(all_pass(verify(sent, keys.records)));
  const std::string sig = sent.substr(0, sent.find("Received:"));
  CHECK(sig.find("h=from:from:") != std::string::npos);
  CHECK(sig.find("sender") == std::string::npos);  // not present: not listed
  // A second From, Subject or Reply-To added on the way breaks the signature (N+1)...
  const std::string header_end = "Content-Type: text/plain; charset=us-ascii\r\n";
  for (const std::string added :
       {"From: mallory@evil.example\r\n", "Subject: Urgent\r\n", "Reply-To: x@evil.example\r\n"}) {
    INFO(added);
    CHECK_FALSE(all_pass(verify(replace(sent, header_end, header_end + added), keys.records)));
  }
  // ...a Sender added by a mailing list does not; nor does a trace field.
  CHECK(all_pass(verify(replace(sent, header_end, header_end + "Sender: list@lists.example\r\n"),
                        keys.records)));
  CHECK(all_pass(
      verify("Received: from x by y; Sat, 5 Dec 2026 10:00:01 +0000\r\n" + sent, keys.records)));
}

TEST_CASE("DKIM keys are chosen by the From domain, with fallback and always-signing keys",
          "[dkim][dkimpy]") {
  Keys keys;
  for (const std::string d : {"example.com", "news.example.com", "esp.example", "other.example"})
    keys.publish(keys.rsa, "r1", d);
  keys.publish(keys.ed, "e1", "news.example.com");
  KeyConfig parent = key(keys.rsa, "r1", "example.com");
  KeyConfig news_rsa = key(keys.rsa, "r1", "News.Example.com.");
  KeyConfig news_ed = key(keys.ed, "e1", "news.example.com");
  KeyConfig esp = key(keys.rsa, "r1", "esp.example");
  esp.use = KeyConfig::Use::always;
  KeyConfig fallback = key(keys.rsa, "r1", "other.example");
  fallback.use = KeyConfig::Use::fallback;
  auto s = signer_of({parent, news_rsa, news_ed, esp, fallback});

  auto domains = [&](const std::string& from) {
    const std::string message = "From: " + from + "\r\nSubject: s\r\n\r\nbody\r\n";
    const std::string sent = signed_message(*s, message);
    auto results = verify(sent, keys.records);
    CHECK(all_pass(results));
    std::vector<std::string> out;
    for (const auto& r : results) out.push_back(r.domain + "/" + r.algorithm);
    std::sort(out.begin(), out.end());
    return out;
  };
  // The most specific author domain, both its keys (RSA + Ed25519), and the service's.
  CHECK(domains("Anna <anna@news.example.com>") ==
        std::vector<std::string>{"esp.example/rsa-sha256", "news.example.com/ed25519-sha256",
                                 "news.example.com/rsa-sha256"});
  // A subdomain with no key of its own: the parent's (relaxed alignment).
  CHECK(domains("bob@shop.example.com") ==
        std::vector<std::string>{"esp.example/rsa-sha256", "example.com/rsa-sha256"});
  // No author key: the fallback.
  CHECK(domains("carol@unrelated.example") ==
        std::vector<std::string>{"esp.example/rsa-sha256", "other.example/rsa-sha256"});
  // A domain that only ends like a keyed one is not in it.
  CHECK(domains("dave@notexample.com") ==
        std::vector<std::string>{"esp.example/rsa-sha256", "other.example/rsa-sha256"});

  // Not signed at all: no From, two From fields, a From without an address.
  for (const std::string m :
       {"Subject: s\r\n\r\nb\r\n", "From: a@example.com\r\nFrom: b@example.com\r\n\r\nb\r\n",
        "From: undisclosed\r\n\r\nb\r\n"}) {
    auto fields = s->sign(m, kNow);
    REQUIRE(fields);
    CHECK(fields->empty());
  }
}

TEST_CASE("DKIM-Signature fields: tags, expiry, identity, lines of at most 78 octets",
          "[dkim][dkimpy]") {
  Keys keys;
  keys.publish(keys.rsa, "r1", "example.com");
  KeyConfig k = key(keys.rsa, "r1", "example.com");
  k.expiry = std::chrono::hours(24 * 7);
  k.identity = "@news.example.com";
  k.headers = {"From", "To", "Subject", "Sender"};
  auto s = signer_of({k});
  // Now, so that the verifier finds x= in the future.
  const auto now =
      std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());
  const auto t = now.time_since_epoch().count();
  auto fields = s->sign(kTricky, now);
  REQUIRE(fields);
  const std::string sent = *fields + kTricky;
  const std::string field = *fields;
  std::string unfolded = field;
  for (std::size_t at; (at = unfolded.find("\r\n\t")) != std::string::npos;) unfolded.erase(at, 3);
  CHECK(field.rfind("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com;", 0) ==
        0);
  CHECK(unfolded.find("t=" + std::to_string(t) + ";") != std::string::npos);
  CHECK(unfolded.find("x=" + std::to_string(t + 7 * 86400) + ";") != std::string::npos);
  CHECK(unfolded.find("i=@news.example.com;") != std::string::npos);
  CHECK(unfolded.find("h=from:from:to:to:to:subject:subject;") != std::string::npos);
  std::size_t pos = 0;
  while (pos < field.size()) {
    std::size_t eol = field.find("\r\n", pos);
    REQUIRE(eol != std::string::npos);
    CHECK(eol - pos <= 78);
    if (pos > 0) CHECK(field[pos] == '\t');
    pos = eol + 2;
  }
  CHECK(all_pass(verify(sent, keys.records)));
}

TEST_CASE("DKIM DNS records match the public keys openssl derives", "[dkim]") {
  Keys keys;
  auto s = signer_of({key(keys.rsa, "r1", "example.com"), key(keys.ed, "e1", "example.com")});
  keys.publish(keys.rsa, "r1", "example.com");
  keys.publish(keys.ed, "e1", "example.com");
  auto records = s->dns_records();
  REQUIRE(records.size() == 2);
  CHECK(records[0].name == "r1._domainkey.example.com");
  CHECK(records[0].text == keys.records["r1._domainkey.example.com"]);
  CHECK(records[1].text == keys.records["e1._domainkey.example.com"]);
  // A 2048-bit key's text is longer than one TXT string: split at 255 octets.
  const std::string line = records[0].zone_line();
  CHECK(line.rfind("r1._domainkey.example.com. IN TXT \"v=DKIM1; k=rsa; p=", 0) == 0);
  CHECK(line.find("\" \"") == 255 + std::string("r1._domainkey.example.com. IN TXT \"").size());
}

TEST_CASE("DKIM configuration errors name the key and the reason", "[dkim]") {
  TempDir dir;
  std::string error;
  const std::string rsa = dir.file("rsa.pem"), small = dir.file("small.pem"),
                    ec = dir.file("ec.pem"), enc = dir.file("enc.pem");
  REQUIRE(mailq::test::openssl_key("rsa1024", rsa, &error));
  REQUIRE(mailq::test::openssl_key("rsa512", small, &error));
  REQUIRE(mailq::test::openssl_key("ec", ec, &error));
  REQUIRE(std::system(("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 "
                       "-aes256 -pass pass:secret -out '" +
                       enc + "' 2>/dev/null")
                          .c_str()) == 0);
  mailq::test::write_file(dir.file("garbage.pem"), "not a key\n");

  auto refused = [](KeyConfig k, const std::string& words) {
    SignerConfig c;
    c.keys = {k};
    auto s = Signer::create(c);
    REQUIRE_FALSE(s);
    INFO(s.error().message);
    CHECK(s.error().message.find("DKIM key ") == 0);
    CHECK(s.error().message.find(words) != std::string::npos);
  };
  refused(key(small, "s", "example.com"), "512 bits: DKIM needs at least 1024");
  refused(key(ec, "s", "example.com"), "elliptic-curve");
  refused(key(enc, "s", "example.com"), "encrypted");
  refused(key(dir.file("missing.pem"), "s", "example.com"), "cannot read key file");
  refused(key(dir.file("garbage.pem"), "s", "example.com"), "neither a PEM private key");
  refused(key(rsa, "s", "exa mple.com"), "is not a domain name");
  refused(key(rsa, "s;x", "example.com"), "is not a selector");
  KeyConfig k = key(rsa, "s", "example.com");
  k.identity = "@example.org";
  refused(k, "identity");
  k = key(rsa, "s", "example.com");
  k.oversign = std::vector<std::string>{"From", "Sender"};
  k.headers = {"From", "Sender"};
  refused(k, "Sender is never oversigned");
  k = key(rsa, "s", "example.com");
  k.headers = {"To", "Subject"};
  refused(k, "must include From");
  k = key(rsa, "s", "example.com");
  k.headers = {"From", "Bad Name"};
  refused(k, "not a header field name");
  k.headers = {"From", "To;h=x"};  // would end the h= tag early
  refused(k, "not a header field name");
  k = key(rsa, "s", "example.com");
  k.identity = "a=b@example.com";  // i= is dkim-quoted-printable: '=' would need encoding
  refused(k, "identity");

  SignerConfig twice;
  twice.keys = {key(rsa, "s", "example.com"), key(rsa, "s", "Example.com")};
  auto s = Signer::create(twice);
  REQUIRE_FALSE(s);
  CHECK(s.error().message.find("configured twice") != std::string::npos);
  // 1024 bits is the floor, and accepted.
  CHECK(static_cast<bool>(Signer::create(SignerConfig{{key(rsa, "s", "example.com")}})));
}
