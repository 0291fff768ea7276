#include "core/delivery/resolution.h"

#include <algorithm>
#include <optional>

#include "mailq/net.h"
#include "mailq/reply.h"

namespace mailq::detail {

namespace {

// The addresses of a list of hosts, looked up in parallel and joined in the hosts' order.
struct HostLookup {
  std::vector<std::vector<Target>> per_host;
  std::vector<std::string> aliases;  ///< "host is an alias of canonical" lines
  std::vector<DnsStatus> statuses;
  std::vector<bool> secure;  ///< per host: its address answer was DNSSEC-secure
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
  lookup->secure.assign(hosts.size(), false);
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
      lookup->secure[i] = a.secure;
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
// name; under testing, a mismatch is only said. Hosts that DANE authenticates are left alone
// (DANE wins over MTA-STS, RFC 8461 section 2). Returns false when enforce leaves no host.
bool apply_sts(const sts::PolicyAnswer* answer, const std::string& domain,
               std::vector<Target>& hosts, std::vector<std::string>& warnings) {
  if (!answer || !answer->policy || answer->policy->mode == sts::Mode::none) return true;
  const sts::Policy& p = *answer->policy;
  const bool enforce = p.mode == sts::Mode::enforce;
  const std::string which = "the MTA-STS policy of " + domain + ", id " + p.id;
  std::vector<Target> kept;
  std::string said;  // a host has one line, however many addresses it has
  for (auto& h : hosts) {
    if (!h.tlsa.empty()) {
      kept.push_back(std::move(h));
      continue;
    }
    if (sts::mx_allowed(p, h.host)) {
      if (enforce) {
        // Verified by the CAs: more than the encryption TLSA records that are all unusable
        // would demand.
        h.tls_required_by = which;
        h.dane = false;
      } else {
        h.tls_tested_by = which + " (mode testing)";
      }
      kept.push_back(std::move(h));
      continue;
    }
    if (said != h.host)
      warnings.push_back("MX host " + h.host + " of " + domain + " does not match " + which +
                         (enforce ? " (mode enforce): not used"
                                  : " (mode testing): used, as the policy only tests"));
    said = h.host;
    if (!enforce) kept.push_back(std::move(h));
  }
  hosts = std::move(kept);
  return !enforce || !hosts.empty();
}

Resolution sts_failure(const Destination& dest, const sts::PolicyAnswer& policy,
                       std::vector<std::string> warnings) {
  Resolution f =
      failure(Reply(451, "4.7.5",
                    "[internal] no MX host of " + dest.domain + " matches its MTA-STS policy (id " +
                        policy.policy->id + ", mode enforce)"),
              Note::about_dns("no MX host of " + dest.domain + " matches its MTA-STS policy"));
  f.warnings = std::move(warnings);
  return f;
}

// The TLSA records of the hosts whose addresses were secure, asked for together (RFC 7672
// section 2.2): an answer per host asked.
struct TlsaLookup {
  std::vector<std::optional<TlsaAnswer>> answers;  ///< per host; empty: not asked
  std::size_t left = 0;
  std::function<void(TlsaLookup&)> finish;
  void one_done() {
    if (--left == 0) finish(*this);
  }
};

// Applies the TLSA answers to the targets of the looked-up hosts: per host, the usable
// records, a note that it has none usable, or a lookup failure that puts the host out of use.
// Returns the reply for such a failure (empty when there was none).
std::optional<Reply> apply_tlsa(const std::vector<Target>& hosts, HostLookup& l,
                                const TlsaLookup& t, std::vector<std::string>& warnings) {
  std::optional<Reply> lookup_error;
  for (std::size_t i = 0; i < hosts.size(); ++i) {
    if (!t.answers[i]) continue;
    const TlsaAnswer& a = *t.answers[i];
    const std::string name = dane::tlsa_name(hosts[i].host, hosts[i].port);
    if (a.status == DnsStatus::ok && a.secure) {
      auto usable = dane::usable_records(a.records);
      const std::string which = "the DANE TLSA records of " + name;
      for (Target& target : l.per_host[i]) {
        target.dane = true;
        target.tlsa = usable;
        target.tls_required_by =
            usable.empty() ? which + " (none usable: encrypted, not authenticated)" : which;
      }
      if (usable.empty())
        warnings.push_back(name + ": no usable TLSA record among " +
                           std::to_string(a.records.size()) +
                           ": STARTTLS is required, the certificate is not authenticated");
      continue;
    }
    if (a.status == DnsStatus::ok || a.status == DnsStatus::nxdomain ||
        a.status == DnsStatus::no_data) {
      if (a.status == DnsStatus::ok)
        warnings.push_back(name + ": TLSA records that are not DNSSEC-secure: not used");
      continue;  // no DANE for the host
    }
    // RFC 7672 section 2.2: a TLSA lookup that fails leaves the host unusable.
    warnings.push_back(name + ": TLSA lookup failed (" + to_string(a.status) +
                       (a.detail.empty() ? "" : ", " + a.detail) + "): MX host " + hosts[i].host +
                       " not used");
    l.per_host[i].clear();
    if (!lookup_error)
      lookup_error = Reply(451, "4.7.5",
                           "[internal] TLSA lookup error for " + hosts[i].host + ":" +
                               std::to_string(hosts[i].port));
  }
  return lookup_error;
}

// What follows the address (and TLSA) lookups, for the `targets` they left: aliases said,
// loops to self and internal addresses cut, and the failure when nothing is left.
void finish_hosts(const std::shared_ptr<const Destination>& dest, bool implicit,
                  const std::vector<std::string>& addresses, std::vector<std::string> warnings,
                  const HostLookup& l, std::vector<Target> targets, std::optional<Reply> tlsa_error,
                  const std::function<void(Resolution)>& done) {
  Resolution r;
  r.warnings = std::move(warnings);
  for (const auto& alias : l.aliases)
    r.warnings.push_back("MX host " + alias + " (" + dest->domain +
                         "): an MX names a host, not an alias (RFC 2181 section 10.3); used");
  r.targets = std::move(targets);
  if (!cut_local_addresses(r.targets, addresses)) {
    Resolution f =
        failure(replies::mx_loops_to_self(),
                Note::about_dns("the best MX for " + dest->domain + " has this host's address"));
    f.warnings = std::move(r.warnings);
    done(std::move(f));
    return;
  }
  drop_internal(r.targets, *dest, r.warnings);
  if (r.targets.empty()) {
    std::string detail = "no address for any MX host of " + dest->domain;
    for (auto& p : l.problems) detail += "; " + p;
    if (tlsa_error) {
      Resolution f = failure(
          *tlsa_error,
          Note::about_dns("no usable MX host of " + dest->domain + ": a TLSA lookup failed"), true);
      f.warnings = std::move(r.warnings);
      done(std::move(f));
      return;
    }
    const bool transient = std::any_of(l.statuses.begin(), l.statuses.end(), is_transient);
    // MX records whose every host definitely has no address: nothing will ever answer
    // (Postfix bounces these too). A lookup that failed for now, or the domain itself
    // without an address (seed 001), is a deferral.
    const Reply reply =
        transient || implicit ? replies::domain_does_not_resolve() : replies::no_mx_host_address();
    Resolution f = failure(reply, Note::about_dns(detail), transient);
    f.warnings = std::move(r.warnings);
    done(std::move(f));
    return;
  }
  done(std::move(r));
}

// `implicit`: the host list is the domain itself (no MX record). `mx_secure`: the MX answer
// (or its denial, for the implicit MX) was DNSSEC-secure.
void resolve_mx_hosts(std::shared_ptr<const Destination> dest, std::vector<MxRecord> mx,
                      bool implicit, bool mx_secure, const sts::PolicyAnswer* policy,
                      Resolver& resolver, Clock& clock, const LocalIdentity& self,
                      std::weak_ptr<const void> owner, std::function<void(Resolution)> done) {
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
  std::optional<sts::PolicyAnswer> sts_policy;
  if (policy) sts_policy = *policy;
  if (!dest->route->dane || !mx_secure) {
    // No DANE: the MTA-STS policy chooses the hosts before their addresses are looked up.
    if (!apply_sts(policy, dest->domain, hosts, warnings)) {
      Resolution f = sts_failure(*dest, *policy, std::move(warnings));
      clock.schedule(Duration{0},
                     [done = std::move(done), f = std::move(f)]() mutable { done(std::move(f)); });
      return;
    }
    look_up(hosts, resolver, clock, false,
            [dest, implicit, addresses = self.addresses, warnings = std::move(warnings),
             done = std::move(done)](HostLookup& l) mutable {
              finish_hosts(dest, implicit, addresses, std::move(warnings), l, l.targets(),
                           std::nullopt, done);
            });
    return;
  }
  // DANE is possible: every host's addresses, then the TLSA records of the hosts whose
  // addresses were secure; the MTA-STS policy then applies to the hosts DANE does not cover.
  look_up(hosts, resolver, clock, false,
          [dest, implicit, hosts, sts_policy, &resolver, addresses = self.addresses, owner,
           warnings = std::move(warnings), done = std::move(done)](HostLookup& l) mutable {
            if (owner.expired()) return;
            // A copy: `l` is running this very callback (its `finish`).
            auto lookup = std::make_shared<HostLookup>(l);
            lookup->finish = nullptr;
            auto tlsa = std::make_shared<TlsaLookup>();
            tlsa->answers.resize(hosts.size());
            tlsa->finish = [dest, implicit, hosts, sts_policy, addresses, owner, lookup,
                            warnings = std::move(warnings),
                            done = std::move(done)](TlsaLookup& t) mutable {
              if (owner.expired()) return;
              std::optional<Reply> error = apply_tlsa(hosts, *lookup, t, warnings);
              // The MTA-STS policy over the targets DANE does not authenticate.
              const sts::PolicyAnswer* policy = sts_policy ? &*sts_policy : nullptr;
              std::vector<Target> all = lookup->targets();
              const bool had_targets = !all.empty();
              if (!apply_sts(policy, dest->domain, all, warnings) && had_targets) {
                done(sts_failure(*dest, *sts_policy, std::move(warnings)));
                return;
              }
              finish_hosts(dest, implicit, addresses, std::move(warnings), *lookup, std::move(all),
                           std::move(error), done);
            };
            tlsa->left = 1;  // held until every query is out
            for (std::size_t i = 0; i < hosts.size(); ++i) {
              if (!lookup->secure[i] || lookup->per_host[i].empty()) continue;
              ++tlsa->left;
              resolver.query_tlsa(dane::tlsa_name(hosts[i].host, hosts[i].port),
                                  [tlsa, i](TlsaAnswer a) {
                                    tlsa->answers[i] = std::move(a);
                                    tlsa->one_done();
                                  });
            }
            tlsa->one_done();
          });
}

void mx_answered(std::shared_ptr<const Destination> dest, MxAnswer a,
                 const sts::PolicyAnswer* policy, Resolver& resolver, Clock& clock,
                 const LocalIdentity& self, std::uint64_t seed, std::weak_ptr<const void> owner,
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
      resolve_mx_hosts(std::move(dest), std::move(plan), false, a.secure, policy, resolver, clock,
                       self, std::move(owner), std::move(done));
      return;
    }
    a.status = DnsStatus::no_data;  // MX records with no usable exchange
  }
  if (a.status == DnsStatus::ok || a.status == DnsStatus::no_data) {
    // Implicit MX (RFC 5321 §5.1): the domain itself, preference 0.
    resolve_mx_hosts(dest, {MxRecord{0, domain}}, true, a.secure, policy, resolver, clock, self,
                     std::move(owner), std::move(done));
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
      mx_answered(dest, std::move(a), nullptr, resolver, clock, self, seed, owner, std::move(done));
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
  auto proceed = [dest, join, &resolver, &clock, self, seed, owner] {
    if (!join->mx || !join->policy) return;
    mx_answered(dest, std::move(*join->mx), &*join->policy, resolver, clock, self, seed, owner,
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
