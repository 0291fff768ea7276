// Fuzz target: DNS answer handling, end to end through the c-ares resolver.
//
// An in-process UDP "nameserver" on 127.0.0.1 answers every query of an AresResolver with
// the fuzz input: its 12-octet header (the id patched to the query's and the QR bit set, so
// that c-ares does not drop it unread), the query's question copied, then the rest of the
// input as answer, authority and additional sections. The same message also goes through
// scan_dns_ttls (the TTL reader of src/core/dns_wire.cpp) directly.
//
// Input: one selector byte (bit 0: MX query, else bit 2: TLSA query, else A/AAAA), then the 12
// header octets (QDCOUNT forced to 1 and TC to 0 for the resolver), then the sections. Checks:
// every query is answered exactly once; an ok MX answer has records whose exchange names carry no
// control character or trailing dot (they reach logs, SNI and the next lookup); an ok address
// answer holds only valid IPv4/IPv6 literals; every detail text is one printable line;
// scan_dns_ttls reports the header's RCODE, TC bit and ANCOUNT.
#pragma once

#include <arpa/inet.h>
#include <uv.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "core/dns_wire.h"
#include "fuzz_support.h"
#include "mailq/ares/resolver.h"
#include "mailq/net.h"
#include "mailq/uv/loop_clock.h"

namespace mailq::fuzz {

namespace dns_answer_detail {

/// MAILQ_FUZZ_VERBOSE=1 prints every answer (to see what a seed reaches).
inline bool verbose() {
  static const bool v = std::getenv("MAILQ_FUZZ_VERBOSE") != nullptr;
  return v;
}

inline void check_detail(const std::string& d) {
  MAILQ_FUZZ_CHECK(!has_control(d), "control character in a resolver detail: " + d);
}

class Harness {
 public:
  Harness() {
    uv_loop_init(&loop_);
    uv_udp_init(&loop_, &udp_);
    udp_.data = this;
    sockaddr_in addr{};
    uv_ip4_addr("127.0.0.1", 0, &addr);
    MAILQ_FUZZ_CHECK(uv_udp_bind(&udp_, reinterpret_cast<const sockaddr*>(&addr), 0) == 0,
                     "cannot bind the fake nameserver");
    sockaddr_storage bound{};
    int len = sizeof bound;
    uv_udp_getsockname(&udp_, reinterpret_cast<sockaddr*>(&bound), &len);
    const int port = ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
    uv_udp_recv_start(&udp_, &Harness::alloc, &Harness::on_query);

    ares::AresResolverOptions o;
    o.nameservers = {"127.0.0.1:" + std::to_string(port)};
    // Short, but not so short that a busy machine turns answers into timeouts: an answer
    // c-ares drops (malformed beyond its reading) costs 20 + 40 ms.
    o.timeout = Duration{20};
    o.tries = 2;
    o.cache.enabled = false;
    o.query_deadline = Duration{500};
    o.dnssec = true;  // queries with AD, answers' AD bit read
    clock_ = std::make_unique<uv::LoopClock>(&loop_);
    auto r = ares::AresResolver::open(&loop_, *clock_, o);
    MAILQ_FUZZ_CHECK(r.ok(), r.ok() ? "" : r.error().message);
    resolver_ = std::move(r.value());
  }

  /// The answer every query gets from now on.
  void set_response(std::string_view header, std::string_view sections) {
    header_ = std::string(header);
    header_.resize(12, '\0');
    sections_ = std::string(sections);
  }

