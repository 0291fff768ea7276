// mailq — the c-ares resolver adapter (`mailq::ares`, CMake target `mailq::ares`).
//
// `AresResolver` answers the engine's DNS questions (the MX records of a domain, the
// A/AAAA addresses of a host, TXT and TLSA records) with c-ares on the host's libuv loop: c-ares
// reports the sockets it wants watched through its socket-state callback, each is watched with a
// `uv_poll_t`, and one `uv_timer_t` follows `ares_timeout()`. No thread and no `select`.
// It talks only to the configured nameservers, never reads /etc/hosts, and keeps a TTL-aware
// cache of positive and negative answers.
//
// Threading and ownership: everything runs on the loop thread. The loop and the clock the
// resolver posts its callbacks through must outlive the resolver, and after destroying the
// resolver the host must let the loop run (`uv_run`) once more so that the libuv handles'
// close callbacks free their memory — as with every libuv handle. This header includes <uv.h> but
// never <ares.h>: c-ares types stay inside.
//
// c-ares 1.18.1 facts that shape the behaviour (documented here because they are visible):
//  - A SERVFAIL or REFUSED answer makes c-ares try the next nameserver; when every server
//    answered so (or refused the connection), the query fails as a whole with one code for
//    all three cases. That failure is reported as `DnsStatus::servfail` with the detail
//    "SERVFAIL or REFUSED from every nameserver, or connection refused (<servers>)".
//    `DnsStatus::refused` only appears if a future c-ares reports REFUSED separately.
//  - `timeout` is per try and per server, and c-ares doubles it at each round over the
//    server list: with S servers and `tries` T, a query that never gets an answer ends after
//    S x timeout x (2^T - 1). `query_deadline` caps that.
//  - `ares_parse_mx_reply` drops TTLs, so the MX TTL (and the SOA of negative answers) is read
//    from the raw response by mailq itself.
#pragma once

#include <uv.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "mailq/clock.h"
#include "mailq/error.h"
#include "mailq/events.h"
#include "mailq/resolver.h"

namespace mailq {
namespace ares {

/// A nameserver address: an IPv4 or IPv6 literal and a port.
struct Nameserver {
  std::string address;  ///< "127.0.0.1", "::1"
  std::uint16_t port = 53;

  /// Parses "ip", "ip:port", "ipv6", "[ipv6]" or "[ipv6]:port". Host names are not accepted
  /// (a resolver cannot need a resolver). Errors: `errc::invalid_parameter` naming the text.
  static Result<Nameserver> parse(std::string_view text);
  /// "127.0.0.1:5353" or "[::1]:5353".
  std::string to_string() const;
};

/// Which address records `query_addresses` asks for.
enum class AddressFamilies : std::uint8_t { both, ipv4_only, ipv6_only };

struct AresResolverOptions {
  /// Nameservers in failover order, each parsed by `Nameserver::parse` ("127.0.0.1:5353").
  /// Empty: the nameservers of the system configuration (/etc/resolv.conf).
  std::vector<std::string> nameservers;
  /// Time to wait for one answer from one server before trying the next (c-ares doubles it
  /// on each round over the server list, see above). At least 1 ms.
  Duration timeout{std::chrono::seconds(3)};
  /// Rounds over the server list. At least 1.
  int tries = 2;
  /// Spread queries over the servers (true) or always start with the first (false, failover).
  bool rotate = false;
  /// Send EDNS0 with a 1232-octet UDP payload size (large MX sets fit without TCP).
  bool edns = true;
  /// Hard limit for one query, whatever c-ares' timeouts and tries add up to; the query then
  /// answers `DnsStatus::timeout`. Zero: no limit beyond c-ares' own.
  Duration query_deadline{0};
  AddressFamilies families = AddressFamilies::both;
  /// In a merged address answer, put the IPv6 addresses before the IPv4 ones.
  bool ipv6_first = false;
  /// The local address queries are sent from ("192.0.2.7", "2001:db8::7"): the nameservers
  /// of the other family are reached from any address. Empty: the kernel chooses.
  std::string source_address;

  /// Trust the nameservers' DNSSEC validation: queries ask for it (the AD bit) and answers
  /// the servers say they validated are reported `secure`, which is what makes DANE possible.
  /// Only for validating resolvers this host trusts, over a path nobody else can change
  /// (RFC 7672 section 2.1.1: a validating resolver on the host or its own network, such as
  /// unbound on 127.0.0.1). Off: every answer is insecure and DANE is never used.
  bool dnssec = false;
  /// The answer cache.
  DnsCachePolicy cache;
  /// Time source for cache expiry only. Null: the loop's monotonic clock (`uv_now`). Tests
  /// pass a `ManualClock` to expire entries without waiting; must outlive the resolver.
  const Clock* cache_clock = nullptr;

