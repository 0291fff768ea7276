// The maildrop (see maildrop.h).
#include "examples/relay/maildrop.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <random>

#include "mailq/queue.h"

namespace mailq::relay {

namespace {

constexpr std::string_view kMagic = "mailq-maildrop 1\n";
constexpr int kNameTries = 16;

Error sys_error(const std::string& what, int err) {
  return Error(err == ENOSPC || err == EDQUOT ? errc::storage_full : errc::storage_failure,
               what + ": " + std::strerror(err));
}

Error corrupt(const std::string& what) {
  return Error(errc::corrupt_record, what);
}

std::string path_of(const std::string& spool, MessageId id) {
  return maildrop_dir(spool) + "/" + id.to_string();
}

// mkdir that is content when the directory is there.
int make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) == 0 || errno == EEXIST) return 0;
  return errno;
}

int sync_dir(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno;
  int rc = 0;
  while (::fsync(fd) != 0) {
    if (errno != EINTR) {
      rc = errno;
      break;
    }
  }
  ::close(fd);
  return rc;
}

// "/a/b" -> "/a", "b" -> ".", "/a" -> "/".
std::string fs_parent(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const auto slash = p.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : p.substr(0, slash);
}

int write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return 0;
}

// A reserved id: the time in milliseconds in the high bits like the queue's own, 16 random
// bits below (the queue's ids made in the same millisecond start low and count up).
MessageId reserve_id(std::mt19937_64& rng) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::system_clock::now().time_since_epoch())
                .count();
  return MessageId{(static_cast<std::uint64_t>(ms) << 16) | (rng() & 0xffff)};
}

bool parse_u64(std::string_view s, std::uint64_t* out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

}  // namespace

std::string maildrop_dir(const std::string& spool) {
  return spool + "/maildrop";
}

std::string encode_maildrop(const MaildropEntry& e) {
  std::string out(kMagic);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(e.submitted.time_since_epoch()).count();
  out += fmt::format("submitted {}\n", ms);
  out += "from " + (e.envelope.reverse_path ? e.envelope.reverse_path->to_string() : "<>") + "\n";
  if (e.envelope.ret == DsnRet::full) out += "ret full\n";
  if (e.envelope.ret == DsnRet::headers) out += "ret hdrs\n";
  if (!e.envelope.envid.empty()) out += "envid " + e.envelope.envid + "\n";
  for (const auto& r : e.envelope.recipients) {
    out += "rcpt " + r.address.to_string() + "\n";
    if (r.notify != kNotifyDefault) out += fmt::format("notify {}\n", r.notify);
    if (!r.orcpt.empty()) out += "orcpt " + r.orcpt + "\n";
  }
  out += fmt::format("size {}\n\n", e.body.size());
  out += e.body;
  return out;
}

