// mailq — a conformance suite for Resolver implementations (header-only, no test framework).
//
// A host that brings its own `mailq::Resolver` runs it through these checks in its own tests:
//
//     mailq::testing::ResolverHarness h;
//     h.make = [&] { return std::make_unique<MyResolver>(...); };
//     h.run_until = [&](const std::function<bool()>& done, mailq::Duration limit) { ... };
//     h.zone = {...};  // what the resolver under test knows
//     for (const auto& failure : mailq::testing::check_resolver(h)) FAIL(failure);
//
// What the Deliverer relies on, each a check: every callback runs exactly once, never from
// inside the query call; the answers match the zone (ok with the records, NXDOMAIN for a name
// that does not exist, no data for a name without MX records, addresses of both families in
// one answer); destroying the resolver with queries pending answers each of them once, with a
// transient status, before the destructor returns; a callback may start another query.
#pragma once

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mailq/resolver.h"

namespace mailq {
namespace testing {

/// The names the resolver under test knows, and what it must answer for them.
struct ResolverZone {
  std::string mx_domain;               ///< a domain with MX records...
  std::vector<MxRecord> mx;            ///< ...these (exchange without the trailing dot)
  std::string host;                    ///< a host with addresses...
  std::vector<std::string> addresses;  ///< ...these (any order)
  std::string nxdomain;                ///< a name that does not exist
  std::string no_mx;                   ///< a name that exists but has no MX record
};

struct ResolverHarness {
  /// A fresh resolver (the suite destroys it when a check is done).
  std::function<std::unique_ptr<Resolver>()> make;
  /// Runs the host's loop until `done()` or `limit` passed; returns `done()`.
  std::function<bool(const std::function<bool()>& done, Duration limit)> run_until;
  ResolverZone zone;
  Duration limit{std::chrono::seconds(10)};
};

namespace detail {

inline std::string names(const std::vector<MxRecord>& mx) {
  std::vector<std::string> v;
  for (const auto& r : mx) v.push_back(std::to_string(r.preference) + " " + r.exchange);
  std::sort(v.begin(), v.end());
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

inline std::string sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

}  // namespace detail

/// Runs every check; returns one line per failure ("check: what went wrong"), none when the
/// resolver conforms.
inline std::vector<std::string> check_resolver(const ResolverHarness& h) {
  std::vector<std::string> failures;
  auto fail = [&](const std::string& check, const std::string& what) {
    failures.push_back(check + ": " + what);
  };
  const ResolverZone& z = h.zone;

  // 1. The answers of the zone, each callback once and never from inside the call.
  {
    auto r = h.make();
    int mx_calls = 0, addr_calls = 0, nx_calls = 0, nodata_calls = 0;
    bool inside = true;
    bool early = false;
    MxAnswer mx, nx, nodata;
    AddressAnswer addr;
    r->query_mx(z.mx_domain, [&](MxAnswer a) {
      early = early || inside;
      ++mx_calls;
      mx = std::move(a);
    });
    r->query_addresses(z.host, [&](AddressAnswer a) {
      early = early || inside;
      ++addr_calls;
      addr = std::move(a);
    });
    r->query_mx(z.nxdomain, [&](MxAnswer a) {
      early = early || inside;
      ++nx_calls;
      nx = std::move(a);
    });
    r->query_mx(z.no_mx, [&](MxAnswer a) {
      early = early || inside;
      ++nodata_calls;
      nodata = std::move(a);
    });
    inside = false;
    if (early) fail("answers", "a callback ran inside the query call");
    h.run_until([&] { return mx_calls && addr_calls && nx_calls && nodata_calls; }, h.limit);
    // Let anything that would answer twice do so.
    h.run_until([] { return false; }, Duration(50));
    if (mx_calls != 1)
      fail("answers", "MX of " + z.mx_domain + " answered " + std::to_string(mx_calls) + " times");
    if (addr_calls != 1)
      fail("answers",
           "addresses of " + z.host + " answered " + std::to_string(addr_calls) + " times");
    if (nx_calls != 1)
      fail("answers", "MX of " + z.nxdomain + " answered " + std::to_string(nx_calls) + " times");
    if (nodata_calls != 1)
      fail("answers", "MX of " + z.no_mx + " answered " + std::to_string(nodata_calls) + " times");
    if (mx_calls == 1) {
      if (mx.status != DnsStatus::ok)
        fail("answers",
             "MX of " + z.mx_domain + ": " + to_string(mx.status) + " (" + mx.detail + ")");
      else if (detail::names(mx.records) != detail::names(z.mx))
        fail("answers", "MX of " + z.mx_domain + ": " + detail::names(mx.records) + ", expected " +
                            detail::names(z.mx));
    }
    if (addr_calls == 1) {
      if (addr.status != DnsStatus::ok)
        fail("answers",
             "addresses of " + z.host + ": " + to_string(addr.status) + " (" + addr.detail + ")");
      else if (detail::sorted(addr.addresses) != detail::sorted(z.addresses))
        fail("answers", "addresses of " + z.host + ": " + detail::sorted(addr.addresses) +
                            ", expected " + detail::sorted(z.addresses));
    }
    if (nx_calls == 1 && nx.status != DnsStatus::nxdomain)
      fail("answers", "MX of " + z.nxdomain + ": " + to_string(nx.status) + ", expected nxdomain");
    if (nodata_calls == 1 && nodata.status != DnsStatus::no_data)
      fail("answers", "MX of " + z.no_mx + ": " + to_string(nodata.status) + ", expected no_data");
  }

  // 2. A callback may start another query (the Deliverer asks for addresses from the MX
  //    answer's callback).
  {
    auto r = h.make();
    int second = 0;
    r->query_mx(z.mx_domain, [&](MxAnswer) {
      r->query_addresses(z.host, [&](AddressAnswer a) {
        ++second;
        if (a.status != DnsStatus::ok)
          fail("nested", "a query started from a callback got " + std::string(to_string(a.status)));
      });
    });
    if (!h.run_until([&] { return second == 1; }, h.limit))
      fail("nested", "a query started from a callback was never answered");
  }

  // 3. Destroyed with queries pending: each answered once, transiently, before the destructor
  //    returns.
  {
    auto r = h.make();
    int calls = 0;
    bool transient = true;
    for (int i = 0; i < 3; ++i) {
      r->query_mx(z.mx_domain, [&](MxAnswer a) {
        ++calls;
        transient = transient && is_transient(a.status);
      });
      r->query_addresses(z.host, [&](AddressAnswer a) {
        ++calls;
        transient = transient && is_transient(a.status);
      });
    }
    r.reset();
    if (calls != 6)
      fail("destroy", std::to_string(calls) + " of 6 pending queries answered by the destructor");
    else if (!transient)
      fail("destroy", "a query cancelled by the destructor got a definite answer");
    h.run_until([] { return false; }, Duration(50));
    if (calls != 6) fail("destroy", "a cancelled query was answered again after the destructor");
  }
  return failures;
}

}  // namespace testing
}  // namespace mailq
