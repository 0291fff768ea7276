#include "mailq/net.h"

#include <vector>

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "core/smtp/reply_parse.h"

namespace mailq {
namespace {

constexpr std::size_t kMaxHostName = 255;

// The IP address in `text` as network-order bytes in `out`: returns 4 for IPv4, 16 for IPv6,
// 0 when `text` is neither (inet_pton reads a C string: a NUL inside `text` is no address).
std::size_t parse_ip(std::string_view text, std::uint8_t out[16]) noexcept {
  char buf[INET6_ADDRSTRLEN];
  if (text.empty() || text.size() >= sizeof buf || text.find('\0') != std::string_view::npos)
    return 0;
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  if (inet_pton(AF_INET, buf, out) == 1) return 4;
  if (inet_pton(AF_INET6, buf, out) == 1) return 16;
  return 0;
}

// The first 12 bytes of an IPv4 address mapped into IPv6 (::ffff:a.b.c.d).
constexpr std::uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

bool is_host_name(std::string_view s) noexcept {
  if (s.empty() || s.size() > kMaxHostName) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_';
  });
}

bool is_digit(char c) noexcept {
  return c >= '0' && c <= '9';
}

// A decimal number of at most `digits` digits and at most `max`.
bool parse_number(std::string_view s, std::size_t digits, unsigned max, unsigned* value) noexcept {
  if (s.empty() || s.size() > digits || !std::all_of(s.begin(), s.end(), is_digit)) return false;
  unsigned v = 0;
  for (char c : s) v = v * 10 + static_cast<unsigned>(c - '0');
  if (v > max) return false;
  *value = v;
  return true;
}

// A text in an error message: quoted, with quotes, backslashes and controls escaped.
std::string quoted(std::string_view text) {
  return "\"" + detail::printable(text, 256) + "\"";
}

Error invalid(std::string_view text, std::string_view why) {
  return Error(errc::invalid_parameter, quoted(text) + " " + std::string(why));
}

}  // namespace

bool is_ipv4_literal(std::string_view text) noexcept {
  std::uint8_t buf[16];
  return parse_ip(text, buf) == 4;
}

bool is_ipv6_literal(std::string_view text) noexcept {
  std::uint8_t buf[16];
  return parse_ip(text, buf) == 16;
}

bool is_ip_literal(std::string_view text) noexcept {
  std::uint8_t buf[16];
  return parse_ip(text, buf) != 0;
}

bool is_loopback_address(std::string_view text) noexcept {
  std::uint8_t b[16];
  switch (parse_ip(text, b)) {
    case 4:
      return b[0] == 127;
    case 16: {
      static constexpr std::uint8_t kLoopback6[16] = {0, 0, 0, 0, 0, 0, 0, 0,
                                                      0, 0, 0, 0, 0, 0, 0, 1};
      return std::memcmp(b, kLoopback6, 16) == 0 ||
             (std::memcmp(b, kMapped, sizeof kMapped) == 0 && b[12] == 127);
    }
    default:
      return false;
  }
}

// --- HostPort ---------------------------------------------------------------------------------

Result<HostPort> HostPort::parse(std::string_view text) {
  HostPort hp;
  std::string_view host = text;
  std::string_view port;
  bool has_port = false;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return invalid(text, "has no closing ']'");
    host = text.substr(1, close - 1);
    if (!is_ipv6_literal(host))
      return invalid(text, is_ipv4_literal(host) ? "has brackets around an IPv4 address"
                                                 : "has brackets around what is not an IPv6 "
                                                   "address");
    const auto rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return invalid(text, "has text after ']' that is not \":port\"");
      port = rest.substr(1);
      has_port = true;
    }
  } else if (const auto colon = text.find(':'); colon != std::string_view::npos) {
    if (text.find(':', colon + 1) != std::string_view::npos) {
      // Several colons: a bare IPv6 address, which cannot carry a port.
      if (!is_ipv6_literal(text))
        return invalid(text, "is not host:port (IPv6 with a port as \"[2001:db8::1]:25\")");
    } else {
      host = text.substr(0, colon);
      port = text.substr(colon + 1);
      has_port = true;
    }
  }
  if (!is_ip_literal(host) && !is_host_name(host))
    return invalid(text, "is not a host name or IP address");
  if (has_port) {
    unsigned value = 0;
    if (!parse_number(port, 5, 65535, &value) || value == 0)
      return invalid(text, "has no valid port (1 to 65535)");
    hp.port = static_cast<std::uint16_t>(value);
  }
  hp.host = std::string(host);
  return hp;
}

std::string HostPort::to_string() const {
  if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

// --- Network ----------------------------------------------------------------------------------

Result<Network> Network::parse(std::string_view text) {
  Network n;
  const auto slash = text.find('/');
  const std::string_view addr = text.substr(0, slash);
  const std::size_t size = parse_ip(addr, n.bytes);
  if (size == 0)
    return invalid(text, "is not a network (\"127.0.0.0/8\", \"::1/128\", \"192.0.2.7\")");
  n.ipv6 = size == 16;
  const unsigned max = n.ipv6 ? 128 : 32;
  n.prefix = max;
  if (slash != std::string_view::npos && !parse_number(text.substr(slash + 1), 3, max, &n.prefix))
    return invalid(text, fmt::format("has a bad prefix length (0 to {})", max));
  // Host bits set ("10.0.0.1/8") are a mistake more often than not: say which network it is.
  std::uint8_t masked[16] = {};
  for (unsigned i = 0; i < size; ++i) {
    const unsigned bits_here = n.prefix > i * 8 ? std::min(8u, n.prefix - i * 8) : 0;
    const auto mask = bits_here == 0 ? 0 : static_cast<std::uint8_t>(0xff << (8 - bits_here));
    masked[i] = n.bytes[i] & mask;
  }
  if (std::memcmp(masked, n.bytes, size) != 0) {
    char buf[INET6_ADDRSTRLEN] = {};
    inet_ntop(n.ipv6 ? AF_INET6 : AF_INET, masked, buf, sizeof buf);
    return invalid(text, fmt::format("has host bits set (did you mean \"{}/{}\"?)", buf, n.prefix));
  }
  n.address = std::string(addr);
  return n;
}

bool Network::contains(std::string_view numeric_address) const noexcept {
  std::uint8_t buf[16] = {};
  const std::uint8_t* other = buf;
  switch (parse_ip(numeric_address, buf)) {
    case 4:
      if (ipv6) return false;
      break;
    case 16:
      if (!ipv6) {
        // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
        if (std::memcmp(buf, kMapped, sizeof kMapped) != 0) return false;
        other = buf + sizeof kMapped;
      }
      break;
    default:
      return false;
  }
  for (unsigned i = 0, left = prefix; left > 0; ++i) {
    const unsigned bits = std::min(8u, left);
    const auto mask = static_cast<std::uint8_t>(0xff << (8 - bits));
    if ((other[i] & mask) != (bytes[i] & mask)) return false;
    left -= bits;
  }
  return true;
}

bool is_internal_address(std::string_view numeric_address) noexcept {
  static const char* const kInternal[] = {
      "0.0.0.0/8",     "10.0.0.0/8",     "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
      "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4",   "240.0.0.0/4", "::/128",
      "::1/128",       "fc00::/7",       "fe80::/10",     "ff00::/8"};
  static const std::vector<Network> networks = [] {
    std::vector<Network> out;
    for (const char* text : kInternal) out.push_back(Network::parse(text).value());
    return out;
  }();
  for (const Network& n : networks)
    if (n.contains(numeric_address)) return true;
  return false;
}

}  // namespace mailq
