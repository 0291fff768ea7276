// mailq — network addresses as text: IP literals, "host:port", CIDR networks.
//
// What configuration and protocol code read about addresses, written once: whether a text is
// a numeric IPv4 or IPv6 address, a host with an optional port (IPv6 in brackets), and
// networks in CIDR notation. Pure functions of their text: no DNS, no sockets.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "mailq/error.h"

namespace mailq {

/// Is `text` a numeric IPv4 address in dotted-decimal form, four parts ("192.0.2.1"; not
/// "1.2.3", "01.2.3.4" or "1.2.3.4 ")?
bool is_ipv4_literal(std::string_view text) noexcept;
/// Is `text` a numeric IPv6 address ("2001:db8::1", "::1", "::ffff:192.0.2.1"), without
/// brackets and without a "%zone"?
bool is_ipv6_literal(std::string_view text) noexcept;
/// Either. "[::1]" is not one: the brackets belong to the text around the address.
bool is_ip_literal(std::string_view text) noexcept;
/// Is `text` a loopback address: in 127.0.0.0/8, "::1", or in 127.0.0.0/8 mapped into IPv6
/// ("::ffff:127.0.0.1", as an IPv4 client shows up on a dual-stack socket)?
bool is_loopback_address(std::string_view text) noexcept;

/// A host and a port, as configuration writes them.
struct HostPort {
  std::string host;        ///< a host name or an IP literal, without brackets
  std::uint16_t port = 0;  ///< 1 to 65535; 0 when the text gave none

  /// Parses "host", "host:port", "[ipv6]", "[ipv6]:port" or a bare "ipv6" (which has no port:
  /// its colons are the address's). The host is an IP literal or a name of letters, digits,
  /// '-', '_' and '.' (at most 255 octets); brackets hold an IPv6 address and nothing else;
  /// a port is 1 to 65535. Whether a port or an IP address is required is for the caller to
  /// check (`port == 0`, `is_ip_literal(host)`).
  /// Errors: `errc::invalid_parameter`, the message naming the text and what is wrong with
  /// it: "\"[::1\" has no closing ']'", "\"relay:0\" has no valid port (1 to 65535)".
  static Result<HostPort> parse(std::string_view text);

  /// "host:port", "[ipv6]:port".
  std::string to_string() const;
};

/// A network in CIDR notation ("127.0.0.0/8", "2001:db8::/32", "192.0.2.7" for one host).
struct Network {
  std::string address;       ///< numeric, as given
  unsigned prefix = 32;      ///< bits
  bool ipv6 = false;         ///< an IPv6 network (16 bytes), else IPv4 (4 bytes)
  std::uint8_t bytes[16]{};  ///< the address in network order (4 or 16 bytes used)

  /// Parses "address/prefix" or a bare address (a single host). Host bits set below the
  /// prefix ("10.0.0.1/8") are refused, naming the network that was probably meant.
  /// Errors: `errc::invalid_parameter`, the message naming the text: "\"::1/129\" has a bad
  /// prefix length (0 to 128)".
  static Result<Network> parse(std::string_view text);

  /// Does the numeric address ("127.0.0.1", "::1") fall in this network? An IPv4 address
  /// mapped into IPv6 ("::ffff:127.0.0.1") counts as the IPv4 address for an IPv4 network.
  /// Anything that is not an IP literal is in no network.
  bool contains(std::string_view numeric_address) const noexcept;
};

/// Is the numeric address one a public MX host should never have: the networks of this host
/// and of its site (unspecified 0.0.0.0/8 and ::, loopback 127.0.0.0/8 and ::1, private
/// 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 and fc00::/7, shared 100.64.0.0/10, link-local
/// 169.254.0.0/16 and fe80::/10, multicast 224.0.0.0/4 and ff00::/8, reserved 240.0.0.0/4),
/// and IPv4 ones mapped into IPv6 ("::ffff:10.0.0.1")? An address reached through MX lookup in one
/// of them is not dialled unless the route allows it (`Route::allow_internal_mx`): a hostile
/// domain's MX must not reach the relay's own services. Not an IP literal: false.
bool is_internal_address(std::string_view numeric_address) noexcept;

}  // namespace mailq
