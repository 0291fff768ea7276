// mailq-relay's configuration file (examples/relay/config.h): the example file loads with each
// value where it belongs, defaults are the documented ones, and every invalid file gets one
// exact "FILE:LINE: key.path: what" message.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <string>

#include "examples/relay/config.h"
#include "support/servers.h"

using namespace std::chrono_literals;
using mailq::Duration;
using mailq::TlsPolicy;
using mailq::relay::parse_config;
using mailq::relay::parse_duration;
using mailq::relay::RelayConfig;

namespace {

std::string example_path() {
  std::string here = __FILE__;  // .../tests/programs/test_config.cpp
  return here.substr(0, here.rfind("/tests/")) + "/examples/relay/mailq-relay.example.toml";
}

// The error message of a configuration that must not load, or "loaded" when it did.
std::string error_of(std::string_view text) {
  auto cfg = parse_config(text, "relay.toml");
  if (cfg) return "loaded";
  CHECK(cfg.error().code == mailq::make_error_code(mailq::errc::invalid_parameter));
  return cfg.error().message;
}

std::string host_name() {
  char buf[256] = {};
  REQUIRE(gethostname(buf, sizeof buf - 1) == 0);
  return buf;
}

}  // namespace

TEST_CASE("the example configuration loads and every value lands where it belongs", "[config]") {
  auto loaded = mailq::relay::load_config(example_path());
  INFO((loaded ? std::string() : loaded.error().message));
  REQUIRE(loaded);
  const RelayConfig& c = *loaded;
  CHECK(c.file == example_path());
  CHECK(c.spool == "/var/spool/mailq");
  CHECK(c.log == "/var/log/mailq/mail.log");
  CHECK(c.helo == "mx.example.org");
  CHECK(c.control == "/var/spool/mailq/control.sock");
  CHECK_FALSE(c.spool_layout.has_value());  // commented out: what the spool holds
  CHECK(c.metrics == "127.0.0.1:9100");

  CHECK(c.listen.address == "127.0.0.1:2525");
  CHECK(c.listen.host == "127.0.0.1");
  CHECK(c.listen.port == 2525);
  REQUIRE(c.listen.networks.size() == 2);
  CHECK(c.listen.networks[0].address == "127.0.0.0");
  CHECK(c.listen.networks[0].prefix == 8);
  CHECK_FALSE(c.listen.networks[0].ipv6);
  CHECK(c.listen.networks[1].address == "::1");
  CHECK(c.listen.networks[1].prefix == 128);
  CHECK(c.listen.networks[1].ipv6);
  CHECK(c.listen.max_message_size == 52428800);
  CHECK(c.listen.max_recipients == 1000);
  CHECK(c.listen.max_sessions == 1000);
  CHECK(c.listen.idle_timeout == Duration(5min));
  CHECK(c.listen.min_free_space == 16777216);

  CHECK(c.resolver.nameservers == std::vector<std::string>{"127.0.0.1:53"});
  CHECK(c.resolver.timeout == Duration(5s));
  CHECK(c.resolver.tries == 2);
  CHECK(c.resolver.query_deadline == Duration(0));
  CHECK(c.mx_port == 25);
  CHECK_FALSE(c.resolver.rotate);
  CHECK(c.resolver.edns);
  CHECK(c.resolver.families == mailq::ares::AddressFamilies::both);
  CHECK_FALSE(c.resolver.ipv6_first);
  CHECK(c.resolver.cache.enabled);
  CHECK(c.resolver.cache.max_entries == 10000);
  CHECK(c.resolver.cache.min_ttl == Duration(0));
  CHECK(c.resolver.cache.max_ttl == Duration(24h));
  CHECK(c.resolver.cache.negative_ttl == Duration(5min));
  CHECK(c.resolver.cache.max_negative_ttl == Duration(3h));
  CHECK(c.resolver.cache.failure_ttl == Duration(0));
  CHECK(c.resolver.cache.unknown_ttl == Duration(5min));

  CHECK(c.deliverer.cycle == Duration(15min));
  CHECK(c.queue.max_lifetime == Duration(24h * 5));
  CHECK(c.queue.retry.floor == Duration(5min));
  CHECK(c.queue.retry.ceiling == Duration(4h));
  CHECK(c.queue.retry.factor == 2.0);
  CHECK(c.queue.retry.jitter == 0.1);
  CHECK(c.queue.retry.schedule.empty());
  CHECK(c.queue.delay_notice_after == Duration(0));
  CHECK(c.queue.max_message_size == 0);
  CHECK(c.queue.reporting_mta == "mx.example.org");

  CHECK(c.deliverer.helo_name == "mx.example.org");
  CHECK(c.deliverer.max_connections == 200);
  CHECK(c.deliverer.idle_timeout == Duration(5s));
  CHECK(c.deliverer.max_connection_age == Duration(5min));
  CHECK(c.deliverer.broken_tls_memory == Duration(1h));
  CHECK(c.deliverer.max_jobs_per_destination_per_cycle == 10000);
  CHECK(c.deliverer.local_names == std::vector<std::string>{"mx.example.org"});
  CHECK(c.deliverer.local_addresses.empty());

  CHECK(c.domain_state.failure_threshold == 3);
  CHECK(c.domain_state.down_interval == Duration(15min));

  REQUIRE(c.routes.size() == 2);
  const mailq::Route& internal = c.routes[0];
  CHECK(internal.name == "tcp_internal");
  REQUIRE(internal.hosts.size() == 1);
  CHECK(internal.hosts[0].host == "10.0.0.5");
  CHECK(internal.hosts[0].port == 25);
  CHECK(internal.tls == TlsPolicy::verify);
  CHECK(internal.ca_file.empty());
  CHECK(c.route_domains[0] == std::vector<std::string>{"example.com", ".example.com"});
  const mailq::Route& mx = c.routes[1];
  CHECK(mx.name == "default-non-local-route");
  CHECK(mx.hosts.empty());
  CHECK(mx.mx_port == 25);
  CHECK(mx.tls == TlsPolicy::opportunistic);
  CHECK_FALSE(mx.nxdomain_is_permanent);
  CHECK(mx.max_connections == 10);
  CHECK(mx.max_messages_per_connection == 100);
  CHECK(mx.timeouts.connect == Duration(30s));
  CHECK(mx.timeouts.greeting == Duration(5min));
  CHECK(mx.timeouts.ehlo == Duration(5min));
  CHECK(mx.timeouts.starttls == Duration(2min));
  CHECK(mx.timeouts.mail == Duration(5min));
  CHECK(mx.timeouts.rcpt == Duration(5min));
  CHECK(mx.timeouts.data_init == Duration(2min));
  CHECK(mx.timeouts.data_block == Duration(3min));
  CHECK(mx.timeouts.data_term == Duration(10min));
  CHECK(mx.timeouts.rset == Duration(2min));
  CHECK(mx.timeouts.quit == Duration(30s));
  CHECK(c.route_domains[1].empty());
  CHECK(c.default_route == "default-non-local-route");

  auto table = c.route_table();
  REQUIRE(table);
  CHECK(table->lookup("example.com").name == "tcp_internal");
  CHECK(table->lookup("a.b.EXAMPLE.com").name == "tcp_internal");
  CHECK(table->lookup("example.org").name == "default-non-local-route");
  CHECK(table->lookup("notexample.com").name == "default-non-local-route");
}

