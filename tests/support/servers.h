// Test helpers: real servers on 127.0.0.1 (Postfix smtp-sink, an aiosmtpd STARTTLS server),
// a test PKI made with openssl, child processes, temporary directories.
//
// Every server listens on a free ephemeral port chosen at run time, is stopped by its
// destructor (SIGTERM, then SIGKILL), and dies with the test process (PR_SET_PDEATHSIG).
// Every wait is bounded.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mailq/transport.h"

namespace mailq {
namespace test {

using namespace std::chrono_literals;

/// A fresh directory under $TMPDIR (or /tmp), removed with its contents by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const noexcept { return path_; }
  std::string file(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

std::string read_file(const std::string& path);
void write_file(const std::string& path, std::string_view content);
/// Regular files of `dir` whose name starts with `prefix`, sorted by name.
std::vector<std::string> list_files(const std::string& dir, std::string_view prefix = {});
/// The value of header field `name` (the first line "\nNAME: digits" in `text`) as a number;
/// -1 when there is none or it is not all digits. Numbered test messages carry such fields.
long long header_number(const std::string& text, const std::string& name);

/// Runs a program to completion, its output (stdout and stderr) in `*output`. Returns the
/// exit status, or -1 when it could not run or was killed after `limit`.
int run_program(const std::vector<std::string>& argv, std::string* output = nullptr,
                std::chrono::milliseconds limit = 60s);

/// A background process, stopped by the destructor.
class ChildProcess {
 public:
  ChildProcess() = default;
  ~ChildProcess() { stop(); }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  /// Starts `argv` (searched in PATH) with stdout and stderr appended to `output_file`.
  bool start(const std::vector<std::string>& argv, const std::string& output_file,
             std::string* error);
  /// SIGTERM, up to 5 s for it to exit, then SIGKILL. Idempotent.
  void stop();
  bool running();
  pid_t pid() const noexcept { return pid_; }

 private:
  pid_t pid_ = -1;
};

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
std::uint16_t free_tcp_port();
/// Whether something accepts TCP connections at address:port, waiting up to `limit`.
bool wait_for_listener(const std::string& address, std::uint16_t port,
                       std::chrono::milliseconds limit = 10s);

/// The system Python, with the Debian packages the tests use (python3-aiosmtpd, python3-dkim):
/// a pyenv or venv python first in PATH may lack them.
std::string system_python();

/// Waits (up to `limit`) for a "PORT <n>" line in the file `output` a child writes once it
/// listens; nullopt when the child ended or the time passed first.
std::optional<std::uint16_t> wait_for_port_line(ChildProcess& process, const std::string& output,
                                                std::chrono::milliseconds limit);

/// Postfix's smtp-sink on 127.0.0.1, dumping each message to a file (`-d`).
class SmtpSink {
 public:
  /// `flags` are extra smtp-sink options ("-p", "-r", "RCPT", ...). The sink ends after
  /// `lifetime` whatever happens (an orphan does not outlive it).
  explicit SmtpSink(std::vector<std::string> flags = {},
                    std::chrono::seconds lifetime = std::chrono::seconds(600));
  ~SmtpSink() { stop(); }

  bool start(std::string* error);
  void stop() { process_.stop(); }
  Endpoint endpoint() const { return {"127.0.0.1", port_}; }
  std::uint16_t port() const noexcept { return port_; }
  /// Waits (up to `limit`) until `count` dump files exist and returns their contents in name
  /// order (random names: not the order of arrival). smtp-sink writes a dump as "X-..." headers, a
  /// Received header, then the message with LF line endings and dots unstuffed, then an empty line.
  std::vector<std::string> wait_for_dumps(std::size_t count, std::chrono::milliseconds limit = 10s);
  std::string output() const { return read_file(dir_.file("smtp-sink.out")); }

 private:
  std::vector<std::string> flags_;
  std::chrono::seconds lifetime_;
  TempDir dir_;
  ChildProcess process_;
  std::uint16_t port_ = 0;
};

/// A CA, a server certificate it signed, and a self-signed server certificate, made with
/// openssl (EC P-256 keys, valid for two days).
struct TestPki {
  static constexpr const char* kServerName = "mx.mailq.test";

  /// Writes everything into `dir`.
  bool generate(const std::string& dir, std::string* error);

  std::string ca_cert;
  std::string server_cert;  ///< CN and subjectAltName DNS = kServerName, signed by the CA
  std::string server_key;
  std::string self_signed_cert;  ///< CN and subjectAltName DNS = kServerName, self-signed
  std::string self_signed_key;
};

/// An aiosmtpd SMTP server (python3-aiosmtpd) on 127.0.0.1, optionally offering STARTTLS
/// with a given certificate. Writes each message's content (after DATA, dots unstuffed, CRLF
/// kept) to a file, and logs "SNI <name>" / "DATA tls=<0|1> ..." lines to its output.
class AiosmtpdServer {
 public:
  enum class Tls { none, offered, required };
  AiosmtpdServer(Tls tls, std::string cert_file = {}, std::string key_file = {});
  ~AiosmtpdServer() { stop(); }

  bool start(std::string* error);
  void stop() { process_.stop(); }
  Endpoint endpoint() const { return {"127.0.0.1", port_}; }
  std::vector<std::string> wait_for_messages(std::size_t count,
                                             std::chrono::milliseconds limit = 10s);
  /// Waits until the output contains `needle` (up to `limit`).
  bool wait_for_output(std::string_view needle, std::chrono::milliseconds limit = 10s);
  std::string output() const { return read_file(dir_.file("server.out")); }

 private:
  Tls tls_;
  std::string cert_;
  std::string key_;
  TempDir dir_;
  ChildProcess process_;
  std::uint16_t port_ = 0;
};

/// A listening socket on 127.0.0.1 whose accept queue is full (backlog 0, one connection
/// queued and never accepted): Linux drops further SYNs, so a connect to it neither
/// succeeds nor fails until the client gives up. The loopback way to make a connect time out.
class BlackholeListener {
 public:
  BlackholeListener() = default;
  ~BlackholeListener();
  BlackholeListener(const BlackholeListener&) = delete;
  BlackholeListener& operator=(const BlackholeListener&) = delete;

  /// False (and `error`) when the queue could not be shown to be full.
  bool start(std::string* error);
  Endpoint endpoint() const { return {"127.0.0.1", port_}; }

 private:
  int listener_ = -1;
  std::vector<int> fillers_;
  std::uint16_t port_ = 0;
};

}  // namespace test
}  // namespace mailq
