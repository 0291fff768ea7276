#include "support/servers.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace mailq {
namespace test {

namespace fs = std::filesystem;

namespace {

void sleep_for(std::chrono::milliseconds d) {
  std::this_thread::sleep_for(d);
}

using Steady = std::chrono::steady_clock;

// The aiosmtpd server. Binds port 0 itself and prints the port, so there is no race for it.
constexpr const char* kAiosmtpdScript = R"PY(
import asyncio, os, signal, ssl, sys
from aiosmtpd.smtp import SMTP

mode, cert, key, outdir = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]

class Handler:
    def __init__(self):
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        path = os.path.join(outdir, "msg-%04d.eml" % self.count)
        with open(path + ".tmp", "wb") as f:
            f.write(envelope.original_content)
        os.rename(path + ".tmp", path)
        print("DATA tls=%d from=<%s> to=%s" % (session.ssl is not None, envelope.mail_from,
              ",".join("<%s>" % r for r in envelope.rcpt_tos)), flush=True)
        return "250 2.0.0 Ok: queued"

def main():
    context = None
    if mode != "none":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        def on_sni(sslobj, name, ctx):
            print("SNI %s" % (name if name else "-"), flush=True)
        context.sni_callback = on_sni
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    handler = Handler()
    def factory():
        return SMTP(handler, hostname="mx.mailq.test", ident="mailq test server",
                    tls_context=context, require_starttls=(mode == "required"))
    server = loop.run_until_complete(loop.create_server(factory, host="127.0.0.1", port=0))
    print("PORT %d" % server.sockets[0].getsockname()[1], flush=True)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.run_forever()
    server.close()

main()
)PY";

}  // namespace

std::string system_python() {
  for (const char* p : {"/usr/bin/python3", "/usr/local/bin/python3"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return "python3";
}

std::optional<std::uint16_t> wait_for_port_line(ChildProcess& process, const std::string& output,
                                                std::chrono::milliseconds limit) {
  const auto deadline = Steady::now() + limit;
  while (Steady::now() < deadline) {
    const std::string text = read_file(output);
    const auto at = text.find("PORT ");
    const auto end = at == std::string::npos ? at : text.find('\n', at);
    if (end != std::string::npos)
      return static_cast<std::uint16_t>(std::stoi(text.substr(at + 5, end - at - 5)));
    if (!process.running()) break;
    sleep_for(20ms);
  }
  return std::nullopt;
}

// --- files ---------------------------------------------------------------------------------

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/mailq-test-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) {
    throw std::runtime_error("mkdtemp failed: " + std::string(std::strerror(errno)));
  }
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void write_file(const std::string& path, std::string_view content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
}

long long header_number(const std::string& text, const std::string& name) {
  const std::string key = "\n" + name + ": ";
  const auto at = text.find(key);
  if (at == std::string::npos) return -1;
  const auto start = at + key.size();
  const auto end = text.find_first_of("\r\n", start);
  if (end == std::string::npos) return -1;  // a line cut short (a partial dump)
  const std::string digits = text.substr(start, end - start);
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoll(digits);
}

std::vector<std::string> list_files(const std::string& dir, std::string_view prefix) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file(ec)) continue;
    const std::string name = entry.path().filename().string();
    if (name.compare(0, prefix.size(), prefix) == 0) names.push_back(entry.path().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

// --- processes -----------------------------------------------------------------------------

namespace {

pid_t spawn(const std::vector<std::string>& argv, const std::string& output_file,
            std::string* error) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const int out = ::open(output_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out < 0) {
    if (error) *error = "cannot open " + output_file + ": " + std::strerror(errno);
    return -1;
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    if (error) *error = std::string("fork: ") + std::strerror(errno);
    ::close(out);
    return -1;
  }
  if (pid == 0) {
    // Only async-signal-safe calls until exec.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::dup2(out, 1);
    ::dup2(out, 2);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(out);
  return pid;
}

// Waits for `pid` up to `limit`; its exit status, or -1 when it is still running.
int wait_exit(pid_t pid, std::chrono::milliseconds limit) {
  const auto deadline = Steady::now() + limit;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (r < 0) return 255;
    if (Steady::now() >= deadline) return -1;
    sleep_for(10ms);
  }
}

}  // namespace

int run_program(const std::vector<std::string>& argv, std::string* output,
                std::chrono::milliseconds limit) {
  TempDir dir;
  const std::string out = dir.file("output");
  std::string error;
  const pid_t pid = spawn(argv, out, &error);
  if (pid < 0) {
    if (output) *output = error;
    return -1;
  }
  int status = wait_exit(pid, limit);
  if (status < 0) {
    ::kill(pid, SIGKILL);
    wait_exit(pid, 5s);
  }
  if (output) *output = read_file(out);
  return status;
}

