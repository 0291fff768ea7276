#include "core/delivery/resolution.h"

#include <algorithm>

#include "mailq/net.h"
#include "mailq/reply.h"

namespace mailq::detail {

namespace {

// The addresses of a list of hosts, looked up in parallel and joined in the hosts' order.
struct HostLookup {
  std::vector<std::vector<Target>> per_host;
  std::vector<std::string> aliases;  ///< "host is an alias of canonical" lines
  std::vector<DnsStatus> statuses;
  std::vector<std::string> problems;
  std::size_t left = 0;
  std::function<void(HostLookup&)> finish;

  void one_done() {
    if (--left == 0) finish(*this);
  }
  std::vector<Target> targets() const {
    std::vector<Target> all;
    for (auto& v : per_host) all.insert(all.end(), v.begin(), v.end());
    return all;
  }
};

// `hosts` as (name, preference, port); address literals are taken as they are (on a later
// loop turn, like an answer).
void look_up(const std::vector<Target>& hosts, Resolver& resolver, Clock& clock,
             bool detail_in_problems, std::function<void(HostLookup&)> finish) {
  auto lookup = std::make_shared<HostLookup>();
  lookup->per_host.resize(hosts.size());
  lookup->statuses.assign(hosts.size(), DnsStatus::ok);
  lookup->left = hosts.size();
  lookup->finish = std::move(finish);
  if (hosts.empty()) {  // nothing to look up: the answer still comes on a later turn
    clock.schedule(Duration{0}, [lookup] { lookup->finish(*lookup); });
    return;
  }
  for (std::size_t i = 0; i < hosts.size(); ++i) {
    const Target h = hosts[i];
    if (is_ip_literal(h.host)) {
      Target t = h;
      t.address = h.host;
      lookup->per_host[i].push_back(std::move(t));
      clock.schedule(Duration{0}, [lookup] { lookup->one_done(); });
      continue;
    }
    resolver.query_addresses(h.host, [lookup, i, h, detail_in_problems](AddressAnswer a) {
      lookup->statuses[i] = a.status;
      if (a.status == DnsStatus::ok) {
        for (auto& addr : a.addresses) {
          Target t = h;
          t.address = addr;
          lookup->per_host[i].push_back(std::move(t));
        }
        if (!a.canonical.empty())
          lookup->aliases.push_back(h.host + " is an alias (CNAME) of " + a.canonical);
      } else {
        lookup->problems.push_back(
            h.host + ": " + to_string(a.status) +
            (detail_in_problems && !a.detail.empty() ? " (" + a.detail + ")" : std::string()));
      }
      lookup->one_done();
    });
  }
}

Resolution failure(Reply reply, Note note, bool dns_failure = false) {
  Resolution r;
  r.failed = true;
  r.reply = std::move(reply);
  r.note = std::move(note);
  r.dns_failure = dns_failure;
  return r;
}

void resolve_static(const Destination& dest, Resolver& resolver, Clock& clock,
                    std::function<void(Resolution)> done) {
  std::vector<Target> hosts;
  for (std::size_t i = 0; i < dest.route->hosts.size(); ++i) {
    const RouteHost& h = dest.route->hosts[i];
    hosts.push_back({h.host, static_cast<std::uint16_t>(i), "", h.port});
  }
  look_up(hosts, resolver, clock, true, [done = std::move(done)](HostLookup& l) {
    Resolution r;
    r.targets = l.targets();
    if (r.targets.empty()) {
      std::string detail = "no address for the route's hosts";
      for (auto& p : l.problems) detail += "; " + p;
      done(failure(replies::domain_does_not_resolve(), Note::words(detail)));
      return;
    }
    done(std::move(r));
  });
}

// Drops the targets whose address is internal and outside the route's allowed networks,
// each with a warning.
void drop_internal(std::vector<Target>& targets, const Destination& dest,
                   std::vector<std::string>& warnings) {
  const auto& allowed = dest.route->allow_internal_mx;
  auto refused = [&](const Target& t) {
    if (!is_internal_address(t.address)) return false;
    for (const Network& n : allowed)
      if (n.contains(t.address)) return false;
    warnings.push_back("MX host " + t.host + " of " + dest.domain + " has the internal address " +
                       t.address + ": not dialled (not in the route's allow_internal_mx)");
    return true;
  };
  targets.erase(std::remove_if(targets.begin(), targets.end(), refused), targets.end());
}

// What the domain's MTA-STS policy makes of its MX hosts: under enforce, those that do not
// match its patterns are dropped and the others must present a certificate verified for their
// name; under testing, a mismatch is only said. Returns false when enforce leaves no host.
bool apply_sts(const sts::PolicyAnswer* answer, const std::string& domain,
               std::vector<Target>& hosts, std::vector<std::string>& warnings) {
  if (!answer || !answer->policy || answer->policy->mode == sts::Mode::none) return true;
  const sts::Policy& p = *answer->policy;
  const bool enforce = p.mode == sts::Mode::enforce;
  const std::string which = "the MTA-STS policy of " + domain + ", id " + p.id;
  std::vector<Target> kept;
  for (auto& h : hosts) {
    if (sts::mx_allowed(p, h.host)) {
      if (enforce) h.tls_required_by = which;
      kept.push_back(std::move(h));
      continue;
    }
    warnings.push_back("MX host " + h.host + " of " + domain + " does not match " + which +
                       (enforce ? " (mode enforce): not used"
                                : " (mode testing): used, as the policy only tests"));
    if (!enforce) kept.push_back(std::move(h));
  }
  hosts = std::move(kept);
  return !enforce || !hosts.empty();
}

// `implicit`: the host list is the domain itself (no MX record).
void resolve_mx_hosts(std::shared_ptr<const Destination> dest, std::vector<MxRecord> mx,
                      bool implicit, const sts::PolicyAnswer* policy, Resolver& resolver,
                      Clock& clock, const LocalIdentity& self,
                      std::function<void(Resolution)> done) {
  std::vector<Target> hosts;
  std::vector<std::string> warnings;
  if (policy && (policy->failed || policy->fetched))
    warnings.push_back(dest->domain + ": " + policy->detail);
  for (const auto& m : mx) {
    const std::string& name = m.exchange;
    const bool bracketed = name.size() > 2 && name.front() == '[' && name.back() == ']';
    if (is_ip_literal(name) || (bracketed && is_ip_literal(name.substr(1, name.size() - 2)))) {
      warnings.push_back("MX host " + name + " of " + dest->domain +
                         " is an address, not a host name (RFC 5321 section 5.1): not used");
      continue;
    }
    hosts.push_back({name, m.preference, "", dest->route->mx_port});
  }
  if (!apply_sts(policy, dest->domain, hosts, warnings)) {
    Resolution f = failure(
        Reply(451, "4.7.5",
              "[internal] no MX host of " + dest->domain + " matches its MTA-STS policy (id " +
                  policy->policy->id + ", mode enforce)"),
        Note::about_dns("no MX host of " + dest->domain + " matches its MTA-STS policy"));
    f.warnings = std::move(warnings);
    clock.schedule(Duration{0},
                   [done = std::move(done), f = std::move(f)]() mutable { done(std::move(f)); });
    return;
  }
  look_up(hosts, resolver, clock, false,
          [dest, implicit, addresses = self.addresses, warnings = std::move(warnings),
           done = std::move(done)](HostLookup& l) mutable {
            Resolution r;
            r.warnings = std::move(warnings);
            for (const auto& alias : l.aliases)
              r.warnings.push_back("MX host " + alias + " (" + dest->domain +
                                   "): an MX names a host, not an alias (RFC 2181 section "
                                   "10.3); used");
            r.targets = l.targets();
            if (!cut_local_addresses(r.targets, addresses)) {
              Resolution f = failure(
                  replies::mx_loops_to_self(),
                  Note::about_dns("the best MX for " + dest->domain + " has this host's address"));
              f.warnings = std::move(r.warnings);
              done(std::move(f));
              return;
            }
            drop_internal(r.targets, *dest, r.warnings);
            if (r.targets.empty()) {
              std::string detail = "no address for any MX host of " + dest->domain;
              for (auto& p : l.problems) detail += "; " + p;
              const bool transient =
                  std::any_of(l.statuses.begin(), l.statuses.end(), is_transient);
              // MX records whose every host definitely has no address: nothing will ever
              // answer (Postfix bounces these too). A lookup that failed for now, or the
              // domain itself without an address (seed 001), is a deferral.
              const Reply reply = transient || implicit ? replies::domain_does_not_resolve()
                                                        : replies::no_mx_host_address();
              Resolution f = failure(reply, Note::about_dns(detail), transient);
              f.warnings = std::move(r.warnings);
              done(std::move(f));
              return;
            }
            done(std::move(r));
          });
}

void mx_answered(std::shared_ptr<const Destination> dest, MxAnswer a,
                 const sts::PolicyAnswer* policy, Resolver& resolver, Clock& clock,
                 const LocalIdentity& self, std::uint64_t seed,
                 std::function<void(Resolution)> done) {
  const std::string& domain = dest->domain;
  if (a.status == DnsStatus::ok && !a.records.empty()) {
    std::vector<MxRecord> plan;
    std::mt19937_64 rng(seed);
    auto p = plan_mx(std::move(a.records), self.names, rng, &plan);
    if (p == MxPlan::null_mx) {
      done(failure(replies::null_mx(), Note::about_dns(domain + " has a null MX")));
      return;
    }
    if (p == MxPlan::loops_to_self) {
      done(failure(replies::mx_loops_to_self(),
                   Note::about_dns("the best MX for " + domain + " is this host")));
      return;
    }
    if (p == MxPlan::ok) {
      resolve_mx_hosts(std::move(dest), std::move(plan), false, policy, resolver, clock, self,
                       std::move(done));
      return;
    }
    a.status = DnsStatus::no_data;  // MX records with no usable exchange
  }
  if (a.status == DnsStatus::ok || a.status == DnsStatus::no_data) {
    // Implicit MX (RFC 5321 §5.1): the domain itself, preference 0.
    resolve_mx_hosts(dest, {MxRecord{0, domain}}, true, policy, resolver, clock, self,
                     std::move(done));
    return;
  }
  if (a.status == DnsStatus::nxdomain) {
    Note note = Note::about_dns(domain + ": NXDOMAIN");
    done(failure(dest->route->nxdomain_is_permanent ? replies::domain_does_not_exist()
                                                    : replies::domain_does_not_resolve(),
                 std::move(note)));
    return;
  }
  // SERVFAIL, REFUSED, timeouts: always transient (4.4.3 in the log).
  done(failure(replies::domain_does_not_resolve(),
               Note::about_dns(domain + " MX lookup failed: " + to_string(a.status) +
                               (a.detail.empty() ? "" : " (" + a.detail + ")") +
                               "; 4.4.3 directory server failure"),
               true));
}

}  // namespace

void resolve(const Destination& destination, Resolver& resolver, sts::PolicySource* sts,
             Clock& clock, const LocalIdentity& self, std::uint64_t seed,
             std::weak_ptr<const void> owner, std::function<void(Resolution)> done) {
  // Every step after an answer first checks that the owner still wants the result: a
  // resolver completing its queries as it is destroyed must not be asked again.
  auto guarded = [owner, done = std::move(done)](Resolution r) {
    if (!owner.expired()) done(std::move(r));
  };
  if (destination.route->is_static()) {
    resolve_static(destination, resolver, clock, std::move(guarded));
    return;
  }
  auto dest = std::make_shared<const Destination>(destination);
  if (sts == nullptr || !dest->route->mta_sts) {
    resolver.query_mx(dest->domain, [dest, &resolver, &clock, self, seed, owner,
                                     done = std::move(guarded)](MxAnswer a) mutable {
      if (owner.expired()) return;
      mx_answered(dest, std::move(a), nullptr, resolver, clock, self, seed, std::move(done));
    });
    return;
  }
  // The MX records and the MTA-STS policy are asked for together; the hosts are chosen when
  // both are in.
  struct Join {
    std::optional<MxAnswer> mx;
    std::optional<sts::PolicyAnswer> policy;
    std::function<void(Resolution)> done;
  };
  auto join = std::make_shared<Join>();
  join->done = std::move(guarded);
  auto proceed = [dest, join, &resolver, &clock, self, seed] {
    if (!join->mx || !join->policy) return;
    mx_answered(dest, std::move(*join->mx), &*join->policy, resolver, clock, self, seed,
                std::move(join->done));
  };
  resolver.query_mx(dest->domain, [join, owner, proceed](MxAnswer a) {
    if (owner.expired()) return;
    join->mx = std::move(a);
    proceed();
  });
  sts->lookup(dest->domain, [join, owner, proceed](sts::PolicyAnswer p) {
    if (owner.expired()) return;
    join->policy = std::move(p);
    proceed();
  });
}

}  // namespace mailq::detail
