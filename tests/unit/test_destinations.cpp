// The queue's destination table (src/core/queue/destinations.h): interned once, counted,
// numbers reused once nothing refers to them.
#include <catch2/catch.hpp>

#include "core/queue/destinations.h"

using namespace mailq;
using namespace mailq::detail;

TEST_CASE("destinations: an MX route's domain, a static route's name, interned and counted",
          "[queue][destinations]") {
  RouteTable routes;
  Route relay;
  relay.name = "tcp_relay";
  relay.hosts = {{"127.0.0.1", 25}};
  REQUIRE(routes.add(relay));
  REQUIRE(routes.map(".relayed.test", "tcp_relay"));

  DestinationTable t;
  const DestinationId a = t.acquire(routes, "default-non-local-route", "u@Example.COM");
  const DestinationId b = t.acquire(routes, "default-non-local-route", "v@example.com");
  CHECK(a == b);
  CHECK(t[a].key == "example.com");
  CHECK(t[a].domain == "example.com");
  CHECK(t[a].route->name == "default-non-local-route");

  const DestinationId r = t.acquire(routes, "tcp_relay", "w@x.relayed.test");
  CHECK(r != a);
  CHECK(t[r].key == "tcp_relay");
  CHECK(t[r].domain.empty());
  // A stored route the table no longer has: the route the domain takes now.
  const DestinationId gone = t.acquire(routes, "removed_route", "z@y.relayed.test");
  CHECK(gone == r);
  CHECK(t.size() == 2);
  CHECK(t.find("example.com") == a);

  t.release(a);
  CHECK(t.find("example.com") == a);  // one reference left
  t.release(b);
  CHECK_FALSE(t.find("example.com"));
  CHECK(t.size() == 1);
  // The number is reused by the next new destination.
  const DestinationId c = t.acquire(routes, "default-non-local-route", "u@other.test");
  CHECK(c == a);
  CHECK(t[c].key == "other.test");
}

TEST_CASE(
    "destinations: a destination keeps the route it was interned with when the table "
    "replaces it",
    "[queue][destinations]") {
  RouteTable routes;
  Route r;
  r.name = "tcp_local";
  r.mx_port = 2525;
  REQUIRE(routes.add(r));
  DestinationTable t;
  const DestinationId d = t.acquire(routes, "tcp_local", "u@example.com");
  r.mx_port = 2626;
  REQUIRE(routes.add(r));
  CHECK(t[d].route->mx_port == 2525);
  CHECK(routes.find("tcp_local")->mx_port == 2626);
}
