// mailq-relay — the mailq engine as a daemon.
//
//   mailq-relay --config FILE            run: deliver, accept (listen), serve the control socket
//   mailq-relay --config FILE --once     deliver what is due, then exit: 0 when the queue is
//                                        empty, 75 when messages remain (deferred or held)
//   mailq-relay --config FILE --once --single-pass
//                                        the same, trying each message due at the start once
//                                        (a retry that comes due during the run waits)
//   mailq-relay --config FILE --check    validate the configuration: 0, or 78 and the error
//   mailq-relay --config FILE --check --print
//                                        the same, printing the effective configuration
//                                        (defaults included) as TOML
//   mailq-relay --config FILE --dkim-records
//                                        the DNS TXT record each [[dkim.key]] needs, as zone
//                                        file lines (the public key derived from the private)
//
// Exit statuses (sysexits): 64 usage, 78 configuration error, 69 the spool, a port or the
// control socket is held by someone else, 73 the log or the spool cannot be opened, 75 (--once)
// messages remain. SIGTERM / SIGINT stop gracefully (in-flight transactions finish, exit 0);
// SIGHUP reopens the log.
#include <malloc.h>
#include <sys/resource.h>
#include <termios.h>
#include <unistd.h>
#include <uv.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "examples/relay/config.h"
#include "examples/relay/relay.h"
#include "mailq/uv/credentials.h"
#include "mailq/uv/smtp_listener.h"

namespace {

constexpr int kExitUsage = 64;

int usage(const std::string& why) {
  std::fprintf(stderr,
               "mailq-relay: %s\n"
               "usage: mailq-relay --config FILE [--once [--single-pass] | --check [--print] |\n"
               "                                  --dkim-records]\n"
               "       mailq-relay --hash-password\n",
               why.c_str());
  return kExitUsage;
}

// --hash-password: one line from standard input (asked for without echo on a terminal) ->
// a yescrypt hash for a [listen.auth] credentials file.
int hash_password() {
  const bool tty = ::isatty(STDIN_FILENO) == 1;
  termios saved{};
  if (tty && ::tcgetattr(STDIN_FILENO, &saved) == 0) {
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    (void)::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    std::fputs("Password: ", stderr);
  }
  std::string password;
  int c;
  while ((c = std::getchar()) != EOF && c != '\n') password += static_cast<char>(c);
  if (!password.empty() && password.back() == '\r') password.pop_back();
  if (tty) {
    (void)::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
    std::fputs("\n", stderr);
  }
  if (password.empty()) {
    std::fprintf(stderr, "mailq-relay: no password on standard input\n");
    return kExitUsage;
  }
  auto hash = mailq::uv::hash_password(password);
  if (!hash) {
    std::fprintf(stderr, "mailq-relay: %s\n", hash.error().message.c_str());
    return 70;
  }
  std::printf("%s\n", hash.value().c_str());
  return 0;
}

// --check: the files the listener would load, loaded.
bool check_listener_files(const mailq::relay::RelayConfig& config) {
  const auto& l = config.listen;
  bool ok = true;
  if (!l.tls_certificate.empty()) {
    if (auto r = mailq::uv::check_tls_files(l.tls_certificate, l.tls_key); !r) {
      std::fprintf(stderr, "mailq-relay: %s: listen.tls: %s\n", config.file.c_str(),
                   r.error().message.c_str());
      ok = false;
    }
  }
  if (!l.auth_credentials.empty()) {
    if (auto r = mailq::uv::PasswordFile::load(l.auth_credentials); !r) {
      std::fprintf(stderr, "mailq-relay: %s: listen.auth: %s\n", config.file.c_str(),
                   r.error().message.c_str());
      ok = false;
    } else if (r.value()->world_readable()) {
      std::fprintf(stderr, "mailq-relay: %s: warning: %s is readable by every user\n",
                   config.file.c_str(), l.auth_credentials.c_str());
    }
  }
  return ok;
}

}  // namespace