  /// Receives the exceptions thrown by callbacks ("mailq AresResolver: callback threw: ..."),
  /// rate limited; it must outlive the resolver. Null: a reporter of the resolver's own, to
  /// standard error.
  ErrorReporter* error_reporter = nullptr;
};

struct AresResolverStats {
  std::uint64_t queries_sent = 0;  ///< DNS queries started (one per name and record type)
  std::uint64_t coalesced = 0;     ///< requests that joined an identical query in flight
  std::uint64_t cache_hits = 0;
  std::uint64_t cache_misses = 0;
  std::uint64_t deadline_expired = 0;  ///< queries ended by `query_deadline`
  /// CNAME chains a server answered without following them, followed here (at most 8 links)
  std::uint64_t cname_chased = 0;
  std::uint64_t callback_exceptions = 0;  ///< exceptions thrown by callbacks, caught
  std::size_t cache_entries = 0;
  std::size_t in_flight = 0;  ///< DNS queries waiting for c-ares
};

/// The reference `Resolver`, on c-ares.
///
/// Answers:
///  - `query_mx`: the MX records in answer order, CNAMEs followed, exchange names without the
///    trailing dot; the null MX ("MX 0 .") is a record with an empty exchange. A name without
///    MX records answers `no_data` (the core then uses the implicit MX).
///  - `query_addresses`: A and AAAA (two queries, answered together), CNAMEs followed. `ok`
///    when either family has addresses (the other family's failure is noted in `detail`);
///    `nxdomain` when the name does not exist; `no_data` when neither family has records;
///    otherwise the transient failure. An IP literal answers itself without DNS.
///  - CNAMEs are followed: inside an answer (the server followed them), and by asking again
///    for the chain's end when an answer holds only the CNAME (a server that does not follow
///    them), at most 8 links; `AddressAnswer::canonical` names where the chain ended.
///  - Failures carry a `detail` for the log, e.g. "nope.test MX: no such domain (NXDOMAIN)"
///    or "x.test MX: SERVFAIL or REFUSED from every nameserver, or connection refused
///    (127.0.0.1:5353)"; answers served from the cache say "(cached)".
///  - A malformed name (empty, a label over 63 octets, over 253 octets, control characters,
///    spaces, backslashes, non-ASCII: IDNs must be given in A-label form) answers
///    `DnsStatus::error` without a query.
///
/// Every callback is called exactly once, on the loop thread, never from inside `query_*`:
/// every answer is posted through a zero-delay timer of the clock given to `open`, answers
/// from the cache and for invalid names included. Identical queries in flight share one DNS
/// query. A callback may issue new queries and may destroy the resolver. Exceptions thrown by
/// callbacks are caught, counted and reported to `AresResolverOptions::error_reporter`, never
/// propagated into libuv.
///
/// Destruction cancels everything: every pending callback is called with
/// `DnsStatus::cancelled` and detail "cancelled" before the destructor returns.
class AresResolver final : public Resolver {
 public:
  /// Builds a resolver on `loop`. `clock` posts the callbacks to the next loop turn: the
  /// host's `uv::LoopClock` on the same loop (any Clock whose callbacks run on the loop's
  /// thread will do); it must outlive the resolver. Errors: `errc::invalid_parameter` (a null
  /// loop, a bad nameserver, timeout or tries), `errc::resolver_failure` (c-ares could not be
  /// initialised).
  static Result<std::unique_ptr<AresResolver>> open(uv_loop_t* loop, Clock& clock,
                                                    AresResolverOptions options = {});
  ~AresResolver() override;
  AresResolver(const AresResolver&) = delete;
  AresResolver& operator=(const AresResolver&) = delete;

  void query_mx(const std::string& domain, std::function<void(MxAnswer)> done) override;
  void query_addresses(const std::string& host, std::function<void(AddressAnswer)> done) override;
  void query_txt(const std::string& name, std::function<void(TxtAnswer)> done) override;
  /// TLSA records (type 52, parsed by mailq: c-ares 1.18.1 has no parser for them).
  void query_tlsa(const std::string& name, std::function<void(TlsaAnswer)> done) override;

  /// Forgets every cached answer (an operator's "flush the DNS cache").
  void clear_cache();
  AresResolverStats stats() const;
  /// The nameservers in use, as "ip:port" (the system's when none were configured).
  std::vector<std::string> nameservers() const;

 private:
  struct Impl;
  explicit AresResolver(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ares
}  // namespace mailq
