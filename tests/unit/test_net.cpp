#include <catch2/catch.hpp>

#include <string>
#include <utility>
#include <vector>

#include "mailq/net.h"

using namespace mailq;

TEST_CASE("IP literals: dotted-quad IPv4 and IPv6 text, nothing around them", "[net]") {
  for (const char* v4 : {"192.0.2.1", "0.0.0.0", "255.255.255.255", "127.0.0.1"}) {
    INFO(v4);
    CHECK(is_ipv4_literal(v4));
    CHECK_FALSE(is_ipv6_literal(v4));
    CHECK(is_ip_literal(v4));
  }
  for (const char* v6 :
       {"::1", "::", "2001:db8::5", "::ffff:1.2.3.4", "fe80::1:2:3:4", "2001:db8:0:0:0:0:0:1"}) {
    INFO(v6);
    CHECK(is_ipv6_literal(v6));
    CHECK_FALSE(is_ipv4_literal(v6));
    CHECK(is_ip_literal(v6));
  }
  for (const char* no : {"", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", " 1.2.3.4", "1.2.3.4 ",
                         "[::1]", "[192.0.2.1]", "fe80::1%eth0", "1::2::3", "::1:", "2001:db8::g",
                         "localhost", "relay.example.net", "127.0.0.1:25"}) {
    INFO(no);
    CHECK_FALSE(is_ip_literal(no));
    CHECK_FALSE(is_ipv4_literal(no));
    CHECK_FALSE(is_ipv6_literal(no));
  }
  // A NUL ends a C string but not a string_view: what follows it counts.
  CHECK_FALSE(is_ip_literal(std::string("1.2.3.4\0junk", 12)));
  CHECK_FALSE(is_ip_literal(std::string(100, '1')));
}

TEST_CASE("loopback addresses: 127.0.0.0/8, ::1 and mapped 127.0.0.0/8", "[net]") {
  for (const char* yes : {"127.0.0.1", "127.255.1.2", "::1", "::ffff:127.0.0.1"}) {
    INFO(yes);
    CHECK(is_loopback_address(yes));
  }
  for (const char* no : {"128.0.0.1", "0.0.0.0", "::", "::2", "::ffff:10.0.0.1", "::127.0.0.1",
                         "localhost", "[::1]", "127.0.0.1:25", ""}) {
    INFO(no);
    CHECK_FALSE(is_loopback_address(no));
  }
}

TEST_CASE("HostPort::parse reads names, IPv4 and IPv6 with and without a port", "[net]") {
  struct Case {
    const char* text;
    const char* host;
    std::uint16_t port;
  };
  for (const Case& c :
       {Case{"relay.example.net", "relay.example.net", 0},
        Case{"relay.example.net:587", "relay.example.net", 587}, Case{"relay_1-a", "relay_1-a", 0},
        Case{"192.0.2.5:25", "192.0.2.5", 25}, Case{"192.0.2.5", "192.0.2.5", 0},
        Case{"[2001:db8::5]:2525", "2001:db8::5", 2525}, Case{"[::1]", "::1", 0},
        Case{"2001:db8::5", "2001:db8::5", 0}, Case{"::ffff:1.2.3.4", "::ffff:1.2.3.4", 0},
        Case{"h:65535", "h", 65535}, Case{"h:00025", "h", 25}}) {
    INFO(c.text);
    auto hp = HostPort::parse(c.text);
    REQUIRE(hp);
    CHECK(hp->host == c.host);
    CHECK(hp->port == c.port);
  }
}

