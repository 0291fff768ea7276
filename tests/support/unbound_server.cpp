#include "support/unbound_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

namespace mailq::test {
namespace {

std::uint16_t read16(const unsigned char* p) {
  return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}

sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

std::uint16_t bound_port(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) return 0;
  return ntohs(a.sin_port);
}

std::string type_name(std::uint16_t t) {
  switch (t) {
    case 1:
      return "A";
    case 5:
      return "CNAME";
    case 6:
      return "SOA";
    case 15:
      return "MX";
    case 28:
      return "AAAA";
    default:
      return "TYPE" + std::to_string(t);
  }
}

// Parses the question of a query: "name TYPE", and where the question ends. False when
// malformed (or compressed, which no query uses).
bool parse_question(const unsigned char* p, std::size_t n, std::string* text, std::uint16_t* qtype,
                    std::size_t* end) {
  if (n < 12 || read16(p + 4) < 1) return false;
  std::size_t pos = 12;
  std::string name;
  while (true) {
    if (pos >= n) return false;
    const unsigned len = p[pos];
    if (len == 0) {
      ++pos;
      break;
    }
    if (len > 63 || pos + 1 + len > n) return false;
    if (!name.empty()) name.push_back('.');
    name.append(reinterpret_cast<const char*>(p + pos + 1), len);
    pos += 1 + len;
  }
  if (pos + 4 > n) return false;
  *qtype = read16(p + pos);
  *text = name + " " + type_name(*qtype);
  *end = pos + 4;
  return true;
}

std::vector<unsigned char> build_query(std::uint16_t id, const std::string& qname,
                                       std::uint16_t qtype) {
  std::vector<unsigned char> q = {static_cast<unsigned char>(id >> 8),
                                  static_cast<unsigned char>(id & 0xff),
                                  0x01,
                                  0x00,
                                  0,
                                  1,
                                  0,
                                  0,
                                  0,
                                  0,
                                  0,
                                  0};
  std::size_t start = 0;
  std::string name = qname;
  while (!name.empty() && name.back() == '.') name.pop_back();
  while (start < name.size()) {
    auto dot = name.find('.', start);
    if (dot == std::string::npos) dot = name.size();
    q.push_back(static_cast<unsigned char>(dot - start));
    q.insert(q.end(), name.begin() + static_cast<std::ptrdiff_t>(start),
             name.begin() + static_cast<std::ptrdiff_t>(dot));
    start = dot + 1;
  }
  q.push_back(0);
  q.push_back(static_cast<unsigned char>(qtype >> 8));
  q.push_back(static_cast<unsigned char>(qtype & 0xff));
  q.push_back(0);
  q.push_back(1);
  return q;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

std::uint16_t free_loopback_port(bool udp_and_tcp) {
  for (int attempt = 0; attempt < 50; ++attempt) {
    const int u = socket(AF_INET, SOCK_DGRAM, 0);
    if (u < 0) return 0;
    sockaddr_in a = loopback(0);
    if (bind(u, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      close(u);
      return 0;
    }
    const std::uint16_t port = bound_port(u);
    bool ok = true;
    if (udp_and_tcp) {
      const int t = socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in b = loopback(port);
      ok = t >= 0 && bind(t, reinterpret_cast<sockaddr*>(&b), sizeof b) == 0;
      if (t >= 0) close(t);
    }
    close(u);
    if (ok) return port;
  }
  return 0;
}

int dns_probe(std::uint16_t port, const std::string& qname, std::uint16_t qtype, int timeout_ms) {
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) return -1;
  sockaddr_in to = loopback(port);
  std::random_device rd;
  const auto id = static_cast<std::uint16_t>(rd());
  const auto q = build_query(id, qname, qtype);
  int rcode = -1;
  if (connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) == 0 &&
      send(fd, q.data(), q.size(), 0) == static_cast<ssize_t>(q.size())) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (rcode < 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            deadline - std::chrono::steady_clock::now())
                            .count();
      if (left <= 0) break;
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left)) <= 0) break;
      unsigned char buf[4096];
      const ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n < 0) break;  // e.g. connection refused: nobody listens yet
      if (n >= 12 && read16(buf) == id && (buf[2] & 0x80)) rcode = buf[3] & 0x0f;
    }
  }
  close(fd);
  return rcode;
}