TEST_CASE("the configuration shown in issue 5 loads as written", "[config]") {
  auto cfg = parse_config(R"(spool = "/var/spool/mailq"          # the durable spool
log = "/var/log/mailq/mail.log"     # Messaging Server style lines (seed 002)
helo = "mx.example.org"
listen = "127.0.0.1:2525"            # optional: accept mail over SMTP into the queue
[resolver]
servers = ["127.0.0.1:53"]           # host:port, several allowed
timeout = "5s"
mx_port = 25                         # port used for MX-routed delivery (tests use another)
[queue]
cycle = "15m"
max_lifetime = "5d"
retry = { min = "5m", max = "4h" }
[domain_state]
failure_threshold = 3
down_interval = "15m"
[[route]]
name = "tcp_internal"
domains = ["example.com", ".example.com"]
hosts = ["10.0.0.5:25"]
tls = "verify"
[[route]]
name = "default-non-local-route"
mx = true
tls = "opportunistic"
)",
                          "issue5.toml");
  INFO((cfg ? std::string() : cfg.error().message));
  REQUIRE(cfg);
  CHECK(cfg->spool == "/var/spool/mailq");
  CHECK(cfg->log == "/var/log/mailq/mail.log");
  CHECK(cfg->helo == "mx.example.org");
  CHECK(cfg->listen.host == "127.0.0.1");
  CHECK(cfg->listen.port == 2525);
  CHECK(cfg->listen.networks.size() == 2);
  CHECK(cfg->resolver.nameservers == std::vector<std::string>{"127.0.0.1:53"});
  CHECK(cfg->resolver.timeout == Duration(5s));
  CHECK(cfg->mx_port == 25);
  CHECK(cfg->deliverer.cycle == Duration(15min));
  CHECK(cfg->queue.max_lifetime == Duration(24h * 5));
  CHECK(cfg->queue.retry.floor == Duration(5min));
  CHECK(cfg->queue.retry.ceiling == Duration(4h));
  CHECK(cfg->queue.retry.factor == 2.0);  // not given: the default
  CHECK(cfg->domain_state.failure_threshold == 3);
  CHECK(cfg->domain_state.down_interval == Duration(15min));
  REQUIRE(cfg->routes.size() == 2);
  CHECK(cfg->routes[0].name == "tcp_internal");
  CHECK(cfg->routes[0].tls == TlsPolicy::verify);
  CHECK(cfg->routes[1].name == "default-non-local-route");
  CHECK_FALSE(cfg->routes[1].is_static());
  CHECK(cfg->routes[1].tls == TlsPolicy::opportunistic);
  CHECK(cfg->default_route == "default-non-local-route");
}

TEST_CASE("the example file shows the library defaults where it claims to", "[config]") {
  // The example's active lines that carry no "(default ...)" note must equal what a file
  // without them gives: the documentation cannot drift from the code.
  auto example = mailq::relay::load_config(example_path());
  auto minimal = parse_config("spool = \"/var/spool/mailq\"\nhelo = \"mx.example.org\"\n");
  REQUIRE(example);
  REQUIRE(minimal);
  const auto& e = *example;
  const auto& m = *minimal;
  CHECK(e.listen.max_message_size == mailq::relay::ListenConfig{}.max_message_size);
  CHECK(e.listen.max_recipients == mailq::relay::ListenConfig{}.max_recipients);
  CHECK(e.listen.max_sessions == mailq::relay::ListenConfig{}.max_sessions);
  CHECK(e.listen.idle_timeout == mailq::relay::ListenConfig{}.idle_timeout);
  CHECK(e.listen.min_free_space == mailq::relay::ListenConfig{}.min_free_space);
  CHECK(e.resolver.tries == m.resolver.tries);
  CHECK(e.resolver.query_deadline == m.resolver.query_deadline);
  CHECK(e.mx_port == m.mx_port);
  CHECK(e.resolver.rotate == m.resolver.rotate);
  CHECK(e.resolver.edns == m.resolver.edns);
  CHECK(e.resolver.families == m.resolver.families);
  CHECK(e.resolver.ipv6_first == m.resolver.ipv6_first);
  CHECK(e.resolver.cache.enabled == m.resolver.cache.enabled);
  CHECK(e.resolver.cache.max_entries == m.resolver.cache.max_entries);
  CHECK(e.resolver.cache.min_ttl == m.resolver.cache.min_ttl);
  CHECK(e.resolver.cache.max_ttl == m.resolver.cache.max_ttl);
  CHECK(e.resolver.cache.negative_ttl == m.resolver.cache.negative_ttl);
  CHECK(e.resolver.cache.max_negative_ttl == m.resolver.cache.max_negative_ttl);
  CHECK(e.resolver.cache.failure_ttl == m.resolver.cache.failure_ttl);
  CHECK(e.resolver.cache.unknown_ttl == m.resolver.cache.unknown_ttl);
  CHECK(e.deliverer.cycle == m.deliverer.cycle);
  CHECK(e.queue.max_lifetime == m.queue.max_lifetime);
  CHECK(e.queue.retry.ceiling == m.queue.retry.ceiling);
  CHECK(e.queue.retry.factor == m.queue.retry.factor);
  CHECK(e.queue.retry.jitter == m.queue.retry.jitter);
  CHECK(e.queue.delay_notice_after == m.queue.delay_notice_after);
  CHECK(e.queue.max_message_size == m.queue.max_message_size);
  CHECK(e.queue.reporting_mta == m.queue.reporting_mta);
  CHECK(e.deliverer.max_connections == m.deliverer.max_connections);
  CHECK(e.deliverer.idle_timeout == m.deliverer.idle_timeout);
  CHECK(e.deliverer.max_connection_age == m.deliverer.max_connection_age);
  CHECK(e.deliverer.broken_tls_memory == m.deliverer.broken_tls_memory);
  CHECK(e.deliverer.max_jobs_per_destination_per_cycle ==
        m.deliverer.max_jobs_per_destination_per_cycle);
  CHECK(e.deliverer.local_names == m.deliverer.local_names);
  CHECK(e.deliverer.local_addresses == m.deliverer.local_addresses);
  CHECK(e.domain_state.down_interval == m.domain_state.down_interval);
  const mailq::Route def;
  const mailq::Route& r = e.routes[1];
  CHECK(r.tls == def.tls);
  CHECK(r.max_connections == def.max_connections);
  CHECK(r.max_messages_per_connection == def.max_messages_per_connection);
  CHECK(r.timeouts.connect == def.timeouts.connect);
  CHECK(r.timeouts.greeting == def.timeouts.greeting);
  CHECK(r.timeouts.ehlo == def.timeouts.ehlo);
  CHECK(r.timeouts.starttls == def.timeouts.starttls);
  CHECK(r.timeouts.mail == def.timeouts.mail);
  CHECK(r.timeouts.rcpt == def.timeouts.rcpt);
  CHECK(r.timeouts.data_init == def.timeouts.data_init);
  CHECK(r.timeouts.data_block == def.timeouts.data_block);
  CHECK(r.timeouts.data_term == def.timeouts.data_term);
  CHECK(r.timeouts.rset == def.timeouts.rset);
  CHECK(r.timeouts.quit == def.timeouts.quit);
}