Result<MaildropEntry> decode_maildrop(std::string_view in, MessageId id) {
  if (in.substr(0, kMagic.size()) != kMagic)
    return corrupt("not a maildrop file (its first line is not \"mailq-maildrop 1\")");
  in.remove_prefix(kMagic.size());
  MaildropEntry e;
  e.id = id;
  bool have_from = false, have_submitted = false, have_size = false;
  std::uint64_t size = 0;
  for (int line = 2;; ++line) {
    const std::size_t nl = in.find('\n');
    if (nl == std::string_view::npos)
      return corrupt(fmt::format("line {}: the envelope does not end (truncated file)", line));
    std::string_view l = in.substr(0, nl);
    in.remove_prefix(nl + 1);
    if (l.empty()) break;
    const std::size_t sp = l.find(' ');
    const std::string_view key = l.substr(0, sp);
    const std::string_view value = sp == std::string_view::npos ? "" : l.substr(sp + 1);
    auto bad = [&](std::string_view what) {
      return corrupt(fmt::format("line {}: {} \"{}\"", line, what, key));
    };
    if (key == "submitted") {
      std::uint64_t ms = 0;
      // Up to the year 2109: any time a clock of nanoseconds can hold.
      if (!parse_u64(value, &ms) || ms > (1ull << 42)) return bad("bad value of");
      e.submitted = TimePoint(std::chrono::milliseconds(ms));
      have_submitted = true;
    } else if (key == "from") {
      if (value != "<>") {
        auto a = Address::parse(value);
        if (!a) return corrupt(fmt::format("line {}: sender: {}", line, a.error().message));
        e.envelope.reverse_path = std::move(a.value());
      }
      have_from = true;
    } else if (key == "ret") {
      if (value == "full")
        e.envelope.ret = DsnRet::full;
      else if (value == "hdrs")
        e.envelope.ret = DsnRet::headers;
      else
        return bad("bad value of");
    } else if (key == "envid") {
      e.envelope.envid = std::string(value);
    } else if (key == "rcpt") {
      auto a = Address::parse(value);
      if (!a) return corrupt(fmt::format("line {}: recipient: {}", line, a.error().message));
      e.envelope.recipients.emplace_back(std::move(a.value()));
    } else if (key == "notify" || key == "orcpt") {
      if (e.envelope.recipients.empty()) return bad("no recipient before");
      auto& r = e.envelope.recipients.back();
      if (key == "orcpt") {
        r.orcpt = std::string(value);
      } else {
        std::uint64_t n = 0;
        if (!parse_u64(value, &n) || n > 15 || ((n & kNotifyNever) && n != kNotifyNever))
          return bad("bad value of");
        r.notify = static_cast<std::uint8_t>(n);
      }
    } else if (key == "size") {
      if (!parse_u64(value, &size)) return bad("bad value of");
      have_size = true;
    } else {
      return bad("unknown key");
    }
  }
  if (!have_from || !have_submitted || !have_size)
    return corrupt("the envelope lacks one of \"from\", \"submitted\" and \"size\"");
  if (in.size() != size)
    return corrupt(
        fmt::format("the body has {} octets where the envelope says {}", in.size(), size));
  std::string why;
  if (auto ec = e.envelope.validate(&why)) return Error(ec, why);
  e.body = std::string(in);
  return e;
}

Result<MessageId> write_maildrop(const std::string& spool, const Envelope& envelope,
                                 std::string_view body) {
  const std::string dir = maildrop_dir(spool);
  const std::string tmpdir = dir + "/tmp";
  struct stat st {};
  if (::stat(spool.c_str(), &st) == 0 && !S_ISDIR(st.st_mode))
    return Error(errc::bad_state, "the spool " + spool + " is not a directory");
  for (const std::string& d : {spool, dir, tmpdir}) {
    const bool existed = ::access(d.c_str(), F_OK) == 0;
    if (int err = make_dir(d)) return sys_error("create directory " + d, err);
    // A directory made here is durable in its parent before a message is filed under it
    // (a power cut must not take the maildrop, and the message with it).
    const std::string parent = fs_parent(d);
    if (!existed)
      if (int err = sync_dir(parent)) return sys_error("sync " + parent, err);
  }

  std::random_device rd;
  std::mt19937_64 rng((static_cast<std::uint64_t>(rd()) << 32) ^ rd() ^
                      static_cast<std::uint64_t>(::getpid()));
  MaildropEntry e;
  e.submitted = std::chrono::system_clock::now();
  e.envelope = envelope;
  e.body = std::string(body);
  const std::string bytes = encode_maildrop(e);

  // tmp/PID.RANDOM: created exclusively, written, made durable.
  const std::string tmp = fmt::format("{}/{}.{:x}", tmpdir, ::getpid(), rng());
  // Readable by the file's group (the relay's, through a setgid maildrop), not by everyone.
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
  if (fd < 0) return sys_error("create " + tmp, errno);
  int err = write_all(fd, bytes);
  while (!err && ::fsync(fd) != 0)
    if (errno != EINTR) err = errno;
  if (::close(fd) != 0 && !err && errno != EINTR) err = errno;
  if (err) {
    ::unlink(tmp.c_str());
    return sys_error("write " + tmp, err);
  }
  // Its name: a link never replaces a file another submitter filed under the same id.
  MessageId id;
  for (int i = 0;; ++i) {
    id = reserve_id(rng);
    if (::link(tmp.c_str(), path_of(spool, id).c_str()) == 0) break;
    err = errno;
    if (err != EEXIST || i + 1 == kNameTries) {
      ::unlink(tmp.c_str());
      return sys_error("link " + tmp + " to " + path_of(spool, id), err);
    }
  }
  ::unlink(tmp.c_str());
  if (int e2 = sync_dir(dir)) {
    // The file is there; whether its name survives a power cut is not known: say so, and
    // leave it (a relay delivers it if it does).
    return sys_error(
        "sync " + dir + " (the message " + id.to_string() + " may not survive a power cut)", e2);
  }
  return id;
}