// --- UnboundServer ---------------------------------------------------------------------------

std::unique_ptr<UnboundServer> UnboundServer::start(const Config& config, std::string* error) {
  if (access(kBinary, X_OK) != 0) {
    *error = std::string(kBinary) + " is not installed (Debian package \"unbound\")";
    return nullptr;
  }
  if (config.zones.empty()) {
    *error = "UnboundServer needs at least one zone";
    return nullptr;
  }
  std::string last_log;
  // A port found free can be taken before unbound binds it: try a few.
  for (int attempt = 0; attempt < 3; ++attempt) {
    char tmpl[] = "/tmp/mailq-unbound-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) {
      *error = std::string("mkdtemp: ") + std::strerror(errno);
      return nullptr;
    }
    std::unique_ptr<UnboundServer> s(new UnboundServer);
    s->dir_ = tmpl;
    s->port_ = free_loopback_port();
    if (s->port_ == 0) {
      *error = "no free loopback port";
      return nullptr;
    }

    std::ostringstream conf;
    conf << "server:\n"
         << "  interface: 127.0.0.1\n"
         << "  port: " << s->port_ << "\n"
         << "  interface-automatic: no\n"
         << "  do-ip4: yes\n  do-ip6: no\n  do-udp: yes\n  do-tcp: yes\n"
         << "  do-daemonize: no\n  use-syslog: no\n  logfile: \"\"\n  verbosity: 1\n"
         << "  chroot: \"\"\n  username: \"\"\n"
         << "  directory: \"" << s->dir_ << "\"\n"
         << "  pidfile: \"\"\n"
         << "  num-threads: 1\n  so-reuseport: no\n"
         << "  msg-cache-size: 1m\n  rrset-cache-size: 1m\n"
         << "  access-control: 127.0.0.0/8 allow\n"
         << "  module-config: \""
         << (config.trust_anchor_file.empty() ? "iterator" : "validator iterator")
         << "\"\n"
         // Never a packet to anyone: zones are local, everything else fails (SERVFAIL).
         << "  do-not-query-localhost: yes\n"
         << "  do-not-query-address: 0.0.0.0/0\n"
         << "  do-not-query-address: ::/0\n";
    for (const auto& z : config.zones) {
      // "test." and friends are built-in local zones (RFC 6761) that would shadow ours.
      conf << "  local-zone: \"" << z.name << "\" nodefault\n";
    }
    if (!config.trust_anchor_file.empty())
      conf << "  trust-anchor-file: \"" << config.trust_anchor_file << "\"\n"
           << "  val-log-level: 2\n";
    for (const auto& line : config.server_lines) conf << "  " << line << "\n";
    for (std::size_t i = 0; i < config.zones.size(); ++i) {
      const std::string file = s->dir_ + "/zone" + std::to_string(i) + ".zone";
      std::ofstream(file) << config.zones[i].text;
      conf << "auth-zone:\n"
           << "  name: \"" << config.zones[i].name << "\"\n"
           << "  zonefile: \"" << file
           << "\"\n"
           // Validation applies to what the iterator fetches: downstream service would
           // answer from the zone directly, unvalidated.
           << "  for-downstream: " << (config.trust_anchor_file.empty() ? "yes" : "no")
           << "\n  for-upstream: yes\n  fallback-enabled: no\n";
    }
    conf << config.extra;
    const std::string conf_path = s->dir_ + "/unbound.conf";
    std::ofstream(conf_path) << conf.str();
    const std::string log_path = s->dir_ + "/unbound.log";

    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) {
      *error = std::string("fork: ") + std::strerror(errno);
      return nullptr;
    }
    if (pid == 0) {
      // Child: only async-signal-safe calls until exec.
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(126);
      const int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (log >= 0) {
        dup2(log, 1);
        dup2(log, 2);
      }
      const int null_in = open("/dev/null", O_RDONLY);
      if (null_in >= 0) dup2(null_in, 0);
      execl(kBinary, kBinary, "-d", "-c", conf_path.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    s->pid_ = pid;

    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    bool exited = false;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (waitpid(pid, &status, WNOHANG) == pid) {
        exited = true;
        s->pid_ = -1;
        break;
      }
      if (dns_probe(s->port_, config.zones[0].name, 6, 200) >= 0) return s;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    last_log = s->log();
    if (!exited) {
      *error = "unbound did not answer within 15 s; its log:\n" + last_log;
      return nullptr;  // the destructor kills it
    }
    if (last_log.find("ddress already in use") == std::string::npos) {
      *error = "unbound exited at start; its log:\n" + last_log;
      return nullptr;
    }
  }
  *error = "unbound could not bind a port; its last log:\n" + last_log;
  return nullptr;
}

