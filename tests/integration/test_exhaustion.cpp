// Resource exhaustion (issue 7): the whole engine when file descriptors run out, under an
// address-space limit (`ulimit -v`), on a spool whose file system fills up during enqueue and
// during recipient-state updates, and on a spool remounted read-only. The engine must degrade
// with clear errors (enqueue errors to the host, transient deferrals), recover when the
// resource comes back, and lose nothing.
//
// test_spool.cpp pins the spool's own behaviour on a full and a read-only file system
// (SpoolStorage alone); these tests add what the Queue and the Deliverer make of it.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "mailq/spool/file_spool.h"
#include "support/hostile_engine.h"
#include "support/hostile_server.h"
#include "support/servers.h"

using namespace mailq;
using namespace mailq::test;
using namespace std::chrono_literals;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define MAILQ_TEST_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MAILQ_TEST_SANITIZED 1
#endif

namespace {

// --- file descriptors ------------------------------------------------------------------------

// Lowers RLIMIT_NOFILE to the highest descriptor open now and fills every free number below
// it, so that the next socket() or open() fails with EMFILE; restored by `release()` or the
// destructor, whatever the test did meanwhile.
class FdExhaustion {
 public:
  ~FdExhaustion() { release(); }

  bool engage(std::string* why) {
#ifdef MAILQ_TEST_SANITIZED
    // The sanitizers' runtime needs descriptors of its own (UBSan's vptr check probes memory
    // through a pipe): with none left it reports false errors and dies.
    *why = "not under a sanitizer: its runtime needs file descriptors too";
    return false;
#endif
    if (::getrlimit(RLIMIT_NOFILE, &saved_) != 0) {
      *why = std::string("getrlimit: ") + std::strerror(errno);
      return false;
    }
    int highest = 2;
    if (DIR* d = ::opendir("/proc/self/fd")) {
      while (dirent* e = ::readdir(d)) highest = std::max(highest, std::atoi(e->d_name));
      ::closedir(d);
    }
    rlimit low = saved_;
    low.rlim_cur = static_cast<rlim_t>(highest) + 1;
    if (::setrlimit(RLIMIT_NOFILE, &low) != 0) {
      *why = std::string("setrlimit: ") + std::strerror(errno);
      return false;
    }
    engaged_ = true;
    for (;;) {
      int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (fd < 0) break;
      fillers_.push_back(fd);
    }
    if (errno != EMFILE) {
      *why = std::string("filling descriptors stopped with: ") + std::strerror(errno);
      return false;
    }
    return true;
  }

  void release() {
    for (int fd : fillers_) ::close(fd);
    fillers_.clear();
    if (engaged_) ::setrlimit(RLIMIT_NOFILE, &saved_);
    engaged_ = false;
  }

 private:
  rlimit saved_{};
  bool engaged_ = false;
  std::vector<int> fillers_;
};

// --- small file systems ------------------------------------------------------------------

// A small file system mounted on a fresh directory: a tmpfs, or failing that an ext2 image on a
// loop device. Unmounted (lazily) by the destructor.
class SmallFs {
 public:
  /// `kib`: the size. False (and `why`) when this process may not mount (not root).
  bool mount(std::size_t kib, std::string* why) {
    const std::string opts = "size=" + std::to_string(kib) + "k";
    path_ = dir_.file("fs");
    std::filesystem::create_directory(path_);
    if (::mount("tmpfs", path_.c_str(), "tmpfs", 0, opts.c_str()) == 0) {
      mounted_ = true;
      return true;
    }
    *why = std::string("mount tmpfs: ") + std::strerror(errno);
    const std::string image = dir_.file("fs.img");
    std::string out;
    if (run_program({"dd", "if=/dev/zero", "of=" + image, "bs=1k", "count=" + std::to_string(kib)},
                    &out) == 0 &&
        run_program({"mkfs.ext2", "-q", "-F", image}, &out) == 0 &&
        run_program({"mount", "-o", "loop", image, path_}, &out) == 0) {
      mounted_ = true;
      return true;
    }
    *why += "; loop mount: " + out;
    return false;
  }
  ~SmallFs() {
    if (mounted_) ::umount2(path_.c_str(), MNT_DETACH);
  }
  bool remount(bool read_only) {
    unsigned long flags = MS_REMOUNT | (read_only ? MS_RDONLY : 0);
    return ::mount(nullptr, path_.c_str(), nullptr, flags, nullptr) == 0;
  }
  const std::string& path() const { return path_; }

