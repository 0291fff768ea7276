// mailq — the resolver seam.
//
// The engine asks four questions of DNS: the MX records of a domain, the addresses of a
// host, the TXT records of a name (MTA-STS), and the TLSA records of a host's port (DANE). The MX
// selection logic (preference order, shuffle among equals, implicit MX, null MX, loops to self)
// lives in the core; a Resolver only answers queries. The reference implementation is the c-ares
// adapter (`mailq::ares::AresResolver`); `StaticResolver` here answers from a table, for tests and
// for hosts with fixed routing.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "mailq/clock.h"
#include "mailq/dane.h"

namespace mailq {

/// Outcome class of one DNS query. `nxdomain` and `no_data` are definite answers; the others
/// are transient failures (SERVFAIL and REFUSED — c-ares 1.18 reports both from every server
/// as a refused connection —, timeouts, malformed answers, local errors). `cancelled` is what
/// a query gets when it never got an answer because the resolver was destroyed or the query
/// cancelled; it says nothing about the name, so it is transient too.
enum class DnsStatus : std::uint8_t {
  ok,
  nxdomain,
  no_data,
  servfail,
  refused,
  timeout,
  error,
  cancelled,
};

const char* to_string(DnsStatus s) noexcept;
inline bool is_transient(DnsStatus s) noexcept {
  return s != DnsStatus::ok && s != DnsStatus::nxdomain && s != DnsStatus::no_data;
}

struct MxRecord {
  std::uint16_t preference = 0;
  std::string exchange;  ///< host name without trailing dot; "" for the null MX "."
};

struct MxAnswer {
  DnsStatus status = DnsStatus::error;
  std::vector<MxRecord> records;  ///< when ok; in answer order (the core sorts)
  std::string detail;             ///< resolver diagnostic for logs ("SERVFAIL from 127.0.0.1")
  /// The answer (records, or the denial that there are none) was DNSSEC-validated by a
  /// nameserver the resolver trusts (its AD bit). Only then is DANE possible (RFC 7672 2.2).
  bool secure = false;
};

/// An IPv4 or IPv6 address in text form ("192.0.2.1", "2001:db8::1").
struct AddressAnswer {
  DnsStatus status = DnsStatus::error;
  std::vector<std::string> addresses;  ///< when ok; IPv6 and IPv4 as the resolver returned
  std::string detail;
  /// When ok and the name is an alias (a CNAME chain led to the addresses): the name the
  /// chain ended at. An MX host should not be one (RFC 2181 section 10.3); it is used, with
  /// a notice.
  std::string canonical;
  /// Every family's answer was DNSSEC-validated (see MxAnswer::secure).
  bool secure = false;
};

/// The TXT records of a name, each record's strings joined (RFC 7208 §3.3 and RFC 8461 §3.1
/// read a record that way).
struct TxtAnswer {
  DnsStatus status = DnsStatus::error;
  std::vector<std::string> records;  ///< when ok
  std::string detail;
  bool secure = false;  ///< see MxAnswer::secure
};

/// The TLSA records of a name ("_25._tcp.mx.example.com"), all of them, usable or not.
struct TlsaAnswer {
  DnsStatus status = DnsStatus::error;
  std::vector<dane::TlsaRecord> records;  ///< when ok
  std::string detail;
  /// DNSSEC-validated (see MxAnswer::secure). Records that are not secure are not used.
  bool secure = false;
};

/// How long a caching resolver keeps answers (`ares::AresResolverOptions::cache`): one entry
/// per (name, query type), positive or negative, its lifetime decided by its status and TTL.
struct DnsCachePolicy {
  /// Cache answers at all. With `false` (or `max_entries` 0) every query goes to DNS.
  bool enabled = true;
  /// Most entries kept; the least recently used goes first.
  std::size_t max_entries = 10000;
  /// Bounds for the lifetime of positive answers (the record TTL clamped into them).
  /// `min_ttl` is also the floor of negative and failure lifetimes that are not zero.
  Duration min_ttl{0};
  Duration max_ttl{std::chrono::hours(24)};
  /// Lifetime of an NXDOMAIN / no-data answer without an SOA record; with one, RFC 2308's
  /// min(SOA TTL, SOA MINIMUM) is used. Either way a negative answer reached through a CNAME
  /// lives no longer than the CNAME's TTL.
  Duration negative_ttl{std::chrono::minutes(5)};
  /// Ceiling of negative lifetimes (RFC 2308 §5 suggests one to three hours).
  Duration max_negative_ttl{std::chrono::hours(3)};
  /// Lifetime of transient failures (SERVFAIL, REFUSED, timeout, error). Zero: never cached.
  /// Cancellations are never cached.
  Duration failure_ttl{0};
  /// Lifetime of a positive answer whose TTL could not be read from the message.
  Duration unknown_ttl{std::chrono::minutes(5)};
};

/// Asynchronous DNS queries, single-threaded.
///
/// Each query's callback is called exactly once, on the loop thread, never from inside the
/// query call. Destroying the resolver completes every pending query with
/// `DnsStatus::cancelled` before the destructor returns.
class Resolver {
 public:
  virtual ~Resolver() = default;
  virtual void query_mx(const std::string& domain, std::function<void(MxAnswer)> done) = 0;
  /// A and AAAA records of `host` (CNAMEs followed), both families in one answer.
  virtual void query_addresses(const std::string& host,
                               std::function<void(AddressAnswer)> done) = 0;
  /// TXT records of `name` (MTA-STS discovery, TLS-RPT).
  virtual void query_txt(const std::string& name, std::function<void(TxtAnswer)> done) = 0;
  /// TLSA records of `name` (DANE). The engine asks only after secure MX and address answers,
  /// so a resolver that never reports `secure` is never asked. The default (for such
  /// resolvers) answers `error` at once, from inside the call: the one exception to the rule
  /// above, harmless where it is never called.
  virtual void query_tlsa(const std::string& name, std::function<void(TlsaAnswer)> done) {
    TlsaAnswer a;
    a.detail = name + " TLSA: this resolver does not look up TLSA records";
    done(std::move(a));
  }
};

/// A resolver that answers from tables, through the clock (so answers are asynchronous like
/// real ones, after `latency`). Unknown names answer NXDOMAIN; a name with addresses but no MX
/// answers no data to an MX query. Counts queries for tests. Destroying it answers the
/// queries still pending, as the Resolver contract says.
class StaticResolver final : public Resolver {
 public:
  explicit StaticResolver(Clock& clock, Duration latency = Duration{0})
      : clock_(clock), latency_(latency) {}
  ~StaticResolver() override;
  StaticResolver(const StaticResolver&) = delete;
  StaticResolver& operator=(const StaticResolver&) = delete;

