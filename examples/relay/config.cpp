// mailq-relay — the configuration file: TOML in, a validated RelayConfig out.
//
// Validation is strict on purpose: a daemon that starts with a typo'd key silently ignored
// (`cylce = "1m"`) runs with a default the operator did not choose. Every key of every table is
// checked against the known ones, every value against its type and range, and the first
// problem ends the load with "FILE:LINE: key.path: what".
#include "examples/relay/config.h"

#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "mailq/address.h"

namespace mailq::relay {
namespace {

constexpr std::size_t kMaxConfigSize = 1u << 20;  // a config file, not a data file
constexpr const char* kDefaultRoute = "default-non-local-route";
constexpr const char* kDurationHint = "(use ms, s, m, h or d)";

// The first problem found; thrown inside the loader only, turned into an Error at its edge.
struct ConfigProblem {
  std::uint32_t line;
  std::string path;
  std::string what;
};

[[noreturn]] void fail(std::uint32_t line, std::string path, std::string what) {
  throw ConfigProblem{line, std::move(path), std::move(what)};
}

std::uint32_t line_of(const toml::node& n) {
  return n.source().begin.line;
}

// A string as TOML would write it, so that messages show exactly what was given.
std::string quoted(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\u{:04X}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

const char* type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a number";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::table:
      return "a table";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    default:
      return "nothing";
  }
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// One TOML table being read: knows its path for messages and refuses keys it does not know.
class Section {
 public:
  Section(const toml::table& table, std::string path) : table_(table), path_(std::move(path)) {}

  std::string path_of(std::string_view key) const {
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  }
  std::uint32_t line() const { return line_of(table_); }
  const std::string& path() const { return path_; }
  const toml::table& table() const { return table_; }

  void allow_only(std::initializer_list<std::string_view> known) const {
    for (auto&& [key, node] : table_) {
      (void)node;
      std::string_view k = key.str();
      if (std::find(known.begin(), known.end(), k) != known.end()) continue;
      std::string what = "unknown key";
      std::string_view best;
      std::size_t best_d = 3;  // suggest only close matches: a typo, not another key
      for (auto cand : known) {
        std::size_t d = edit_distance(k, cand);
        if (d < best_d) best_d = d, best = cand;
      }
      if (!best.empty()) what += fmt::format(" (did you mean \"{}\"?)", best);
      fail(key.source().begin.line, path_of(k), what);
    }
  }

  const toml::node* get(std::string_view key) const { return table_.get(key); }

  std::optional<std::string> string(std::string_view key) const {
    const toml::node* n = get(key);
    if (!n) return std::nullopt;
    if (!n->is_string())
      fail(line_of(*n), path_of(key), fmt::format("expected a string, got {}", type_name(*n)));
    std::string s = n->as_string()->get();
    if (s.find('\0') != std::string::npos)
      fail(line_of(*n), path_of(key), "contains a NUL character");
    return s;
  }

  std::optional<bool> boolean(std::string_view key) const {
    const toml::node* n = get(key);
    if (!n) return std::nullopt;
    if (!n->is_boolean())
      fail(line_of(*n), path_of(key), fmt::format("expected true or false, got {}", type_name(*n)));
    return n->as_boolean()->get();
  }

  // An integer in [min, max].
  template <class T>
  std::optional<T> integer(std::string_view key, std::int64_t min, std::int64_t max) const {
    const toml::node* n = get(key);
    if (!n) return std::nullopt;
    if (!n->is_integer())
      fail(line_of(*n), path_of(key), fmt::format("expected an integer, got {}", type_name(*n)));
    std::int64_t v = n->as_integer()->get();
    if (v < min || v > max) {
      if (min == 1 && v <= 0)
        fail(line_of(*n), path_of(key), fmt::format("{} is not allowed (must be at least 1)", v));
      if (min == 0 && v < 0) fail(line_of(*n), path_of(key), fmt::format("{} is negative", v));
      fail(line_of(*n), path_of(key), fmt::format("{} is out of range ({} to {})", v, min, max));
    }
    return static_cast<T>(v);
  }

  std::optional<double> number(std::string_view key, double min, double max,
                               bool max_inclusive) const {
    const toml::node* n = get(key);
    if (!n) return std::nullopt;
    double v = 0;
    if (n->is_floating_point())
      v = n->as_floating_point()->get();
    else if (n->is_integer())
      v = static_cast<double>(n->as_integer()->get());
    else
      fail(line_of(*n), path_of(key), fmt::format("expected a number, got {}", type_name(*n)));
    if (!(v >= min && (max_inclusive ? v <= max : v < max)))
      fail(line_of(*n), path_of(key),
           fmt::format("{} is out of range ({} to {} {})", v, min, max,
                       max_inclusive ? "inclusive" : "exclusive"));
    return v;
  }

  // A duration string; `zero_ok` for the keys where "0s" means "never" / "no limit".
  std::optional<Duration> duration(std::string_view key, bool zero_ok = false) const {
    const toml::node* n = get(key);
    if (!n) return std::nullopt;
    return duration_value(*n, path_of(key), zero_ok);
  }

  static Duration duration_value(const toml::node& n, const std::string& path, bool zero_ok) {
    if (n.is_integer() || n.is_floating_point())
      fail(line_of(n), path,
           "a duration needs a unit, as a string: \"30s\", \"15m\" " + std::string(kDurationHint));
    if (!n.is_string())
      fail(line_of(n), path,
           fmt::format("expected a duration string like \"15m\", got {}", type_name(n)));
    auto d = parse_duration(n.as_string()->get());
    if (!d) fail(line_of(n), path, d.error().message);
    if (d->count() == 0 && !zero_ok) fail(line_of(n), path, "must be longer than zero");
    return *d;
  }