  /// Writes a file until the file system is full, to the last byte; returns its size.
  std::size_t fill(const std::string& name) {
    const std::string p = path_ + "/" + name;
    int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return 0;
    std::string chunk(65536, 'f');
    std::size_t total = 0;
    for (std::size_t size = chunk.size(); size > 0; size /= 2) {
      for (;;) {
        ssize_t n = ::write(fd, chunk.data(), size);
        if (n <= 0) break;
        total += static_cast<std::size_t>(n);
      }
    }
    ::close(fd);
    return total;
  }
  void remove(const std::string& name) { std::filesystem::remove(path_ + "/" + name); }

 private:
  TempDir dir_;
  std::string path_;
  bool mounted_ = false;
};

#define REQUIRE_SMALL_FS(fs, kib)                                                           \
  SmallFs fs;                                                                               \
  do {                                                                                      \
    std::string why_;                                                                       \
    if (!fs.mount(kib, &why_)) {                                                            \
      WARN("skipped: cannot mount a small file system here (" << why_ << "); run as root"); \
      return;                                                                               \
    }                                                                                       \
  } while (0)

// An engine whose storage is a SpoolStorage in `dir`, remembered in `*spool`.
// What the spool reported (SpoolOptions::on_error): every failure, in words.
struct SpoolErrors {
  std::vector<std::string> lines;
  std::string last() const { return lines.empty() ? std::string() : lines.back(); }
};

HostileEngineOptions spool_options(std::uint16_t port, const std::string& dir,
                                   SpoolErrors* errors) {
  HostileEngineOptions o;
  o.port = port;
  o.storage = [dir, errors](Clock& clock) -> std::unique_ptr<Storage> {
    spool::SpoolOptions options;
    options.on_error = [errors](const Error& e) { errors->lines.push_back(e.message); };
    auto s = spool::SpoolStorage::open(dir, clock, options);
    REQUIRE(s);
    return std::move(s.value());
  };
  return o;
}

Result<MessageId> enqueue_held(HostileEngine& e, std::string body) {
  auto env = make_envelope("sender@example.org", {"user@example.com"});
  REQUIRE(env);
  std::optional<Result<MessageId>> result;
  EnqueueOptions opts;
  opts.hold = true;
  e.queue->enqueue(
      env.value(), std::move(body), [&](Result<MessageId> r) { result = r; }, opts);
  REQUIRE(e.loop.run_until([&] { return result.has_value(); }, 20s));
  return *result;
}

std::string sized_body(std::size_t n, int i) {
  std::string b = "Subject: fill " + std::to_string(i) + "\r\n\r\n";
  while (b.size() < n) b += std::string(70, static_cast<char>('a' + i % 26)) + "\r\n";
  return b;
}

}  // namespace

// --- file descriptors ------------------------------------------------------------------------

TEST_CASE(
    "exhaustion: with no file descriptor left a delivery is deferred with the clear "
    "error, and goes out once descriptors are back",
    "[exhaustion][fd]") {
  SmtpSink sink;
  std::string err;
  REQUIRE(sink.start(&err));
  HostileEngine e([&] {
    HostileEngineOptions o;
    o.port = sink.port();
    return o;
  }());
  // Warm up: one delivery, so that everything the engine opens once is open.
  MessageId first = e.send();
  REQUIRE(e.loop.run_until([&] { return e.queue->find(first) == std::nullopt; }, 20s));
  REQUIRE(e.drain());

  MessageId id;
  {
    FdExhaustion fds;
    std::string why;
    if (!fds.engage(&why)) {
      WARN("skipped: " << why);
      return;
    }
    id = e.send();  // a MemoryStorage needs no descriptor
    REQUIRE(e.settle(id));
    const auto r = e.rcpt(id);
    REQUIRE(r);
    CHECK(r->state == RecipientState::deferred);
    CHECK(r->last_reply.to_string() ==
          "421 4.4.1 [internal] TCP active open: Failed connect() Error: too many open files");
    CHECK_THAT(e.diagnostics(),
               Contains("TCP active open: Failed connect() Error: too many open files\n"));
    REQUIRE(e.drain());
  }
  // Descriptors are back: the next attempt delivers.
  e.deliverer->flush();
  REQUIRE(e.loop.run_until([&] { return e.queue->find(id) == std::nullopt; }, 20s));
  CHECK(e.delivered(id));
  CHECK(sink.wait_for_dumps(2).size() == 2);
  REQUIRE(e.drain());
}