bool ChildProcess::start(const std::vector<std::string>& argv, const std::string& output_file,
                         std::string* error) {
  stop();
  pid_ = spawn(argv, output_file, error);
  return pid_ > 0;
}

void ChildProcess::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  if (wait_exit(pid_, 5s) < 0) {
    ::kill(pid_, SIGKILL);
    wait_exit(pid_, 5s);
  }
  pid_ = -1;
}

bool ChildProcess::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

// --- ports ---------------------------------------------------------------------------------

std::uint16_t free_tcp_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  std::uint16_t port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

namespace {

// A non-blocking connect to 127.0.0.1:port; 1 connected, 0 no answer within `wait`, -1 failed.
int try_connect(std::uint16_t port, std::chrono::milliseconds wait, int* fd_out) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  int r = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  if (r < 0 && errno != EINPROGRESS) {
    ::close(fd);
    return -1;
  }
  if (r < 0) {
    pollfd p{fd, POLLOUT, 0};
    r = ::poll(&p, 1, static_cast<int>(wait.count()));
    if (r == 0) {
      ::close(fd);
      return 0;
    }
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (r < 0 || err != 0) {
      ::close(fd);
      return -1;
    }
  }
  if (fd_out) {
    *fd_out = fd;
  } else {
    ::close(fd);
  }
  return 1;
}

}  // namespace

bool wait_for_listener(const std::string& address, std::uint16_t port,
                       std::chrono::milliseconds limit) {
  if (address != "127.0.0.1") return false;  // tests only ever listen there
  const auto deadline = Steady::now() + limit;
  while (Steady::now() < deadline) {
    if (try_connect(port, 500ms, nullptr) == 1) return true;
    sleep_for(20ms);
  }
  return false;
}

// --- smtp-sink -----------------------------------------------------------------------------

SmtpSink::SmtpSink(std::vector<std::string> flags, std::chrono::seconds lifetime)
    : flags_(std::move(flags)), lifetime_(lifetime) {}

bool SmtpSink::start(std::string* error) {
  const char* binary = "/usr/sbin/smtp-sink";
  if (::access(binary, X_OK) != 0) {
    *error = "smtp-sink not found (Debian package postfix)";
    return false;
  }
  // smtp-sink drops privileges when run as root (-u is then mandatory); the unprivileged user
  // must be able to write the dumps.
  ::chmod(dir_.path().c_str(), 0777);
  for (int attempt = 0; attempt < 5; ++attempt) {
    port_ = free_tcp_port();
    if (port_ == 0) continue;
    // coreutils' timeout bounds an orphaned sink's life and forwards SIGTERM to it.
    std::vector<std::string> argv{"timeout", "-k", "5", std::to_string(lifetime_.count()), binary};
    if (::geteuid() == 0) {
      argv.push_back("-u");
      argv.push_back("nobody");
    }
    argv.push_back("-d");
    argv.push_back(dir_.path() + "/dump.");
    for (const auto& f : flags_) argv.push_back(f);
    argv.push_back("127.0.0.1:" + std::to_string(port_));
    argv.push_back("16");
    if (!process_.start(argv, dir_.file("smtp-sink.out"), error)) return false;
    if (wait_for_listener("127.0.0.1", port_, 10s)) return true;
    process_.stop();  // the port was taken in between, or the sink failed: try another
  }
  *error = "smtp-sink did not start: " + output();
  return false;
}

std::vector<std::string> SmtpSink::wait_for_dumps(std::size_t count,
                                                  std::chrono::milliseconds limit) {
  const auto deadline = Steady::now() + limit;
  std::vector<std::string> files;
  for (;;) {
    files = list_files(dir_.path(), "dump.");
    if (files.size() >= count || Steady::now() >= deadline) break;
    sleep_for(20ms);
  }
  // A dump is complete when the message's final empty line has been written; smtp-sink
  // closes the file before it replies to the final dot, so by now it is.
  std::vector<std::string> contents;
  for (const auto& f : files) contents.push_back(read_file(f));
  return contents;
}

// --- PKI -----------------------------------------------------------------------------------

