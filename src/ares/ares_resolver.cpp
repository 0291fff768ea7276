// The c-ares resolver on libuv.
//
// Life of a request: `query_mx` / `query_addresses` turn into one or two RRset lookups
// (name, type). A lookup is answered from the cache, joins an identical lookup in flight, or
// starts an `ares_query`. Whatever the path, the user callback is posted: it runs from a
// zero-delay timer of the host's Clock (or from the destructor, cancelled), never from inside
// c-ares or `query_*`.
// That single rule is what makes re-entrancy safe: user code never runs while c-ares or this
// file is in the middle of something.
#include <ares.h>
#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <random>
#include <unordered_map>
#include <unordered_set>

#include "ares/status.h"
#include "core/dns_cache.h"
#include "core/dns_wire.h"
#include "mailq/ares/resolver.h"
#include "mailq/net.h"

namespace mailq::ares {

using mailq::detail::dns_type_name;
using mailq::detail::DnsCache;
using mailq::detail::DnsCacheEntry;
using mailq::detail::kDnsTypeA;
using mailq::detail::kDnsTypeAaaa;
using mailq::detail::kDnsTypeMx;
using mailq::detail::kDnsTypeTlsa;
using mailq::detail::kDnsTypeTxt;
using mailq::detail::scan_dns_ttls;

namespace {

constexpr int kDnsClassIn = 1;
constexpr int kEdnsPayloadSize = 1232;      // DNS flag day 2020: no IP fragmentation
constexpr unsigned char kDnsFlagAd = 0x20;  // in the fourth header octet (RFC 4035 3.2.3)
constexpr int kMaxAddrTtls = 256;
// CNAMEs followed for a server that does not follow them (a loop ends here too).
constexpr int kMaxCnameLinks = 8;

// Lowercase, no trailing dot: the form of cache keys and of the names queried.
std::string normalize_name(std::string_view name) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  std::string out(name);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// Checks a name before it reaches c-ares. Returns "" when it is acceptable.
std::string name_problem(std::string_view name) {
  if (name.empty()) return "empty name";
  if (name.size() > 253) return "name longer than 253 octets";
  std::size_t label = 0;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const auto c = static_cast<unsigned char>(name[i]);
    if (c == '.') {
      if (label == 0) return "empty label";
      label = 0;
      continue;
    }
    if (c <= 0x20 || c == 0x7f) return fmt::format("control character or space at offset {}", i);
    if (c == '\\') return fmt::format("backslash at offset {}", i);
    if (c > 0x7f) return "non-ASCII name (give an IDN in its A-label form)";
    if (++label > 63) return "label longer than 63 octets";
  }
  return "";
}

std::string address_text(int family, const void* addr) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (uv_inet_ntop(family, addr, buf, sizeof buf) != 0) return {};
  return buf;
}

