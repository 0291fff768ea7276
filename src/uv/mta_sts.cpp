#include "mailq/uv/mta_sts.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/text.h"
#include "uv/https_fetch.h"

namespace mailq::uv {

namespace {

constexpr const char* kCacheHeader = "mailq-mta-sts 1";

std::string lowered(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  while (!out.empty() && out.back() == '.') out.pop_back();
  return out;
}

std::int64_t unix_seconds(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

TimePoint from_unix(std::int64_t s) {
  return TimePoint(std::chrono::seconds(s));
}

std::string describe(const sts::Policy& p) {
  return "policy id " + p.id + " (mode " + std::string(sts::to_string(p.mode)) + ", max_age " +
         std::to_string(p.max_age.count()) + " s)";
}

}  // namespace

struct MtaStsSource::Impl {
  struct Entry {
    std::optional<sts::Policy> policy;
    TimePoint fetched{};
    TimePoint expires{};
    TimePoint checked{};       // last time its TXT id was seen unchanged (or it was fetched)
    TimePoint failed_until{};  // no fetch before this, after a failure with nothing cached
    std::string failure;
    bool busy = false;
    std::vector<std::function<void(sts::PolicyAnswer)>> waiting;
    std::unique_ptr<detail::HttpsFetch> fetch;
  };

  Resolver& resolver;
  Transport& transport;
  Clock& clock;
  MtaStsOptions options;
  std::map<std::string, Entry> entries;
  MtaStsStats stats;
  std::shared_ptr<int> alive = std::make_shared<int>(0);

  Impl(Resolver& r, Transport& t, Clock& c, MtaStsOptions o)
      : resolver(r), transport(t), clock(c), options(std::move(o)) {}

  bool valid(const Entry& e, TimePoint now) const { return e.policy && now < e.expires; }

  // --- the cache file ---
  Result<void> load() {
    if (options.cache_file.empty()) return {};
    std::ifstream in(options.cache_file);
    if (!in) {
      if (errno == ENOENT) return {};
      return Error(errc::storage_failure,
                   "cannot read " + options.cache_file + ": " + std::strerror(errno));
    }
    std::string line;
    if (!std::getline(in, line) || line != kCacheHeader) return {};  // not ours: start empty
    const TimePoint now = clock.now();
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string domain, id, mode, mx;
      std::int64_t fetched = 0, max_age = 0, checked = 0;
      if (!(f >> domain >> id >> fetched >> checked >> max_age >> mode)) continue;
      sts::Policy p;
      p.id = id;
      p.max_age = std::chrono::seconds(std::min(max_age, sts::kMaxAgeLimit));
      if (mode == "enforce")
        p.mode = sts::Mode::enforce;
      else if (mode == "testing")
        p.mode = sts::Mode::testing;
      else if (mode != "none")
        continue;
      while (f >> mx) p.mx.push_back(mx);
      Entry& e = entries[domain];
      e.fetched = from_unix(fetched);
      e.checked = from_unix(checked);
      e.expires = e.fetched + p.max_age;
      if (now >= e.expires) {
        entries.erase(domain);
        continue;
      }
      e.policy = std::move(p);
    }
    return {};
  }

  // Written whole, through a temporary file synced and renamed: a crash leaves the old file or
  // the new one. A failure is not fatal (the policies stay in memory).
  void save() {
    if (options.cache_file.empty()) return;
    std::string text = std::string(kCacheHeader) + "\n";
    const TimePoint now = clock.now();
    for (const auto& [domain, e] : entries) {
      if (!valid(e, now)) continue;
      text += domain + " " + e.policy->id + " " + std::to_string(unix_seconds(e.fetched)) + " " +
              std::to_string(unix_seconds(e.checked)) + " " +
              std::to_string(e.policy->max_age.count()) + " " +
              std::string(sts::to_string(e.policy->mode));
      for (const auto& m : e.policy->mx) text += " " + m;
      text += "\n";
    }
    const std::string tmp = options.cache_file + ".tmp";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return;
    bool ok = true;
    for (std::size_t off = 0; ok && off < text.size();) {
      const ssize_t n = ::write(fd, text.data() + off, text.size() - off);
      if (n < 0 && errno == EINTR) continue;
      ok = n > 0;
      if (ok) off += static_cast<std::size_t>(n);
    }
    ok = ok && ::fsync(fd) == 0;
    ::close(fd);
    if (!ok || ::rename(tmp.c_str(), options.cache_file.c_str()) != 0) ::unlink(tmp.c_str());
  }