TEST_CASE("HostPort::parse names the text and what is wrong with it", "[net]") {
  struct Case {
    std::string text;
    std::string message;
  };
  const Case cases[] = {
      {"[::1", "\"[::1\" has no closing ']'"},
      {"[::1]x", "\"[::1]x\" has text after ']' that is not \":port\""},
      {"[::1]:", "\"[::1]:\" has no valid port (1 to 65535)"},
      {"[127.0.0.1]:53", "\"[127.0.0.1]:53\" has brackets around an IPv4 address"},
      {"[relay.example]:25",
       "\"[relay.example]:25\" has brackets around what is not an IPv6 address"},
      {"[]:25", "\"[]:25\" has brackets around what is not an IPv6 address"},
      {"relay:0", "\"relay:0\" has no valid port (1 to 65535)"},
      {"relay:65536", "\"relay:65536\" has no valid port (1 to 65535)"},
      {"relay:", "\"relay:\" has no valid port (1 to 65535)"},
      {"relay:25x", "\"relay:25x\" has no valid port (1 to 65535)"},
      {"relay:-25", "\"relay:-25\" has no valid port (1 to 65535)"},
      {"relay:000025", "\"relay:000025\" has no valid port (1 to 65535)"},
      {"a:b:c", "\"a:b:c\" is not host:port (IPv6 with a port as \"[2001:db8::1]:25\")"},
      {"::1:25:x", "\"::1:25:x\" is not host:port (IPv6 with a port as \"[2001:db8::1]:25\")"},
      {":25", "\":25\" is not a host name or IP address"},
      {"", "\"\" is not a host name or IP address"},
      {"bad host", "\"bad host\" is not a host name or IP address"},
      {"evil\r\nhost:25", "\"evil\\x0D\\x0Ahost:25\" is not a host name or IP address"},
      {"quo\"te", "\"quo\\\"te\" is not a host name or IP address"},
      {std::string(256, 'a'), "\"" + std::string(256, 'a') + "\" is not a host name or IP address"},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    auto hp = HostPort::parse(c.text);
    REQUIRE_FALSE(hp);
    CHECK(hp.error().code == errc::invalid_parameter);
    CHECK(hp.error().message == c.message);
  }
  CHECK(HostPort::parse(std::string(255, 'a')));
}

TEST_CASE("HostPort::to_string writes IPv6 in brackets", "[net]") {
  CHECK(HostPort{"relay.example.net", 25}.to_string() == "relay.example.net:25");
  CHECK(HostPort{"127.0.0.1", 5353}.to_string() == "127.0.0.1:5353");
  CHECK(HostPort{"::1", 53}.to_string() == "[::1]:53");
  for (const char* text : {"relay.example.net:25", "192.0.2.1:2525", "[2001:db8::5]:587"}) {
    auto hp = HostPort::parse(text);
    REQUIRE(hp);
    CHECK(hp->to_string() == text);
  }
}

TEST_CASE("networks match addresses by prefix, IPv4-mapped IPv6 included", "[net]") {
  auto lo = Network::parse("127.0.0.0/8");
  REQUIRE(lo);
  CHECK(lo->contains("127.0.0.1"));
  CHECK(lo->contains("127.255.1.2"));
  CHECK(lo->contains("::ffff:127.0.0.1"));
  CHECK_FALSE(lo->contains("128.0.0.1"));
  CHECK_FALSE(lo->contains("::1"));
  CHECK_FALSE(lo->contains("not an address"));

  auto one = Network::parse("192.0.2.7");
  REQUIRE(one);
  CHECK(one->prefix == 32);
  CHECK(one->contains("192.0.2.7"));
  CHECK_FALSE(one->contains("192.0.2.8"));

  auto v6 = Network::parse("2001:db8::/32");
  REQUIRE(v6);
  CHECK(v6->ipv6);
  CHECK(v6->contains("2001:db8:1::5"));
  CHECK_FALSE(v6->contains("2001:db9::5"));
  CHECK_FALSE(v6->contains("192.0.2.7"));

  auto odd = Network::parse("10.128.0.0/9");
  REQUIRE(odd);
  CHECK(odd->contains("10.200.0.1"));
  CHECK_FALSE(odd->contains("10.127.0.1"));

  auto all = Network::parse("0.0.0.0/0");
  REQUIRE(all);
  CHECK(all->contains("203.0.113.9"));

  auto bad = Network::parse("::1/129");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message == "\"::1/129\" has a bad prefix length (0 to 128)");
}

