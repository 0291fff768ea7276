// mailq-relay — the configuration file (TOML).
//
// One file configures the daemon: the spool, the log, the EHLO name, the optional SMTP
// listener, the resolver, the queue, the domain state table and the routes. Durations are
// strings with a unit: "250ms", "30s", "15m", "4h", "5d", "1h30m" (a bare integer is refused:
// the unit is never guessed). Every error names the line and the key path ("config.toml:14:
// queue.cycle: "15x" is not a duration (use ms, s, m, h or d)", "relay.toml:31:
// route[1].hosts[0]: ...") and nothing starts. Unknown keys are errors (a typo'd key would
// otherwise leave a default the operator did not choose), with a suggestion when one is close.
//
// The keys and their defaults are documented in examples/relay/mailq-relay.example.toml.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mailq/ares/resolver.h"
#include "mailq/deliverer.h"
#include "mailq/dkim.h"
#include "mailq/domain_state.h"
#include "mailq/error.h"
#include "mailq/net.h"
#include "mailq/queue.h"
#include "mailq/route.h"
#include "mailq/spool/layout.h"
#include "mailq/uv/mta_sts.h"

namespace mailq::relay {

/// In the spool directory of a running relay whose `control` is not `<spool>/control.sock`:
/// the socket's path, one line, so that the tools given only `--spool` find it.
inline constexpr const char* kControlPathFile = "control.path";

/// The receiving side (`listen`): who may submit and how much.
struct ListenConfig {
  std::string address;  ///< "127.0.0.1:2525" / "[::1]:2525"; empty = no listener
  std::string host;     ///< the address part
  std::uint16_t port = 0;
  /// Clients allowed to submit; the default is loopback only (no open relay).
  std::vector<Network> networks;  ///< default {127.0.0.0/8, ::1/128}
  std::uint64_t max_message_size = 50ull << 20;
  std::uint32_t max_recipients = 1000;
  std::uint32_t max_sessions = 1000;
  /// More Received header fields than this: 554 5.4.6 (a loop); 0 = no limit.
  std::uint32_t max_received_headers = 50;
  Duration idle_timeout{std::chrono::minutes(5)};  ///< per command / data block
  /// MAIL is refused (452 4.3.1) while the spool's file system has less free (0 = no check).
  std::uint64_t min_free_space = 16ull << 20;
  /// [listen.tls]: STARTTLS with this certificate chain and key (both or neither).
  std::string tls_certificate;
  std::string tls_key;
  bool tls_required = false;  ///< MAIL before STARTTLS: 530 5.7.0
  /// [listen.auth]: AUTH PLAIN/LOGIN against a file of hashed passwords (uv/credentials.h).
  std::string auth_credentials;  ///< empty = no AUTH
  /// Who may connect to authenticate (besides `networks`); default anyone.
  std::vector<Network> auth_clients;
  bool auth_required = false;   ///< AUTH before MAIL for everyone, `networks` too (submission)
  bool auth_plaintext = false;  ///< AUTH offered without TLS
  std::uint32_t auth_max_failures = 3;
};

/// Everything the relay needs. `load_config` fills it; defaults are those of the library
/// objects unless said otherwise.
struct RelayConfig {
  std::string file;   ///< the path it was read from
  std::string spool;  ///< required
  /// "files" or "segments"; unset: the layout the spool holds, "segments" for a new one
  std::optional<spool::Layout> spool_layout;
  std::string log;      ///< "" = standard output; "-" = standard output too
  std::string helo;     ///< default: the host name
  std::string control;  ///< control socket path; default "<spool>/control.sock"
  std::string metrics;  ///< "127.0.0.1:9100"; empty = no metrics endpoint
  ListenConfig listen;

  ares::AresResolverOptions resolver;  ///< [resolver] servers/timeout/tries/deadline
  std::uint16_t mx_port = 25;          ///< [resolver] mx_port, applied to every MX route
  /// [delivery] source_address: the address outgoing connections are made from, for every
  /// route without a source_address of its own (the built-in MX route too). Empty: any.
  std::string source_address;
  /// [resolver] allow_internal_mx: the internal networks MX hosts may be dialled in, for every
  /// MX route without a list of its own (Route::allow_internal_mx); none by default.
  std::vector<Network> allow_internal_mx;

  QueueConfig queue;               ///< [queue] cycle lives in `deliverer.cycle`
  DelivererConfig deliverer;       ///< [queue] cycle, [delivery] limits
  DomainStateConfig domain_state;  ///< [domain_state]

  /// [[dkim.key]] tables in file order; the signer made of them (keys read and checked at
  /// load time) is `deliverer.signer`, null when there is none.
  dkim::SignerConfig dkim;
  std::shared_ptr<const dkim::Signer> dkim_signer;
  /// [mta_sts]: recipient domains' MTA-STS policies honoured on MX routes (RFC 8461); unset
  /// with `enabled = false`. On by default, its cache in <spool>/mta-sts.cache.
  std::optional<uv::MtaStsOptions> mta_sts;

  std::vector<Route> routes;  ///< [[route]] tables in file order
  /// For each route (same index): the domain patterns mapped to it.
  std::vector<std::vector<std::string>> route_domains;
  /// For each route (same index): false when the route says `dkim = false` (its messages go
  /// out unsigned). (`mta_sts = false` is the route's own `Route::mta_sts`.)
  std::vector<bool> route_signs;
  /// For each route (same index): its `port` key, 0 when not given. An MX route without one
  /// uses `mx_port`; a static route's `port` is the port of its hosts written without one.
  std::vector<std::uint16_t> route_ports;
  /// The route used for unmatched domains: the [[route]] with `default = true`, else the one
  /// named "default-non-local-route", else the built-in MX route of that name.
  std::string default_route = "default-non-local-route";

  /// Builds the RouteTable (routes added, patterns mapped, default set). MX routes (the
  /// built-in default included) get `mx_port` unless their own `port` was given, so a test
  /// may change `mx_port` after loading.
  Result<RouteTable> route_table() const;
};

/// Reads and validates a configuration file. Errors (`errc::invalid_parameter`, or
/// `errc::storage_failure` when the file cannot be read) carry "FILE:LINE: key: what".
Result<RelayConfig> load_config(const std::string& path);
/// The same from text (tests, fuzzing); `name` stands for the file name in messages.
Result<RelayConfig> parse_config(std::string_view text, std::string_view name = "config");

/// What is valid but probably not meant, one line each: a route that no domain reaches (no
/// `domains`, not the default). `mailq-relay --check` prints them; the relay logs them.
std::vector<std::string> config_warnings(const RelayConfig& config);

/// The effective configuration as TOML, every key with the value in force (defaults
/// included), loadable again to the same settings; a route's password is left out (a comment
/// says so). `mailq-relay --check --print`.
std::string print_config(const RelayConfig& config);

/// "250ms", "30s", "15m", "4h", "5d" (also "1h30m"); errors name the text.
Result<Duration> parse_duration(std::string_view text);

}  // namespace mailq::relay