TEST_CASE("a configuration with only the spool takes the documented defaults", "[config]") {
  auto cfg = parse_config("spool = \"/srv/mailq/\"\n");
  INFO((cfg ? std::string() : cfg.error().message));
  REQUIRE(cfg);
  CHECK(cfg->file == "config");
  CHECK(cfg->spool == "/srv/mailq");
  CHECK(cfg->log.empty());
  CHECK(cfg->helo == host_name());
  CHECK(cfg->deliverer.helo_name == host_name());
  CHECK(cfg->queue.reporting_mta == host_name());
  CHECK(cfg->control == "/srv/mailq/control.sock");
  CHECK_FALSE(cfg->spool_layout.has_value());  // the spool's own, segments for a new one
  CHECK(cfg->metrics.empty());
  CHECK(cfg->listen.address.empty());
  CHECK(cfg->resolver.nameservers.empty());
  CHECK(cfg->resolver.timeout == Duration(3s));
  CHECK(cfg->mx_port == 25);
  CHECK(cfg->deliverer.cycle == Duration(15min));
  CHECK(cfg->queue.max_lifetime == Duration(24h * 5));
  CHECK(cfg->queue.retry.floor == Duration(15min));
  CHECK(cfg->queue.retry.ceiling == Duration(4h));
  CHECK(cfg->domain_state.failure_threshold == 5);
  CHECK(cfg->domain_state.down_interval == Duration(15min));
  CHECK(cfg->routes.empty());
  CHECK(cfg->default_route == "default-non-local-route");
  auto table = cfg->route_table();
  REQUIRE(table);
  CHECK(table->lookup("example.org").name == "default-non-local-route");
  CHECK(table->lookup("example.org").mx_port == 25);
}

TEST_CASE("spool_layout picks the segment spool", "[config]") {
  auto cfg = parse_config("spool = \"/s\"\nspool_layout = \"segments\"\n");
  INFO((cfg ? std::string() : cfg.error().message));
  REQUIRE(cfg);
  CHECK(cfg->spool_layout == mailq::spool::Layout::segments);
  cfg = parse_config("spool = \"/s\"\nspool_layout = \"files\"\n");
  REQUIRE(cfg);
  CHECK(cfg->spool_layout == mailq::spool::Layout::files);
}

TEST_CASE("listen given as a string opens a loopback-only listener", "[config]") {
  auto cfg = parse_config("spool = \"/s\"\nlisten = \"127.0.0.1:2525\"\n");
  REQUIRE(cfg);
  CHECK(cfg->listen.address == "127.0.0.1:2525");
  CHECK(cfg->listen.host == "127.0.0.1");
  CHECK(cfg->listen.port == 2525);
  REQUIRE(cfg->listen.networks.size() == 2);
  CHECK(cfg->listen.networks[0].contains("127.0.0.1"));
  CHECK(cfg->listen.networks[1].contains("::1"));
  CHECK(cfg->listen.max_message_size == 50ull << 20);

  // Without its own size, the listener takes the queue's limit when that is smaller.
  auto small = parse_config(
      "spool = \"/s\"\nlisten = \"127.0.0.1:2525\"\n[queue]\nmax_message_size = 1000000\n");
  REQUIRE(small);
  CHECK(small->listen.max_message_size == 1000000);

  auto v6 = parse_config(
      "spool = \"/s\"\nlisten = { address = \"[::1]:2525\", networks = [\"::1\"], "
      "max_recipients = 5, min_free_space = 0 }\n");
  INFO((v6 ? std::string() : v6.error().message));
  REQUIRE(v6);
  CHECK(v6->listen.min_free_space == 0);  // no reserve: the check is off
  CHECK(v6->listen.host == "::1");
  CHECK(v6->listen.port == 2525);
  REQUIRE(v6->listen.networks.size() == 1);
  CHECK(v6->listen.networks[0].prefix == 128);
  CHECK(v6->listen.max_recipients == 5);
}