UnboundServer::~UnboundServer() {
  stop();
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

void UnboundServer::stop() {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  int status = 0;
  while (waitpid(pid_, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() >= deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  pid_ = -1;
}

std::string UnboundServer::address() const {
  return "127.0.0.1:" + std::to_string(port_);
}

std::string UnboundServer::log() const {
  return read_file(dir_ + "/unbound.log");
}

// --- FakeDnsServer ---------------------------------------------------------------------------

namespace {

void alloc_buffer(uv_handle_t*, size_t, uv_buf_t* buf) {
  // Single-threaded tests: one buffer serves every receive (each is consumed in its callback).
  static char storage[65536];
  *buf = uv_buf_init(storage, sizeof storage);
}

uv_udp_t* bind_udp(uv_loop_t* loop, void* data, std::uint16_t* port) {
  auto* h = new uv_udp_t;
  uv_udp_init(loop, h);
  h->data = data;
  sockaddr_in a = loopback(0);
  if (uv_udp_bind(h, reinterpret_cast<const sockaddr*>(&a), 0) != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(h),
             [](uv_handle_t* x) { delete reinterpret_cast<uv_udp_t*>(x); });
    return nullptr;
  }
  sockaddr_in got{};
  int len = sizeof got;
  uv_udp_getsockname(h, reinterpret_cast<sockaddr*>(&got), &len);
  *port = ntohs(got.sin_port);
  return h;
}

void close_udp(uv_udp_t* h) {
  if (h == nullptr) return;
  uv_udp_recv_stop(h);
  h->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(h),
           [](uv_handle_t* x) { delete reinterpret_cast<uv_udp_t*>(x); });
}

}  // namespace

std::unique_ptr<FakeDnsServer> FakeDnsServer::start(uv_loop_t* loop, Mode mode,
                                                    std::uint16_t upstream_port,
                                                    std::uint16_t drop_qtype) {
  std::unique_ptr<FakeDnsServer> s(new FakeDnsServer);
  s->mode_ = mode;
  s->upstream_port_ = upstream_port;
  s->drop_qtype_ = drop_qtype;
  s->front_ = bind_udp(loop, s.get(), &s->port_);
  if (s->front_ == nullptr) return nullptr;
  uv_udp_recv_start(s->front_, alloc_buffer, &FakeDnsServer::on_front);
  if (mode == Mode::forward) {
    std::uint16_t unused = 0;
    s->back_ = bind_udp(loop, s.get(), &unused);
    if (s->back_ == nullptr) return nullptr;
    uv_udp_recv_start(s->back_, alloc_buffer, &FakeDnsServer::on_back);
  }
  return s;
}

FakeDnsServer::~FakeDnsServer() {
  close_udp(front_);
  close_udp(back_);
}

std::string FakeDnsServer::address() const {
  return "127.0.0.1:" + std::to_string(port_);
}

void FakeDnsServer::on_front(uv_udp_t* h, ssize_t n, const uv_buf_t* buf, const sockaddr* from,
                             unsigned) {
  auto* self = static_cast<FakeDnsServer*>(h->data);
  if (self == nullptr || n <= 0 || from == nullptr) return;
  const auto* p = reinterpret_cast<const unsigned char*>(buf->base);
  const auto len = static_cast<std::size_t>(n);
  std::string question;
  std::uint16_t qtype = 0;
  std::size_t question_end = 0;
  if (!parse_question(p, len, &question, &qtype, &question_end)) return;
  self->questions_.push_back(question);
  self->ids_.push_back(static_cast<std::uint16_t>(p[0] << 8 | p[1]));
  self->flags_.push_back(static_cast<std::uint16_t>(p[2] << 8 | p[3]));
  char client[64] = {};
  if (from->sa_family == AF_INET)
    uv_ip4_name(reinterpret_cast<const sockaddr_in*>(from), client, sizeof(client));
  else
    uv_ip6_name(reinterpret_cast<const sockaddr_in6*>(from), client, sizeof(client));
  self->clients_.push_back(client);
  switch (self->mode_) {
    case Mode::silent:
      return;
    case Mode::refuse:
    case Mode::servfail: {
      // The header and question of the query, turned into a response without records.
      std::vector<unsigned char> r(p, p + question_end);
      r[2] = static_cast<unsigned char>(0x80 | (p[2] & 0x79));  // QR, opcode, RD
      r[3] = static_cast<unsigned char>(0x80 | (self->mode_ == Mode::refuse ? 5 : 2));
      r[4] = 0;
      r[5] = 1;
      for (int i = 6; i < 12; ++i) r[i] = 0;
      uv_buf_t out =
          uv_buf_init(reinterpret_cast<char*>(r.data()), static_cast<unsigned>(r.size()));
      uv_udp_try_send(h, &out, 1, from);
      return;
    }
    case Mode::forward: {
      if (qtype == self->drop_qtype_) return;
      sockaddr_storage asker{};
      std::memcpy(&asker, from,
                  from->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in));
      self->askers_[read16(p)] = asker;
      sockaddr_in up = loopback(self->upstream_port_);
      uv_buf_t out = uv_buf_init(buf->base, static_cast<unsigned>(len));
      uv_udp_try_send(self->back_, &out, 1, reinterpret_cast<const sockaddr*>(&up));
      return;
    }
  }
}