  std::optional<std::vector<std::pair<std::string, const toml::node*>>> strings(
      std::string_view key) const {
    const toml::node* n = get(key);
    if (!n) return std::nullopt;
    if (!n->is_array())
      fail(line_of(*n), path_of(key),
           fmt::format("expected an array of strings, got {}", type_name(*n)));
    std::vector<std::pair<std::string, const toml::node*>> out;
    std::size_t i = 0;
    for (const toml::node& e : *n->as_array()) {
      std::string p = fmt::format("{}[{}]", path_of(key), i++);
      if (!e.is_string())
        fail(line_of(e), p, fmt::format("expected a string, got {}", type_name(e)));
      std::string s = e.as_string()->get();
      if (s.find('\0') != std::string::npos) fail(line_of(e), p, "contains a NUL character");
      out.emplace_back(std::move(s), &e);
    }
    return out;
  }

  std::optional<Section> table(std::string_view key) const {
    const toml::node* n = get(key);
    if (!n) return std::nullopt;
    if (!n->is_table())
      fail(line_of(*n), path_of(key), fmt::format("expected a table, got {}", type_name(*n)));
    return Section(*n->as_table(), path_of(key));
  }

 private:
  const toml::table& table_;
  std::string path_;
};

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

bool has_space_or_control(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](unsigned char c) { return c <= ' ' || c == 0x7f; });
}