TEST_CASE("networks: one host, IPv6 prefixes, mapped addresses and the whole space", "[net]") {
  auto host6 = Network::parse("::1");
  REQUIRE(host6);
  CHECK(host6->ipv6);
  CHECK(host6->prefix == 128);
  CHECK(host6->address == "::1");

  struct Case {
    const char* network;
    std::vector<const char*> inside;
    std::vector<const char*> outside;
  };
  const Case cases[] = {
      {"::1", {"::1", "0:0::1"}, {"::2", "127.0.0.1", "::ffff:127.0.0.1"}},
      {"2001:db8:8000::/33", {"2001:db8:ffff::1", "2001:db8:8000::"}, {"2001:db8:7fff::1"}},
      // An IPv6 network takes mapped addresses as IPv6 addresses: ::ffff:0:0/96 holds them all.
      {"::ffff:0:0/96", {"::ffff:192.0.2.1"}, {"192.0.2.1"}},
      {"::/0", {"2001:db8::1", "::ffff:192.0.2.1"}, {"192.0.2.1"}},
      {"0.0.0.0/0",
       {"192.0.2.1", "::ffff:192.0.2.1"},
       {"2001:db8::1", "", "[::ffff:192.0.2.1]", "192.0.2.1/32"}},
      {"192.0.2.128/25", {"192.0.2.128", "192.0.2.255", "::ffff:192.0.2.200"}, {"192.0.2.127"}},
  };
  for (const auto& c : cases) {
    auto n = Network::parse(c.network);
    REQUIRE(n);
    for (const char* a : c.inside) {
      INFO(c.network << " holds " << a);
      CHECK(n->contains(a));
    }
    for (const char* a : c.outside) {
      INFO(c.network << " does not hold " << a);
      CHECK_FALSE(n->contains(a));
    }
  }
}

TEST_CASE("Network::parse refuses bad addresses, prefixes and host bits, naming the text",
          "[net]") {
  const std::pair<std::string, std::string> cases[] = {
      {"", "\"\" is not a network (\"127.0.0.0/8\", \"::1/128\", \"192.0.2.7\")"},
      {"1.2.3/24", "\"1.2.3/24\" is not a network (\"127.0.0.0/8\", \"::1/128\", \"192.0.2.7\")"},
      {"localhost/8",
       "\"localhost/8\" is not a network (\"127.0.0.0/8\", \"::1/128\", \"192.0.2.7\")"},
      {"[::1]/128", "\"[::1]/128\" is not a network (\"127.0.0.0/8\", \"::1/128\", \"192.0.2.7\")"},
      {"10.0.0.0/33", "\"10.0.0.0/33\" has a bad prefix length (0 to 32)"},
      {"10.0.0.0/", "\"10.0.0.0/\" has a bad prefix length (0 to 32)"},
      {"10.0.0.0/-1", "\"10.0.0.0/-1\" has a bad prefix length (0 to 32)"},
      {"10.0.0.0/8/8", "\"10.0.0.0/8/8\" has a bad prefix length (0 to 32)"},
      {"10.0.0.0/0008", "\"10.0.0.0/0008\" has a bad prefix length (0 to 32)"},
      {"::/1280", "\"::/1280\" has a bad prefix length (0 to 128)"},
      {"10.0.0.1/8", "\"10.0.0.1/8\" has host bits set (did you mean \"10.0.0.0/8\"?)"},
      {"2001:db8::1/32", "\"2001:db8::1/32\" has host bits set (did you mean \"2001:db8::/32\"?)"},
  };
  for (const auto& [text, message] : cases) {
    INFO(text);
    auto n = Network::parse(text);
    REQUIRE_FALSE(n);
    CHECK(n.error().code == errc::invalid_parameter);
    CHECK(n.error().message == message);
  }
  auto leading = Network::parse("10.0.0.0/008");
  REQUIRE(leading);
  CHECK(leading->prefix == 8);
}

TEST_CASE("internal addresses: loopback, private, shared, link-local, multicast, reserved",
          "[net]") {
  for (const char* a : {"0.0.0.0",
                        "10.0.0.1",
                        "100.64.0.1",
                        "127.0.0.1",
                        "127.255.255.254",
                        "169.254.1.1",
                        "172.16.0.1",
                        "172.31.255.255",
                        "192.168.1.1",
                        "224.0.0.1",
                        "240.0.0.1",
                        "255.255.255.255",
                        "::",
                        "::1",
                        "fc00::1",
                        "fd12:3456::1",
                        "fe80::1",
                        "ff02::1",
                        "::ffff:10.0.0.1",
                        "::ffff:127.0.0.1"})
    CHECK(is_internal_address(a));
  for (const char* a :
       {"192.0.2.25", "8.8.8.8", "172.15.255.255", "172.32.0.1", "100.63.0.1", "11.0.0.1",
        "2001:db8::1", "2a00:1450::1", "::ffff:192.0.2.1", "mx.example.com", "", "10.0.0.1 "})
    CHECK_FALSE(is_internal_address(a));
}