Result<std::vector<MessageId>> list_maildrop(const std::string& spool) {
  const std::string dir = maildrop_dir(spool);
  std::vector<MessageId> ids;
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    if (errno == ENOENT) return ids;
    return sys_error("open directory " + dir, errno);
  }
  errno = 0;
  while (dirent* ent = ::readdir(d)) {
    MessageId id;
    std::string_view name = ent->d_name;
    if (name.size() == 13 && MessageId::parse(name, &id) && id.to_string() == name)
      ids.push_back(id);
  }
  const int err = errno;
  ::closedir(d);
  if (err) return sys_error("read directory " + dir, err);
  std::sort(ids.begin(), ids.end());
  return ids;
}

Result<MaildropEntry> read_maildrop_file(const std::string& path, MessageId id,
                                         std::uint64_t max_octets) {
  // Whoever may submit may put anything here: a FIFO must not block the reader, a link must
  // not make it read another file, and a file larger than any message is not read.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0 && errno == ENOENT) return Error(errc::not_found, "no file " + path);
  if (fd < 0 && errno == ELOOP) return corrupt(path + ": a symbolic link, not a message file");
  if (fd < 0) return sys_error("open " + path, errno);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return sys_error("stat " + path, err);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return corrupt(path + ": not a regular file");
  }
  if (max_octets != 0 && static_cast<std::uint64_t>(st.st_size) > max_octets) {
    ::close(fd);
    return corrupt(fmt::format("{}: {} octets, more than a message may have ({})", path,
                               static_cast<std::uint64_t>(st.st_size), max_octets));
  }
  std::string bytes;
  bytes.reserve(static_cast<std::size_t>(st.st_size));
  char buf[65536];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return sys_error("read " + path, err);
    }
    if (n == 0) break;
    bytes.append(buf, static_cast<std::size_t>(n));
    if (max_octets != 0 && bytes.size() > max_octets) {  // it grew while being read
      ::close(fd);
      return corrupt(fmt::format("{}: more than {} octets", path, max_octets));
    }
  }
  ::close(fd);
  auto entry = decode_maildrop(bytes, id);
  if (!entry) return Error(entry.error().code, path + ": " + entry.error().message);
  return entry;
}

Result<MaildropEntry> read_maildrop(const std::string& spool, MessageId id) {
  return read_maildrop_file(path_of(spool, id), id, 0);
}

namespace {

Result<void> move_to_corrupt(const std::string& spool, const std::string& from, MessageId id) {
  const std::string dir = maildrop_dir(spool) + "/corrupt";
  if (int err = make_dir(dir)) return sys_error("create directory " + dir, err);
  const std::string to = dir + "/" + id.to_string();
  if (::rename(from.c_str(), to.c_str()) != 0)
    return sys_error("move " + from + " to " + to, errno);
  return {};
}

std::string active_path(const std::string& spool, MessageId id) {
  return maildrop_dir(spool) + "/active/" + id.to_string();
}

}  // namespace

Result<void> quarantine_maildrop(const std::string& spool, MessageId id) {
  return move_to_corrupt(spool, path_of(spool, id), id);
}