TEST_CASE(
    "exhaustion: running out of local file descriptors does not count against the "
    "destination",
    "[exhaustion][fd]") {
  // EMFILE / ENFILE from socket() is a shortage of this host: the Deliverer must not count it
  // towards the destination's down mark (with a threshold of 1 it would mark the remote
  // destination down for the whole interval).
  SmtpSink sink;
  std::string err;
  REQUIRE(sink.start(&err));
  HostileEngine e([&] {
    HostileEngineOptions o;
    o.port = sink.port();
    o.domains = {1, Duration(15min)};
    return o;
  }());
  MessageId id;
  {
    FdExhaustion fds;
    std::string why;
    if (!fds.engage(&why)) {
      WARN("skipped: " << why);
      return;
    }
    id = e.send();
    REQUIRE(e.settle(id));
    REQUIRE(e.drain());
  }
  CHECK_FALSE(e.deliverer->domains().is_down("example.com", e.clock->now()));
  CHECK(e.failures() == 0);
}

// --- memory ----------------------------------------------------------------------------------

namespace {

std::size_t vm_size_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmSize:", 0) == 0) return std::stoull(line.substr(7)) * 1024;
  return 0;
}

// The child: a small engine (no Catch in here) under an address-space limit (the soft
// RLIMIT_AS, as `ulimit -v` sets it), enqueueing 1 MB messages for smtp-sink until memory runs
// out, then delivering under the limit for a while, then with the limit lifted (the resource
// comes back). Writes "accepted=N refused=K threw_at=I under_limit=D delivered=M" to `out`
// and exits 0; a crash is a signal, an exception escaping the engine exit code 30.
[[noreturn]] void memory_child(std::uint16_t port, int out) {
  rlimit saved{};
  ::getrlimit(RLIMIT_AS, &saved);
  rlimit lim = saved;
  lim.rlim_cur = vm_size_bytes() + (96u << 20);
  if (::setrlimit(RLIMIT_AS, &lim) != 0) ::_exit(20);
  int accepted = 0, refused = 0, threw = 0;
  std::size_t under_limit = 0, delivered = 0;
  std::string stuck;
  auto run_for = [](uv_loop_t* loop, const std::function<bool()>& done, std::chrono::seconds d) {
    const auto until = std::chrono::steady_clock::now() + d;
    uv_timer_t tick;
    uv_timer_init(loop, &tick);
    uv_timer_start(
        &tick, [](uv_timer_t*) {}, 50, 50);  // wakes the loop to check the clock
    while (!done() && std::chrono::steady_clock::now() < until) uv_run(loop, UV_RUN_ONCE);
    uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
    uv_run(loop, UV_RUN_NOWAIT);
  };
  try {
    uv_loop_t loop;
    uv_loop_init(&loop);
    {
      uv::LoopClock clock(&loop);
      MemoryStorage storage;
      RouteTable routes;
      Route r;
      r.name = "tcp_local";
      r.mx_port = port;
      r.allow_internal_mx = {Network::parse("127.0.0.0/8").value(), Network::parse("::1").value()};
      r.tls = TlsPolicy::none;
      r.timeouts = short_timeouts();
      (void)routes.add(r);
      (void)routes.set_default("tcp_local");
      StaticResolver resolver(clock);
      resolver.set_mx("example.com", {{10, "mx.example.com"}});
      resolver.set_addresses("mx.example.com", {"127.0.0.1"});
      uv::UvTransport transport(&loop, clock);
      Queue queue(storage, routes, clock);
      Deliverer deliverer(queue, resolver, transport);
      auto env = make_envelope("sender@example.org", {"user@example.com"});
      // Enqueue without running the loop: everything accepted stays in memory.
      for (int i = 0; i < 400 && threw == 0; ++i) {
        try {
          std::string body = sized_body(1u << 20, i);
          queue.enqueue(env.value(), std::move(body), [&](Result<MessageId> res) {
            if (res)
              ++accepted;
            else
              ++refused;
          });
        } catch (const std::bad_alloc&) {
          threw = i + 1;
        }
      }
      deliverer.start();
      run_for(
          &loop, [&] { return queue.size() == 0; }, std::chrono::seconds(5));
      under_limit = queue.stats().delivered;
      ::setrlimit(RLIMIT_AS, &saved);
      deliverer.flush();
      // Until everything is out, or nothing moved for 3 s (jobs stranded in flight).
      std::uint64_t seen = 0;
      auto moved = std::chrono::steady_clock::now();
      run_for(
          &loop,
          [&] {
            const auto now = std::chrono::steady_clock::now();
            if (queue.stats().delivered != seen) seen = queue.stats().delivered, moved = now;
            return queue.size() == 0 || now - moved > std::chrono::seconds(3);
          },
          std::chrono::seconds(60));
      delivered = queue.stats().delivered;
      const DelivererStats ds = deliverer.stats();
      stuck = "in_flight_jobs=" + std::to_string(ds.jobs_in_flight) +
              " open_connections=" + std::to_string(ds.connections_open) +
              " pending=" + std::to_string(queue.stats().recipients_pending);
      deliverer.stop();
      run_for(
          &loop, [&] { return deliverer.idle(); }, std::chrono::seconds(3));
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  } catch (const std::exception& e) {
    std::string msg = std::string("exception escaped: ") + e.what();
    (void)!::write(out, msg.data(), msg.size());
    ::_exit(30);
  }
  std::string report =
      "accepted=" + std::to_string(accepted) + " refused=" + std::to_string(refused) +
      " threw_at=" + std::to_string(threw) + " under_limit=" + std::to_string(under_limit) +
      " delivered=" + std::to_string(delivered) + " " + stuck;
  (void)!::write(out, report.data(), report.size());
  ::_exit(0);
}

}  // namespace

