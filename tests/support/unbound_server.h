// Test support: a real `unbound` serving test zones on 127.0.0.1, and small fake
// nameservers on a libuv loop (silent, refusing, counting proxy).
//
// Nothing here ever sends a packet outside 127.0.0.0/8: unbound listens on 127.0.0.1, serves
// its zones from local files, and is configured to query no address at all
// (`do-not-query-address: 0.0.0.0/0`), so a name outside its zones fails with SERVFAIL
// instead of going to the internet.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace mailq::test {

/// A free port on 127.0.0.1 (free for both UDP and TCP when asked).
std::uint16_t free_loopback_port(bool udp_and_tcp = true);

/// Sends one DNS query (`qname`, `qtype`, RD set) to 127.0.0.1:`port` and waits up to
/// `timeout_ms` for a response with the same id. Blocking; returns the RCODE, or -1 on
/// timeout or error.
int dns_probe(std::uint16_t port, const std::string& qname, std::uint16_t qtype, int timeout_ms);

/// A real unbound (/usr/sbin/unbound) started by the test in a temporary directory, on a
/// free loopback port, killed (and its directory removed) on destruction. Dies with the
/// test process (PR_SET_PDEATHSIG) if that crashes.
class UnboundServer {
 public:
  struct Zone {
    std::string name;  ///< "test."
    std::string text;  ///< zone file contents
  };
  struct Config {
    std::vector<Zone> zones;  ///< authoritative zones (auth-zone, for downstream)
    /// Extra lines for the `server:` clause (each without indentation).
    std::vector<std::string> server_lines;
    /// Extra top-level clauses appended verbatim (e.g. a `stub-zone:`).
    std::string extra;
    /// Validate DNSSEC ("validator iterator") with this trust anchor (a DNSKEY or DS record
    /// file, support/dnssec.h): the zones are then served through the validator (for
    /// upstream only), so that answers carry the AD bit, and bogus ones are SERVFAIL.
    std::string trust_anchor_file;
  };

  static constexpr const char* kBinary = "/usr/sbin/unbound";

  /// Starts unbound and waits (at most 15 s) until it answers the SOA of the first zone.
  /// Returns null and sets `error` (with unbound's log) on failure.
  static std::unique_ptr<UnboundServer> start(const Config& config, std::string* error);
  ~UnboundServer();
  UnboundServer(const UnboundServer&) = delete;
  UnboundServer& operator=(const UnboundServer&) = delete;

  std::uint16_t port() const { return port_; }
  std::string address() const;  ///< "127.0.0.1:<port>"
  std::string log() const;      ///< unbound's output so far

 private:
  UnboundServer() = default;
  void stop();

  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  std::string dir_;
};

/// A fake nameserver on 127.0.0.1:<free port>, driven by a libuv loop, counting the queries
/// it receives (UDP only; c-ares uses TCP only for truncated answers).
class FakeDnsServer {
 public:
  enum class Mode {
    silent,    ///< reads and never answers (a dead server: timeouts)
    refuse,    ///< answers REFUSED
    servfail,  ///< answers SERVFAIL
    forward,   ///< relays to 127.0.0.1:`upstream_port` and back (counts what reaches DNS)
  };

  /// In forward mode, queries of type `drop_qtype` (28 for AAAA; 0: none) are counted and
  /// dropped, as if the upstream never answered them.
  static std::unique_ptr<FakeDnsServer> start(uv_loop_t* loop, Mode mode,
                                              std::uint16_t upstream_port = 0,
                                              std::uint16_t drop_qtype = 0);
  /// Closes the handles; the loop must run afterwards for their close callbacks.
  ~FakeDnsServer();
  FakeDnsServer(const FakeDnsServer&) = delete;
  FakeDnsServer& operator=(const FakeDnsServer&) = delete;

  std::uint16_t port() const { return port_; }
  std::string address() const;  ///< "127.0.0.1:<port>"
  std::size_t queries() const { return questions_.size(); }
  /// The questions received, in order, as "name TYPE" ("multi.test MX", "alias.test AAAA").
  const std::vector<std::string>& questions() const { return questions_; }
  /// The source address of each query received, in order ("127.0.0.3").
  const std::vector<std::string>& clients() const { return clients_; }
  /// The message id and the header flags (second 16-bit word) of each query, in order.
  const std::vector<std::uint16_t>& ids() const { return ids_; }
  const std::vector<std::uint16_t>& flags() const { return flags_; }
  /// Forward mode: an upstream answer that starts with a CNAME is cut after it (nothing of the
  /// chain's target, no authority or additional records), as a server that does not follow
  /// CNAME chains (an authoritative server for the alias's zone only) answers.
  void stop_at_first_cname() { cname_only_ = true; }

 private:
  FakeDnsServer() = default;
  static void on_front(uv_udp_t* h, ssize_t n, const uv_buf_t* buf, const sockaddr* from,
                       unsigned flags);
  static void on_back(uv_udp_t* h, ssize_t n, const uv_buf_t* buf, const sockaddr* from,
                      unsigned flags);

  Mode mode_ = Mode::silent;
  std::uint16_t port_ = 0;
  std::uint16_t upstream_port_ = 0;
  std::uint16_t drop_qtype_ = 0;
  bool cname_only_ = false;
  uv_udp_t* front_ = nullptr;  // faces the resolver
  uv_udp_t* back_ = nullptr;   // faces the upstream (forward mode)
  std::vector<std::string> questions_;
  std::vector<std::string> clients_;
  std::vector<std::uint16_t> ids_;
  std::vector<std::uint16_t> flags_;
  std::unordered_map<std::uint16_t, sockaddr_storage> askers_;  // forward mode: id -> client
};

}  // namespace mailq::test