TEST_CASE("durations take ms s m h d, combined from the largest unit down", "[config]") {
  CHECK(*parse_duration("250ms") == Duration(250));
  CHECK(*parse_duration("30s") == Duration(30s));
  CHECK(*parse_duration("15m") == Duration(15min));
  CHECK(*parse_duration("4h") == Duration(4h));
  CHECK(*parse_duration("5d") == Duration(24h * 5));
  CHECK(*parse_duration("1h30m") == Duration(90min));
  CHECK(*parse_duration("1d12h") == Duration(36h));
  CHECK(*parse_duration("1m30s500ms") == Duration(90500));
  CHECK(*parse_duration("0s") == Duration(0));

  auto message = [](std::string_view text) {
    auto d = parse_duration(text);
    REQUIRE_FALSE(d);
    CHECK(d.error().code == mailq::make_error_code(mailq::errc::invalid_parameter));
    return d.error().message;
  };
  CHECK(message("15") == "\"15\" has no unit (use ms, s, m, h or d)");
  CHECK(message("15x") == "\"15x\" is not a duration (use ms, s, m, h or d)");
  CHECK(message("") == "\"\" is not a duration (use ms, s, m, h or d)");
  CHECK(message("1.5h") == "\"1.5h\" is not a duration (use ms, s, m, h or d)");
  CHECK(message("-5s") == "\"-5s\" is not a duration (use ms, s, m, h or d)");
  CHECK(message("5 s") == "\"5 s\" is not a duration (use ms, s, m, h or d)");
  CHECK(message("h") == "\"h\" is not a duration (use ms, s, m, h or d)");
  CHECK(message("5S") == "\"5S\" is not a duration (use ms, s, m, h or d)");
  CHECK(message("30m1h") ==
        "\"30m1h\" is not a duration (units from the largest down, each once: \"1h30m\")");
  CHECK(message("1h1h") ==
        "\"1h1h\" is not a duration (units from the largest down, each once: \"1h30m\")");
  CHECK(message("99999999999999999999s") == "\"99999999999999999999s\" is too long");
  CHECK(message("40000d") == "\"40000d\" is too long");
}

