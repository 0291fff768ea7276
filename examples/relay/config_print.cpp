// The effective configuration as TOML (`mailq-relay --check --print`): every key with the
// value the relay runs with, defaults included, in the file's own syntax, so that the output
// is itself a configuration that loads to the same settings (a password excepted: it is
// never printed).
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <string>
#include <string_view>
#include <vector>

#include "examples/relay/config.h"
#include "mailq/spool/layout.h"

namespace mailq::relay {

namespace {

// A TOML basic string.
std::string q(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7F) {
      out += fmt::format("\\u{:04X}", static_cast<unsigned>(u));
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// The largest unit that divides the duration: "15m", "4h", "250ms", "0s".
std::string dur(Duration d) {
  const auto ms = d.count();
  if (ms == 0) return q("0s");
  struct Unit {
    const char* name;
    std::int64_t ms;
  };
  for (const Unit u : {Unit{"d", 86400000}, Unit{"h", 3600000}, Unit{"m", 60000}, Unit{"s", 1000}})
    if (ms % u.ms == 0) return q(std::to_string(ms / u.ms) + u.name);
  return q(std::to_string(ms) + "ms");
}

std::string strings(const std::vector<std::string>& v) {
  std::string out = "[";
  for (std::size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + q(v[i]);
  return out + "]";
}

std::string networks(const std::vector<Network>& v) {
  std::vector<std::string> texts;
  for (const Network& n : v) texts.push_back(n.address + "/" + std::to_string(n.prefix));
  return strings(texts);
}

const char* b(bool v) {
  return v ? "true" : "false";
}

std::string number(double v) {
  std::string s = fmt::format("{}", v);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

std::string timeouts(const SmtpTimeouts& t) {
  return fmt::format(
      "{{ connect = {}, greeting = {}, ehlo = {}, starttls = {}, mail = {}, rcpt = {}, "
      "data_init = {}, data_block = {}, data_term = {}, rset = {}, quit = {} }}",
      dur(t.connect), dur(t.greeting), dur(t.ehlo), dur(t.starttls), dur(t.mail), dur(t.rcpt),
      dur(t.data_init), dur(t.data_block), dur(t.data_term), dur(t.rset), dur(t.quit));
}

void print_resolver(const RelayConfig& c, std::string& out) {
  const auto& r = c.resolver;
  const char* families = r.families == ares::AddressFamilies::ipv4_only   ? "ipv4"
                         : r.families == ares::AddressFamilies::ipv6_only ? "ipv6"
                                                                          : "both";
  out += "\n[resolver]\n";
  out += "servers = " + strings(r.nameservers) +
         (r.nameservers.empty() ? "  # the system's (/etc/resolv.conf)\n" : "\n");
  out += fmt::format("timeout = {}\ntries = {}\nquery_deadline = {}\nmx_port = {}\n",
                     dur(r.timeout), r.tries, dur(r.query_deadline), c.mx_port);
  out += "allow_internal_mx = " + networks(c.allow_internal_mx) + "\n";
  out += fmt::format("rotate = {}\nedns = {}\nfamilies = {}\nipv6_first = {}\ndnssec = {}\n",
                     b(r.rotate), b(r.edns), q(families), b(r.ipv6_first), b(r.dnssec));
  if (!r.source_address.empty()) out += "source_address = " + q(r.source_address) + "\n";
  const auto& k = r.cache;
  out += fmt::format(
      "cache = {}\ncache_max_entries = {}\nmin_ttl = {}\nmax_ttl = {}\nnegative_ttl = {}\n"
      "max_negative_ttl = {}\nfailure_ttl = {}\nunknown_ttl = {}\n",
      b(k.enabled), k.max_entries, dur(k.min_ttl), dur(k.max_ttl), dur(k.negative_ttl),
      dur(k.max_negative_ttl), dur(k.failure_ttl), dur(k.unknown_ttl));
}

void print_queue(const RelayConfig& c, std::string& out) {
  const auto& p = c.queue.retry;
  out += "\n[queue]\n";
  out += fmt::format("cycle = {}\nmax_lifetime = {}\ndelay_notice_after = {}\n",
                     dur(c.deliverer.cycle), dur(c.queue.max_lifetime),
                     dur(c.queue.delay_notice_after));
  out += fmt::format("max_message_size = {}\nreporting_mta = {}\n", c.queue.max_message_size,
                     q(c.queue.reporting_mta));
  out += fmt::format("retry = {{ min = {}, max = {}, factor = {}, jitter = {}", dur(p.floor),
                     dur(p.ceiling), number(p.factor), number(p.jitter));
  if (!p.schedule.empty()) {
    std::vector<std::string> steps;
    for (Duration d : p.schedule) steps.push_back(dur(d));
    out += ", schedule = [";
    for (std::size_t i = 0; i < steps.size(); ++i) out += (i ? ", " : "") + steps[i];
    out += "]";
  }
  out += " }\n";
}

void print_delivery(const RelayConfig& c, std::string& out) {
  const auto& d = c.deliverer;
  out += "\n[delivery]\n";
  out += fmt::format(
      "max_connections = {}\nidle_timeout = {}\nmax_connection_age = {}\nbroken_tls_memory = "
      "{}\nhost_backoff = {}\nmax_jobs_per_destination_per_cycle = {}\n",
      d.max_connections, dur(d.idle_timeout), dur(d.max_connection_age), dur(d.broken_tls_memory),
      dur(d.host_backoff), d.max_jobs_per_destination_per_cycle);
  out += "local_names = " + strings(d.local_names) + "\n";
  out += "local_addresses = " + strings(d.local_addresses) + "\n";
  if (!c.source_address.empty()) out += "source_address = " + q(c.source_address) + "\n";
  out += "\n[domain_state]\n";
  out += fmt::format("failure_threshold = {}\ndown_interval = {}\n",
                     c.domain_state.failure_threshold, dur(c.domain_state.down_interval));
}

bool iequal(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

void print_mta_sts(const RelayConfig& c, std::string& out) {
  out += "\n[mta_sts]\n";
  if (!c.mta_sts) {
    out += "enabled = false\n";
    return;
  }
  const auto& o = *c.mta_sts;
  out += "enabled = true\ncache_file = " + q(o.cache_file) + "\n";
  if (o.ca_file.empty())
    out += "# ca_file: not set, the system's CAs\n";
  else
    out += "ca_file = " + q(o.ca_file) + "\n";
  out += fmt::format("port = {}\nfetch_timeout = {}\nrecheck = {}\nfailure_backoff = {}\n", o.port,
                     dur(o.fetch_timeout), dur(o.recheck), dur(o.failure_backoff));
}

void print_dkim(const RelayConfig& c, std::string& out) {
  if (c.dkim.keys.empty()) {
    out += "\n# no [[dkim.key]]: nothing is signed\n";
    return;
  }
  for (const auto& k : c.dkim.keys) {
    out += "\n[[dkim.key]]\n";
    out += "domain = " + q(k.domain) + "\nselector = " + q(k.selector) + "\n";
    out += "key_file = " + q(k.key_file) + "\n";
    const char* use = k.use == dkim::KeyConfig::Use::author     ? "author"
                      : k.use == dkim::KeyConfig::Use::fallback ? "fallback"
                                                                : "always";
    out += fmt::format("use = {}\n", q(use));
    out +=
        fmt::format("canonicalization = {}\n", q(std::string(dkim::to_string(k.header_canon)) +
                                                 "/" + std::string(dkim::to_string(k.body_canon))));
    const auto& headers = k.headers.empty() ? dkim::default_headers() : k.headers;
    out += "headers = " + strings(headers) + "\n";
    if (k.oversign) {
      out += "oversign = " + strings(*k.oversign) + "\n";
    } else {
      std::vector<std::string> over;
      for (const auto& h : headers)
        if (!iequal(h, "Sender")) over.push_back(h);
      out += "oversign = " + strings(over) + "  # every signed field but Sender\n";
    }
    if (k.expiry)
      out += "expiry = " + dur(*k.expiry) + "\n";
    else
      out += "# expiry: none (no x= tag)\n";
    if (!k.identity.empty()) out += "identity = " + q(k.identity) + "\n";
  }
}

void print_route(const RelayConfig& c, std::size_t i, std::string& out) {
  const Route& r = c.routes[i];
  out += "\n[[route]]\nname = " + q(r.name) + "\n";
  if (i < c.route_domains.size() && !c.route_domains[i].empty())
    out += "domains = " + strings(c.route_domains[i]) + "\n";
  if (r.is_static()) {
    std::vector<std::string> hosts;
    for (const auto& h : r.hosts) hosts.push_back(HostPort{h.host, h.port}.to_string());
    out += "hosts = " + strings(hosts) + "\n";
  } else {
    out += "mx = true\n";
    const std::uint16_t own = i < c.route_ports.size() ? c.route_ports[i] : 0;
    if (own)
      out += fmt::format("port = {}\n", own);
    else
      out += fmt::format("# port: {}, [resolver] mx_port\n", r.mx_port);
    out += "allow_internal_mx = " + networks(r.allow_internal_mx) + "\n";
  }
  out += fmt::format("tls = {}\n", q(to_string(r.tls)));
  if (!r.ca_file.empty()) out += "ca_file = " + q(r.ca_file) + "\n";
  if (!r.helo.empty()) out += "helo = " + q(r.helo) + "\n";
  if (r.auth) out += "# auth: username " + q(r.auth->username) + ", the password is not printed\n";
  out += fmt::format("auth_over_plaintext = {}\n", b(r.auth_over_plaintext));
  if (!r.source_address.empty()) out += "source_address = " + q(r.source_address) + "\n";
  out += fmt::format("nxdomain = {}\n", q(r.nxdomain_is_permanent ? "bounce" : "defer"));
  out += fmt::format("eight_bit = {}\n", q(r.convert_8bit ? "convert" : "return"));
  out += fmt::format("dkim = {}\n", b(i >= c.route_signs.size() || c.route_signs[i]));
  if (!r.is_static()) out += fmt::format("mta_sts = {}\ndane = {}\n", b(r.mta_sts), b(r.dane));
  out += fmt::format("max_connections = {}\nmax_messages_per_connection = {}\n", r.max_connections,
                     r.max_messages_per_connection);
  out += "timeouts = " + timeouts(r.timeouts) + "\n";
  if (r.name == c.default_route) out += "default = true\n";
}

}  // namespace

std::vector<std::string> config_warnings(const RelayConfig& c) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < c.routes.size(); ++i) {
    const Route& r = c.routes[i];
    const bool mapped = i < c.route_domains.size() && !c.route_domains[i].empty();
    if (!mapped && r.name != c.default_route)
      out.push_back(fmt::format("route {} has no domains and is not the default: no mail takes it",
                                q(r.name)));
  }
  return out;
}

std::string print_config(const RelayConfig& c) {
  std::string out = "# mailq-relay: the effective configuration";
  if (!c.file.empty()) out += " of " + c.file;
  out += ", defaults included\n";
  out += "spool = " + q(c.spool) + "\n";
  if (c.spool_layout)
    out += fmt::format("spool_layout = {}\n", q(spool::to_string(*c.spool_layout)));
  else
    out += fmt::format("# spool_layout: not set, the layout the spool holds ({} for a new one)\n",
                       q(spool::to_string(spool::kDefaultLayout)));
  out += "log = " + q(c.log) + "  # \"\" = standard output\n";
  out += "helo = " + q(c.helo) + "\n";
  out += "control = " + q(c.control) + "\n";
  if (!c.metrics.empty()) out += "metrics = " + q(c.metrics) + "\n";
  if (!c.listen.address.empty()) {
    const auto& l = c.listen;
    std::string secure;
    if (!l.tls_certificate.empty()) {
      secure += fmt::format(", tls = {{ certificate = {}, key = {}, required = {} }}",
                            q(l.tls_certificate), q(l.tls_key), l.tls_required);
    }
    if (!l.auth_credentials.empty()) {
      secure += fmt::format(
          ", auth = {{ credentials = {}, clients = {}, required = {}, allow_plaintext = {}, "
          "max_failures = {} }}",
          q(l.auth_credentials), networks(l.auth_clients), l.auth_required, l.auth_plaintext,
          l.auth_max_failures);
    }
    out += fmt::format(
        "listen = {{ address = {}, networks = {}, max_message_size = {}, max_recipients = {}, "
        "max_sessions = {}, max_received_headers = {}, idle_timeout = {}, min_free_space = {}{} "
        "}}\n",
        q(l.address), networks(l.networks), l.max_message_size, l.max_recipients, l.max_sessions,
        l.max_received_headers, dur(l.idle_timeout), l.min_free_space, secure);
  } else {
    out += "# no listen: the relay takes mail through mailq-send and the control socket only\n";
  }
  print_resolver(c, out);
  print_queue(c, out);
  print_delivery(c, out);
  print_dkim(c, out);
  print_mta_sts(c, out);
  for (std::size_t i = 0; i < c.routes.size(); ++i) print_route(c, i, out);
  bool listed = false;
  for (const auto& r : c.routes) listed = listed || r.name == c.default_route;
  if (!listed)
    out += fmt::format(
        "\n# unmatched domains: the built-in MX route {} (tls = \"opportunistic\", port {}, "
        "allow_internal_mx = {})\n",
        q(c.default_route), c.mx_port, networks(c.allow_internal_mx));
  return out;
}

}  // namespace mailq::relay