  // --- answering ---
  void later(std::function<void(sts::PolicyAnswer)> done, sts::PolicyAnswer a) {
    std::weak_ptr<int> token = alive;
    clock.schedule(Duration{0}, [token, done = std::move(done), a = std::move(a)]() mutable {
      if (!token.expired()) done(std::move(a));
    });
  }

  sts::PolicyAnswer cached_answer(const Entry& e, std::string why, bool failed) {
    sts::PolicyAnswer a;
    a.policy = e.policy;
    a.failed = failed;
    a.detail = "cached " + describe(*e.policy) + (why.empty() ? "" : ": " + why);
    return a;
  }

  void finish(const std::string& domain, sts::PolicyAnswer a) {
    Entry& e = entries[domain];
    e.busy = false;
    auto waiting = std::move(e.waiting);
    e.waiting.clear();
    // A domain with nothing to remember (no policy, no backoff) is not kept: the table holds
    // policy domains, not every domain ever mailed.
    if (!e.policy && clock.now() >= e.failed_until && !e.fetch) entries.erase(domain);
    for (auto& w : waiting) w(a);
  }

  // A discovery or fetch that failed: the cached policy if it is valid, else none for now.
  void failed(const std::string& domain, std::string why) {
    Entry& e = entries[domain];
    const TimePoint now = clock.now();
    if (valid(e, now)) {
      // Tried again after `recheck`, not on every delivery meanwhile.
      e.checked = now;
      finish(domain, cached_answer(e, why + "; the cached policy stays in force", true));
      return;
    }
    e.failed_until = now + options.failure_backoff;
    e.failure = why;
    sts::PolicyAnswer a;
    a.failed = true;
    a.detail = why;
    finish(domain, std::move(a));
  }

  void start(const std::string& domain) {
    std::weak_ptr<int> token = alive;
    resolver.query_txt("_mta-sts." + domain, [this, token, domain](TxtAnswer txt) {
      if (token.expired()) return;
      on_txt(domain, std::move(txt));
    });
  }

  void on_txt(const std::string& domain, TxtAnswer txt) {
    Entry& e = entries[domain];
    const TimePoint now = clock.now();
    if (is_transient(txt.status)) {
      failed(domain, "_mta-sts." + domain + " TXT lookup failed: " + to_string(txt.status) +
                         (txt.detail.empty() ? "" : " (" + txt.detail + ")"));
      return;
    }
    Result<std::string> id = txt.status == DnsStatus::ok
                                 ? sts::policy_id(txt.records)
                                 : Result<std::string>(Error(errc::not_found, "no record"));
    // No record, several, or a malformed one: no policy available (RFC 8461 §3.1).
    if (!id) {
      // No (single) STSv1 record: a valid cached policy stays until it expires (§5.1).
      if (valid(e, now)) {
        e.checked = now;
        finish(domain, cached_answer(e, "no _mta-sts record now", false));
      } else {
        sts::PolicyAnswer a;
        a.detail = "no MTA-STS policy (_mta-sts." + domain + ": " + id.error().message + ")";
        finish(domain, std::move(a));
      }
      return;
    }
    if (valid(e, now) && e.policy->id == *id && e.expires - now > e.policy->max_age / 2) {
      e.checked = now;
      finish(domain, cached_answer(e, "", false));
      return;
    }
    fetch(domain, *id);
  }

  void fetch(const std::string& domain, const std::string& id) {
    ++stats.fetches;
    detail::HttpsRequest req;
    req.host = "mta-sts." + domain;
    req.port = options.port;
    req.path = "/.well-known/mta-sts.txt";
    req.ca_file = options.ca_file;
    req.timeout = options.fetch_timeout;
    req.max_body = sts::kMaxPolicySize;
    req.source_address = options.source_address;
    req.allow_internal = options.allow_internal;
    Entry& e = entries[domain];
    e.fetch = detail::https_get(
        resolver, transport, clock, std::move(req),
        [this, domain, id](detail::HttpsResponse r) { on_fetched(domain, id, std::move(r)); });
  }