namespace {
struct MemoryRun {
  bool exited = false;
  int exit_code = -1;
  std::string report;
  int accepted = -1, refused = -1, threw = -1, under_limit = -1, delivered = -1;
  std::size_t dumps = 0;
};

// Runs memory_child against a fresh smtp-sink and collects what it said.
MemoryRun run_memory_child_now() {
  MemoryRun m;
  SmtpSink sink;
  std::string err;
  REQUIRE(sink.start(&err));
  int pipefd[2];
  REQUIRE(::pipe(pipefd) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(pipefd[0]);
    memory_child(sink.port(), pipefd[1]);
  }
  ::close(pipefd[1]);
  char buf[256];
  ssize_t n;
  while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0)
    m.report.append(buf, static_cast<std::size_t>(n));
  ::close(pipefd[0]);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  m.exited = WIFEXITED(status);
  m.exit_code = m.exited ? WEXITSTATUS(status) : -WTERMSIG(status);
  std::sscanf(m.report.c_str(), "accepted=%d refused=%d threw_at=%d under_limit=%d delivered=%d",
              &m.accepted, &m.refused, &m.threw, &m.under_limit, &m.delivered);
  if (m.delivered > 0)
    m.dumps = sink.wait_for_dumps(static_cast<std::size_t>(m.delivered), 10s).size();
  return m;
}

// Both memory tests look at the same run (it takes a while): the first one to ask runs it.
const MemoryRun& run_memory_child() {
  static std::optional<MemoryRun> run;
  if (!run) run = run_memory_child_now();
  return *run;
}
}  // namespace

TEST_CASE(
    "exhaustion: under an address-space limit (ulimit -v) the engine never crashes and what it "
    "delivers arrives",
    "[exhaustion][memory]") {
#ifdef MAILQ_TEST_SANITIZED
  WARN("skipped: an address-space limit cannot work with a sanitizer's shadow memory");
#else
  const MemoryRun& m = run_memory_child();
  INFO("child report: " << m.report);
  REQUIRE(m.exited);  // not killed by a signal
  CHECK(m.exit_code == 0);
  CHECK(m.accepted > 0);
  CHECK(m.threw > 0);  // the limit was reached: 400 MB do not fit in 96 MB more
  CHECK(m.refused == 0);
  CHECK(m.delivered <= m.accepted);
  CHECK(m.dumps == static_cast<std::size_t>(m.delivered));
#endif
}

TEST_CASE(
    "exhaustion: after memory ran out inside the engine, every accepted message is delivered "
    "once memory is back",
    "[exhaustion][memory]") {
  // An allocation failure inside the Deliverer (reading the body, encoding it) must not strand
  // a job in flight: start_job gives it back as a "451 4.3.0 [internal] out of memory"
  // deferral and ends the session when the SMTP client itself failed to allocate.
#ifdef MAILQ_TEST_SANITIZED
  WARN("skipped: an address-space limit cannot work with a sanitizer's shadow memory");
#else
  const MemoryRun& m = run_memory_child();
  INFO("child report: " << m.report);
  REQUIRE(m.exited);
  CHECK(m.delivered == m.accepted);
  CHECK(m.dumps == static_cast<std::size_t>(m.accepted));
#endif
}

// --- disk full -------------------------------------------------------------------------------