  void query_mx(const std::string& name) {
    int calls = 0;
    resolver_->query_mx(name, [&](MxAnswer a) {
      ++calls;
      if (verbose()) {
        std::fprintf(stderr, "MX %s (%s):", to_string(a.status), a.detail.c_str());
        for (const MxRecord& mx : a.records)
          std::fprintf(stderr, " %u \"%s\"", mx.preference, mx.exchange.c_str());
        std::fprintf(stderr, "\n");
      }
      check_detail(a.detail);
      if (a.status == DnsStatus::ok) {
        MAILQ_FUZZ_CHECK(!a.records.empty(), "ok MX answer without records");
        for (const MxRecord& mx : a.records) {
          MAILQ_FUZZ_CHECK(!has_control(mx.exchange), "control character in an MX name");
          // Spaces and c-ares' backslash escapes ("a\\.b") do come through; the address
          // lookup of such a name refuses it without a query (see query_addresses).
          MAILQ_FUZZ_CHECK(mx.exchange.empty() || mx.exchange.back() != '.', "trailing dot");
        }
      }
    });
    run_until([&] { return calls > 0; });
    MAILQ_FUZZ_CHECK(calls == 1, "the MX callback ran more than once");
  }

  void query_tlsa(const std::string& name) {
    int calls = 0;
    resolver_->query_tlsa(name, [&](TlsaAnswer a) {
      ++calls;
      if (verbose())
        std::fprintf(stderr, "TLSA %s (%s): %zu records%s\n", to_string(a.status), a.detail.c_str(),
                     a.records.size(), a.secure ? ", secure" : "");
      check_detail(a.detail);
      if (a.status == DnsStatus::ok) {
        MAILQ_FUZZ_CHECK(!a.records.empty(), "ok TLSA answer without records");
        for (const auto& r : a.records) (void)dane::to_string(r);
      } else {
        MAILQ_FUZZ_CHECK(a.records.empty(), "a failed TLSA answer with records");
      }
      MAILQ_FUZZ_CHECK(!a.secure || !is_transient(a.status), "a transient failure called secure");
    });
    run_until([&] { return calls > 0; });
    MAILQ_FUZZ_CHECK(calls == 1, "the TLSA callback ran more than once");
  }

  void query_addresses(const std::string& name) {
    int calls = 0;
    resolver_->query_addresses(name, [&](AddressAnswer a) {
      ++calls;
      if (verbose()) {
        std::fprintf(stderr, "addresses %s (%s):", to_string(a.status), a.detail.c_str());
        for (const std::string& ip : a.addresses) std::fprintf(stderr, " %s", ip.c_str());
        std::fprintf(stderr, "\n");
      }
      check_detail(a.detail);
      if (a.status == DnsStatus::ok) {
        MAILQ_FUZZ_CHECK(!a.addresses.empty(), "ok address answer without addresses");
        for (const std::string& ip : a.addresses)
          MAILQ_FUZZ_CHECK(is_ip_literal(ip), "not an IP address: " + ip);
      }
    });
    run_until([&] { return calls > 0; });
    MAILQ_FUZZ_CHECK(calls == 1, "the address callback ran more than once");
  }

 private:
  template <class Done>
  void run_until(Done done) {
    // The query deadline bounds this; the counter is a hang guard only.
    for (int i = 0; i < 100000 && !done(); ++i) uv_run(&loop_, UV_RUN_ONCE);
    // Let zero-delay work and closing handles settle.
    uv_run(&loop_, UV_RUN_NOWAIT);
  }

  static void alloc(uv_handle_t*, size_t, uv_buf_t* buf) {
    static char space[65536];
    *buf = uv_buf_init(space, sizeof space);
  }

  static void on_send(uv_udp_send_t* req, int) {
    delete static_cast<std::string*>(req->data);
    delete req;
  }