bool TestPki::generate(const std::string& dir, std::string* error) {
  ca_cert = dir + "/ca.pem";
  const std::string ca_key = dir + "/ca.key";
  server_cert = dir + "/server.pem";
  server_key = dir + "/server.key";
  const std::string csr = dir + "/server.csr";
  const std::string ext = dir + "/server.ext";
  self_signed_cert = dir + "/self.pem";
  self_signed_key = dir + "/self.key";
  const std::string name = kServerName;
  write_file(ext, "subjectAltName=DNS:" + name +
                      "\nbasicConstraints=critical,CA:FALSE\n"
                      "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n");

  const std::vector<std::vector<std::string>> steps{
      {"openssl",
       "req",
       "-x509",
       "-new",
       "-newkey",
       "ec",
       "-pkeyopt",
       "ec_paramgen_curve:prime256v1",
       "-nodes",
       "-keyout",
       ca_key,
       "-out",
       ca_cert,
       "-days",
       "2",
       "-subj",
       "/O=mailq tests/CN=mailq test CA",
       "-addext",
       "basicConstraints=critical,CA:TRUE",
       "-addext",
       "keyUsage=critical,keyCertSign,cRLSign"},
      {"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
       "-nodes", "-keyout", server_key, "-out", csr, "-subj", "/O=mailq tests/CN=" + name},
      {"openssl", "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-set_serial",
       "4242", "-out", server_cert, "-days", "2", "-extfile", ext},
      {"openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
       "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", self_signed_key, "-out",
       self_signed_cert, "-days", "2", "-subj", "/O=mailq self-signed/CN=" + name, "-addext",
       "subjectAltName=DNS:" + name},
  };
  for (const auto& argv : steps) {
    std::string output;
    if (run_program(argv, &output, 60s) != 0) {
      *error = "openssl " + argv[1] + " failed: " + output;
      return false;
    }
  }
  return true;
}

// --- aiosmtpd ------------------------------------------------------------------------------

AiosmtpdServer::AiosmtpdServer(Tls tls, std::string cert_file, std::string key_file)
    : tls_(tls), cert_(std::move(cert_file)), key_(std::move(key_file)) {}

bool AiosmtpdServer::start(std::string* error) {
  const std::string script = dir_.file("server.py");
  write_file(script, kAiosmtpdScript);
  const char* mode = tls_ == Tls::none ? "none" : tls_ == Tls::offered ? "offered" : "required";
  const std::string out = dir_.file("server.out");
  if (!process_.start({system_python(), "-u", script, mode, cert_.empty() ? "-" : cert_,
                       key_.empty() ? "-" : key_, dir_.path()},
                      out, error)) {
    return false;
  }
  if (auto port = wait_for_port_line(process_, out, 20s)) {
    port_ = *port;
    return true;
  }
  *error = "aiosmtpd server did not start (python3-aiosmtpd installed?): " + read_file(out);
  process_.stop();
  return false;
}

std::vector<std::string> AiosmtpdServer::wait_for_messages(std::size_t count,
                                                           std::chrono::milliseconds limit) {
  const auto deadline = Steady::now() + limit;
  std::vector<std::string> files;
  for (;;) {
    files.clear();
    for (auto& f : list_files(dir_.path(), "msg-")) {
      if (f.size() < 4 || f.compare(f.size() - 4, 4, ".eml") != 0) continue;  // skip .tmp
      files.push_back(f);
    }
    if (files.size() >= count || Steady::now() >= deadline) break;
    sleep_for(20ms);
  }
  std::vector<std::string> contents;
  for (const auto& f : files) contents.push_back(read_file(f));
  return contents;
}

bool AiosmtpdServer::wait_for_output(std::string_view needle, std::chrono::milliseconds limit) {
  const auto deadline = Steady::now() + limit;
  for (;;) {
    if (output().find(needle) != std::string::npos) return true;
    if (Steady::now() >= deadline) return false;
    sleep_for(20ms);
  }
}

// --- blackhole -----------------------------------------------------------------------------

bool BlackholeListener::start(std::string* error) {
  listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (listener_ < 0 || ::bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(listener_, 0) != 0 ||
      ::getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    *error = std::string("cannot listen: ") + std::strerror(errno);
    return false;
  }
  port_ = ntohs(a.sin_port);
  // Fill the accept queue: connections complete while it has room; the first one that gets
  // no answer shows it is full.
  for (int i = 0; i < 16; ++i) {
    int fd = -1;
    const int r = try_connect(port_, 300ms, &fd);
    if (r == 1) {
      fillers_.push_back(fd);
      continue;
    }
    if (r == 0) {
      // Confirm once more: a second probe must not be answered either.
      if (try_connect(port_, 300ms, nullptr) == 0) return true;
    }
    break;
  }
  *error = "could not fill the accept queue of a loopback listener";
  return false;
}

BlackholeListener::~BlackholeListener() {
  for (int fd : fillers_) ::close(fd);
  if (listener_ >= 0) ::close(listener_);
}

}  // namespace test
}  // namespace mailq