TEST_CASE(
    "exhaustion: a full spool refuses enqueue with storage_full, and after space "
    "returns every accepted message is recovered and delivered",
    "[exhaustion][disk]") {
  REQUIRE_SMALL_FS(fs, 1024);
  SmtpSink sink;
  std::string err;
  REQUIRE(sink.start(&err));
  SpoolErrors spool;
  HostileEngine e(spool_options(sink.port(), fs.path() + "/spool", &spool));
  // Room to give back later.
  std::ofstream(fs.path() + "/reserve", std::ios::binary) << std::string(256 * 1024, 'r');

  std::vector<MessageId> accepted;
  std::optional<Error> refusal;
  for (int i = 0; i < 200 && !refusal; ++i) {
    auto r = enqueue_held(e, sized_body(20000, i));
    if (r)
      accepted.push_back(r.value());
    else
      refusal = r.error();
  }
  REQUIRE(refusal);
  CHECK_FALSE(accepted.empty());
  CHECK(refusal->code == mailq::errc::storage_full);
  CHECK_THAT(refusal->message, StartsWith("could not store the message: "));
  // The spool knows exactly what failed.
  CHECK_THAT(spool.last(), Contains(": No space left on device"));
  CHECK(e.queue->size() == accepted.size());

  // Space comes back: enqueue works again.
  fs.remove("reserve");
  auto again = enqueue_held(e, sized_body(20000, 99));
  REQUIRE(again);
  accepted.push_back(again.value());

  // A restart recovers every accepted message, and they are all delivered.
  e.restart();
  CHECK(e.recovery.recovered == accepted.size());
  CHECK(e.recovery.quarantined == 0);
  for (MessageId id : accepted) REQUIRE(e.queue->release(id));
  REQUIRE(e.loop.run_until([&] { return e.queue->size() == 0; }, 60s));
  CHECK(sink.wait_for_dumps(accepted.size(), 30s).size() == accepted.size());
  REQUIRE(e.drain());
}

TEST_CASE("exhaustion: the enqueue error on a full spool says the disk is full",
          "[exhaustion][disk]") {
  // The spool's own text ("write <dir>/tmp/<id>.tmp: No space left on device") reaches the
  // host in the error itself, not just "storage failure".
  REQUIRE_SMALL_FS(fs, 512);
  SpoolErrors spool;
  HostileEngine e(spool_options(25, fs.path() + "/spool", &spool));
  std::optional<Error> refusal;
  for (int i = 0; i < 200 && !refusal; ++i) {
    auto r = enqueue_held(e, sized_body(20000, i));
    if (!r) refusal = r.error();
  }
  REQUIRE(refusal);
  CHECK_THAT(refusal->message, Contains("No space left on device"));
}

namespace {
// A server that defers the recipient on the first connection and takes the message on the
// next ones.
// The reply is long (five lines of 4000 octets): recording it needs new blocks on the disk.
std::string long_451() {
  std::string r;
  for (int i = 0; i < 4; ++i) r += "451-4.3.0 " + std::string(4000, 'w') + "\r\n";
  return r + "451 4.3.0 try again later\r\n";
}
std::vector<HostileScript> defer_then_accept() {
  return {HostileScript().greet().ehlo().mail().expect("RCPT TO:").send(long_451()).quit(),
          HostileScript::accept_one()};
}
}  // namespace

TEST_CASE(
    "exhaustion: a deferral recorded while the spool is full is not lost: after space "
    "returns and a restart the message is delivered",
    "[exhaustion][disk]") {
  REQUIRE_SMALL_FS(fs, 1024);
  HostileServer server(defer_then_accept());
  std::string err;
  REQUIRE(server.start(&err));
  SpoolErrors spool;
  HostileEngine e(spool_options(server.port(), fs.path() + "/spool", &spool));
  auto id = enqueue_held(e, sized_body(2000, 1));
  REQUIRE(id);
  fs.fill("filler");
  (void)e.queue->release(id.value());  // a state change on a full disk: may fail
  REQUIRE(e.settle(id.value()));
  const auto r = e.rcpt(id.value());
  REQUIRE(r);
  CHECK(r->state == RecipientState::deferred);
  CHECK_THAT(r->last_reply.to_string(), Catch::Matchers::EndsWith("; try again later"));
  // The spool could not record the deferral; it said so.
  CHECK_THAT(spool.last(), Contains("No space left on device"));
  REQUIRE(e.drain());

  fs.remove("filler");
  e.restart();
  CHECK(e.recovery.recovered == 1);
  REQUIRE(e.queue->find(id.value()));
  // Whatever state made it to disk, the message is there and goes out at the latest on a flush.
  if (e.queue->find(id.value())->held) REQUIRE(e.queue->release(id.value()));
  e.deliverer->flush();
  REQUIRE(e.loop.run_until([&] { return e.queue->size() == 0; }, 20s));
  CHECK(e.delivered(id.value()));
  INFO(server.dump());
  CHECK(server.received_command("QUIT"));
  REQUIRE(e.drain());
}