  static void on_query(uv_udp_t* h, ssize_t n, const uv_buf_t* buf, const sockaddr* from,
                       unsigned) {
    auto* self = static_cast<Harness*>(h->data);
    if (n < 12 || from == nullptr) return;
    const std::string_view q(buf->base, static_cast<std::size_t>(n));
    // The question: the name's labels, then type and class.
    std::size_t p = 12;
    while (p < q.size() && q[p] != 0) p += 1 + static_cast<unsigned char>(q[p]);
    p += 1 + 4;
    if (p > q.size()) return;
    auto* msg = new std::string(self->header_);
    (*msg)[0] = q[0];
    (*msg)[1] = q[1];
    (*msg)[2] = static_cast<char>((*msg)[2] | 0x80);
    // c-ares drops an answer whose question count differs without reading it (the query
    // then times out: slow, and none of our code runs), and TC makes it retry over TCP,
    // where nobody listens here. Raw headers go through scan_dns_ttls in run_dns_wire.
    (*msg)[4] = 0;
    (*msg)[5] = 1;
    (*msg)[2] = static_cast<char>((*msg)[2] & ~0x02);
    msg->append(q.substr(12, p - 12));
    msg->append(self->sections_);
    // The message as the resolver sees it goes through the TTL reader directly too.
    const std::uint16_t qtype = static_cast<std::uint16_t>(
        static_cast<unsigned char>(q[p - 4]) << 8 | static_cast<unsigned char>(q[p - 3]));
    self->check_scan(*msg, qtype);
    auto* req = new uv_udp_send_t;
    req->data = msg;
    uv_buf_t out = uv_buf_init(msg->data(), static_cast<unsigned>(msg->size()));
    if (uv_udp_send(req, h, &out, 1, from, &Harness::on_send) != 0) {
      delete msg;
      delete req;
    }
  }

  void check_scan(const std::string& msg, std::uint16_t qtype) {
    const auto* m = reinterpret_cast<const unsigned char*>(msg.data());
    auto t = detail::scan_dns_ttls(m, msg.size(), qtype);
    if (!t) return;
    MAILQ_FUZZ_CHECK(t->rcode == (m[3] & 0x0f), "RCODE");
    MAILQ_FUZZ_CHECK(t->truncated == ((m[2] & 0x02) != 0), "TC bit");
    MAILQ_FUZZ_CHECK(t->answers == (m[6] << 8 | m[7]), "ANCOUNT");
    if (t->answer_ttl) MAILQ_FUZZ_CHECK(*t->answer_ttl <= 0x7fffffffu, "TTL top bit");
    if (t->negative_ttl) MAILQ_FUZZ_CHECK(*t->negative_ttl <= 0x7fffffffu, "SOA TTL top bit");
  }

  uv_loop_t loop_;
  uv_udp_t udp_;
  std::unique_ptr<uv::LoopClock> clock_;
  std::unique_ptr<ares::AresResolver> resolver_;
  std::string header_;
  std::string sections_;
};

}  // namespace dns_answer_detail

/// Scans the input as a whole DNS message with scan_dns_ttls only (no resolver).
inline void run_dns_wire(std::string_view data) {
  if (data.size() < 2) return;
  const std::uint16_t qtype = static_cast<std::uint16_t>(static_cast<unsigned char>(data[0]));
  data.remove_prefix(1);
  const auto* m = reinterpret_cast<const unsigned char*>(data.data());
  auto t = detail::scan_dns_ttls(m, data.size(), qtype);
  if (t) {
    MAILQ_FUZZ_CHECK(data.size() >= 12, "a message shorter than its header scanned");
    MAILQ_FUZZ_CHECK(t->answers == (m[6] << 8 | m[7]), "ANCOUNT");
  }
  (void)detail::dns_type_name(qtype);
}

inline void run_dns_answer(std::string_view data) {
  using namespace dns_answer_detail;
  static Harness* h = new Harness;  // one loop, socket and resolver for the whole run
  run_dns_wire(data);
  Input in(data);
  const std::uint8_t sel = in.byte();
  const std::string_view header = in.take(12);
  h->set_response(header, in.rest());
  if (sel & 1)
    h->query_mx("example.org");
  else if (sel & 4)
    h->query_tlsa("_25._tcp.mx.example.org");
  else
    h->query_addresses("mx.example.org");
}

}  // namespace mailq::fuzz
