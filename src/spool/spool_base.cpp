// What both durable spools share (spool/spool_base.h), and DurableStorage, which forwards to
// it.
#include "spool/spool_base.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <cerrno>
#include <exception>
#include <utility>

#include "mailq/spool/durable_storage.h"

namespace mailq {
namespace spool {
namespace detail {

SpoolBase::SpoolBase(std::string directory, Clock& c, BaseOptions options)
    : dir(std::move(directory)), clock(c), base_options(std::move(options)) {}

SpoolBase::~SpoolBase() = default;

void SpoolBase::stop_timer(TimerId& timer) {
  if (timer != kNoTimer) clock.cancel(timer);
  timer = kNoTimer;
}

void SpoolBase::cancel_timers() {
  stop_timer(batch_timer);
  stop_timer(lazy_timer);
}

void SpoolBase::flush() {
  if (!ready()) return;
  flush_batch(true);
  sync_lazy();
}

void SpoolBase::shutdown() {
  if (!ready()) return;
  flush_batch(false);
  sync_lazy();
}

Error SpoolBase::fail(std::error_code code, std::string message) {
  Error e(code, std::move(message));
  if (base_options.on_error) {
    try {
      base_options.on_error(e);
    } catch (...) {
      // A throwing host handler must not unwind through the storage.
    }
  }
  return e;
}

Error SpoolBase::sys_fail(std::string_view what, std::string_view where, int err) {
  std::string msg(what);
  msg += ' ';
  msg += dir;
  msg += '/';
  msg += where;
  msg += ": ";
  msg += errno_text(err);
  return fail(err == ENOSPC || err == EDQUOT ? errc::storage_full : errc::storage_failure,
              std::move(msg));
}

void SpoolBase::problem(RecoveryReport* report, std::string line) {
  if (report) report->problems.push_back(line);
  fail(errc::corrupt_record, std::move(line));
}

Result<void> SpoolBase::check_insert(const MessageRecord& record, bool known) {
  if (!ready()) return not_ready();
  if (!loaded && held_at_open)
    return fail(errc::bad_state, "insert " + record.id.to_string() + ": the spool " + dir +
                                     " holds messages and was not loaded yet (Queue::recover "
                                     "first): they would never be delivered");
  if (!record.id) return fail(errc::invalid_parameter, "insert: message id 0");
  const std::string id_text = record.id.to_string();
  if (record.recipients.empty()) {
    return fail(errc::invalid_parameter, "insert " + id_text + ": no recipients");
  }
  if (known) return fail(errc::bad_state, "insert " + id_text + ": already stored");
  return success();
}

Error SpoolBase::no_message(std::string_view op, MessageId id) {
  return fail(errc::not_found, std::string(op) + ": no message " + id.to_string());
}

Result<void> SpoolBase::check_update(const RecordChange& change, const std::uint32_t* recipients) {
  if (!recipients) return no_message("update", change.id);
  if (auto fits = check_change(change, *recipients); !fits) {
    return fail(fits.error().code, fits.error().message);
  }
  return success();
}

bool SpoolBase::open_directory(std::initializer_list<const char*> subdirs, const OtherLayout& other,
                               int (*own)(int spool_fd, bool* found), std::vector<Fd>* fds,
                               std::uint64_t* dir_syncs) {
  auto refuse = [&](errc code, std::string what) {
    open_error = Error(code, std::move(what));
    return false;
  };
  auto fail_open = [&](const std::string& what, int err) {
    return refuse(errc::storage_failure, what + ": " + errno_text(err));
  };
  if (dir.empty()) return refuse(errc::storage_failure, "spool directory not given");
  // mkdir -p
  std::vector<std::string> made;  // the directories this open created
  for (std::size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    std::string part = dir.substr(0, pos);
    if (::mkdir(part.c_str(), base_options.directory_mode) == 0) {
      made.push_back(std::move(part));
    } else if (errno != EEXIST) {
      return fail_open("create spool directory " + part, errno);
    }
  }
  // A directory created here survives a power cut only once the entry in its parent does:
  // without this, a spool made at first start could vanish, with what it acknowledged. The
  // spool directory's own entry is synced at every open, in case an earlier start crashed
  // between its mkdir and that sync.
  if (made.empty() || made.back() != dir) made.push_back(dir);
  for (const std::string& part : made) {
    const std::size_t slash = part.rfind('/');
    const std::string parent = slash == std::string::npos ? "."
                               : slash == 0               ? "/"
                                                          : part.substr(0, slash);
    Fd parent_fd(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!parent_fd.ok()) return fail_open("open " + parent, errno);
    ++*dir_syncs;
    if (int err = fsync_retry(parent_fd.get(), false)) return fail_open("sync " + parent, err);
  }
  spool_fd = Fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!spool_fd.ok()) return fail_open("open spool directory " + dir, errno);
  lock_fd = Fd(::openat(spool_fd.get(), "lock", O_RDONLY | O_CREAT | O_CLOEXEC, 0644));
  if (!lock_fd.ok()) return fail_open("open " + dir + "/lock", errno);
  if (::flock(lock_fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return refuse(errc::in_use,
                    "spool " + dir + " is in use by another process (" + dir + "/lock is locked)");
    }
    return fail_open("lock " + dir + "/lock", errno);
  }
  // The other layout in the same directory: its messages would be ignored.
  bool found = false;
  if (int err = other.found(spool_fd.get(), &found)) {
    return fail_open("list " + dir + "/" + other.sub, err);
  }
  if (found) {
    return refuse(errc::storage_failure, "spool " + dir + " holds a " + other.kind + " spool (" +
                                             dir + "/" + other.sub +
                                             "); open it with layout = " + other.layout);
  }
  if (int err = own(spool_fd.get(), &held_at_open)) return fail_open("list " + dir, err);
  for (const char* sub : subdirs) {
    if (::mkdirat(spool_fd.get(), sub, base_options.directory_mode) != 0 && errno != EEXIST) {
      return fail_open("create " + dir + "/" + sub, errno);
    }
    Fd fd(::openat(spool_fd.get(), sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd.ok()) return fail_open("open " + dir + "/" + sub, errno);
    fds->push_back(std::move(fd));
  }
  // The subdirectories' entries, also when an earlier start created them and crashed.
  ++*dir_syncs;
  if (int err = fsync_retry(spool_fd.get(), false)) return fail_open("sync " + dir, err);
  return true;
}

void SpoolBase::schedule_batch() {
  if (batch_timer != kNoTimer) return;
  batch_timer = clock.schedule(Duration{0}, [this] {
    batch_timer = kNoTimer;
    flush_batch(true);
  });
}

void SpoolBase::schedule_lazy() {
  if (lazy_timer != kNoTimer) return;
  lazy_timer = clock.schedule(base_options.deferred_sync_delay, [this] {
    lazy_timer = kNoTimer;
    sync_lazy();
  });
}

void SpoolBase::complete_insert(Storage::Done& done, Result<void> result) {
  if (!done) return;
  Storage::Done callback = std::move(done);
  try {
    callback(std::move(result));
  } catch (const std::exception& ex) {
    fail(errc::bad_state, std::string("insert callback threw an exception: ") + ex.what());
  } catch (...) {
    fail(errc::bad_state, "insert callback threw an exception");
  }
}

}  // namespace detail

// --- DurableStorage ------------------------------------------------------------------------

DurableStorage::DurableStorage(std::unique_ptr<detail::SpoolBase> impl) : impl_(std::move(impl)) {}

DurableStorage::~DurableStorage() {
  impl_->shutdown();
  impl_->cancel_timers();
}

const Error& DurableStorage::open_error() const noexcept {
  return impl_->open_error;
}

void DurableStorage::insert(const MessageRecord& record, std::string_view body, Done done) {
  impl_->insert(record, body, std::move(done));
}

Result<void> DurableStorage::update(const RecordChange& change) {
  if (!impl_->ready()) return impl_->not_ready();
  return impl_->update(change);
}

Result<void> DurableStorage::append_attempt(MessageId id, const AttemptRecord& attempt) {
  if (!impl_->ready()) return impl_->not_ready();
  return impl_->append_attempt(id, attempt);
}

Result<void> DurableStorage::remove(MessageId id) {
  if (!impl_->ready()) return impl_->not_ready();
  return impl_->remove(id);
}

Result<std::string> DurableStorage::read_body(MessageId id) const {
  if (!impl_->ready()) return impl_->not_ready();
  return impl_->read_body(id);
}

Result<std::vector<AttemptRecord>> DurableStorage::read_attempts(MessageId id) const {
  if (!impl_->ready()) return impl_->not_ready();
  return impl_->read_attempts(id);
}

Result<void> DurableStorage::load(const std::function<void(MessageRecord&&)>& each,
                                  RecoveryReport* report) {
  if (!impl_->ready()) return impl_->not_ready();
  impl_->loaded = true;
  return impl_->load(each, report);
}

void DurableStorage::flush() {
  impl_->flush();
}

std::size_t DurableStorage::size() const noexcept {
  return impl_->size();
}

std::size_t DurableStorage::pending_inserts() const noexcept {
  return impl_->pending_inserts();
}

const std::string& DurableStorage::directory() const noexcept {
  return impl_->dir;
}

}  // namespace spool
}  // namespace mailq