  void set_mx(const std::string& domain, std::vector<MxRecord> records);
  void set_mx_status(const std::string& domain, DnsStatus status);
  void set_addresses(const std::string& host, std::vector<std::string> addresses);
  void set_addresses_status(const std::string& host, DnsStatus status);
  void set_txt(const std::string& name, std::vector<std::string> records);
  void set_txt_status(const std::string& name, DnsStatus status);
  void set_tlsa(const std::string& name, std::vector<dane::TlsaRecord> records);
  void set_tlsa_status(const std::string& name, DnsStatus status);
  /// Marks every answer about `name` (MX, addresses, TXT, TLSA, including the NXDOMAIN and
  /// no-data ones made up for unknown names) as DNSSEC-secure, or not.
  void set_secure(const std::string& name, bool secure = true);

  void query_mx(const std::string& domain, std::function<void(MxAnswer)> done) override;
  void query_addresses(const std::string& host, std::function<void(AddressAnswer)> done) override;
  /// Unknown names answer NXDOMAIN, or no data when the name has MX or addresses.
  void query_txt(const std::string& name, std::function<void(TxtAnswer)> done) override;
  /// Unknown names answer NXDOMAIN.
  void query_tlsa(const std::string& name, std::function<void(TlsaAnswer)> done) override;

  std::size_t queries() const noexcept { return queries_; }

 private:
  Clock& clock_;
  Duration latency_;
  std::size_t queries_ = 0;
  std::map<std::string, MxAnswer> mx_;
  std::map<std::string, AddressAnswer> addresses_;
  std::map<std::string, TxtAnswer> txt_;
  std::map<std::string, TlsaAnswer> tlsa_;
  std::set<std::string> secure_;
  template <class Answer>
  void answer_later(Answer a, std::function<void(Answer)> done);
  // Answers not delivered yet: their timers, and what to say when cancelled.
  std::map<TimerId, std::function<void()>> pending_;
};

}  // namespace mailq