Result<void> remove_maildrop(const std::string& spool, MessageId id) {
  if (::unlink(path_of(spool, id).c_str()) != 0 && errno != ENOENT)
    return sys_error("remove " + path_of(spool, id), errno);
  return {};
}

namespace {

// The queue refused the message for what it is (not for the moment): it never will take it.
bool refused_for_good(const Error& e) {
  return e.code == errc::invalid_address || e.code == errc::forbidden_character ||
         e.code == errc::too_long || e.code == errc::no_recipients ||
         e.code == errc::invalid_parameter || e.code == errc::message_too_large ||
         e.code == errc::corrupt_record;
}

// A file whose id a message of the queue has, with the same sender and size: queued before,
// and the removal of its file did not survive a crash. Queuing it again would deliver twice.
bool queued_before(const Queue& queue, const MaildropEntry& e) {
  auto m = queue.find(e.id);
  if (!m) return false;
  const std::string from = e.envelope.reverse_path ? e.envelope.reverse_path->to_string() : "";
  return m->reverse_path == from && m->size == e.body.size() &&
         m->recipients.size() == e.envelope.recipients.size();
}

// How a maildrop file is queued: under its id, from its submission time.
EnqueueOptions enqueue_options(const MaildropEntry& e, const std::string& channel) {
  EnqueueOptions eo;
  eo.source_channel = channel;
  eo.id = e.id;
  eo.arrival = e.submitted;
  return eo;
}

}  // namespace

std::size_t import_maildrop(const std::string& spool, Queue& queue,
                            const std::function<void()>& flush,
                            const std::function<void(const std::string&)>& notice) {
  auto ids = list_maildrop(spool);
  if (!ids) {
    notice(ids.error().message);
    return 0;
  }
  std::size_t n = 0;
  for (MessageId id : ids.value()) {
    auto e = read_maildrop(spool, id);
    if (!e) {
      notice(e.error().message);
      continue;
    }
    if (queued_before(queue, e.value())) {
      (void)remove_maildrop(spool, id);
      continue;
    }
    const EnqueueOptions eo = enqueue_options(e.value(), "local");
    // The callback may outlive this turn when `flush` does not complete the insert.
    auto r = std::make_shared<std::optional<Result<MessageId>>>();
    queue.enqueue(
        e->envelope, std::move(e->body), [r](Result<MessageId> x) { r->emplace(std::move(x)); },
        eo);
    flush();
    if (!*r || !**r) {
      notice("maildrop " + id.to_string() + ": " +
             (*r ? (*r)->error().message : std::string("the storage did not confirm it")));
      continue;
    }
    (void)remove_maildrop(spool, id);
    ++n;
  }
  return n;
}

// --- MaildropPickup -------------------------------------------------------------------------

MaildropPickup::MaildropPickup(uv_loop_t* loop, Queue& queue, Options options)
    : loop_(loop), queue_(queue), options_(std::move(options)) {}

MaildropPickup::~MaildropPickup() {
  close();
}

void MaildropPickup::say(const std::string& text) const {
  if (options_.notice) options_.notice("maildrop: " + text);
}