  void on_fetched(const std::string& domain, const std::string& id, detail::HttpsResponse r) {
    Entry& e = entries[domain];
    // The handle is done with: dropped on a later turn (this runs inside its callback).
    std::shared_ptr<detail::HttpsFetch> old(std::move(e.fetch));
    clock.schedule(Duration{0}, [old] {});
    using Failure = detail::HttpsResponse::Failure;
    if (r.failure != Failure::none) {
      ++stats.fetch_failures;
      failed(domain, std::string(r.failure == Failure::tls ? "sts-webpki-invalid: "
                                                           : "sts-policy-fetch-error: ") +
                         "policy fetch failed: " + r.detail);
      return;
    }
    auto policy = sts::parse_policy(r.body);
    if (!policy) {
      ++stats.fetch_failures;
      failed(domain, "sts-policy-invalid: https://mta-sts." + domain +
                         "/.well-known/mta-sts.txt: " + policy.error().message);
      return;
    }
    const TimePoint now = clock.now();
    policy->id = id;
    e.policy = std::move(*policy);
    e.fetched = now;
    e.checked = now;
    e.expires = now + e.policy->max_age;
    e.failed_until = TimePoint{};
    if (e.policy->max_age.count() > 0) save();  // max_age 0: not to be kept
    sts::PolicyAnswer a;
    a.policy = e.policy;
    a.fetched = true;
    a.detail = "fetched " + describe(*e.policy);
    finish(domain, std::move(a));
  }

  void lookup(const std::string& raw, std::function<void(sts::PolicyAnswer)> done) {
    const std::string domain = lowered(raw);
    // The name goes into a DNS query, an HTTP Host field and the cache file: a host name only.
    if (!mailq::detail::is_host_name(domain)) {
      sts::PolicyAnswer a;
      a.detail = "no MTA-STS policy: \"" + raw + "\" is not a domain name";
      later(std::move(done), std::move(a));
      return;
    }
    Entry& e = entries[domain];
    if (e.busy) {
      e.waiting.push_back(std::move(done));
      return;
    }
    const TimePoint now = clock.now();
    if (valid(e, now) && now - e.checked < options.recheck) {
      ++stats.cache_hits;
      later(std::move(done), cached_answer(e, "", false));
      return;
    }
    if (!valid(e, now) && now < e.failed_until) {
      sts::PolicyAnswer a;
      a.failed = true;
      a.detail =
          e.failure + " (not tried again for " +
          std::to_string(
              std::chrono::duration_cast<std::chrono::seconds>(e.failed_until - now).count()) +
          " s)";
      later(std::move(done), std::move(a));
      return;
    }
    e.busy = true;
    e.waiting.push_back(std::move(done));
    start(domain);
  }
};

Result<std::unique_ptr<MtaStsSource>> MtaStsSource::open(Resolver& resolver, Transport& transport,
                                                         Clock& clock, MtaStsOptions options) {
  auto impl = std::make_unique<Impl>(resolver, transport, clock, std::move(options));
  if (auto r = impl->load(); !r) return r.error();
  return std::unique_ptr<MtaStsSource>(new MtaStsSource(std::move(impl)));
}

MtaStsSource::MtaStsSource(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

MtaStsSource::~MtaStsSource() {
  impl_->alive.reset();
  for (auto& [domain, e] : impl_->entries) e.fetch.reset();
}

void MtaStsSource::lookup(const std::string& domain, std::function<void(sts::PolicyAnswer)> done) {
  impl_->lookup(domain, std::move(done));
}

MtaStsStats MtaStsSource::stats() const {
  MtaStsStats s = impl_->stats;
  s.cached = 0;
  for (const auto& [d, e] : impl_->entries) s.cached += e.policy ? 1 : 0;
  return s;
}

}  // namespace mailq::uv