// A listening address: "ip:port" / "[ipv6]:port" with a port in 1..65535, or the failure
// at `line` / `path` saying why not.
HostPort socket_address(std::string_view text, std::uint32_t line, const std::string& path) {
  auto hp = HostPort::parse(text);
  if (!hp) fail(line, path, hp.error().message);
  if (hp->port == 0)
    fail(line, path,
         quoted(text) +
             (text.front() == '['
                  ? " is not an address:port (IPv6 as \"[::1]:2525\")"
                  : " is not an address:port (\"127.0.0.1:2525\", IPv6 as \"[::1]:2525\")"));
  if (!is_ip_literal(hp->host))
    fail(line, path, quoted(text) + " does not start with a numeric IP address");
  return *hp;
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

// A domain pattern of a route: "example.com" or ".example.com".
std::optional<std::string> check_domain_pattern(std::string_view p) {
  if (p.empty()) return "is empty";
  std::string_view d = p.front() == '.' ? p.substr(1) : p;
  if (d.empty()) return "is a dot without a domain";
  if (d.front() == '[') return "is an address literal (route by domain name)";
  auto a = Address::parse("postmaster@" + std::string(d));
  if (!a) return "is not a domain name";
  for (std::size_t start = 0;;) {
    auto dot = d.find('.', start);
    auto label = d.substr(start, dot == std::string_view::npos ? d.npos : dot - start);
    if (label.empty() || label.size() > 63) return "is not a domain name";
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return std::nullopt;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

SmtpTimeouts read_timeouts(const Section& s) {
  SmtpTimeouts t;
  s.allow_only({"connect", "greeting", "ehlo", "starttls", "mail", "rcpt", "data_init",
                "data_block", "data_term", "rset", "quit"});
  auto set = [&](std::string_view key, Duration& field) {
    if (auto d = s.duration(key)) field = *d;
  };
  set("connect", t.connect);
  set("greeting", t.greeting);
  set("ehlo", t.ehlo);
  set("starttls", t.starttls);
  set("mail", t.mail);
  set("rcpt", t.rcpt);
  set("data_init", t.data_init);
  set("data_block", t.data_block);
  set("data_term", t.data_term);
  set("rset", t.rset);
  set("quit", t.quit);
  return t;
}

// [listen.tls]: the listener's certificate for STARTTLS.
void read_listen_tls(const Section& listen, ListenConfig& l) {
  auto tls = listen.table("tls");
  if (!tls) return;
  tls->allow_only({"certificate", "key", "required"});
  auto cert = tls->string("certificate");
  auto key = tls->string("key");
  if (!cert || cert->empty())
    fail(tls->line(), "listen.tls.certificate", "missing (the PEM certificate chain)");
  if (!key || key->empty()) fail(tls->line(), "listen.tls.key", "missing (the PEM private key)");
  l.tls_certificate = *cert;
  l.tls_key = *key;
  if (auto v = tls->boolean("required")) l.tls_required = *v;
}

// [listen.auth]: AUTH against a credentials file.
void read_listen_auth(const Section& listen, ListenConfig& l) {
  auto auth = listen.table("auth");
  if (!auth) return;
  auth->allow_only({"credentials", "clients", "required", "allow_plaintext", "max_failures"});
  auto file = auth->string("credentials");
  if (!file || file->empty())
    fail(auth->line(), "listen.auth.credentials", "missing (the file of user:hash lines)");
  l.auth_credentials = *file;
  if (auto v = auth->boolean("required")) l.auth_required = *v;
  if (auto v = auth->boolean("allow_plaintext")) l.auth_plaintext = *v;
  if (auto v = auth->integer<std::uint32_t>("max_failures", 1, 100)) l.auth_max_failures = *v;
  if (auto texts = auth->strings("clients")) {
    std::size_t i = 0;
    for (auto& [text, node] : *texts) {
      auto net = Network::parse(text);
      if (!net)
        fail(line_of(*node), fmt::format("listen.auth.clients[{}]", i), net.error().message);
      l.auth_clients.push_back(*net);
      ++i;
    }
  } else {
    l.auth_clients.push_back(*Network::parse("0.0.0.0/0"));
    l.auth_clients.push_back(*Network::parse("::/0"));
  }
  if (l.tls_certificate.empty() && !l.auth_plaintext) {
    fail(auth->line(), "listen.auth",
         "needs [listen.tls] (passwords are only taken over TLS), or allow_plaintext = true");
  }
}

void read_listen(const Section& root, RelayConfig& cfg) {
  const toml::node* n = root.get("listen");
  if (!n) return;
  ListenConfig& l = cfg.listen;
  const toml::node* address_node = n;
  std::string address_path = "listen";
  std::optional<Section> table;
  if (n->is_string()) {
    l.address = n->as_string()->get();
  } else if (n->is_table()) {
    table.emplace(*n->as_table(), "listen");
    table->allow_only({"address", "networks", "max_message_size", "max_recipients", "max_sessions",
                       "max_received_headers", "idle_timeout", "min_free_space", "tls", "auth"});
    address_node = table->get("address");
    address_path = "listen.address";
    if (!address_node) fail(table->line(), address_path, "missing (the address to listen on)");
    if (!address_node->is_string())
      fail(line_of(*address_node), address_path,
           fmt::format("expected a string, got {}", type_name(*address_node)));
    l.address = address_node->as_string()->get();
  } else {
    fail(line_of(*n), "listen",
         fmt::format("expected an address string (\"127.0.0.1:2525\") or a table, got {}",
                     type_name(*n)));
  }
  HostPort hp = socket_address(l.address, line_of(*address_node), address_path);
  l.host = std::move(hp.host);
  l.port = hp.port;

  l.networks.clear();
  if (table) {
    if (auto nets = table->strings("networks")) {
      if (nets->empty())
        fail(line_of(*table->get("networks")), "listen.networks",
             "is empty: no client could submit (remove `listen` to run without a listener)");
      std::size_t i = 0;
      for (auto& [text, node] : *nets) {
        auto net = Network::parse(text);
        if (!net) fail(line_of(*node), fmt::format("listen.networks[{}]", i), net.error().message);
        l.networks.push_back(*net);
        ++i;
      }
    }
    if (auto v = table->integer<std::uint64_t>("max_message_size", 1, 1ll << 40))
      l.max_message_size = *v;
    if (auto v = table->integer<std::uint32_t>("max_recipients", 1, 1000000)) l.max_recipients = *v;
    if (auto v = table->integer<std::uint32_t>("max_sessions", 1, 1000000)) l.max_sessions = *v;
    if (auto v = table->integer<std::uint32_t>("max_received_headers", 0, 10000))
      l.max_received_headers = *v;
    if (auto v = table->duration("idle_timeout")) l.idle_timeout = *v;
    if (auto v = table->integer<std::uint64_t>("min_free_space", 0, 1ll << 50))
      l.min_free_space = *v;
    read_listen_tls(*table, l);
    read_listen_auth(*table, l);
  }
  if (l.networks.empty()) {
    l.networks.push_back(*Network::parse("127.0.0.0/8"));
    l.networks.push_back(*Network::parse("::1/128"));
  }
}

// A list of networks in CIDR notation ("10.0.0.0/8", "::1").
std::optional<std::vector<Network>> read_networks(const Section& s, const char* key) {
  auto texts = s.strings(key);
  if (!texts) return std::nullopt;
  std::vector<Network> out;
  std::size_t i = 0;
  for (auto& [text, node] : *texts) {
    auto net = Network::parse(text);
    if (!net) fail(line_of(*node), fmt::format("{}[{}]", s.path_of(key), i), net.error().message);
    out.push_back(*net);
    ++i;
  }
  return out;
}

void read_resolver(const Section& s, RelayConfig& cfg) {
  s.allow_only({"servers",     "timeout",           "tries",          "query_deadline",
                "mx_port",     "allow_internal_mx", "rotate",         "edns",
                "families",    "ipv6_first",        "cache",          "cache_max_entries",
                "min_ttl",     "max_ttl",           "negative_ttl",   "max_negative_ttl",
                "failure_ttl", "unknown_ttl",       "source_address", "dnssec"});
  auto& r = cfg.resolver;
  if (auto v = s.boolean("dnssec")) r.dnssec = *v;
  if (auto src = s.string("source_address")) {
    if (!is_ip_literal(*src))
      fail(line_of(*s.get("source_address")), "resolver.source_address",
           quoted(*src) + " is not a numeric IP address");
    r.source_address = *src;
  }
  if (auto servers = s.strings("servers")) {
    std::size_t i = 0;
    for (auto& [text, node] : *servers) {
      auto ns = ares::Nameserver::parse(text);
      if (!ns)
        fail(line_of(*node), fmt::format("resolver.servers[{}]", i),
             quoted(text) + " is not a nameserver address (\"127.0.0.1:53\", \"[::1]:53\")");
      r.nameservers.push_back(ns->to_string());
      ++i;
    }
  }
  if (auto d = s.duration("timeout")) r.timeout = *d;
  if (auto v = s.integer<int>("tries", 1, 100)) r.tries = *v;
  if (auto d = s.duration("query_deadline", true)) r.query_deadline = *d;
  if (auto v = s.integer<std::uint16_t>("mx_port", 1, 65535)) cfg.mx_port = *v;
  if (auto nets = read_networks(s, "allow_internal_mx")) cfg.allow_internal_mx = std::move(*nets);
  if (auto v = s.boolean("rotate")) r.rotate = *v;
  if (auto v = s.boolean("edns")) r.edns = *v;
  if (auto f = s.string("families")) {
    if (*f == "both")
      r.families = ares::AddressFamilies::both;
    else if (*f == "ipv4")
      r.families = ares::AddressFamilies::ipv4_only;
    else if (*f == "ipv6")
      r.families = ares::AddressFamilies::ipv6_only;
    else
      fail(line_of(*s.get("families")), "resolver.families",
           quoted(*f) + " is not one of \"both\", \"ipv4\", \"ipv6\"");
  }
  if (auto v = s.boolean("ipv6_first")) r.ipv6_first = *v;
  DnsCachePolicy& c = r.cache;
  if (auto v = s.boolean("cache")) c.enabled = *v;
  if (auto v = s.integer<std::size_t>("cache_max_entries", 1, 100000000)) c.max_entries = *v;
  if (auto d = s.duration("min_ttl", true)) c.min_ttl = *d;
  if (auto d = s.duration("max_ttl")) c.max_ttl = *d;
  if (auto d = s.duration("negative_ttl", true)) c.negative_ttl = *d;
  if (auto d = s.duration("max_negative_ttl", true)) c.max_negative_ttl = *d;
  if (auto d = s.duration("failure_ttl", true)) c.failure_ttl = *d;
  if (auto d = s.duration("unknown_ttl", true)) c.unknown_ttl = *d;
  if (c.min_ttl > c.max_ttl)
    fail(line_of(*(s.get("min_ttl") ? s.get("min_ttl") : s.get("max_ttl"))), "resolver.min_ttl",
         "is longer than resolver.max_ttl");
}

void read_queue(const Section& s, RelayConfig& cfg) {
  s.allow_only({"cycle", "max_lifetime", "retry", "delay_notice_after", "max_message_size",
                "reporting_mta"});
  if (auto d = s.duration("cycle")) cfg.deliverer.cycle = *d;
  if (auto d = s.duration("max_lifetime")) cfg.queue.max_lifetime = *d;
  if (auto d = s.duration("delay_notice_after", true)) cfg.queue.delay_notice_after = *d;
  if (auto v = s.integer<std::uint64_t>("max_message_size", 0, 1ll << 40))
    cfg.queue.max_message_size = *v;
  if (auto v = s.string("reporting_mta")) {
    if (v->empty() || has_space_or_control(*v))
      fail(line_of(*s.get("reporting_mta")), "queue.reporting_mta",
           quoted(*v) + " is not a host name");
    cfg.queue.reporting_mta = *v;
  }
  if (auto retry = s.table("retry")) {
    retry->allow_only({"min", "max", "factor", "jitter", "schedule"});
    RetryPolicy& p = cfg.queue.retry;
    if (auto d = retry->duration("min")) p.floor = *d;
    if (auto d = retry->duration("max")) p.ceiling = *d;
    if (auto v = retry->number("factor", 1.0, 100.0, true)) p.factor = *v;
    if (auto v = retry->number("jitter", 0.0, 1.0, false)) p.jitter = *v;
    if (p.floor > p.ceiling)
      fail(line_of(*(retry->get("min") ? retry->get("min") : retry->get("max"))), "queue.retry.min",
           "is longer than queue.retry.max");
    if (const toml::node* sched = retry->get("schedule")) {
      if (!sched->is_array())
        fail(line_of(*sched), "queue.retry.schedule",
             fmt::format("expected an array of durations, got {}", type_name(*sched)));
      std::size_t i = 0;
      for (const toml::node& e : *sched->as_array())
        p.schedule.push_back(
            Section::duration_value(e, fmt::format("queue.retry.schedule[{}]", i++), false));
      if (p.schedule.empty())
        fail(line_of(*sched), "queue.retry.schedule",
             "is empty (remove it to use min, max and factor)");
    }
  }
}

void read_delivery(const Section& s, RelayConfig& cfg) {
  s.allow_only({"max_connections", "idle_timeout", "max_connection_age", "broken_tls_memory",
                "host_backoff", "max_jobs_per_destination_per_cycle", "local_names",
                "local_addresses", "source_address"});
  if (auto src = s.string("source_address")) {
    if (!is_ip_literal(*src))
      fail(line_of(*s.get("source_address")), "delivery.source_address",
           quoted(*src) + " is not a numeric IP address");
    cfg.source_address = *src;
  }
  auto& d = cfg.deliverer;
  if (auto v = s.integer<std::uint32_t>("max_connections", 1, 1000000)) d.max_connections = *v;
  if (auto v = s.duration("idle_timeout", true)) d.idle_timeout = *v;
  if (auto v = s.duration("max_connection_age")) d.max_connection_age = *v;
  if (auto v = s.duration("broken_tls_memory", true)) d.broken_tls_memory = *v;
  if (auto v = s.duration("host_backoff", true)) d.host_backoff = *v;
  if (auto v = s.integer<std::uint32_t>("max_jobs_per_destination_per_cycle", 1, 100000000))
    d.max_jobs_per_destination_per_cycle = *v;
  if (auto names = s.strings("local_names")) {
    d.local_names.clear();
    std::size_t i = 0;
    for (auto& [text, node] : *names) {
      if (text.empty() || has_space_or_control(text))
        fail(line_of(*node), fmt::format("delivery.local_names[{}]", i),
             quoted(text) + " is not a host name");
      d.local_names.push_back(lower(text));
      ++i;
    }
  }
  if (auto addrs = s.strings("local_addresses")) {
    std::size_t i = 0;
    for (auto& [text, node] : *addrs) {
      if (!is_ip_literal(text))
        fail(line_of(*node), fmt::format("delivery.local_addresses[{}]", i),
             quoted(text) + " is not a numeric IP address");
      d.local_addresses.push_back(text);
      ++i;
    }
  }
}

void read_domain_state(const Section& s, RelayConfig& cfg) {
  s.allow_only({"failure_threshold", "down_interval"});
  if (auto v = s.integer<std::uint32_t>("failure_threshold", 1, 1000000))
    cfg.domain_state.failure_threshold = *v;
  if (auto d = s.duration("down_interval")) cfg.domain_state.down_interval = *d;
}

// The signer of a route with `dkim = false`: signs nothing, in place of the relay's.
class NoSigning final : public MessageSigner {
 public:
  Result<std::string> sign(std::string_view, TimePoint) const override { return std::string(); }
};

// [[dkim.key]]: the keys that sign outgoing mail (mailq/dkim.h). Each key is read and checked
// here, so that `--check` finds an unreadable or too-short key before the relay runs.
void read_dkim(const Section& s, RelayConfig& cfg) {
  s.allow_only({"key"});
  const toml::node* keys = s.get("key");
  if (!keys) return;
  if (!keys->is_array_of_tables()) fail(line_of(*keys), "dkim.key", "expected [[dkim.key]] tables");
  std::size_t i = 0;
  for (const toml::node& n : *keys->as_array()) {
    Section k(*n.as_table(), fmt::format("dkim.key[{}]", i++));
    const std::string& p = k.path();
    k.allow_only({"domain", "selector", "key_file", "use", "canonicalization", "headers",
                  "oversign", "expiry", "identity"});
    dkim::KeyConfig key;
    auto required = [&](std::string_view name) {
      auto v = k.string(name);
      if (!v || v->empty()) fail(k.line(), k.path_of(name), "missing");
      return *v;
    };
    key.domain = required("domain");
    key.selector = required("selector");
    key.key_file = required("key_file");
    if (auto use = k.string("use")) {
      if (*use == "author")
        key.use = dkim::KeyConfig::Use::author;
      else if (*use == "fallback")
        key.use = dkim::KeyConfig::Use::fallback;
      else if (*use == "always")
        key.use = dkim::KeyConfig::Use::always;
      else
        fail(line_of(*k.get("use")), p + ".use",
             quoted(*use) + " is not \"author\", \"fallback\" or \"always\"");
    }
    if (auto c = k.string("canonicalization")) {
      const auto slash = c->find('/');
      auto header = dkim::parse_canonicalization(c->substr(0, slash));
      auto body = dkim::parse_canonicalization(slash == std::string::npos ? std::string("simple")
                                                                          : c->substr(slash + 1));
      if (!header || !body)
        fail(line_of(*k.get("canonicalization")), p + ".canonicalization",
             quoted(*c) +
                 " is not header/body canonicalization (\"relaxed/relaxed\", "
                 "\"relaxed/simple\", \"simple/simple\", \"simple/relaxed\")");
      key.header_canon = *header;
      key.body_canon = *body;
    }
    if (auto headers = k.strings("headers"))
      for (auto& [text, node] : *headers) key.headers.push_back(text);
    if (auto over = k.strings("oversign")) {
      key.oversign.emplace();
      for (auto& [text, node] : *over) key.oversign->push_back(text);
    }
    if (auto d = k.duration("expiry"))
      key.expiry = std::chrono::duration_cast<std::chrono::seconds>(*d);
    if (auto id = k.string("identity")) key.identity = *id;
    // Checked one at a time, so that the error points at this key's table.
    if (auto one = dkim::Signer::create(dkim::SignerConfig{{key}}); !one)
      fail(k.line(), p, one.error().message);
    cfg.dkim.keys.push_back(std::move(key));
  }
  auto signer = dkim::Signer::create(cfg.dkim);
  if (!signer) fail(line_of(*keys), "dkim.key", signer.error().message);
  cfg.dkim_signer = *signer;
  cfg.deliverer.signer = *signer;
}

// [mta_sts]: on unless `enabled = false`.
void read_mta_sts(const Section& root, RelayConfig& cfg) {
  uv::MtaStsOptions o;
  o.cache_file = cfg.spool + "/mta-sts.cache";
  o.source_address = cfg.source_address;
  // A policy host's name comes from DNS, as an MX host's does: the same internal networks.
  o.allow_internal = cfg.allow_internal_mx;
  if (auto s = root.table("mta_sts")) {
    s->allow_only({"enabled", "cache_file", "ca_file", "port", "fetch_timeout", "recheck",
                   "failure_backoff"});
    const auto enabled = s->boolean("enabled");
    if (auto f = s->string("cache_file")) {
      if (f->empty()) fail(line_of(*s->get("cache_file")), "mta_sts.cache_file", "is empty");
      o.cache_file = *f;
    }
    if (auto f = s->string("ca_file")) {
      const std::uint32_t line = line_of(*s->get("ca_file"));
      if (f->empty()) fail(line, "mta_sts.ca_file", "is empty (remove it to use the system CAs)");
      if (access(f->c_str(), R_OK) != 0)
        fail(line, "mta_sts.ca_file", fmt::format("{}: {}", *f, std::strerror(errno)));
      o.ca_file = *f;
    }
    if (auto p = s->integer<std::uint16_t>("port", 1, 65535)) o.port = *p;
    if (auto d = s->duration("fetch_timeout")) o.fetch_timeout = *d;
    if (auto d = s->duration("recheck")) o.recheck = *d;
    if (auto d = s->duration("failure_backoff", true)) o.failure_backoff = *d;
    if (enabled && !*enabled) return;
  }
  cfg.mta_sts = std::move(o);
}

struct RouteExtras {
  std::uint16_t port = 0;
  bool is_default = false;
  bool own_internal_mx = false;  ///< the route lists its own allow_internal_mx
  bool signs = true;             ///< dkim = false: nothing signed on this route
};

Route read_route(const Section& s, RouteExtras* extras) {
  s.allow_only({"name",
                "domains",
                "hosts",
                "mx",
                "port",
                "tls",
                "ca_file",
                "helo",
                "auth",
                "auth_over_plaintext",
                "source_address",
                "nxdomain",
                "max_connections",
                "max_messages_per_connection",
                "timeouts",
                "default",
                "allow_internal_mx",
                "eight_bit",
                "dkim",
                "mta_sts",
                "dane"});
  Route r;
  const std::string& p = s.path();
  auto name = s.string("name");
  if (!name) fail(s.line(), p + ".name", "missing (every route needs a name)");
  if (name->empty() || has_space_or_control(*name) || name->find('/') != std::string::npos)
    fail(line_of(*s.get("name")), p + ".name",
         quoted(*name) + " is not a route name (no spaces, control characters or '/')");
  r.name = *name;

  if (auto port = s.integer<std::uint16_t>("port", 1, 65535)) extras->port = *port;

  const toml::node* hosts_node = s.get("hosts");
  auto mx = s.boolean("mx");
  if (auto hosts = s.strings("hosts")) {
    if (hosts->empty())
      fail(line_of(*hosts_node), p + ".hosts", "is empty (use mx = true for MX routing)");
    std::size_t i = 0;
    for (auto& [text, node] : *hosts) {
      auto h = HostPort::parse(text);
      if (!h)
        fail(line_of(*node), fmt::format("{}.hosts[{}]", p, i),
             quoted(text) + " is not host:port (\"relay.example.net:25\", \"[2001:db8::5]:25\")");
      ++i;
      // A port written in the text wins; otherwise the route's `port` (default 25).
      RouteHost host;
      host.host = std::move(h->host);
      if (h->port != 0)
        host.port = h->port;
      else if (extras->port != 0)
        host.port = extras->port;
      r.hosts.push_back(std::move(host));
    }
  }
  if (hosts_node && mx && *mx)
    fail(line_of(*s.get("mx")), p + ".mx",
         "a route has either hosts (a smart host) or mx = true (MX lookup), not both");
  if (!hosts_node && !(mx && *mx))
    fail(s.line(), p,
         fmt::format("route {} has neither hosts nor mx = true (say how to reach it)",
                     quoted(r.name)));

  if (auto tls = s.string("tls")) {
    if (*tls == "none")
      r.tls = TlsPolicy::none;
    else if (*tls == "opportunistic")
      r.tls = TlsPolicy::opportunistic;
    else if (*tls == "required")
      r.tls = TlsPolicy::required;
    else if (*tls == "verify")
      r.tls = TlsPolicy::verify;
    else
      fail(line_of(*s.get("tls")), p + ".tls",
           quoted(*tls) + " is not one of \"none\", \"opportunistic\", \"required\", \"verify\"");
  }
  if (auto v = s.boolean("mta_sts")) r.mta_sts = *v;
  if (auto v = s.boolean("dane")) r.dane = *v;
  if (auto ca = s.string("ca_file")) {
    int line = line_of(*s.get("ca_file"));
    // An MX route verifies with it also where a domain's MTA-STS policy demands it.
    if (r.tls != TlsPolicy::verify && (r.is_static() || !r.mta_sts))
      fail(line, p + ".ca_file",
           r.is_static() ? "is only used with tls = \"verify\""
                         : "is only used with tls = \"verify\" or mta_sts = true");
    if (ca->empty()) fail(line, p + ".ca_file", "is empty (remove it to use the system CAs)");
    if (access(ca->c_str(), R_OK) != 0)
      fail(line, p + ".ca_file", fmt::format("{}: {}", *ca, std::strerror(errno)));
    r.ca_file = *ca;
  }
  if (auto helo = s.string("helo")) {
    if (helo->empty() || has_space_or_control(*helo))
      fail(line_of(*s.get("helo")), p + ".helo", quoted(*helo) + " is not a host name");
    r.helo = *helo;
  }
  if (auto auth = s.table("auth")) {
    auth->allow_only({"username", "password"});
    auto user = auth->string("username");
    auto pass = auth->string("password");
    if (!user) fail(auth->line(), p + ".auth.username", "missing");
    if (!pass) fail(auth->line(), p + ".auth.password", "missing");
    if (user->empty() || has_space_or_control(*user))
      fail(line_of(*auth->get("username")), p + ".auth.username",
           "is empty or has spaces or control characters");
    if (pass->empty() ||
        std::any_of(pass->begin(), pass->end(), [](unsigned char c) { return c < ' '; }))
      fail(line_of(*auth->get("password")), p + ".auth.password",
           "is empty or has control characters");
    r.auth = AuthCredentials{*user, *pass};
  }
  if (auto v = s.boolean("auth_over_plaintext")) r.auth_over_plaintext = *v;
  if (auto src = s.string("source_address")) {
    if (!is_ip_literal(*src))
      fail(line_of(*s.get("source_address")), p + ".source_address",
           quoted(*src) + " is not a numeric IP address");
    r.source_address = *src;
  }
  if (auto eb = s.string("eight_bit")) {
    if (*eb == "convert")
      r.convert_8bit = true;
    else if (*eb == "return")
      r.convert_8bit = false;
    else
      fail(line_of(*s.get("eight_bit")), p + ".eight_bit",
           quoted(*eb) + " is not \"convert\" or \"return\"");
  }
  if (auto v = s.boolean("dkim")) extras->signs = *v;
  if (auto nx = s.string("nxdomain")) {
    if (*nx == "bounce")
      r.nxdomain_is_permanent = true;
    else if (*nx == "defer")
      r.nxdomain_is_permanent = false;
    else
      fail(line_of(*s.get("nxdomain")), p + ".nxdomain",
           quoted(*nx) + " is not \"bounce\" or \"defer\"");
  }
  if (auto v = s.integer<std::uint32_t>("max_connections", 1, 1000000)) r.max_connections = *v;
  if (auto v = s.integer<std::uint32_t>("max_messages_per_connection", 1, 1000000))
    r.max_messages_per_connection = *v;
  if (auto t = s.table("timeouts")) r.timeouts = read_timeouts(*t);
  if (auto d = s.boolean("default")) extras->is_default = *d;
  if (auto nets = read_networks(s, "allow_internal_mx")) {
    r.allow_internal_mx = std::move(*nets);
    extras->own_internal_mx = true;
  }
  return r;
}

void read_routes(const Section& root, RelayConfig& cfg) {
  const toml::node* n = root.get("route");
  if (!n) return;
  if (!n->is_array_of_tables())
    fail(line_of(*n), "route",
         fmt::format("expected [[route]] tables, got {}",
                     n->is_table() ? "a single [route] table (write [[route]])" : type_name(*n)));
  std::map<std::string, std::size_t> names;   // name -> index
  std::map<std::string, std::string> mapped;  // lowercased pattern -> route name
  std::optional<std::size_t> explicit_default;
  std::size_t i = 0;
  for (const toml::node& t : *n->as_array()) {
    Section s(*t.as_table(), fmt::format("route[{}]", i));
    RouteExtras extras;
    Route r = read_route(s, &extras);
    if (auto it = names.find(r.name); it != names.end())
      fail(line_of(*s.get("name")), s.path_of("name"),
           fmt::format("duplicate route name {} (route[{}] has it already)", quoted(r.name),
                       it->second));
    names.emplace(r.name, i);
    if (extras.is_default) {
      if (explicit_default)
        fail(line_of(*s.get("default")), s.path_of("default"),
             fmt::format("route[{}] is the default already", *explicit_default));
      explicit_default = i;
    }
    std::vector<std::string> patterns;
    if (auto domains = s.strings("domains")) {
      std::size_t j = 0;
      for (auto& [text, node] : *domains) {
        std::string dp = fmt::format("{}.domains[{}]", s.path(), j++);
        if (auto why = check_domain_pattern(text))
          fail(
              line_of(*node), dp,
              quoted(text) + " " + *why + " (\"example.com\", or \".example.com\" for subdomains)");
        std::string key = lower(text);
        while (key.size() > 1 && key.back() == '.') key.pop_back();
        if (auto it = mapped.find(key); it != mapped.end())
          fail(line_of(*node), dp,
               fmt::format("{} is mapped to route {} already", quoted(text), quoted(it->second)));
        mapped.emplace(key, r.name);
        patterns.push_back(text);
      }
    }
    if (!r.is_static()) r.mx_port = extras.port ? extras.port : cfg.mx_port;
    if (!r.is_static() && !extras.own_internal_mx) r.allow_internal_mx = cfg.allow_internal_mx;
    if (r.source_address.empty()) r.source_address = cfg.source_address;
    if (!extras.signs) r.signer = std::make_shared<NoSigning>();
    cfg.routes.push_back(std::move(r));
    cfg.route_domains.push_back(std::move(patterns));
    cfg.route_ports.push_back(extras.port);
    cfg.route_signs.push_back(extras.signs);
    ++i;
  }
  if (explicit_default) cfg.default_route = cfg.routes[*explicit_default].name;
}

RelayConfig read_config(const toml::table& doc, std::string_view name) {
  RelayConfig cfg;
  cfg.file = std::string(name);
  Section root(doc, "");
  root.allow_only({"spool", "spool_layout", "log", "helo", "listen", "control", "metrics",
                   "resolver", "queue", "delivery", "domain_state", "dkim", "mta_sts", "route"});

  auto spool = root.string("spool");
  if (!spool) fail(1, "spool", "missing (the spool directory is required)");
  if (spool->empty()) fail(line_of(*root.get("spool")), "spool", "is empty");
  cfg.spool = *spool;
  while (cfg.spool.size() > 1 && cfg.spool.back() == '/') cfg.spool.pop_back();
  if (auto layout = root.string("spool_layout")) {
    auto l = spool::parse_layout(*layout);
    if (!l)
      fail(line_of(*root.get("spool_layout")), "spool_layout",
           quoted(*layout) + " is not one of \"files\", \"segments\"");
    cfg.spool_layout = *l;
  }

  if (auto log = root.string("log")) cfg.log = *log;

  if (auto helo = root.string("helo")) {
    if (helo->empty() || has_space_or_control(*helo) || !Address::parse("postmaster@" + *helo))
      fail(line_of(*root.get("helo")), "helo",
           quoted(*helo) + " is not a host name (the name this host gives in EHLO)");
    cfg.helo = *helo;
  } else {
    cfg.helo = host_name();
  }
  cfg.deliverer.helo_name = cfg.helo;
  cfg.queue.reporting_mta = cfg.helo;
  // An MX pointing back at this host's own name is a mail loop, not a delivery.
  cfg.deliverer.local_names = {lower(cfg.helo)};

  if (auto control = root.string("control")) {
    if (control->empty()) fail(line_of(*root.get("control")), "control", "is empty");
    cfg.control = *control;
  } else {
    cfg.control = cfg.spool + "/control.sock";
  }
  constexpr std::size_t kMaxSocketPath = sizeof(sockaddr_un::sun_path) - 1;
  if (cfg.control.size() > kMaxSocketPath)
    fail(root.get("control") ? line_of(*root.get("control")) : line_of(*root.get("spool")),
         "control",
         fmt::format("{} is longer than {} octets, the limit of a Unix socket path{}",
                     quoted(cfg.control), kMaxSocketPath,
                     root.get("control") ? "" : " (set control to a shorter path)"));

  if (auto metrics = root.string("metrics")) {
    const std::uint32_t line = line_of(*root.get("metrics"));
    if (!is_loopback_address(socket_address(*metrics, line, "metrics").host))
      fail(line, "metrics",
           quoted(*metrics) +
               " is not a loopback address (metrics are served on 127.0.0.0/8 "
               "or [::1] only)");
    cfg.metrics = *metrics;
  }

  read_listen(root, cfg);
  if (auto s = root.table("resolver")) read_resolver(*s, cfg);
  if (auto s = root.table("queue")) read_queue(*s, cfg);
  if (auto s = root.table("delivery")) read_delivery(*s, cfg);
  if (auto s = root.table("domain_state")) read_domain_state(*s, cfg);
  if (auto s = root.table("dkim")) read_dkim(*s, cfg);
  read_mta_sts(root, cfg);
  read_routes(root, cfg);

  // The listener must not promise (in SIZE, with a 250 at the dot) what the queue then refuses.
  const std::uint64_t queue_max = cfg.queue.max_message_size;
  if (!cfg.listen.address.empty() && queue_max != 0 && cfg.listen.max_message_size > queue_max) {
    const toml::node* listen = root.get("listen");
    const toml::node* given =
        listen && listen->is_table() ? listen->as_table()->get("max_message_size") : nullptr;
    if (given)
      fail(line_of(*given), "listen.max_message_size",
           fmt::format("{} is larger than queue.max_message_size ({}): the listener would take "
                       "messages the queue refuses",
                       cfg.listen.max_message_size, queue_max));
    cfg.listen.max_message_size = queue_max;
  }

  // The tables are read; now check that they make a RouteTable (the same code the relay runs).
  auto table = cfg.route_table();
  if (!table) fail(1, "route", table.error().message);
  return cfg;
}

}  // namespace

// --- durations ------------------------------------------------------------------------------

Result<Duration> parse_duration(std::string_view text) {
  auto bad = [&] {
    return Error(errc::invalid_parameter, quoted(text) + " is not a duration " + kDurationHint);
  };
  if (text.empty()) return bad();
  if (std::all_of(text.begin(), text.end(), is_digit))
    return Error(errc::invalid_parameter, quoted(text) + " has no unit " + kDurationHint);
  // Units from the largest down, each at most once: "1d12h", "1h30m", "1m30s", "1s500ms".
  struct Unit {
    std::string_view name;
    std::int64_t ms;
  };
  static constexpr Unit kUnits[] = {
      {"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};
  constexpr std::int64_t kMax = 100ll * 365 * 86400000;  // a century: beyond is a typo
  std::int64_t total = 0;
  std::size_t next_unit = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t start = i;
    std::int64_t v = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
      v = v * 10 + (text[i] - '0');
      if (v > kMax) return Error(errc::invalid_parameter, quoted(text) + " is too long");
      ++i;
    }
    if (i == start) return bad();
    std::size_t ustart = i;
    while (i < text.size() && std::isalpha(static_cast<unsigned char>(text[i]))) ++i;
    std::string_view unit = text.substr(ustart, i - ustart);
    std::size_t u = next_unit;
    while (u < std::size(kUnits) && kUnits[u].name != unit) ++u;
    if (u == std::size(kUnits)) {
      bool known = std::any_of(std::begin(kUnits), std::end(kUnits),
                               [&](const Unit& k) { return k.name == unit; });
      if (known)
        return Error(errc::invalid_parameter,
                     quoted(text) +
                         " is not a duration (units from the largest down, each once: "
                         "\"1h30m\")");
      return bad();
    }
    if (v > (kMax - total) / kUnits[u].ms)
      return Error(errc::invalid_parameter, quoted(text) + " is too long");
    total += v * kUnits[u].ms;
    next_unit = u + 1;
  }
  return Duration{total};
}

// --- loading --------------------------------------------------------------------------------

Result<RelayConfig> parse_config(std::string_view text, std::string_view name) {
  try {
    toml::table doc = toml::parse(text, name);
    return read_config(doc, name);
  } catch (const toml::parse_error& e) {
    return Error(errc::invalid_parameter,
                 fmt::format("{}:{}: syntax error: {} (column {})", name, e.source().begin.line,
                             e.description(), e.source().begin.column));
  } catch (const ConfigProblem& p) {
    return Error(errc::invalid_parameter,
                 fmt::format("{}:{}: {}: {}", name, p.line, p.path, p.what));
  } catch (const std::exception& e) {
    return Error(errc::invalid_parameter, fmt::format("{}: {}", name, e.what()));
  }
}

Result<RelayConfig> load_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return Error(errc::storage_failure,
                 fmt::format("{}: cannot read: {}", path, std::strerror(errno)));
  std::string text;
  char buf[65536];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<std::size_t>(in.gcount()));
    if (text.size() > kMaxConfigSize)
      return Error(
          errc::invalid_parameter,
          fmt::format("{}: larger than {} octets: not a configuration file", path, kMaxConfigSize));
  }
  if (in.bad())
    return Error(errc::storage_failure,
                 fmt::format("{}: cannot read: {}", path, std::strerror(errno)));
  return parse_config(text, path);
}

