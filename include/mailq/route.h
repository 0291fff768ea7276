// mailq — routes: how to reach a destination.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "mailq/clock.h"
#include "mailq/error.h"
#include "mailq/net.h"
#include "mailq/signer.h"
#include "mailq/transport.h"

namespace mailq {

/// A host of a static route: a name or an IP literal, and a port.
struct RouteHost {
  std::string host;  ///< "relay.example.net", "192.0.2.5" or "2001:db8::5"
  std::uint16_t port = 25;

  /// Parses "host", "host:port", "[v6]", "[v6]:port" or "v6" as `HostPort::parse` does (see
  /// mailq/net.h); port 25 when none is given. Errors: `errc::invalid_parameter`, "route host "
  /// and what `HostPort::parse` says.
  static Result<RouteHost> parse(std::string_view s);
};

/// Credentials for AUTH PLAIN / LOGIN towards a smart host.
struct AuthCredentials {
  std::string username;
  std::string password;
};

/// SMTP timeouts, RFC 5321 §4.5.3.2 defaults.
struct SmtpTimeouts {
  Duration connect{std::chrono::seconds(30)};
  Duration greeting{std::chrono::minutes(5)};
  Duration ehlo{std::chrono::minutes(5)};
  Duration starttls{std::chrono::minutes(2)};
  Duration mail{std::chrono::minutes(5)};
  Duration rcpt{std::chrono::minutes(5)};
  Duration data_init{std::chrono::minutes(2)};
  /// While the body goes out: how long a write may make no progress (the server takes
  /// nothing), restarted by every write that completes (RFC 5321 4.5.3.2.5).
  Duration data_block{std::chrono::minutes(3)};
  /// The reply to the final dot, from when the dot was written (RFC 5321 4.5.3.2.6).
  Duration data_term{std::chrono::minutes(10)};
  Duration rset{std::chrono::minutes(2)};
  Duration quit{std::chrono::seconds(30)};
};

/// How to reach a destination. The name is the destination channel in the log
/// ("tcp_local", "default-non-local-route").
///
/// With `hosts` empty the route uses MX lookup of the recipient domain and each domain is
/// its own destination (own connections, own domain state). With `hosts` set it is a static
/// (smart-host) route and the route itself is the destination, whatever the domain.
struct Route {
  std::string name;
  std::vector<RouteHost> hosts;  ///< static hosts in order; empty = MX lookup
  std::uint16_t mx_port = 25;    ///< port for MX-routed delivery (tests use another)
  TlsPolicy tls = TlsPolicy::opportunistic;
  std::string ca_file;  ///< for TlsPolicy::verify; empty = system CAs
  std::optional<AuthCredentials> auth;
  bool auth_over_plaintext = false;  ///< allow AUTH without TLS (explicit opt-in)
  /// 8-bit messages for a server without 8BITMIME: converted to 7 bit (true) or returned
  /// with 554 5.6.3 (false). SmtpClientOptions::convert_8bit.
  bool convert_8bit = true;
  std::string helo;                    ///< HELO/EHLO name; empty = the Deliverer's default
  std::string source_address;          ///< bind address for outgoing connections
  bool nxdomain_is_permanent = false;  ///< bounce on NXDOMAIN (550 5.1.2) instead of deferring
  /// An MX route's hosts are looked up in DNS, which the recipient's domain controls: an
  /// address `is_internal_address` calls internal (loopback, private, link-local, ...) is not
  /// dialled, with a notice, unless it falls in one of these networks. Empty: none is. (A
  /// static route's hosts are the operator's own and are never filtered.)
  std::vector<Network> allow_internal_mx;
  std::uint32_t max_connections = 10;  ///< per destination
  std::uint32_t max_messages_per_connection = 100;
  SmtpTimeouts timeouts;
  /// Signs what this route sends (DKIM: mailq/dkim.h), in place of the Deliverer's
  /// `DelivererConfig::signer`; null: the Deliverer's.
  std::shared_ptr<const MessageSigner> signer;
  /// An MX route honours the recipient domains' MTA-STS policies (RFC 8461) when the
  /// Deliverer has a policy source (`DelivererConfig::mta_sts`): under mode enforce only the
  /// MX hosts the policy names are used, each with STARTTLS and a certificate verified for its
  /// name (against `ca_file`, else the system's CAs). A static route's hosts are the
  /// operator's own: never.
  bool mta_sts = true;
  /// An MX route uses DANE (RFC 7672) where the resolver reports DNSSEC-secure answers
  /// (`ares::AresResolverOptions::dnssec`): when a domain's MX records and an MX host's
  /// addresses are secure, the host's TLSA records (`_25._tcp.<host>`) are looked up; usable
  /// ones (DANE-EE 3 and DANE-TA 2) must match the certificate, which replaces the MTA-STS
  /// policy for that host; TLSA records that are all unusable still make STARTTLS mandatory;
  /// a TLSA lookup that fails puts the host out of use (the next one is tried, else
  /// `451 4.7.5`). A resolver that never reports secure answers leaves this without effect. A
  /// static route's hosts are the operator's own: never.
  bool dane = true;

  bool is_static() const noexcept { return !hosts.empty(); }
};

/// Maps recipient domains to routes: the exact domain first, then parent-domain wildcards
/// (".example.com" matches "a.example.com" and "b.a.example.com", not "example.com"), the
/// most specific first, then the default route. Domains compare case-insensitively.
class RouteTable {
 public:
  /// The default route: MX lookup, named "default-non-local-route".
  RouteTable();

  /// Adds or replaces a route by name. Errors, with the offending value in the words:
  /// `errc::invalid_parameter` (an empty name, a host that is not a host name or address, port
  /// 0), `errc::forbidden_character` (a space, '/', or a control character in the name; a
  /// control character in the HELO name).
  [[nodiscard]] Result<void> add(Route route);
  /// Maps `pattern` ("example.com" or ".example.com") to the route named `route`. Errors:
  /// `errc::not_found` (no such route), `errc::invalid_parameter` (an empty pattern, a bare
  /// ".", a control character).
  [[nodiscard]] Result<void> map(std::string_view pattern, std::string_view route);
  /// Makes the route named `route` the default. Errors: `errc::not_found`.
  [[nodiscard]] Result<void> set_default(std::string_view route);

  /// The route for a recipient domain (never null).
  const Route& lookup(std::string_view domain) const;
  const Route* find(std::string_view name) const;
  const Route& default_route() const;
  /// The same routes, shared: a holder keeps a route as it was when the table later replaces
  /// it (the queue keeps the route of each destination it has mail for).
  std::shared_ptr<const Route> lookup_shared(std::string_view domain) const;
  std::shared_ptr<const Route> find_shared(std::string_view name) const;

 private:
  std::size_t index_of_domain(std::string_view domain) const;

  std::vector<std::shared_ptr<const Route>> routes_;
  std::unordered_map<std::string, std::size_t> by_name_;
  std::unordered_map<std::string, std::size_t> exact_;
  std::unordered_map<std::string, std::size_t> wildcard_;  // key without the leading dot
  std::size_t default_ = 0;
};

/// The destination of a recipient: the route name for a static route, the lowercased
/// domain for an MX route. Connections, concurrency limits and domain state are per
/// destination.
std::string destination_key(const Route& route, std::string_view routing_domain);

}  // namespace mailq