// Every SMTP session and outgoing connection is a descriptor: take the hard limit (systemd's
// default soft limit is 1024) rather than refusing clients early.
static void raise_descriptor_limit() {
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max) return;
  rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? rlim_t{1} << 20 : rl.rlim_max;
  (void)::setrlimit(RLIMIT_NOFILE, &rl);
}

int main(int argc, char** argv) {
  using namespace mailq::relay;
  // Message bodies (up to the size limit) come and go all day: keep freed ones in the heap
  // for the next message instead of mapping fresh pages from the kernel for each (measured:
  // a 100 KB ingest spent most of a copy's time in page faults on new mappings).
  mallopt(M_MMAP_THRESHOLD, 16 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  std::string config_path;
  bool once = false;
  bool single_pass = false;
  bool check = false;
  bool print = false;
  bool dkim_records = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--config" || a == "-c") {
      if (i + 1 >= argc) return usage("missing value for " + a);
      config_path = argv[++i];
    } else if (a.rfind("--config=", 0) == 0) {
      config_path = a.substr(9);
    } else if (a == "--once") {
      once = true;
    } else if (a == "--single-pass") {
      single_pass = true;
    } else if (a == "--check") {
      check = true;
    } else if (a == "--print") {
      print = true;
    } else if (a == "--dkim-records") {
      dkim_records = true;
    } else if (a == "--hash-password") {
      if (argc != 2) return usage("--hash-password takes no other option");
      return hash_password();
    } else if (a == "--help" || a == "-h") {
      std::printf(
          "usage: mailq-relay --config FILE [--once [--single-pass] | --check [--print] |\n"
          "                                  --dkim-records]\n"
          "       mailq-relay --hash-password   (reads a password, prints its hash)\n");
      return 0;
    } else {
      return usage("unknown option " + a);
    }
  }
  if (config_path.empty()) return usage("--config FILE is required");
  if (once && check) return usage("--once and --check exclude each other");
  if (single_pass && !once) return usage("--single-pass goes with --once");
  if (print && !check) return usage("--print goes with --check");
  if (dkim_records && (once || check)) return usage("--dkim-records goes alone with --config");

  auto config = load_config(config_path);
  if (!config) {
    std::fprintf(stderr, "mailq-relay: %s\n", config.error().message.c_str());
    return kExitConfig;
  }
  if (dkim_records) {
    if (!config->dkim_signer) {
      std::fprintf(stderr, "mailq-relay: %s has no [[dkim.key]]\n", config_path.c_str());
      return kExitConfig;
    }
    for (const auto& r : config->dkim_signer->dns_records())
      std::printf("%s\n", r.zone_line().c_str());
    return 0;
  }
  if (check) {
    // The routes are built as the relay would build them: what passes here starts.
    auto routes = config->route_table();
    if (!routes) {
      std::fprintf(stderr, "mailq-relay: %s\n", routes.error().message.c_str());
      return kExitConfig;
    }
    if (!check_listener_files(*config)) return kExitConfig;
    for (const auto& w : config_warnings(*config))
      std::fprintf(stderr, "mailq-relay: %s: warning: %s\n", config_path.c_str(), w.c_str());
    if (print)
      std::fputs(print_config(*config).c_str(), stdout);
    else
      std::printf("%s: configuration OK\n", config_path.c_str());
    return 0;
  }

  raise_descriptor_limit();
  uv_loop_t loop;
  uv_loop_init(&loop);
  int status = kExitSoftware;
  {
    RelayOptions options;
    options.once = once;
    options.single_pass = single_pass;
    Relay relay(&loop, std::move(config.value()), options);
    if (relay.start()) {
      std::fprintf(stderr, "mailq-relay: %s\n", relay.last_error().message.c_str());
      status = relay.start_exit_status();
    } else {
      relay.set_on_finished([&status](int s) { status = s; });
      uv_run(&loop, UV_RUN_DEFAULT);
    }
  }
  // Close callbacks of everything the relay closed.
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0) {
    std::fprintf(stderr, "mailq-relay: handles left open at exit\n");
  }
  return status;
}