TEST_CASE(
    "exhaustion: a bounce while the spool is full keeps the delivery status "
    "notification (or the original) until space returns",
    "[exhaustion][disk]") {
  // The original's file is removed only once the DSN is durable; a DSN the full spool
  // refused is tried again, and a restart meanwhile brings the original back.
  REQUIRE_SMALL_FS(fs, 1024);
  HostileServer server(HostileScript()
                           .greet()
                           .ehlo()
                           .mail()
                           .expect("RCPT TO:")
                           .send("550 5.1.1 no such user\r\n")
                           .quit());
  std::string err;
  REQUIRE(server.start(&err));
  SpoolErrors spool;
  HostileEngine e(spool_options(server.port(), fs.path() + "/spool", &spool));
  auto id = enqueue_held(e, sized_body(20000, 1));
  REQUIRE(id);
  fs.fill("filler");
  (void)e.queue->release(id.value());
  REQUIRE(e.poll_until(
      [&] { return e.queue->find(id.value()) == std::nullopt || e.queue->size() > 1; }));
  e.loop.run_for(200ms);
  REQUIRE(e.drain());
  INFO(e.diagnostics());
  fs.remove("filler");
  e.restart();
  // The DSN (to sender@example.org) or the original must still be somewhere.
  CHECK(e.queue->size() >= 1);
}

// --- read-only spool -----------------------------------------------------------------------

TEST_CASE(
    "exhaustion: a spool remounted read-only refuses enqueue with the reason in the "
    "spool's error, keeps what it had, and works again once writable",
    "[exhaustion][readonly]") {
  REQUIRE_SMALL_FS(fs, 1024);
  SmtpSink sink;
  std::string err;
  REQUIRE(sink.start(&err));
  SpoolErrors spool;
  HostileEngine e(spool_options(sink.port(), fs.path() + "/spool", &spool));
  auto kept = enqueue_held(e, sized_body(2000, 1));
  REQUIRE(kept);
  REQUIRE(fs.remount(true));
  auto refused = enqueue_held(e, sized_body(2000, 2));
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == mailq::errc::storage_failure);
  CHECK_THAT(spool.last(), Contains(": Read-only file system"));
  CHECK(e.queue->size() == 1);
  REQUIRE(fs.remount(false));
  MessageId later = e.send();  // delivered at once
  REQUIRE(e.loop.run_until([&] { return e.queue->find(later) == std::nullopt; }, 20s));
  e.restart();
  CHECK(e.recovery.recovered == 1);
  REQUIRE(e.queue->find(kept.value()));
  REQUIRE(e.queue->release(kept.value()));
  REQUIRE(e.loop.run_until([&] { return e.queue->size() == 0; }, 20s));
  CHECK(sink.wait_for_dumps(2).size() == 2);
  REQUIRE(e.drain());
}

TEST_CASE("exhaustion: a release that the read-only spool could not record is not carried out",
          "[exhaustion][readonly]") {
  // A release the spool could not record is not carried out: `held` is restored and the
  // message is not scheduled (likewise for hold()), so it cannot go out now and again after a
  // restart.
  REQUIRE_SMALL_FS(fs, 1024);
  SmtpSink sink;
  std::string err;
  REQUIRE(sink.start(&err));
  SpoolErrors spool;
  HostileEngine e(spool_options(sink.port(), fs.path() + "/spool", &spool));
  auto kept = enqueue_held(e, sized_body(2000, 1));
  REQUIRE(kept);
  REQUIRE(fs.remount(true));
  auto refused = e.queue->release(kept.value());
  REQUIRE(refused.code() == mailq::errc::storage_failure);
  CHECK(refused.error().message.find("release " + kept.value().to_string() + ": ") == 0);
  e.loop.run_for(500ms);
  CHECK(e.queue->find(kept.value()) != std::nullopt);
  CHECK_FALSE(e.delivered(kept.value()));
  REQUIRE(e.drain());
  REQUIRE(fs.remount(false));
}
