#include <catch2/catch.hpp>

#include "mailq/route.h"

using namespace mailq;

TEST_CASE("RouteTable: exact domain, then parent wildcards most specific first, then default",
          "[route]") {
  RouteTable t;
  Route internal;
  internal.name = "tcp_internal";
  internal.hosts.push_back({"10.0.0.5", 25});
  Route partner;
  partner.name = "partner";
  partner.hosts.push_back({"relay.partner.example", 587});
  REQUIRE(t.add(internal));
  REQUIRE(t.add(partner));
  REQUIRE(t.map("example.com", "tcp_internal"));
  REQUIRE(t.map(".example.com", "tcp_internal"));
  REQUIRE(t.map(".eu.example.com", "partner"));

  CHECK(t.lookup("example.com").name == "tcp_internal");
  CHECK(t.lookup("EXAMPLE.COM.").name == "tcp_internal");
  CHECK(t.lookup("a.example.com").name == "tcp_internal");
  CHECK(t.lookup("x.eu.example.com").name == "partner");
  CHECK(t.lookup("eu.example.com").name == "tcp_internal");  // wildcard excludes itself
  CHECK(t.lookup("example.org").name == "default-non-local-route");
  CHECK_FALSE(t.lookup("example.org").is_static());
  auto missing = t.map("x.org", "nope");
  REQUIRE_FALSE(missing);
  CHECK(missing.code() == errc::not_found);
  CHECK(missing.error().message == "map \"x.org\": no route \"nope\"");
}

TEST_CASE("destination_key: the route for static routes, the domain for MX routes", "[route]") {
  RouteTable t;
  Route smart;
  smart.name = "smarthost";
  smart.hosts.push_back({"127.0.0.1", 2525});
  REQUIRE(t.add(smart));
  CHECK(destination_key(t.default_route(), "Example.ORG") == "example.org");
  CHECK(destination_key(*t.find("smarthost"), "a.example") == "smarthost");
}

TEST_CASE("RouteHost::parse accepts names, IPv4, IPv6 with and without port", "[route]") {
  auto a = RouteHost::parse("relay.example.net:587");
  REQUIRE(a);
  CHECK(a->host == "relay.example.net");
  CHECK(a->port == 587);
  auto b = RouteHost::parse("[2001:db8::5]:2525");
  REQUIRE(b);
  CHECK(b->host == "2001:db8::5");
  CHECK(b->port == 2525);
  auto c = RouteHost::parse("2001:db8::5");
  REQUIRE(c);
  CHECK(c->port == 25);
  CHECK_FALSE(RouteHost::parse("relay:0"));
  CHECK_FALSE(RouteHost::parse("relay:70000"));
  CHECK_FALSE(RouteHost::parse("bad host"));
  CHECK_FALSE(RouteHost::parse("evil\r\nhost"));
  CHECK_FALSE(RouteHost::parse("[::1"));
}

TEST_CASE("RouteTable rejects route names and HELO names that could inject, saying which",
          "[route]") {
  RouteTable t;
  Route r;
  r.name = "bad\r\nname";
  auto bad = t.add(r);
  REQUIRE_FALSE(bad);
  CHECK(bad.code() == errc::forbidden_character);
  CHECK(bad.error().message ==
        "route \"bad\\x0D\\x0Aname\": a name holds no space, '/' or control character");
  r.name = "ok";
  r.helo = "evil\r\nMAIL FROM:<x>";
  bad = t.add(r);
  REQUIRE_FALSE(bad);
  CHECK(bad.code() == errc::forbidden_character);
  CHECK(bad.error().message.rfind("route \"ok\": helo \"evil\\x0D\\x0AMAIL FROM:<x>\": ", 0) == 0);
  CHECK_FALSE(t.find("ok"));
  r.helo.clear();
  CHECK(t.add(r));
}