Result<void> MaildropPickup::start() {
  const std::string dir = maildrop_dir(options_.spool);
  for (const std::string& d : {dir, dir + "/tmp", dir + "/active"})
    if (int err = make_dir(d)) return sys_error("create directory " + d, err);

  // Files a previous relay was taking when it stopped: back into the maildrop, taken again
  // (one already queued is recognised and not queued twice).
  if (DIR* d = ::opendir((dir + "/active").c_str())) {
    while (dirent* ent = ::readdir(d)) {
      MessageId id;
      const std::string_view name = ent->d_name;
      if (name.size() != 13 || !MessageId::parse(name, &id) || id.to_string() != name) continue;
      if (::rename(active_path(options_.spool, id).c_str(), path_of(options_.spool, id).c_str()))
        say("cannot move " + active_path(options_.spool, id) + " back: " + std::strerror(errno));
    }
    ::closedir(d);
  }

  // Files a submitter began and never linked (it died): gone after a day.
  if (DIR* d = ::opendir((dir + "/tmp").c_str())) {
    const auto now = std::chrono::system_clock::now();
    while (dirent* ent = ::readdir(d)) {
      if (ent->d_name[0] == '.') continue;
      const std::string p = dir + "/tmp/" + ent->d_name;
      struct stat st {};
      if (::stat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
      const auto age = now - std::chrono::system_clock::from_time_t(st.st_mtime);
      if (age > std::chrono::hours(24) && ::unlink(p.c_str()) == 0)
        say("removed " + p + ", a submission abandoned over a day ago");
    }
    ::closedir(d);
  }

  watch_ = new uv_fs_event_t{};
  uv_fs_event_init(loop_, watch_);
  watch_->data = this;
  int rc = uv_fs_event_start(
      watch_,
      [](uv_fs_event_t* h, const char*, int, int) {
        auto* self = static_cast<MaildropPickup*>(h->data);
        if (!self || self->scan_wanted_) return;
        self->scan_wanted_ = true;
        // Files still to take: the directory is read again once they are taken (one read
        // per batch, not one per arriving file).
        if (!self->todo_.empty()) return;
        self->scan_soon();
      },
      dir.c_str(), 0);
  scan_soon_ = new uv_idle_t{};
  uv_idle_init(loop_, scan_soon_);
  scan_soon_->data = this;
  timer_ = new uv_timer_t{};
  uv_timer_init(loop_, timer_);
  timer_->data = this;
  const auto every = std::max<std::uint64_t>(
      1, std::chrono::duration_cast<std::chrono::milliseconds>(options_.rescan).count());
  uv_timer_start(
      timer_,
      [](uv_timer_t* t) {
        auto* self = static_cast<MaildropPickup*>(t->data);
        if (!self) return;
        self->retry_later_.clear();
        self->scan();
      },
      every, every);
  scan();
  if (rc != 0)
    return Error(errc::storage_failure, "watch " + dir + ": " + uv_strerror(rc) +
                                            " (new files are found every " +
                                            std::to_string(every / 1000) + " s instead)");
  return {};
}

void MaildropPickup::close() {
  if (closed_) return;
  closed_ = true;
  auto shut = [&](auto*& h) {
    if (!h) return;
    auto* handle = reinterpret_cast<uv_handle_t*>(h);
    handle->data = nullptr;
    uv_close(handle, [](uv_handle_t* x) {
      // Each handle type was made with new of its own type.
      switch (x->type) {
        case UV_FS_EVENT:
          delete reinterpret_cast<uv_fs_event_t*>(x);
          break;
        case UV_TIMER:
          delete reinterpret_cast<uv_timer_t*>(x);
          break;
        case UV_IDLE:
          delete reinterpret_cast<uv_idle_t*>(x);
          break;
        default:
          break;
      }
    });
    h = nullptr;
  };
  shut(watch_);
  shut(timer_);
  shut(scan_soon_);
  todo_.clear();
  queued_.clear();
}

void MaildropPickup::scan() {
  scan_wanted_ = false;
  if (closed_) return;
  auto ids = list_maildrop(options_.spool);
  if (!ids) {
    say(ids.error().message);
    return;
  }
  for (MessageId id : ids.value()) {
    if (queued_.count(id) || in_flight_.count(id) || retry_later_.count(id)) continue;
    queued_.insert(id);
    todo_.push_back(id);
  }
  pump();
}

void MaildropPickup::pump() {
  // An enqueue the queue refuses at once calls back into here: that call only asks for one
  // more round of this loop (no recursion however many files are refused in a row).
  if (pumping_) {
    pump_again_ = true;
    return;
  }
  pumping_ = true;
  do {
    pump_again_ = false;
    while (!closed_ && !todo_.empty() && in_flight_.size() < options_.max_in_flight) {
      const MessageId id = todo_.front();
      todo_.pop_front();
      queued_.erase(id);
      take(id);
    }
  } while (pump_again_);
  pumping_ = false;
  // Files arrived while a batch was being taken: read the directory again.
  if (!closed_ && todo_.empty() && scan_wanted_) scan_soon();
}

void MaildropPickup::scan_soon() {
  if (!scan_soon_ || uv_is_active(reinterpret_cast<uv_handle_t*>(scan_soon_))) return;
  uv_idle_start(scan_soon_, [](uv_idle_t* i) {
    uv_idle_stop(i);
    if (auto* s = static_cast<MaildropPickup*>(i->data)) s->scan();
  });
}

void MaildropPickup::take(MessageId id) {
  // Claimed first: moved into active/, which only the relay writes. A file the relay cannot
  // move (a maildrop it may not write) is never queued, so it cannot be queued again and
  // again because it could not be removed.
  const std::string from = path_of(options_.spool, id);
  const std::string claimed = active_path(options_.spool, id);
  if (::rename(from.c_str(), claimed.c_str()) != 0) {
    if (errno == ENOENT) return;  // gone meanwhile (an operator, another pickup)
    say(id.to_string() + ": cannot take it: move " + from + ": " + std::strerror(errno) +
        " (the relay needs write access to maildrop/); tried again in a minute");
    retry_later_.insert(id);
    return;
  }
  auto e = read_maildrop_file(claimed, id, options_.max_file_size);
  if (!e) {
    if (e.error().code == errc::not_found) return;
    if (e.error().code == errc::storage_failure || e.error().code == errc::storage_full) {
      say(e.error().message + " (tried again in a minute)");
      give_back(id);
      return;
    }
    return set_aside(id, e.error().message);
  }
  if (queued_before(queue_, e.value())) {
    if (::unlink(claimed.c_str()) != 0) say("remove " + claimed + ": " + std::strerror(errno));
    return;
  }
  const EnqueueOptions eo = enqueue_options(e.value(), options_.source_channel);
  in_flight_.insert(id);
  std::weak_ptr<int> life = alive_;
  queue_.enqueue(
      e->envelope, std::move(e->body),
      [this, life, id](Result<MessageId> r) {
        if (life.expired()) return;
        if (r)
          finished(id, r.value(), nullptr);
        else
          finished(id, MessageId{}, &r.error());
      },
      eo);
}

void MaildropPickup::give_back(MessageId id) {
  retry_later_.insert(id);
  const std::string claimed = active_path(options_.spool, id);
  if (::rename(claimed.c_str(), path_of(options_.spool, id).c_str()) != 0)
    say("cannot move " + claimed + " back into the maildrop: " + std::strerror(errno) +
        " (taken again at the next start)");
}

void MaildropPickup::finished(MessageId id, MessageId queued_as, const Error* error) {
  in_flight_.erase(id);
  if (error) {
    if (refused_for_good(*error)) {
      set_aside(id, error->message);
    } else {
      say(id.to_string() + ": not queued now: " + error->message + " (tried again in a minute)");
      give_back(id);
    }
  } else {
    ++picked_up_;
    const std::string claimed = active_path(options_.spool, id);
    if (::unlink(claimed.c_str()) != 0) say("remove " + claimed + ": " + std::strerror(errno));
    if (queued_as != id)
      say(id.to_string() + ": queued as " + queued_as.to_string() +
          " (a message of the queue has its id)");
  }
  pump();
}

void MaildropPickup::set_aside(MessageId id, const std::string& why) {
  ++quarantined_;
  if (auto r = move_to_corrupt(options_.spool, active_path(options_.spool, id), id); !r) {
    say(id.to_string() + ": " + why + "; and it cannot be set aside: " + r.error().message);
    retry_later_.insert(id);
    return;
  }
  say(id.to_string() + " set aside in maildrop/corrupt: " + why);
}

}  // namespace mailq::relay