TEST_CASE("every invalid configuration gets one exact FILE:LINE: key: what", "[config]") {
  struct Case {
    const char* text;
    const char* message;
  };
  const Case cases[] = {
      {"log = \"x\"\n", "relay.toml:1: spool: missing (the spool directory is required)"},
      {"spool = \"\"\n", "relay.toml:1: spool: is empty"},
      {"spool = 5\n", "relay.toml:1: spool: expected a string, got an integer"},
      {"spool = \"/s\"\nspoool = \"/t\"\n",
       "relay.toml:2: spoool: unknown key (did you mean \"spool\"?)"},
      {"spool = \"/s\"\nwhatever = 1\n", "relay.toml:2: whatever: unknown key"},
      {"spool = \"/s\"\n[queue]\ncylce = \"1m\"\n",
       "relay.toml:3: queue.cylce: unknown key (did you mean \"cycle\"?)"},
      {"spool = \"/s\"\n[queue]\ncycle = 15\n",
       "relay.toml:3: queue.cycle: a duration needs a unit, as a string: \"30s\", \"15m\" (use "
       "ms, s, m, h or d)"},
      {"spool = \"/s\"\n\n[queue]\ncycle = \"15x\"\n",
       "relay.toml:4: queue.cycle: \"15x\" is not a duration (use ms, s, m, h or d)"},
      {"spool = \"/s\"\n[queue]\ncycle = \"0s\"\n",
       "relay.toml:3: queue.cycle: must be longer than zero"},
      {"spool = \"/s\"\n[queue]\ncycle = true\n",
       "relay.toml:3: queue.cycle: expected a duration string like \"15m\", got a boolean"},
      {"spool = \"/s\"\n[queue]\nretry = { min = \"5m\", max = \"4h\", factro = 2 }\n",
       "relay.toml:3: queue.retry.factro: unknown key (did you mean \"factor\"?)"},
      {"spool = \"/s\"\n[queue]\nretry = { min = \"5h\", max = \"4h\" }\n",
       "relay.toml:3: queue.retry.min: is longer than queue.retry.max"},
      {"spool = \"/s\"\n[queue]\nretry = { jitter = 1.0 }\n",
       "relay.toml:3: queue.retry.jitter: 1 is out of range (0 to 1 exclusive)"},
      {"spool = \"/s\"\n[queue]\nretry = { factor = 0.5 }\n",
       "relay.toml:3: queue.retry.factor: 0.5 is out of range (1 to 100 inclusive)"},
      {"spool = \"/s\"\n[queue]\nretry = { schedule = [\"5m\", \"1\"] }\n",
       "relay.toml:3: queue.retry.schedule[1]: \"1\" has no unit (use ms, s, m, h or d)"},
      {"spool = \"/s\"\n[queue]\nmax_message_size = -1\n",
       "relay.toml:3: queue.max_message_size: -1 is negative"},
      {"spool = \"/s\"\n[domain_state]\nfailure_threshold = 0\n",
       "relay.toml:3: domain_state.failure_threshold: 0 is not allowed (must be at least 1)"},
      {"spool = \"/s\"\n[domain_state]\nfailure_threshold = -3\n",
       "relay.toml:3: domain_state.failure_threshold: -3 is not allowed (must be at least 1)"},
      {"spool = \"/s\"\n[domain_state]\ndown_interval = \"-15m\"\n",
       "relay.toml:3: domain_state.down_interval: \"-15m\" is not a duration (use ms, s, m, h "
       "or d)"},
      {"spool = \"/s\"\n[resolver]\nmx_port = 0\n",
       "relay.toml:3: resolver.mx_port: 0 is not allowed (must be at least 1)"},
      {"spool = \"/s\"\n[resolver]\nmx_port = 65536\n",
       "relay.toml:3: resolver.mx_port: 65536 is out of range (1 to 65535)"},
      {"spool = \"/s\"\n[resolver]\ntries = 0\n",
       "relay.toml:3: resolver.tries: 0 is not allowed (must be at least 1)"},
      {"spool = \"/s\"\n[resolver]\nservers = [\"127.0.0.1:53\", \"dns.example:53\"]\n",
       "relay.toml:3: resolver.servers[1]: \"dns.example:53\" is not a nameserver address "
       "(\"127.0.0.1:53\", \"[::1]:53\")"},
      {"spool = \"/s\"\n[resolver]\nservers = \"127.0.0.1:53\"\n",
       "relay.toml:3: resolver.servers: expected an array of strings, got a string"},
      {"spool = \"/s\"\n[resolver]\nfamilies = \"ipv5\"\n",
       "relay.toml:3: resolver.families: \"ipv5\" is not one of \"both\", \"ipv4\", \"ipv6\""},
      {"spool = \"/s\"\nspool_layout = \"segment\"\n",
       "relay.toml:2: spool_layout: \"segment\" is not one of \"files\", \"segments\""},
      {"spool = \"/s\"\nspool_layout = 1\n",
       "relay.toml:2: spool_layout: expected a string, got an integer"},
      {"spool = \"/s\"\nresolver = \"127.0.0.1\"\n",
       "relay.toml:2: resolver: expected a table, got a string"},
      {"spool = \"/s\"\nlisten = \"localhost:2525\"\n",
       "relay.toml:2: listen: \"localhost:2525\" does not start with a numeric IP address"},
      {"spool = \"/s\"\nlisten = \"127.0.0.1\"\n",
       "relay.toml:2: listen: \"127.0.0.1\" is not an address:port (\"127.0.0.1:2525\", IPv6 as "
       "\"[::1]:2525\")"},
      {"spool = \"/s\"\nlisten = \"127.0.0.1:0\"\n",
       "relay.toml:2: listen: \"127.0.0.1:0\" has no valid port (1 to 65535)"},
      {"spool = \"/s\"\nlisten = 2525\n",
       "relay.toml:2: listen: expected an address string (\"127.0.0.1:2525\") or a table, got an "
       "integer"},
      {"spool = \"/s\"\n[listen]\nnetworks = [\"127.0.0.0/8\"]\n",
       "relay.toml:2: listen.address: missing (the address to listen on)"},
      {"spool = \"/s\"\n[listen]\naddress = \"127.0.0.1:25\"\nnetworks = [\n  \"127.0.0.0/8\",\n"
       "  \"10.0.0.1/8\",\n]\n",
       "relay.toml:6: listen.networks[1]: \"10.0.0.1/8\" has host bits set (did you mean "
       "\"10.0.0.0/8\"?)"},
      {"spool = \"/s\"\n[listen]\naddress = \"127.0.0.1:25\"\nnetworks = [\"localnet\"]\n",
       "relay.toml:4: listen.networks[0]: \"localnet\" is not a network (\"127.0.0.0/8\", "
       "\"::1/128\", \"192.0.2.7\")"},
      {"spool = \"/s\"\n[listen]\naddress = \"127.0.0.1:25\"\nnetworks = [\"127.0.0.0/33\"]\n",
       "relay.toml:4: listen.networks[0]: \"127.0.0.0/33\" has a bad prefix length (0 to 32)"},
      {"spool = \"/s\"\n[listen]\naddress = \"127.0.0.1:25\"\nnetworks = []\n",
       "relay.toml:4: listen.networks: is empty: no client could submit (remove `listen` to run "
       "without a listener)"},
      {"spool = \"/s\"\n[listen]\naddress = \"127.0.0.1:25\"\nmax_sessions = 0\n",
       "relay.toml:4: listen.max_sessions: 0 is not allowed (must be at least 1)"},
      {"spool = \"/s\"\n[listen]\naddress = \"127.0.0.1:25\"\nmin_free_space = \"16M\"\n",
       "relay.toml:4: listen.min_free_space: expected an integer, got a string"},
      {"spool = \"/s\"\n[listen]\naddress = \"127.0.0.1:25\"\nmax_session = 10\n",
       "relay.toml:4: listen.max_session: unknown key (did you mean \"max_sessions\"?)"},
      {"spool = \"/s\"\nmetrics = \"0.0.0.0:9100\"\n",
       "relay.toml:2: metrics: \"0.0.0.0:9100\" is not a loopback address (metrics are served on "
       "127.0.0.0/8 or [::1] only)"},
      {"spool = \"/s\"\nhelo = \"mx example.org\"\n",
       "relay.toml:2: helo: \"mx example.org\" is not a host name (the name this host gives in "
       "EHLO)"},
      {"spool = \"/s\"\ncontrol = \"/run/mailq/relay/0123456789012345678901234567890123456789/"
       "0123456789012345678901234567890123456789/control.sock\"\n",
       "relay.toml:2: control: \"/run/mailq/relay/0123456789012345678901234567890123456789/"
       "0123456789012345678901234567890123456789/control.sock\" is longer than 107 octets, the "
       "limit of a Unix socket path"},
      {"spool = \"/var/spool/mailq/0123456789012345678901234567890123456789/"
       "0123456789012345678901234567890123456789\"\n",
       "relay.toml:1: control: \"/var/spool/mailq/0123456789012345678901234567890123456789/"
       "0123456789012345678901234567890123456789/control.sock\" is longer than 107 octets, the "
       "limit of a Unix socket path (set control to a shorter path)"},
      {"spool = \"/s\"\n[listen]\naddress = \"127.0.0.1:25\"\nmax_message_size = 2000\n[queue]\n"
       "max_message_size = 1000\n",
       "relay.toml:4: listen.max_message_size: 2000 is larger than queue.max_message_size (1000): "
       "the listener would take messages the queue refuses"},
      {"spool = \"/s\"\n[delivery]\nmax_connections = 0\n",
       "relay.toml:3: delivery.max_connections: 0 is not allowed (must be at least 1)"},
      {"spool = \"/s\"\n[delivery]\nsource_address = \"eth0\"\n",
       "relay.toml:3: delivery.source_address: \"eth0\" is not a numeric IP address"},
      {"spool = \"/s\"\n[resolver]\nsource_address = \"127.0.0.1:53\"\n",
       "relay.toml:3: resolver.source_address: \"127.0.0.1:53\" is not a numeric IP address"},
      {"spool = \"/s\"\n[delivery]\nlocal_addresses = [\"mx.example.org\"]\n",
       "relay.toml:3: delivery.local_addresses[0]: \"mx.example.org\" is not a numeric IP "
       "address"},
      // Routes.
      {"spool = \"/s\"\n[route]\nname = \"a\"\nmx = true\n",
       "relay.toml:2: route: expected [[route]] tables, got a single [route] table (write "
       "[[route]])"},
      {"spool = \"/s\"\n[[route]]\nmx = true\n",
       "relay.toml:2: route[0].name: missing (every route needs a name)"},
      {"spool = \"/s\"\n[[route]]\nname = \"tcp local\"\nmx = true\n",
       "relay.toml:3: route[0].name: \"tcp local\" is not a route name (no spaces, control "
       "characters or '/')"},
      {"spool = \"/s\"\n[[route]]\nname = \"a\"\nmx = true\n[[route]]\nname = \"a\"\nhosts = "
       "[\"10.0.0.5\"]\n",
       "relay.toml:6: route[1].name: duplicate route name \"a\" (route[0] has it already)"},
      {"spool = \"/s\"\n[[route]]\nname = \"a\"\ntls = \"verify\"\n",
       "relay.toml:2: route[0]: route \"a\" has neither hosts nor mx = true (say how to reach "
       "it)"},
      {"spool = \"/s\"\n[[route]]\nname = \"a\"\nmx = false\n",
       "relay.toml:2: route[0]: route \"a\" has neither hosts nor mx = true (say how to reach "
       "it)"},
      {"spool = \"/s\"\n[[route]]\nname = \"a\"\nhosts = [\"10.0.0.5:25\"]\nmx = true\n",
       "relay.toml:5: route[0].mx: a route has either hosts (a smart host) or mx = true (MX "
       "lookup), not both"},
      {"spool = \"/s\"\n[[route]]\nname = \"a\"\nhosts = [\n  \"10.0.0.5:25\",\n  "
       "\"10.0.0.6:99999\",\n]\n",
       "relay.toml:6: route[0].hosts[1]: \"10.0.0.6:99999\" is not host:port "
       "(\"relay.example.net:25\", \"[2001:db8::5]:25\")"},
      {"spool = \"/s\"\n[[route]]\nname = \"a\"\nhosts = [\"relay example:25\"]\n",
       "relay.toml:4: route[0].hosts[0]: \"relay example:25\" is not host:port "
       "(\"relay.example.net:25\", \"[2001:db8::5]:25\")"},
      {"spool = \"/s\"\n[[route]]\nname = \"a\"\nhosts = []\n",
       "relay.toml:4: route[0].hosts: is empty (use mx = true for MX routing)"},
      {"spool = \"/s\"\n[[route]]\nname = \"a\"\nmx = true\ntls = \"strict\"\n",
       "relay.toml:5: route[0].tls: \"strict\" is not one of \"none\", \"opportunistic\", "
       "\"required\", \"verify\""},
      {"spool = \"/s\"\n[[route]]\nname = \"a\"\nmx = true\nnxdomain = \"maybe\"\n",
       "relay.toml:5: route[0].nxdomain: \"maybe\" is not \"bounce\" or \"defer\""},
      {"spool = \"/s\"\n[[route]]\nname = \"a\"\nmx = true\nmta_sts = false\nca_file = "
       "\"/etc/ssl/x.pem\"\n",
       "relay.toml:6: route[0].ca_file: is only used with tls = \"verify\" or mta_sts = true"},
      {"spool = \"/s\"\n[[route]]\nname = \"a\"\nhosts = [\"h:25\"]\nca_file = "
       "\"/etc/ssl/x.pem\"\n",
       "relay.toml:5: route[0].ca_file: is only used with tls = \"verify\""},
      {"spool = \"/s\"\n[mta_sts]\nport = 0\n",
       "relay.toml:3: mta_sts.port: 0 is not allowed (must be at least 1)"},
      {"spool = \"/s\"\n[mta_sts]\nenable = false\n",
       "relay.toml:3: mta_sts.enable: unknown key (did you mean \"enabled\"?)"},
      {"spool = \"/s\"\n[[dkim.key]]\ndomain = \"example.com\"\nselector = \"s\"\n",
       "relay.toml:2: dkim.key[0].key_file: missing"},
      {"spool = \"/s\"\n[[dkim.key]]\ndomain = \"example.com\"\nselector = \"s\"\nkey_file = "
       "\"/nonexistent.pem\"\n",
       "relay.toml:2: dkim.key[0]: DKIM key s._domainkey.example.com: cannot read key file "
       "/nonexistent.pem"},
      {"spool = \"/s\"\n[[route]]\nname = \"a\"\nmx = true\ntls = \"verify\"\nca_file = "
       "\"/nonexistent/ca.pem\"\n",
       "relay.toml:6: route[0].ca_file: /nonexistent/ca.pem: No such file or directory"},
      {"spool = \"/s\"\n[[route]]\nname = \"a\"\nmx = true\nport = 0\n",
       "relay.toml:5: route[0].port: 0 is not allowed (must be at least 1)"},
      {"spool = \"/s\"\n[[route]]\nname = \"a\"\nmx = true\nmax_connections = 0\n",
       "relay.toml:5: route[0].max_connections: 0 is not allowed (must be at least 1)"},
      {"spool = \"/s\"\n[[route]]\nname = \"a\"\nmx = true\ntimeouts = { conect = \"5s\" }\n",
       "relay.toml:5: route[0].timeouts.conect: unknown key (did you mean \"connect\"?)"},
      {"spool = \"/s\"\n[[route]]\nname = \"a\"\nmx = true\ntimeouts = { connect = \"0ms\" }\n",
       "relay.toml:5: route[0].timeouts.connect: must be longer than zero"},
      {"spool = \"/s\"\n[[route]]\nname = \"a\"\nmx = true\nauth = { username = \"u\" }\n",
       "relay.toml:5: route[0].auth.password: missing"},
      {"spool = \"/s\"\n[[route]]\nname = \"a\"\nmx = true\nsource_address = \"eth0\"\n",
       "relay.toml:5: route[0].source_address: \"eth0\" is not a numeric IP address"},
      {"spool = \"/s\"\n[[route]]\nname = \"a\"\nmx = true\ndomains = [\"ex ample.com\"]\n",
       "relay.toml:5: route[0].domains[0]: \"ex ample.com\" is not a domain name "
       "(\"example.com\", or \".example.com\" for subdomains)"},
      {"spool = \"/s\"\n[[route]]\nname = \"a\"\nmx = true\ndomains = [\".\"]\n",
       "relay.toml:5: route[0].domains[0]: \".\" is a dot without a domain (\"example.com\", or "
       "\".example.com\" for subdomains)"},
      {"spool = \"/s\"\n[[route]]\nname = \"a\"\nmx = true\ndomains = [\"example.com\"]\n"
       "[[route]]\nname = \"b\"\nhosts = [\"10.0.0.5\"]\ndomains = [\"Example.COM\"]\n",
       "relay.toml:9: route[1].domains[0]: \"Example.COM\" is mapped to route \"a\" already"},
      {"spool = \"/s\"\n[[route]]\nname = \"a\"\nmx = true\ndefault = true\n[[route]]\nname = "
       "\"b\"\nmx = true\ndefault = true\n",
       "relay.toml:9: route[1].default: route[0] is the default already"},
      {"spool = \"/s\"\n[[route]]\nname = \"a\"\nmx = true\nhelo = \"\"\n",
       "relay.toml:5: route[0].helo: \"\" is not a host name"},
      {"spool = \"/s\"\n[[route]]\nname = \"a\"\nmx = \"yes\"\n",
       "relay.toml:4: route[0].mx: expected true or false, got a string"},
      {"spool = \"/s\"\n[[route]]\nname = \"a\"\nmx = true\nmax_conections = 3\n",
       "relay.toml:5: route[0].max_conections: unknown key (did you mean \"max_connections\"?)"},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    CHECK(error_of(c.text) == c.message);
  }
}