std::string strip_trailing_dots(const char* host) {
  std::string s = host ? host : "";
  while (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

Duration as_duration(TimePoint t) {
  return std::chrono::duration_cast<Duration>(t.time_since_epoch());
}

// The answer to one RRset lookup, as the cache stores it.
struct RrResult {
  DnsCacheEntry entry;
  bool from_cache = false;
};

using RrCallback = std::function<void(const RrResult&)>;

}  // namespace

// --- Nameserver -------------------------------------------------------------------------------

Result<Nameserver> Nameserver::parse(std::string_view text) {
  constexpr std::string_view kExpected = "(expected \"ip\", \"ip:port\" or \"[ipv6]:port\")";
  auto hp = HostPort::parse(text);
  if (!hp)
    return Error(errc::invalid_parameter,
                 fmt::format("nameserver {} {}", hp.error().message, kExpected));
  // A resolver cannot need a resolver: a name is refused.
  if (!is_ip_literal(hp->host))
    return Error(errc::invalid_parameter,
                 fmt::format("nameserver \"{}\": not an IP address {}", text, kExpected));
  Nameserver ns;
  ns.address = std::move(hp->host);
  if (hp->port != 0) ns.port = hp->port;
  return ns;
}

std::string Nameserver::to_string() const {
  return HostPort{address, port}.to_string();
}

// --- the implementation -----------------------------------------------------------------------

struct AresResolver::Impl {
  struct PollHandle {
    uv_poll_t poll;
    Impl* impl;
    ares_socket_t fd;
  };

  // One DNS query in flight for (name, type). Owned by c-ares (it is the query's `arg`) until
  // its callback has run; `waiters` is emptied early when the query deadline expires.
  struct Lookup {
    Impl* impl = nullptr;
    std::string key;
    std::string name;
    std::uint16_t type = 0;
    int links = 0;  ///< CNAMEs followed to get here (a server that does not follow them)
    std::vector<RrCallback> waiters;
    bool has_deadline = false;
    std::multimap<std::uint64_t, Lookup*>::iterator deadline;
    std::uint16_t qid = 0;  ///< the DNS message id of the query on the wire
    bool has_qid = false;   ///< `qid` is in ids_in_flight
    bool edns = false;      ///< the query carries an OPT record
  };

  uv_loop_t* loop = nullptr;
  Clock* clock = nullptr;  // posts the callbacks
  AresResolverOptions options;
  ErrorReporter own_reporter;  // when the host gave none
  std::string servers_text;
  std::vector<std::string> servers;
  ares_channel channel = nullptr;
  bool library_initialized = false;
  uv_timer_t* ares_timer = nullptr;      // c-ares timeouts
  uv_timer_t* deadline_timer = nullptr;  // query_deadline
  TimerId post_timer = kNoTimer;         // the clock's timer that delivers `posted`
  std::unordered_map<ares_socket_t, PollHandle*> polls;
  std::unordered_map<std::string, Lookup*> in_flight;
  std::unordered_set<std::uint16_t> ids_in_flight;  // DNS message ids of the queries out
  std::random_device random_ids;                    // the kernel's CSPRNG (getrandom)
  bool edns_refused = false;  // a server answered FORMERR to EDNS: no OPT record from now on
  std::multimap<std::uint64_t, Lookup*> deadlines;
  DnsCache cache;
  // Posted work; the argument says whether to deliver a cancellation instead.
  std::deque<std::function<void(bool cancelled)>> posted;
  // Cleared by the destructor, so that a callback loop notices it ran the resolver down.
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);
  bool destroying = false;
  AresResolverStats counters;

  explicit Impl(DnsCachePolicy policy) : cache(policy) {}

  ~Impl() {
    if (library_initialized) ares_library_cleanup();
  }

  // --- time ---------------------------------------------------------------------------------

  DnsCache::Time now() const {
    if (options.cache_clock != nullptr) return as_duration(options.cache_clock->now());
    return Duration{static_cast<Duration::rep>(uv_now(loop))};
  }

  // --- handles ------------------------------------------------------------------------------

  uv_timer_t* new_timer() {
    auto* t = new uv_timer_t;
    uv_timer_init(loop, t);
    t->data = this;
    return t;
  }

  static void close_timer(uv_timer_t*& t) {
    if (t == nullptr) return;
    uv_timer_stop(t);
    t->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(t),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    t = nullptr;
  }

  static void close_poll(PollHandle* p) {
    uv_poll_stop(&p->poll);
    uv_close(reinterpret_cast<uv_handle_t*>(&p->poll),
             [](uv_handle_t* h) { delete static_cast<PollHandle*>(h->data); });
  }

  // c-ares tells which sockets it wants watched, and for what.
  static void on_sock_state(void* data, ares_socket_t fd, int readable, int writable) {
    auto* self = static_cast<Impl*>(data);
    auto it = self->polls.find(fd);
    if (!readable && !writable) {
      if (it != self->polls.end()) {
        close_poll(it->second);
        self->polls.erase(it);
      }
      return;
    }
    PollHandle* p = nullptr;
    if (it == self->polls.end()) {
      p = new PollHandle{};
      p->impl = self;
      p->fd = fd;
      if (uv_poll_init_socket(self->loop, &p->poll, fd) != 0) {
        // Unwatchable socket: its query still ends through the c-ares timeout.
        delete p;
        return;
      }
      p->poll.data = p;
      self->polls.emplace(fd, p);
    } else {
      p = it->second;
    }
    const int events = (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0);
    uv_poll_start(&p->poll, events, &Impl::on_poll);
  }

  static void on_poll(uv_poll_t* handle, int status, int events) {
    auto* p = static_cast<PollHandle*>(handle->data);
    Impl* self = p->impl;
    const ares_socket_t fd = p->fd;
    ares_socket_t rfd = ARES_SOCKET_BAD;
    ares_socket_t wfd = ARES_SOCKET_BAD;
    if (status < 0) {
      // A socket error: let c-ares find it by reading and writing (it then fails over).
      rfd = wfd = fd;
    } else {
      if (events & UV_READABLE) rfd = fd;
      if (events & UV_WRITABLE) wfd = fd;
    }
    // May close `p` (through on_sock_state); its memory lives until the close callback.
    ares_process_fd(self->channel, rfd, wfd);
    self->arm_ares_timer();
  }

  static void on_ares_timer(uv_timer_t* t) {
    auto* self = static_cast<Impl*>(t->data);
    ares_process_fd(self->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    self->arm_ares_timer();
  }

  void arm_ares_timer() {
    if (destroying || channel == nullptr) return;
    timeval tv{};
    if (ares_timeout(channel, nullptr, &tv) == nullptr) {
      uv_timer_stop(ares_timer);
      return;
    }
    // Rounded up: waking before c-ares' deadline would only spin.
    const auto ms = static_cast<std::uint64_t>(tv.tv_sec) * 1000u +
                    static_cast<std::uint64_t>((tv.tv_usec + 999) / 1000);
    uv_timer_start(ares_timer, &Impl::on_ares_timer, ms, 0);
  }

  // --- posting ------------------------------------------------------------------------------

  // Posting goes through the host's clock: one zero-delay timer delivers everything posted
  // before it ran. (The LoopClock runs zero-delay work after an I/O poll, so a host
  // re-querying cached names from its callbacks cannot keep the loop from reading sockets.)
  void post(std::function<void(bool)> fn) {
    posted.push_back(std::move(fn));
    if (!destroying && post_timer == kNoTimer) {
      post_timer = clock->schedule(Duration{0}, [this] { deliver_posted(); });
    }
  }

  // Returns false when the callback destroyed the resolver.
  bool run_user(const std::function<void(bool)>& fn, bool cancelled) {
    std::shared_ptr<bool> still_alive = alive;
    // Never let a host exception unwind through libuv or c-ares.
    std::string what;
    try {
      fn(cancelled);
      return *still_alive;
    } catch (const std::exception& e) {
      what = std::string("callback threw: ") + e.what();
    } catch (...) {
      what = "callback threw a non-standard exception";
    }
    // A callback that destroyed the resolver and then threw leaves nothing to count or report
    // with; during the destructor's cancellations the resolver is still here.
    if (*still_alive) ++counters.callback_exceptions;
    if (*still_alive || cancelled) report("mailq AresResolver: " + what);
    return *still_alive;
  }

  void report(const std::string& message) {
    ErrorReporter* r = options.error_reporter ? options.error_reporter : &own_reporter;
    r->report(message, clock->now());
  }

  void deliver_posted() {
    post_timer = kNoTimer;
    // Only what was posted before this run: what the callbacks post waits for the next
    // timer.
    std::size_t n = posted.size();
    while (n-- > 0 && !posted.empty()) {
      auto fn = std::move(posted.front());
      posted.pop_front();
      // A callback that destroys the resolver has had the rest drained (cancelled) by it.
      if (!run_user(fn, false)) return;
    }
    if (!posted.empty() && post_timer == kNoTimer) {
      post_timer = clock->schedule(Duration{0}, [this] { deliver_posted(); });
    }
  }

  // --- lookups ------------------------------------------------------------------------------

  static std::string lookup_key(const std::string& name, std::uint16_t type) {
    return fmt::format("{}/{}", type, name);
  }

  static RrResult cancelled_result() {
    RrResult r;
    r.entry.status = DnsStatus::cancelled;
    r.entry.detail = "cancelled";
    return r;
  }

  // One user query of a single RRset type: the name checked, the lookup, the answer made
  // by `fill` from the cache entry and posted (cancelled when the resolver goes first).
  template <class Answer, class Fill>
  void query(const std::string& raw, std::uint16_t type, Fill fill,
             std::function<void(Answer)> done) {
    auto deliver = [this](std::function<void(Answer)> cb, Answer a) {
      post([cb = std::move(cb), a = std::move(a)](bool cancelled) mutable {
        if (cancelled) {
          Answer c;
          c.status = DnsStatus::cancelled;
          c.detail = "cancelled";
          cb(std::move(c));
        } else {
          cb(std::move(a));
        }
      });
    };
    const std::string name = normalize_name(raw);
    if (auto problem = name_problem(name); !problem.empty()) {
      Answer a;
      a.status = DnsStatus::error;
      a.detail =
          fmt::format("\"{}\" {}: invalid domain name: {}", raw, dns_type_name(type), problem);
      deliver(std::move(done), std::move(a));
      return;
    }
    lookup(name, type, [deliver, fill, done = std::move(done)](const RrResult& r) {
      Answer a;
      a.status = r.entry.status;
      a.detail = r.entry.detail;
      fill(r.entry, a);
      deliver(done, std::move(a));
    });
  }

  // Answers (name, type) through `cb`, possibly synchronously: `cb` is internal and must
  // only record or post.
  void lookup(const std::string& name, std::uint16_t type, RrCallback cb, int links = 0) {
    if (destroying) {
      cb(cancelled_result());
      return;
    }
    if (options.cache.enabled) {
      if (auto hit = cache.find(name, type, now())) {
        RrResult r;
        r.entry = std::move(*hit);
        r.from_cache = true;
        if (r.entry.status != DnsStatus::ok) r.entry.detail += " (cached)";
        cb(r);
        return;
      }
    }
    std::string key = lookup_key(name, type);
    if (auto it = in_flight.find(key); it != in_flight.end()) {
      ++counters.coalesced;
      it->second->waiters.push_back(std::move(cb));
      return;
    }
    auto* lk = new Lookup;
    lk->impl = this;
    lk->key = key;
    lk->name = name;
    lk->type = type;
    lk->links = links;
    lk->waiters.push_back(std::move(cb));
    in_flight.emplace(std::move(key), lk);
    if (options.query_deadline > Duration{0}) {
      const auto due = uv_now(loop) + static_cast<std::uint64_t>(options.query_deadline.count());
      lk->deadline = deadlines.emplace(due, lk);
      lk->has_deadline = true;
      arm_deadline_timer();
    }
    ++counters.queries_sent;
    send(lk);
  }

  // What ares_query does, by hand, so that the AD bit can be set: a validating server says
  // whether it validated an answer (its AD bit) only to a query that has AD or DO set (RFC
  // 6840 section 5.7), and c-ares 1.18.1 sets neither. As ares_query, the message id is
  // random (ares_send keeps the one it is given) and unique among the queries out, and EDNS is
  // left out once a server refused it.
  void send(Lookup* lk) {
    lk->edns = options.edns && !edns_refused;
    unsigned char* q = nullptr;
    int qlen = 0;
    std::uint16_t id = 0;
    do {
      id = static_cast<std::uint16_t>(random_ids());
    } while (ids_in_flight.count(id) != 0);
    const int rc = ares_create_query(lk->name.c_str(), kDnsClassIn, lk->type, id, 1, &q, &qlen,
                                     lk->edns ? kEdnsPayloadSize : 0);
    if (rc != ARES_SUCCESS) {
      on_answer(lk, rc, 0, nullptr, 0);  // `lk` is gone
      return;
    }
    lk->qid = id;
    lk->has_qid = true;
    ids_in_flight.insert(id);
    if (options.dnssec && qlen > 3) q[3] |= kDnsFlagAd;
    // c-ares may call back before returning: `lk` is then gone.
    ::ares_send(channel, q, qlen, &Impl::on_sent, lk);
    ares_free_string(q);
    arm_ares_timer();
  }

  // ares_send reports any response as a success: the RCODE is read here as ares_query would.
  static void on_sent(void* arg, int status, int timeouts, unsigned char* abuf, int alen) {
    auto* lk = static_cast<Lookup*>(arg);
    Impl* self = lk->impl;
    // A server that does not know EDNS answers FORMERR without an OPT record; c-ares then
    // turns EDNS off in the channel for good, which only ares_query reads: from now on the
    // queries built here go without it too, this one again at once.
    if (status == ARES_SUCCESS && lk->edns && !self->destroying && abuf != nullptr && alen >= 12 &&
        (abuf[3] & 0x0f) == 1 && ((abuf[10] << 8) | abuf[11]) == 0) {
      self->edns_refused = true;
      self->release_id(lk);
      self->send(lk);
      return;
    }
    if (status == ARES_SUCCESS) {
      if (abuf == nullptr || alen < 12) {
        status = ARES_EBADRESP;
      } else {
        const int rcode = abuf[3] & 0x0f;
        const int ancount = (abuf[6] << 8) | abuf[7];
        switch (rcode) {
          case 0:
            status = ancount > 0 ? ARES_SUCCESS : ARES_ENODATA;
            break;
          case 1:
            status = ARES_EFORMERR;
            break;
          case 2:
            status = ARES_ESERVFAIL;
            break;
          case 3:
            status = ARES_ENOTFOUND;
            break;
          case 4:
            status = ARES_ENOTIMP;
            break;
          case 5:
            status = ARES_EREFUSED;
            break;
          default:
            status = ARES_EBADRESP;
            break;
        }
      }
    }
    on_answer(arg, status, timeouts, abuf, alen);
  }

  void release_id(Lookup* lk) {
    if (lk->has_qid) ids_in_flight.erase(lk->qid);
    lk->has_qid = false;
  }

  void forget(Lookup* lk) {
    release_id(lk);
    if (auto it = in_flight.find(lk->key); it != in_flight.end() && it->second == lk) {
      in_flight.erase(it);
    }
    if (lk->has_deadline) {
      deadlines.erase(lk->deadline);
      lk->has_deadline = false;
      // An armed timer keeps the host's loop alive: follow the earliest remaining deadline.
      arm_deadline_timer();
    }
  }

  static void on_answer(void* arg, int status, int /*timeouts*/, unsigned char* abuf, int alen) {
    auto* lk = static_cast<Lookup*>(arg);
    Impl* self = lk->impl;
    std::optional<std::uint32_t> ttl;
    std::string alias_of;
    RrResult r = self->interpret(status, abuf, alen, *lk, ttl, alias_of);
    if (!alias_of.empty() && !self->destroying && lk->links < kMaxCnameLinks) {
      self->chase(lk, std::move(alias_of), ttl, r.entry.secure);
      return;
    }
    if (!self->destroying && self->options.cache.enabled) {
      (void)self->cache.store(lk->name, lk->type, r.entry, ttl, self->now());
    }
    self->forget(lk);
    auto waiters = std::move(lk->waiters);
    delete lk;
    for (auto& w : waiters) w(r);
  }

  // The server answered `lk` with a CNAME chain ending at `target` and nothing of the type
  // (it does not follow chains, or the target is out of its zone): ask for the target, as a
  // resolver that follows CNAMEs does. The answer is cached under the target; the waiters get
  // it with the alias noted.
  void chase(Lookup* lk, std::string target, std::optional<std::uint32_t> chain_ttl,
             bool chain_secure) {
    forget(lk);
    auto waiters = std::move(lk->waiters);
    const std::string from = lk->name;
    const std::uint16_t type = lk->type;
    const int links = lk->links + 1;
    delete lk;
    ++counters.cname_chased;
    lookup(
        target, type,
        [this, waiters = std::move(waiters), from, type, target, chain_ttl,
         chain_secure](const RrResult& got) {
          RrResult out = got;
          if (out.entry.canonical.empty()) out.entry.canonical = target;
          out.entry.secure = out.entry.secure && chain_secure;
          if (out.entry.status != DnsStatus::ok)
            out.entry.detail = from + " is an alias of " + target + ": " + out.entry.detail;
          // The alias keeps the answer no longer than its own chain may be kept.
          if (!destroying && options.cache.enabled && out.entry.status != DnsStatus::cancelled)
            (void)cache.store(from, type, out.entry, chain_ttl, now());
          for (auto& w : waiters) w(out);
        },
        links);
  }

  // Turns a c-ares completion into an answer, with the TTL the cache should use, and the end
  // of a CNAME chain the server did not follow (`alias_of`, else left empty).
  RrResult interpret(int status, const unsigned char* abuf, int alen, const Lookup& lk,
                     std::optional<std::uint32_t>& ttl, std::string& alias_of) {
    const std::string what = fmt::format("{} {}", lk.name, dns_type_name(lk.type));
    std::optional<mailq::detail::DnsTtls> ttls;
    if (abuf != nullptr && alen > 0) {
      ttls = scan_dns_ttls(abuf, static_cast<std::size_t>(alen), lk.type);
    }
    RrResult r;
    if (status == ARES_SUCCESS && lk.type == kDnsTypeTlsa) {
      if (!ttls) {
        status = ARES_EBADRESP;
      } else if (ttls->tlsa.empty()) {
        status = ARES_ENODATA;
      } else {
        r.entry.tlsa = ttls->tlsa;
        r.entry.status = DnsStatus::ok;
        ttl = ttls->answer_ttl;
      }
    } else if (status == ARES_SUCCESS) {
      status = parse_records(abuf, alen, lk.type, r.entry, ttl);
      if (status == ARES_SUCCESS && r.entry.canonical == lk.name) r.entry.canonical.clear();
      if (status == ARES_SUCCESS && ttls && ttls->answer_ttl) {
        ttl = ttl ? std::min(*ttl, *ttls->answer_ttl) : *ttls->answer_ttl;
      }
    }
    if ((status == ARES_ENODATA || status == ARES_SUCCESS) && r.entry.status != DnsStatus::ok &&
        ttls && !ttls->cname_target.empty()) {
      alias_of = ttls->cname_target;
    }
    if (status != ARES_SUCCESS) {
      auto m = detail::map_ares_status(status, what, servers_text);
      r.entry = DnsCacheEntry{};
      r.entry.status = m.status;
      r.entry.detail = std::move(m.detail);
      ttl.reset();
      if ((m.status == DnsStatus::nxdomain || m.status == DnsStatus::no_data) && ttls) {
        ttl = ttls->negative_ttl;
        if (ttls->answer_ttl) {
          // A CNAME chain ending in nothing: the negative answer is only as good as the
          // chain. Servers often omit the SOA here (unbound does), so bound the default too.
          const auto fallback = static_cast<std::uint32_t>(
              std::chrono::duration_cast<std::chrono::seconds>(options.cache.negative_ttl).count());
          ttl = std::min(ttl.value_or(fallback), *ttls->answer_ttl);
        }
      }
    }
    // Records or a denial the server validated; a failure is never secure.
    r.entry.secure = options.dnssec && ttls && ttls->authenticated && !is_transient(r.entry.status);
    return r;
  }

  // Parses the records of a successful response into `out`. Returns a c-ares status;
  // ARES_ENODATA when the answer holds no record of the type (a CNAME chain ending nowhere).
  static int parse_records(const unsigned char* abuf, int alen, std::uint16_t type,
                           DnsCacheEntry& out, std::optional<std::uint32_t>& ttl) {
    if (type == kDnsTypeMx) {
      ares_mx_reply* head = nullptr;
      const int rc = ares_parse_mx_reply(abuf, alen, &head);
      if (rc != ARES_SUCCESS) return rc;
      for (auto* mx = head; mx != nullptr; mx = mx->next) {
        // The null MX "." comes out as "" once its dot is gone: that is the contract.
        out.mx.push_back(MxRecord{mx->priority, strip_trailing_dots(mx->host)});
      }
      ares_free_data(head);
      if (out.mx.empty()) return ARES_ENODATA;
      out.status = DnsStatus::ok;
      return ARES_SUCCESS;
    }
    if (type == kDnsTypeTxt) {
      ares_txt_ext* head = nullptr;
      const int rc = ares_parse_txt_reply_ext(abuf, alen, &head);
      if (rc != ARES_SUCCESS) return rc;
      // A record's strings come as consecutive entries, the first marked record_start.
      for (auto* t = head; t != nullptr; t = t->next) {
        if (t->record_start || out.texts.empty()) out.texts.emplace_back();
        out.texts.back().append(reinterpret_cast<const char*>(t->txt), t->length);
      }
      ares_free_data(head);
      if (out.texts.empty()) return ARES_ENODATA;
      out.status = DnsStatus::ok;
      return ARES_SUCCESS;
    }
    hostent* host = nullptr;
    int count = kMaxAddrTtls;
    int rc = ARES_SUCCESS;
    int family = AF_INET;
    std::vector<std::uint32_t> record_ttls;
    if (type == kDnsTypeA) {
      std::vector<ares_addrttl> addrttls(kMaxAddrTtls);
      rc = ares_parse_a_reply(abuf, alen, &host, addrttls.data(), &count);
      for (int i = 0; rc == ARES_SUCCESS && i < count; ++i) {
        record_ttls.push_back(static_cast<std::uint32_t>(std::max(addrttls[i].ttl, 0)));
      }
    } else {
      family = AF_INET6;
      std::vector<ares_addr6ttl> addrttls(kMaxAddrTtls);
      rc = ares_parse_aaaa_reply(abuf, alen, &host, addrttls.data(), &count);
      for (int i = 0; rc == ARES_SUCCESS && i < count; ++i) {
        record_ttls.push_back(static_cast<std::uint32_t>(std::max(addrttls[i].ttl, 0)));
      }
    }
    if (rc == ARES_SUCCESS && host != nullptr && host->h_name != nullptr) {
      // c-ares follows a chain inside the answer: h_name is where it ended.
      std::string canonical = strip_trailing_dots(host->h_name);
      for (auto& c : canonical) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      out.canonical = std::move(canonical);
    }
    if (rc == ARES_SUCCESS && host != nullptr && host->h_addrtype == family) {
      // The hostent has every address; the TTL array may have been capped.
      for (char** a = host->h_addr_list; a != nullptr && *a != nullptr; ++a) {
        std::string text = address_text(family, *a);
        if (!text.empty()) out.addresses.push_back(std::move(text));
      }
    }
    if (host != nullptr) ares_free_hostent(host);
    if (rc != ARES_SUCCESS) return rc;
    if (out.addresses.empty()) return ARES_ENODATA;
    if (!record_ttls.empty()) ttl = *std::min_element(record_ttls.begin(), record_ttls.end());
    out.status = DnsStatus::ok;
    return ARES_SUCCESS;
  }

  // --- the query deadline -------------------------------------------------------------------

  void arm_deadline_timer() {
    if (destroying) return;
    if (deadlines.empty()) {
      uv_timer_stop(deadline_timer);
      return;
    }
    const std::uint64_t due = deadlines.begin()->first;
    const std::uint64_t now_ms = uv_now(loop);
    uv_timer_start(deadline_timer, &Impl::on_deadline_timer, due > now_ms ? due - now_ms : 0, 0);
  }

  static void on_deadline_timer(uv_timer_t* t) {
    auto* self = static_cast<Impl*>(t->data);
    const std::uint64_t now_ms = uv_now(self->loop);
    while (!self->deadlines.empty() && self->deadlines.begin()->first <= now_ms) {
      Lookup* lk = self->deadlines.begin()->second;
      self->forget(lk);  // a new request for the name starts a fresh query
      ++self->counters.deadline_expired;
      RrResult r;
      r.entry.status = DnsStatus::timeout;
      r.entry.detail = fmt::format("{} {}: no answer within the {} ms query deadline ({})",
                                   lk->name, dns_type_name(lk->type),
                                   self->options.query_deadline.count(), self->servers_text);
      auto waiters = std::move(lk->waiters);
      lk->waiters.clear();
      for (auto& w : waiters) w(r);
      // `lk` stays with c-ares; its late answer still feeds the cache.
    }
    self->arm_deadline_timer();
  }

  // --- teardown -----------------------------------------------------------------------------

  void shutdown() {
    destroying = true;
    *alive = false;
    if (channel != nullptr) {
      // Completes every query with ARES_EDESTRUCTION (their waiters post cancellations) and
      // closes its sockets through on_sock_state.
      ares_destroy(channel);
      channel = nullptr;
    }
    for (auto& [fd, p] : polls) close_poll(p);
    polls.clear();
    close_timer(ares_timer);
    close_timer(deadline_timer);
    if (post_timer != kNoTimer) {
      clock->cancel(post_timer);
      post_timer = kNoTimer;
    }
    // Callbacks may post more (a query issued from a callback is cancelled at once).
    while (!posted.empty()) {
      auto fn = std::move(posted.front());
      posted.pop_front();
      run_user(fn, true);
    }
  }
};

// --- AresResolver -----------------------------------------------------------------------------

AresResolver::AresResolver(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

AresResolver::~AresResolver() {
  impl_->shutdown();
}

Result<std::unique_ptr<AresResolver>> AresResolver::open(uv_loop_t* loop, Clock& clock,
                                                         AresResolverOptions options) {
  if (loop == nullptr) return Error(errc::invalid_parameter, "AresResolver: null loop");
  if (options.timeout < Duration{1} || options.timeout.count() > 3'600'000) {
    return Error(errc::invalid_parameter,
                 fmt::format("AresResolver: timeout {} ms out of range (1 ms to 1 hour)",
                             options.timeout.count()));
  }
  if (options.tries < 1 || options.tries > 16) {
    return Error(errc::invalid_parameter,
                 fmt::format("AresResolver: tries {} out of range (1 to 16)", options.tries));
  }
  if (options.query_deadline < Duration{0}) {
    return Error(errc::invalid_parameter, "AresResolver: negative query_deadline");
  }
  std::vector<Nameserver> servers;
  for (const auto& text : options.nameservers) {
    auto ns = Nameserver::parse(text);
    if (!ns) return ns.error();
    servers.push_back(std::move(*ns));
  }

  auto impl = std::make_unique<Impl>(options.cache);
  impl->loop = loop;
  impl->clock = &clock;
  impl->options = std::move(options);

  int rc = ares_library_init(ARES_LIB_INIT_ALL);
  if (rc != ARES_SUCCESS) {
    return Error(errc::resolver_failure,
                 fmt::format("c-ares library init failed: {}", ares_strerror(rc)));
  }
  impl->library_initialized = true;

  ares_options opts{};
  int mask = 0;
  opts.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
  if (impl->options.edns) {
    opts.flags |= ARES_FLAG_EDNS;
    opts.ednspsz = kEdnsPayloadSize;
    mask |= ARES_OPT_EDNSPSZ;
  }
  mask |= ARES_OPT_FLAGS;
  opts.timeout = static_cast<int>(impl->options.timeout.count());
  mask |= ARES_OPT_TIMEOUTMS;
  opts.tries = impl->options.tries;
  mask |= ARES_OPT_TRIES;
  mask |= impl->options.rotate ? ARES_OPT_ROTATE : ARES_OPT_NOROTATE;
  // DNS only: never the hosts file (MX and address answers must come from the nameservers).
  char lookups[] = "b";
  opts.lookups = lookups;
  mask |= ARES_OPT_LOOKUPS;
  // No search list: names are queried as given.
  opts.domains = nullptr;
  opts.ndomains = 0;
  mask |= ARES_OPT_DOMAINS;
  opts.sock_state_cb = &Impl::on_sock_state;
  opts.sock_state_cb_data = impl.get();
  mask |= ARES_OPT_SOCK_STATE_CB;

  rc = ares_init_options(&impl->channel, &opts, mask);
  if (rc != ARES_SUCCESS) {
    impl->channel = nullptr;
    return Error(errc::resolver_failure,
                 fmt::format("c-ares channel init failed: {}", ares_strerror(rc)));
  }

  if (const std::string& src = impl->options.source_address; !src.empty()) {
    in_addr v4{};
    in6_addr v6{};
    if (uv_inet_pton(AF_INET, src.c_str(), &v4) == 0) {
      ares_set_local_ip4(impl->channel, ntohl(v4.s_addr));
    } else if (uv_inet_pton(AF_INET6, src.c_str(), &v6) == 0) {
      ares_set_local_ip6(impl->channel, reinterpret_cast<const unsigned char*>(&v6));
    } else {
      ares_destroy(impl->channel);
      impl->channel = nullptr;
      return Error(errc::invalid_parameter,
                   fmt::format("source address \"{}\" is not a numeric IP address", src));
    }
  }

  if (!servers.empty()) {
    std::vector<ares_addr_port_node> nodes(servers.size());
    for (std::size_t i = 0; i < servers.size(); ++i) {
      auto& n = nodes[i];
      n.next = i + 1 < nodes.size() ? &nodes[i + 1] : nullptr;
      if (uv_inet_pton(AF_INET, servers[i].address.c_str(), &n.addr.addr4) == 0) {
        n.family = AF_INET;
      } else {
        n.family = AF_INET6;
        uv_inet_pton(AF_INET6, servers[i].address.c_str(), &n.addr.addr6);
      }
      n.udp_port = servers[i].port;
      n.tcp_port = servers[i].port;
    }
    rc = ares_set_servers_ports(impl->channel, nodes.data());
    if (rc != ARES_SUCCESS) {
      ares_destroy(impl->channel);
      impl->channel = nullptr;
      return Error(errc::resolver_failure,
                   fmt::format("c-ares rejected the nameservers: {}", ares_strerror(rc)));
    }
  }

  // Read back what c-ares uses (the system's servers when none were given), for the log.
  ares_addr_port_node* list = nullptr;
  if (ares_get_servers_ports(impl->channel, &list) == ARES_SUCCESS) {
    for (auto* n = list; n != nullptr; n = n->next) {
      Nameserver ns;
      ns.address = address_text(n->family, &n->addr);
      ns.port = static_cast<std::uint16_t>(n->udp_port != 0 ? n->udp_port : 53);
      impl->servers.push_back(ns.to_string());
    }
    ares_free_data(list);
  }
  if (impl->servers.empty()) {
    ares_destroy(impl->channel);
    impl->channel = nullptr;
    return Error(errc::resolver_failure, "c-ares has no nameserver to use");
  }
  impl->servers_text = fmt::format("{}", fmt::join(impl->servers, ", "));

  impl->ares_timer = impl->new_timer();
  impl->deadline_timer = impl->new_timer();
  return std::unique_ptr<AresResolver>(new AresResolver(std::move(impl)));
}

void AresResolver::query_mx(const std::string& domain, std::function<void(MxAnswer)> done) {
  impl_->query<MxAnswer>(
      domain, kDnsTypeMx,
      [](const DnsCacheEntry& e, MxAnswer& a) {
        a.records = e.mx;
        a.secure = e.secure;
      },
      std::move(done));
}

void AresResolver::query_txt(const std::string& name, std::function<void(TxtAnswer)> done) {
  impl_->query<TxtAnswer>(
      name, kDnsTypeTxt,
      [](const DnsCacheEntry& e, TxtAnswer& a) {
        a.records = e.texts;
        a.secure = e.secure;
      },
      std::move(done));
}

void AresResolver::query_tlsa(const std::string& name, std::function<void(TlsaAnswer)> done) {
  impl_->query<TlsaAnswer>(
      name, kDnsTypeTlsa,
      [](const DnsCacheEntry& e, TlsaAnswer& a) {
        a.records = e.tlsa;
        a.secure = e.secure;
      },
      std::move(done));
}

namespace {

// Both halves of an address request: A and AAAA, merged when both are in.
struct AddressJoin {
  int remaining = 0;
  std::optional<RrResult> a;
  std::optional<RrResult> aaaa;
};

AddressAnswer merge_address_records(const std::string& host, const std::optional<RrResult>& a,
                                    const std::optional<RrResult>& aaaa, bool ipv6_first) {
  AddressAnswer out;
  const auto status = [](const std::optional<RrResult>& r) {
    return r ? r->entry.status : DnsStatus::no_data;
  };
  const auto ok = [&](const std::optional<RrResult>& r) { return status(r) == DnsStatus::ok; };
  if (ok(a) || ok(aaaa)) {
    out.status = DnsStatus::ok;
    const auto& first = ipv6_first ? aaaa : a;
    const auto& second = ipv6_first ? a : aaaa;
    for (const auto* r : {&first, &second}) {
      if (ok(*r)) {
        out.addresses.insert(out.addresses.end(), (*r)->entry.addresses.begin(),
                             (*r)->entry.addresses.end());
      }
    }
    // A transient failure of the other family is worth a line in the log.
    for (const auto* r : {&a, &aaaa}) {
      if (*r && is_transient(status(*r))) out.detail = (*r)->entry.detail;
      if (ok(*r) && out.canonical.empty()) out.canonical = (*r)->entry.canonical;
    }
    return out;
  }
  const auto details = [&] {
    std::string d;
    for (const auto* r : {&a, &aaaa}) {
      if (!*r) continue;
      if (!d.empty()) d += "; ";
      d += (*r)->entry.detail;
    }
    return d;
  };
  if (status(a) == DnsStatus::nxdomain || status(aaaa) == DnsStatus::nxdomain) {
    // NXDOMAIN is about the name, whatever the type.
    out.status = DnsStatus::nxdomain;
    out.detail = (status(a) == DnsStatus::nxdomain ? a : aaaa)->entry.detail;
    return out;
  }
  // A missing family is no evidence of absence when the other failed: transient wins.
  for (const auto* r : {&a, &aaaa}) {
    if (*r && is_transient(status(*r))) {
      out.status = status(*r);
      out.detail = details();
      return out;
    }
  }
  out.status = DnsStatus::no_data;
  out.detail = details();
  if (!a || !aaaa) return out;
  out.detail = fmt::format("{}: no A or AAAA records", host);
  return out;
}

// Whether every family that answered definitely (records, NXDOMAIN, no data) was validated:
// a family that failed for now contributes nothing, one that answered insecurely could have
// been forged.
bool families_secure(const std::optional<RrResult>& a, const std::optional<RrResult>& aaaa) {
  bool any = false;
  for (const auto* r : {&a, &aaaa}) {
    if (!*r || is_transient((*r)->entry.status)) continue;
    if (!(*r)->entry.secure) return false;
    any = true;
  }
  return any;
}

AddressAnswer merge_addresses(const std::string& host, const std::optional<RrResult>& a,
                              const std::optional<RrResult>& aaaa, bool ipv6_first) {
  AddressAnswer merged = merge_address_records(host, a, aaaa, ipv6_first);
  merged.secure = !is_transient(merged.status) && families_secure(a, aaaa);
  return merged;
}

}  // namespace

void AresResolver::query_addresses(const std::string& host,
                                   std::function<void(AddressAnswer)> done) {
  Impl* impl = impl_.get();
  auto deliver = [impl](std::function<void(AddressAnswer)> cb, AddressAnswer a) {
    impl->post([cb = std::move(cb), a = std::move(a)](bool cancelled) mutable {
      if (cancelled) {
        AddressAnswer c;
        c.status = DnsStatus::cancelled;
        c.detail = "cancelled";
        cb(std::move(c));
      } else {
        cb(std::move(a));
      }
    });
  };
  // An address literal is its own answer (a route may name a host by address).
  if (is_ip_literal(host)) {
    AddressAnswer a;
    a.status = DnsStatus::ok;
    a.addresses.push_back(host);
    deliver(std::move(done), std::move(a));
    return;
  }
  const std::string name = normalize_name(host);
  if (auto problem = name_problem(name); !problem.empty()) {
    AddressAnswer a;
    a.status = DnsStatus::error;
    a.detail = fmt::format("\"{}\" A/AAAA: invalid host name: {}", host, problem);
    deliver(std::move(done), std::move(a));
    return;
  }
  const auto families = impl->options.families;
  const bool want_a = families != AddressFamilies::ipv6_only;
  const bool want_aaaa = families != AddressFamilies::ipv4_only;
  auto join = std::make_shared<AddressJoin>();
  join->remaining = (want_a ? 1 : 0) + (want_aaaa ? 1 : 0);
  auto finish = [join, name, deliver, ipv6_first = impl->options.ipv6_first,
                 done = std::move(done)]() {
    if (--join->remaining > 0) return;
    AddressAnswer merged = merge_addresses(name, join->a, join->aaaa, ipv6_first);
    // A cancellation is a cancellation, whatever the other half said.
    for (const auto* r : {&join->a, &join->aaaa}) {
      if (*r && (*r)->entry.status == DnsStatus::cancelled) {
        merged = AddressAnswer{};
        merged.status = DnsStatus::cancelled;
        merged.detail = "cancelled";
      }
    }
    deliver(done, std::move(merged));
  };
  if (want_a) {
    impl->lookup(name, kDnsTypeA, [join, finish](const RrResult& r) {
      join->a = r;
      finish();
    });
  }
  if (want_aaaa) {
    impl->lookup(name, kDnsTypeAaaa, [join, finish](const RrResult& r) {
      join->aaaa = r;
      finish();
    });
  }
}

void AresResolver::clear_cache() {
  impl_->cache.clear();
}

AresResolverStats AresResolver::stats() const {
  AresResolverStats s = impl_->counters;
  const auto c = impl_->cache.stats();
  s.cache_hits = c.hits;
  s.cache_misses = c.misses;
  s.cache_entries = c.entries;
  s.in_flight = impl_->in_flight.size();
  return s;
}

std::vector<std::string> AresResolver::nameservers() const {
  return impl_->servers;
}

}  // namespace mailq::ares