Result<RouteTable> RelayConfig::route_table() const {
  RouteTable table;
  // The built-in default MX route, with this configuration's MX port.
  Route builtin;
  builtin.name = kDefaultRoute;
  builtin.mx_port = mx_port;
  builtin.allow_internal_mx = allow_internal_mx;
  builtin.source_address = source_address;
  (void)table.add(builtin);
  for (std::size_t i = 0; i < routes.size(); ++i) {
    Route r = routes[i];
    if (!r.is_static()) {
      std::uint16_t own = i < route_ports.size() ? route_ports[i] : 0;
      r.mx_port = own ? own : mx_port;
    }
    if (auto added = table.add(r); !added)
      return Error(errc::invalid_parameter,
                   fmt::format("route {}: {}", quoted(r.name), added.code().message()));
    if (i < route_domains.size()) {
      for (const auto& pattern : route_domains[i])
        if (auto mapped = table.map(pattern, r.name); !mapped)
          return Error(errc::invalid_parameter,
                       fmt::format("route {}: domain {}: {}", quoted(r.name), quoted(pattern),
                                   mapped.code().message()));
    }
  }
  if (auto chosen = table.set_default(default_route); !chosen)
    return Error(errc::invalid_parameter, fmt::format("default route {}: {}", quoted(default_route),
                                                      chosen.code().message()));
  return table;
}

}  // namespace mailq::relay