TEST_CASE("a TOML syntax error names the file, the line and the column", "[config]") {
  std::string msg = error_of("spool = \"/s\"\n[queue\ncycle = \"1m\"\n");
  CHECK(msg.rfind("relay.toml:2: syntax error: ", 0) == 0);
  CHECK(msg.find("(column ") != std::string::npos);
  // A key given twice is a TOML error too, not "the last one wins".
  msg = error_of("spool = \"/s\"\nspool = \"/t\"\n");
  CHECK(msg.rfind("relay.toml:2: syntax error: ", 0) == 0);
}

TEST_CASE("load_config names the file it could not read", "[config]") {
  auto cfg = mailq::relay::load_config("/nonexistent/mailq-relay.toml");
  REQUIRE_FALSE(cfg);
  CHECK(cfg.error().code == mailq::make_error_code(mailq::errc::storage_failure));
  CHECK(cfg.error().message ==
        "/nonexistent/mailq-relay.toml: cannot read: No such file or directory");

  mailq::test::TempDir dir;
  mailq::test::write_file(dir.file("bad.toml"), "spool = \"/s\"\n\n[queue]\ncycle = \"15x\"\n");
  auto bad = mailq::relay::load_config(dir.file("bad.toml"));
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message ==
        dir.file("bad.toml") + ":4: queue.cycle: \"15x\" is not a duration (use ms, s, m, h or d)");
}