namespace {

// Moves `pos` past a (possibly compressed) name; false when it runs off the end.
bool skip_dns_name(const unsigned char* p, std::size_t n, std::size_t& pos) {
  while (pos < n) {
    const unsigned char l = p[pos];
    if (l == 0) {
      pos += 1;
      return true;
    }
    if ((l & 0xC0) == 0xC0) {
      pos += 2;
      return pos <= n;
    }
    pos += 1 + l;
  }
  return false;
}

// Cuts a response after its first answer record when that is a CNAME; the new length.
std::size_t first_cname_only(unsigned char* p, std::size_t n) {
  if (n < 12 || read16(p + 6) == 0) return n;
  std::size_t pos = 12;
  if (!skip_dns_name(p, n, pos) || pos + 4 > n) return n;
  pos += 4;  // QTYPE, QCLASS
  if (!skip_dns_name(p, n, pos) || pos + 10 > n) return n;
  if (read16(p + pos) != 5) return n;  // not a CNAME
  const std::size_t end = pos + 10 + read16(p + pos + 8);
  if (end > n) return n;
  p[6] = 0, p[7] = 1;               // ANCOUNT 1
  p[8] = p[9] = p[10] = p[11] = 0;  // no authority, no additional
  return end;
}

}  // namespace

void FakeDnsServer::on_back(uv_udp_t* h, ssize_t n, const uv_buf_t* buf, const sockaddr* from,
                            unsigned) {
  auto* self = static_cast<FakeDnsServer*>(h->data);
  if (self == nullptr || n < 12 || from == nullptr) return;
  const auto* p = reinterpret_cast<const unsigned char*>(buf->base);
  auto it = self->askers_.find(read16(p));
  if (it == self->askers_.end()) return;
  std::size_t length = static_cast<std::size_t>(n);
  if (self->cname_only_)
    length = first_cname_only(reinterpret_cast<unsigned char*>(buf->base), length);
  uv_buf_t out = uv_buf_init(buf->base, static_cast<unsigned>(length));
  uv_udp_try_send(self->front_, &out, 1, reinterpret_cast<const sockaddr*>(&it->second));
  self->askers_.erase(it);
}

}  // namespace mailq::test