TEST_CASE("route_table applies mx_port to MX routes and keeps static hosts", "[config]") {
  auto cfg = parse_config(
      "spool = \"/s\"\n"
      "[resolver]\nmx_port = 2526\n"
      "[[route]]\nname = \"tcp_internal\"\ndomains = [\".example.com\"]\n"
      "hosts = [\"relay.example.net\", \"[2001:db8::5]:2525\"]\nport = 587\n"
      "[[route]]\nname = \"tcp_special\"\ndomains = [\"special.test\"]\nmx = true\nport = 2600\n"
      "nxdomain = \"bounce\"\nauth = { username = \"u\", password = \"p w\" }\n"
      "[[route]]\nname = \"tcp_mx\"\nmx = true\ndefault = true\n");
  INFO((cfg ? std::string() : cfg.error().message));
  REQUIRE(cfg);
  CHECK(cfg->default_route == "tcp_mx");
  REQUIRE(cfg->routes.size() == 3);
  REQUIRE(cfg->routes[0].hosts.size() == 2);
  CHECK(cfg->routes[0].hosts[0].host == "relay.example.net");
  CHECK(cfg->routes[0].hosts[0].port == 587);  // the route's port: none written
  CHECK(cfg->routes[0].hosts[1].host == "2001:db8::5");
  CHECK(cfg->routes[0].hosts[1].port == 2525);  // written: kept
  CHECK(cfg->routes[1].mx_port == 2600);
  CHECK(cfg->routes[1].nxdomain_is_permanent);
  REQUIRE(cfg->routes[1].auth);
  CHECK(cfg->routes[1].auth->username == "u");
  CHECK(cfg->routes[1].auth->password == "p w");
  CHECK(cfg->routes[2].mx_port == 2526);
  CHECK(cfg->route_ports == std::vector<std::uint16_t>{587, 2600, 0});

  auto table = cfg->route_table();
  REQUIRE(table);
  CHECK(table->lookup("a.example.com").name == "tcp_internal");
  CHECK(table->lookup("example.com").name == "tcp_mx");
  CHECK(table->lookup("special.test").mx_port == 2600);
  CHECK(table->lookup("elsewhere.test").name == "tcp_mx");
  CHECK(table->lookup("elsewhere.test").mx_port == 2526);
  CHECK(table->find("default-non-local-route")->mx_port == 2526);

  // A test points MX delivery at its own server after loading: route_table follows.
  cfg->mx_port = 40025;
  auto moved = cfg->route_table();
  REQUIRE(moved);
  CHECK(moved->lookup("elsewhere.test").mx_port == 40025);
  CHECK(moved->find("default-non-local-route")->mx_port == 40025);
  CHECK(moved->lookup("special.test").mx_port == 2600);
  CHECK(moved->lookup("a.example.com").hosts[0].port == 587);
}

TEST_CASE("[delivery] source_address binds every route without its own, the built-in one too",
          "[config]") {
  const std::string text =
      "spool = \"/s\"\n"
      "[resolver]\nsource_address = \"::1\"\n"
      "[delivery]\nsource_address = \"127.0.0.2\"\n"
      "[[route]]\nname = \"own\"\ndomains = [\"own.test\"]\nhosts = [\"127.0.0.9\"]\n"
      "source_address = \"127.0.0.7\"\n"
      "[[route]]\nname = \"plain\"\ndomains = [\"plain.test\"]\nmx = true\n";
  auto cfg = parse_config(text);
  INFO((cfg ? std::string() : cfg.error().message));
  REQUIRE(cfg);
  CHECK(cfg->resolver.source_address == "::1");
  auto table = cfg->route_table();
  REQUIRE(table);
  CHECK(table->lookup("own.test").source_address == "127.0.0.7");
  CHECK(table->lookup("plain.test").source_address == "127.0.0.2");
  CHECK(table->lookup("elsewhere.test").source_address == "127.0.0.2");  // the built-in route
  // Printed and loaded again: the same.
  const std::string printed = mailq::relay::print_config(*cfg);
  CHECK(printed.find("\n[delivery]\n") != std::string::npos);
  CHECK(printed.find("source_address = \"127.0.0.2\"\n") != std::string::npos);
  auto again = parse_config(printed, "printed.toml");
  REQUIRE(again);
  CHECK(again->source_address == "127.0.0.2");
  CHECK(again->resolver.source_address == "::1");
  CHECK(again->route_table()->lookup("own.test").source_address == "127.0.0.7");
}

TEST_CASE(
    "the printed effective configuration loads again to the same settings: printing it twice "
    "gives the same text",
    "[config][print]") {
  auto loaded = mailq::relay::load_config(example_path());
  REQUIRE(loaded);
  const std::string first = mailq::relay::print_config(*loaded);
  auto again = parse_config(first, "printed.toml");
  INFO(first);
  INFO((again ? std::string() : again.error().message));
  REQUIRE(again);
  std::string second = mailq::relay::print_config(*again);
  // Only the file name in the first line differs.
  CHECK(second.substr(second.find('\n')) == first.substr(first.find('\n')));
  // Defaults are there, with the values in force.
  CHECK(first.find("\n[domain_state]\nfailure_threshold = ") != std::string::npos);
  CHECK(first.find("timeouts = { connect = ") != std::string::npos);
  CHECK(first.find("data_term = \"10m\"") != std::string::npos);
  CHECK(again->routes.size() == loaded->routes.size());
  CHECK(again->deliverer.cycle == loaded->deliverer.cycle);
  CHECK(again->queue.retry.floor == loaded->queue.retry.floor);
  CHECK(again->resolver.cache.max_ttl == loaded->resolver.cache.max_ttl);
}

TEST_CASE("a printed configuration never shows a route's password", "[config][print]") {
  auto c = parse_config(
      "spool = \"/s\"\n[[route]]\nname = \"smart\"\nhosts = [\"relay.example.net:587\"]\n"
      "tls = \"required\"\nauth = { username = \"u\\\"ser\", password = \"s3cret\" }\n",
      "relay.toml");
  REQUIRE(c);
  const std::string printed = mailq::relay::print_config(*c);
  CHECK(printed.find("s3cret") == std::string::npos);
  CHECK(printed.find("# auth: username \"u\\\"ser\", the password is not printed") !=
        std::string::npos);
  CHECK(printed.find("hosts = [\"relay.example.net:587\"]") != std::string::npos);
}

TEST_CASE("a route no domain reaches is valid, and warned about", "[config]") {
  auto c = parse_config(
      "spool = \"/s\"\n[[route]]\nname = \"forgotten\"\nhosts = [\"relay.example.net\"]\n"
      "[[route]]\nname = \"used\"\ndomains = [\"example.com\"]\nhosts = [\"10.0.0.5\"]\n"
      "[[route]]\nname = \"fallback\"\nmx = true\ndefault = true\n",
      "relay.toml");
  REQUIRE(c);
  CHECK(mailq::relay::config_warnings(*c) ==
        std::vector<std::string>{
            "route \"forgotten\" has no domains and is not the default: no mail takes it"});
  auto example = mailq::relay::load_config(example_path());
  REQUIRE(example);
  CHECK(mailq::relay::config_warnings(*example).empty());
}

TEST_CASE("[listen.tls] and [listen.auth] are read, checked and printed so that they load again",
          "[config][listener][tls][auth]") {
  auto cfg = parse_config(
      "spool = \"/s\"\n[listen]\naddress = \"0.0.0.0:587\"\nnetworks = [\"10.0.0.0/8\"]\n"
      "[listen.tls]\ncertificate = \"/etc/mailq/c.pem\"\nkey = \"/etc/mailq/k.pem\"\n"
      "required = true\n"
      "[listen.auth]\ncredentials = \"/etc/mailq/creds\"\nclients = [\"192.0.2.0/24\"]\n"
      "required = true\nmax_failures = 5\n",
      "relay.toml");
  INFO((cfg ? std::string() : cfg.error().message));
  REQUIRE(cfg);
  const auto& l = cfg->listen;
  CHECK(l.tls_certificate == "/etc/mailq/c.pem");
  CHECK(l.tls_key == "/etc/mailq/k.pem");
  CHECK(l.tls_required);
  CHECK(l.auth_credentials == "/etc/mailq/creds");
  REQUIRE(l.auth_clients.size() == 1);
  CHECK(l.auth_clients[0].contains("192.0.2.9"));
  CHECK(l.auth_required);
  CHECK_FALSE(l.auth_plaintext);
  CHECK(l.auth_max_failures == 5);
  auto again = parse_config(mailq::relay::print_config(*cfg), "printed.toml");
  INFO((again ? std::string() : again.error().message));
  REQUIRE(again);
  CHECK(again->listen.tls_key == "/etc/mailq/k.pem");
  CHECK(again->listen.auth_required);
  CHECK(again->listen.auth_clients.size() == 1);
  CHECK(again->listen.auth_max_failures == 5);

  // The default clients: anyone may connect to log in.
  auto open = parse_config(
      "spool = \"/s\"\n[listen]\naddress = \"127.0.0.1:587\"\n[listen.tls]\ncertificate = "
      "\"c\"\nkey = \"k\"\n[listen.auth]\ncredentials = \"f\"\n",
      "relay.toml");
  REQUIRE(open);
  CHECK(open->listen.auth_clients.size() == 2);
  CHECK(open->listen.auth_clients[0].contains("203.0.113.5"));
  CHECK(open->listen.auth_clients[1].contains("2001:db8::1"));

  auto error_of = [](const std::string& text) {
    auto r = parse_config(text, "relay.toml");
    return r ? std::string("loaded") : r.error().message;
  };
  const std::string head = "spool = \"/s\"\n[listen]\naddress = \"127.0.0.1:587\"\n";
  CHECK(error_of(head + "[listen.tls]\ncertificate = \"c\"\n") ==
        "relay.toml:4: listen.tls.key: missing (the PEM private key)");
  CHECK(error_of(head + "[listen.tls]\ncertificate = \"c\"\nkey = \"k\"\nverify = true\n")
            .find("listen.tls.verify: unknown key") != std::string::npos);
  CHECK(error_of(head + "[listen.auth]\ncredentials = \"f\"\n") ==
        "relay.toml:4: listen.auth: needs [listen.tls] (passwords are only taken over TLS), or "
        "allow_plaintext = true");
  CHECK(error_of(head + "[listen.auth]\ncredentials = \"f\"\nallow_plaintext = true\n") ==
        "loaded");
  CHECK(error_of(head + "[listen.auth]\nallow_plaintext = true\n") ==
        "relay.toml:4: listen.auth.credentials: missing (the file of user:hash lines)");
  CHECK(error_of(head + "[listen.auth]\ncredentials = \"f\"\nallow_plaintext = true\n"
                        "clients = [\"nonsense\"]\n")
            .find("listen.auth.clients[0]") != std::string::npos);
}
