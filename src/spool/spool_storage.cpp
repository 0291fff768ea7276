#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

#include "mailq/spool/file_spool.h"
#include "spool/crc32c.h"
#include "spool/file_io.h"
#include "spool/format.h"
#include "spool/id_table.h"
#include "spool/spool_base.h"

namespace mailq {
namespace spool {
namespace {

using detail::all_zero;
using detail::DirEntry;
using detail::entry_type;
using detail::errno_text;
using detail::Fd;
using detail::fsync_retry;
using detail::has_suffix;
using detail::list_directory;
using detail::pread_all;
using detail::pwrite_all;
using detail::RecordStatus;
using detail::RecordType;
using detail::RecordView;
using detail::rename_noreplace;
using detail::valid_record_after;
using detail::writev_all;

constexpr std::size_t kHeadRead = 4096;          // one read gets the metadata of almost every file
constexpr std::size_t kMaxBatchOpenFiles = 256;  // beyond this, batch files are reopened to sync
// Metadata of a million recipients stays below this; a larger length is damage.
constexpr std::uint32_t kMaxMetaSize = 256u << 20;
constexpr std::string_view kHeldSuffix = ".HELD";
constexpr std::string_view kTmpSuffix = ".tmp";
// Channel directories an index entry can name (Entry::channel); the rest of its word is the
// attempt letter.
constexpr unsigned kChannelBits = 27;
constexpr std::uint32_t kMaxChannels = std::uint32_t{1} << kChannelBits;

// The attempt letter's distance from 'Z' in a file name (queue_file_name(), seed 002): it
// stops at 'A'. Names are built from this step, and a rename is due only when it changes.
std::uint32_t name_step(std::uint32_t attempts) {
  return std::min<std::uint32_t>(attempts, 'Z' - 'A');
}

std::string file_name_for(MessageId id, std::uint32_t attempts, bool held) {
  std::string name = queue_file_name(id, name_step(attempts));
  if (held) name += kHeldSuffix;
  return name;
}

// "ZY01J9ZK3D2ZP7F.00" or "ZY01J9ZK3D2ZP7F.00.HELD" -> id. The attempt letter is not checked
// here: the recorded state decides the name, and load() renames a file whose name lags.
bool parse_file_name(std::string_view name, MessageId* id) {
  if (has_suffix(name, kHeldSuffix)) name.remove_suffix(kHeldSuffix.size());
  if (name.size() != 2 + 13 + 3) return false;
  if (name[0] != 'Z' || name[1] < 'A' || name[1] > 'Z') return false;
  if (name.substr(15) != ".00") return false;
  return MessageId::parse(name.substr(2, 13), id);
}

}  // namespace

// ------------------------------------------------------------------------------------------

struct SpoolStorage::Impl final : detail::SpoolBase {
  struct Channel {
    std::string name;
    int fd = -1;
  };

  // What the spool remembers of a stored message: where its file is, how many recipients it
  // has (to check an update's indices) and the attempts and held flag it recorded last (the
  // file name shows them). Bodies, replies and recipient states stay on disk. 40 bytes
  // (docs/spool-format.md, "The file spool", Memory): the body's place is two 32-bit fields
  // (the metadata before it is at most kMaxMetaSize, the body below 4 GiB), while `end`
  // stays 64 bits (appended records have no bound).
  struct Entry {
    std::uint64_t id = 0;
    std::uint64_t end = 0;  // where the next record goes (end of the valid records)
    // Offset of the body record: after the preamble and a metadata record of at most
    // kMaxMetaSize bytes, so below 2^29 (static_assert below).
    std::uint32_t body_off : 29 = 0;
    std::uint32_t held : 1 = 0;       // as recorded
    std::uint32_t name_held : 1 = 0;  // as the file name shows
    std::uint32_t body_size = 0;      // body bytes (below 4 GiB: kMaxPayload)
    std::uint32_t attempts = 0;       // as recorded
    std::uint32_t channel : kChannelBits = 0;
    // The attempt letter the file name shows, as 'Z' minus the letter (name_step()).
    std::uint32_t name_step : 32 - kChannelBits = 0;
    std::uint32_t recipients = 0;  // the recipient count (at least one)

    // First byte after the body record: where appended records start.
    std::uint64_t tail_off() const {
      return std::uint64_t{body_off} + detail::kRecordOverhead + body_size;
    }
  };

  static_assert(sizeof(void*) != 8 || sizeof(Entry) == 40, "update the documented entry size");
  static_assert(detail::kPreambleSize + detail::kRecordOverhead + kMaxMetaSize <
                    (std::uint64_t{1} << 29),
                "a body offset must fit Entry::body_off");
  static_assert(detail::kMaxPayload <= UINT32_MAX, "a body size must fit Entry::body_size");

  struct Pending : detail::PendingInsert<Entry> {
    std::string tmp_name;
    Fd fd;  // kept open for the group commit's sync
  };

  Impl(std::string d, Clock& c, SpoolOptions o)
      : SpoolBase(std::move(d), c, detail::base_options_of(o)), options(std::move(o)) {
    open();
  }

  SpoolOptions options;

  Fd queue_fd, tmp_fd, quarantine_fd;

  std::vector<Channel> channels;
  std::unordered_map<std::string, std::uint32_t> channel_index;
  detail::IdTable<Entry> index;

  // A set of ids (IdTable without a hash node per member).
  struct IdOnly {
    std::uint64_t id = 0;
  };
  using IdSet = detail::IdTable<IdOnly>;

  std::vector<Pending> pending;
  IdSet pending_ids;
  std::size_t size() const noexcept override { return index.size(); }
  std::size_t pending_inserts() const noexcept override { return pending_ids.size(); }
  std::size_t pending_open_files = 0;
  bool queue_dir_dirty = false;  // a channel directory was created
  // Whether syncfs(2) makes this file system's data durable (see file_io.h): else automatic
  // sync is fdatasync per file.
  bool syncfs_flushes = false;
  IdSet lazy_files;                   // appended records not yet synced
  std::set<std::uint32_t> lazy_dirs;  // renames not yet synced

  SpoolStats stats;
  bool noatime = true;
  std::string head;  // load(): reused read buffers
  std::string tail;
  // load() takes a short read for the end of the file (true of regular files on Linux) and
  // re-reads a file that looks truncated with `careful` reads before judging it.
  bool careful = false;
  bool retry_careful = false;

  ~Impl() {
    for (auto& c : channels) {
      if (c.fd >= 0) ::close(c.fd);
    }
  }

  // --- set-up -----------------------------------------------------------------------------

  void open() {
    std::vector<Fd> fds;
    if (!open_directory({"queue", "tmp", "quarantine"},
                        {"segment", "segments", "segments", detail::has_segment_files},
                        detail::has_queue_files, &fds, &stats.dir_syncs)) {
      return;
    }
    queue_fd = std::move(fds[0]);
    tmp_fd = std::move(fds[1]);
    quarantine_fd = std::move(fds[2]);
    syncfs_flushes = detail::syncfs_writes_data(queue_fd.get());
    // Channel directories an earlier start created (and may have crashed before syncing).
    ++stats.dir_syncs;
    if (int err = detail::fsync_retry(queue_fd.get(), false)) {
      open_error = Error(errc::storage_failure, "sync " + dir + "/queue: " + errno_text(err));
    }
  }

  // The channel directory, opened (and created when `create`). UINT32_MAX on failure.
  std::uint32_t channel(const std::string& name, bool create, Error* error) {
    auto it = channel_index.find(name);
    if (it != channel_index.end()) return it->second;
    if (channels.size() >= kMaxChannels) {
      *error =
          fail(errc::storage_failure, "queue/" + name + ": more than " +
                                          std::to_string(kMaxChannels) + " channel directories");
      return UINT32_MAX;
    }
    if (create) {
      if (::mkdirat(queue_fd.get(), name.c_str(), options.directory_mode) == 0) {
        queue_dir_dirty = true;
      } else if (errno != EEXIST) {
        *error = sys_fail("create directory", "queue/" + name, errno);
        return UINT32_MAX;
      }
    }
    int fd = ::openat(queue_fd.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      *error = sys_fail("open directory", "queue/" + name, errno);
      return UINT32_MAX;
    }
    const auto index_of = static_cast<std::uint32_t>(channels.size());
    channels.push_back(Channel{name, fd});
    channel_index.emplace(name, index_of);
    return index_of;
  }

  std::string path_of(MessageId id, const Entry& e) const {
    return "queue/" + channels[e.channel].name + "/" + file_name_for(id, e.name_step, e.name_held);
  }

  // --- sync method ---------------------------------------------------------------------

  bool use_syncfs(std::size_t files) const {
    switch (options.sync_method) {
      case SyncMethod::per_file:
        return false;
      case SyncMethod::syncfs:
        return files > 0;
      case SyncMethod::automatic:
        break;
    }
    return syncfs_flushes && files >= std::max<std::size_t>(options.syncfs_threshold, 1);
  }

  // --- insert -------------------------------------------------------------------------------

  void insert(const MessageRecord& record, std::string_view body, Done done) override {
    Pending p;
    p.id = record.id;
    p.done = std::move(done);
    p.result = write_new(record, body, &p);
    if (!p.result) stats.insert_failures++;
    if (p.result) pending_ids.insert(IdOnly{record.id.value});
    pending.push_back(std::move(p));
    schedule_batch();
  }

  Result<void> write_new(const MessageRecord& record, std::string_view body, Pending* p) {
    const bool known = index.contains(record.id.value) || pending_ids.contains(record.id.value);
    if (auto fits = check_insert(record, known); !fits) return fits;
    const std::string id_text = record.id.to_string();
    if (body.size() >= detail::kMaxPayload) {
      return fail(errc::message_too_large,
                  "insert " + id_text + ": a body of 4 GiB or more does not fit the spool");
    }
    Error error;
    const std::uint32_t ch =
        channel(SpoolStorage::channel_directory(record.recipients[0].route), true, &error);
    if (ch == UINT32_MAX) return error;

    std::string head_bytes;
    detail::put_preamble(head_bytes);
    detail::put_meta_record(head_bytes, record);
    // load() takes no more (and the index keeps the body's offset in 29 bits).
    if (head_bytes.size() - detail::kPreambleSize - detail::kRecordOverhead > kMaxMetaSize) {
      return fail(errc::message_too_large, "insert " + id_text + ": metadata too large");
    }
    const std::uint64_t body_off = head_bytes.size();
    unsigned char body_header[detail::kRecordHeaderSize];
    detail::body_record_header(static_cast<std::uint32_t>(body.size()), body_header);
    unsigned char crc[4];
    const std::uint32_t c = detail::body_crc(body_header, body);
    for (int i = 0; i < 4; ++i) crc[i] = static_cast<unsigned char>((c >> (8 * i)) & 0xFFu);

    p->tmp_name = id_text + std::string(kTmpSuffix);
    const std::string where = "tmp/" + p->tmp_name;
    Fd fd(::openat(tmp_fd.get(), p->tmp_name.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                   options.file_mode));
    if (!fd.ok()) return sys_fail("create", where, errno);
    iovec iov[4] = {
        {head_bytes.data(), head_bytes.size()},
        {body_header, sizeof body_header},
        {const_cast<char*>(body.data()), body.size()},
        {crc, sizeof crc},
    };
    if (int err = writev_all(fd.get(), iov, 4)) {
      fd.reset();
      ::unlinkat(tmp_fd.get(), p->tmp_name.c_str(), 0);
      return sys_fail("write", where, err);
    }
    const std::uint64_t total = body_off + detail::kRecordOverhead + body.size();
    stats.bytes_written += total;

    Entry& e = p->entry;
    e.id = record.id.value;
    e.end = total;
    e.body_off = static_cast<std::uint32_t>(body_off);
    e.body_size = static_cast<std::uint32_t>(body.size());
    e.channel = ch;
    e.attempts = record.attempts;
    e.name_step = name_step(record.attempts);
    e.held = e.name_held = record.held;
    e.recipients = static_cast<std::uint32_t>(record.recipients.size());

    // Keep the descriptor for the sync unless a huge batch would exhaust descriptors.
    if (pending_open_files < kMaxBatchOpenFiles) {
      p->fd = std::move(fd);
      pending_open_files++;
    }
    return {};
  }

  void drop_tmp(Pending& p) {
    p.fd.reset();
    ::unlinkat(tmp_fd.get(), p.tmp_name.c_str(), 0);
  }

  // The group commit: makes every pending insert durable with as few flushes as the sync
  // method allows, then (when `run_callbacks`) completes them.
  void flush_batch(bool run_callbacks) override {
    stop_timer(batch_timer);
    std::vector<Pending> batch = std::move(pending);
    pending.clear();
    pending_ids = IdSet();
    pending_open_files = 0;

    std::vector<Pending*> live;
    for (auto& p : batch) {
      if (p.result) live.push_back(&p);
    }
    if (!live.empty()) stats.batches++;

    // 1. File contents.
    bool synced = false;
    if (use_syncfs(live.size())) {
      stats.fs_syncs++;
      if (::syncfs(tmp_fd.get()) == 0) {
        synced = true;
      } else {
        // Which file failed is unknown: find out file by file below.
        sys_fail("syncfs", "tmp", errno);
      }
    }
    if (!synced) {
      for (Pending* p : live) {
        const std::string where = "tmp/" + p->tmp_name;
        if (!p->fd.ok()) {
          p->fd = Fd(::openat(tmp_fd.get(), p->tmp_name.c_str(), O_RDONLY | O_CLOEXEC));
          if (!p->fd.ok()) {
            p->result = sys_fail("reopen", where, errno);
            drop_tmp(*p);
            continue;
          }
        }
        stats.file_syncs++;
        if (int err = fsync_retry(p->fd.get(), true)) {
          p->result = sys_fail("sync", where, err);
          drop_tmp(*p);
        }
      }
    }
    for (Pending* p : live) p->fd.reset();

    // 2. New channel directories must exist on disk before files are renamed into them.
    if (queue_dir_dirty) {
      stats.dir_syncs++;
      if (int err = fsync_retry(queue_fd.get(), false)) {
        const Error error = sys_fail("sync directory", "queue", err);
        for (Pending* p : live) {
          if (p->result) {
            p->result = error;
            drop_tmp(*p);
          }
        }
      } else {
        queue_dir_dirty = false;
      }
    }

    // 3. Into place.
    std::set<std::uint32_t> dirs;
    std::set<std::uint32_t> renamed_into;
    for (Pending* p : live) {
      if (!p->result) continue;
      const std::string name = file_name_for(p->id, p->entry.attempts, p->entry.held);
      const Channel& ch = channels[p->entry.channel];
      if (int err = rename_noreplace(tmp_fd.get(), p->tmp_name.c_str(), ch.fd, name.c_str())) {
        p->result =
            sys_fail("rename tmp/" + p->tmp_name + " to", "queue/" + ch.name + "/" + name, err);
        drop_tmp(*p);
        continue;
      }
      renamed_into.insert(p->entry.channel);
      dirs.insert(p->entry.channel);
    }

    // 4. Directory entries.
    for (std::uint32_t c : dirs) {
      stats.dir_syncs++;
      int err = fsync_retry(channels[c].fd, false);
      if (err == 0) continue;
      const Error error = sys_fail("sync directory", "queue/" + channels[c].name, err);
      if (!renamed_into.count(c)) continue;
      // Whether the new names reached the disk is unknown: take them back and report the
      // failure, so that no insert is acknowledged without being durable.
      for (Pending* p : live) {
        if (!p->result || p->entry.channel != c) continue;
        p->result = error;
        const std::string name = file_name_for(p->id, p->entry.attempts, p->entry.held);
        ::unlinkat(channels[c].fd, name.c_str(), 0);
      }
    }

    // 5. Index, then callbacks (which may insert, update or remove again).
    for (Pending* p : live) {
      if (!p->result) {
        stats.insert_failures++;
        continue;
      }
      stats.inserts++;
      index.insert(std::move(p->entry));
    }
    if (!run_callbacks) return;
    for (auto& p : batch) complete_insert(p.done, std::move(p.result));
  }

  // Syncs appended records and renames that were left for later.
  void sync_lazy() override {
    stop_timer(lazy_timer);
    IdSet files = std::move(lazy_files);
    lazy_files = IdSet();
    // Copies, not pointers into the index: an error handler may change the storage.
    struct File {
      MessageId id;
      std::uint32_t channel, step;
      bool held;
    };
    std::vector<File> entries;
    entries.reserve(files.size());
    for (const IdOnly& f : files) {
      if (const Entry* e = index.find(f.id)) {
        entries.push_back(File{MessageId{f.id}, e->channel, e->name_step, e->name_held != 0});
      }
    }
    files = IdSet();
    bool synced = false;
    if (use_syncfs(entries.size())) {
      stats.fs_syncs++;
      if (::syncfs(queue_fd.get()) == 0)
        synced = true;
      else
        sys_fail("syncfs", "queue", errno);
    }
    if (!synced) {
      for (const File& f : entries) {
        const std::string name = file_name_for(f.id, f.step, f.held);
        Fd fd(::openat(channels[f.channel].fd, name.c_str(), O_RDONLY | O_CLOEXEC));
        stats.file_syncs++;
        int err = fd.ok() ? fsync_retry(fd.get(), true) : errno;
        if (err) sys_fail("sync", "queue/" + channels[f.channel].name + "/" + name, err);
      }
    }
    std::set<std::uint32_t> dirs = std::move(lazy_dirs);
    lazy_dirs.clear();
    if (synced) return;  // syncfs wrote the renames too
    for (std::uint32_t c : dirs) {
      stats.dir_syncs++;
      if (int err = fsync_retry(channels[c].fd, false)) {
        sys_fail("sync directory", "queue/" + channels[c].name, err);
      }
    }
  }

  // --- changes to stored messages ----------------------------------------------------------

  // Appends `bytes` at the entry's end; with `sync`, also makes them durable. On failure the
  // file is cut back to its previous end: the previous state stays the valid one.
  Result<void> append(MessageId id, Entry& e, const std::string& bytes, bool sync) {
    const std::string name = file_name_for(id, e.name_step, e.name_held);
    const std::string where = path_of(id, e);
    Fd fd(::openat(channels[e.channel].fd, name.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd.ok()) return sys_fail("open", where, errno);
    int err = pwrite_all(fd.get(), bytes.data(), bytes.size(), e.end);
    const char* what = "append to";
    if (err == 0 && sync) {
      stats.file_syncs++;
      err = fsync_retry(fd.get(), true);
      what = "sync";
    }
    if (err != 0) {
      if (::ftruncate(fd.get(), static_cast<off_t>(e.end)) != 0) {
        // The torn record stays; load() recognises it by its checksum and cuts it off, and
        // the next append overwrites it (appends go to `end`, not to the file's size).
      }
      return sys_fail(what, where, err);
    }
    e.end += bytes.size();
    stats.bytes_written += bytes.size();
    if (!sync) {
      if (!lazy_files.contains(id.value)) lazy_files.insert(IdOnly{id.value});
      schedule_lazy();
    }
    return {};
  }

  // Renames the file when its name lags the recorded attempts / held flag.
  Result<void> rename_to_state(MessageId id, Entry& e) {
    if (e.name_step == name_step(e.attempts) && e.name_held == e.held) return {};
    const std::string from = file_name_for(id, e.name_step, e.name_held);
    const std::string to = file_name_for(id, e.attempts, e.held);
    const Channel& ch = channels[e.channel];
    if (::renameat(ch.fd, from.c_str(), ch.fd, to.c_str()) != 0) {
      return sys_fail("rename " + path_of(id, e) + " to", "queue/" + ch.name + "/" + to, errno);
    }
    e.name_step = name_step(e.attempts);
    e.name_held = e.held;
    stats.renames++;
    lazy_dirs.insert(e.channel);
    schedule_lazy();
    return {};
  }

  Result<void> update(const RecordChange& change) override {
    // `e` is used until the end: nothing below inserts into or erases from the index (an
    // error handler's changes come after the early returns that follow each failure).
    Entry* found = index.find(change.id.value);
    if (auto fits = check_update(change, found ? &found->recipients : nullptr); !fits) {
      return fits;
    }
    Entry& e = *found;
    // The at-least-once rule: a recipient that reaches a final state (above all
    // "delivered") is on disk before the caller goes on, so that a crash never sends it
    // again. Holding / releasing is an operator decision: also synced.
    const bool sync = change.held != static_cast<bool>(e.held) || change.makes_final();
    if (!change.recipients.empty() || change.attempts != e.attempts ||
        change.held != static_cast<bool>(e.held)) {
      std::string bytes;
      detail::put_update_record(bytes, change);
      if (auto written = append(change.id, e, bytes, sync); !written) return written;
      stats.updates++;
      if (sync) stats.synced_updates++;
      e.attempts = change.attempts;
      e.held = change.held;
    }
    return rename_to_state(change.id, e);
  }

  Result<void> append_attempt(MessageId id, const AttemptRecord& attempt) override {
    Entry* e = index.find(id.value);
    if (!e) return no_message("append_attempt", id);
    std::string bytes;
    detail::put_attempt_record(bytes, attempt);
    if (auto written = append(id, *e, bytes, false); !written) return written;
    stats.attempts++;
    return {};
  }

  Result<void> remove(MessageId id) override {
    Entry* found = index.find(id.value);
    if (!found) return no_message("remove", id);
    const Entry& e = *found;
    const std::string name = file_name_for(id, e.name_step, e.name_held);
    if (::unlinkat(channels[e.channel].fd, name.c_str(), 0) != 0 && errno != ENOENT) {
      return sys_fail("remove", path_of(id, e), errno);
    }
    // The directory entry is synced within deferred_sync_delay, with the renames: a removal
    // that a power loss undoes only brings back a message whose recipients are all final or
    // about to be retried (at-least-once). Syncing it at once would put a journal commit on
    // every loop turn of a drain.
    lazy_dirs.insert(e.channel);
    schedule_lazy();
    lazy_files.erase(id.value);
    index.erase(id.value);  // `e` is gone from here on
    stats.removes++;
    return {};
  }

  // --- reading -------------------------------------------------------------------------------

  Result<std::string> read_body(MessageId id) override {
    const Entry* found = index.find(id.value);
    if (!found) return Error(errc::not_found, "no message " + id.to_string());
    const Entry& e = *found;
    const std::string where = path_of(id, e);
    Fd fd(::openat(channels[e.channel].fd, file_name_for(id, e.name_step, e.name_held).c_str(),
                   O_RDONLY | O_CLOEXEC));
    if (!fd.ok()) return sys_fail("open", where, errno);
    std::string buf(e.tail_off() - e.body_off, '\0');
    ssize_t n = pread_all(fd.get(), buf.data(), buf.size(), e.body_off);
    if (n < 0) return sys_fail("read", where, errno);
    RecordView rv;
    if (static_cast<std::size_t>(n) != buf.size() ||
        detail::parse_record(buf, &rv) != RecordStatus::ok || rv.type != RecordType::body) {
      return fail(errc::corrupt_record, where + ": the body fails its checksum");
    }
    buf.erase(0, detail::kRecordHeaderSize);
    buf.resize(rv.payload.size());
    return buf;
  }

  Result<std::vector<AttemptRecord>> read_attempts(MessageId id) override {
    const Entry* found = index.find(id.value);
    if (!found) return Error(errc::not_found, "no message " + id.to_string());
    const Entry& e = *found;
    const std::string where = path_of(id, e);
    std::vector<AttemptRecord> out;
    const std::uint64_t tail_off = e.tail_off();
    if (e.end == tail_off) return out;
    Fd fd(::openat(channels[e.channel].fd, file_name_for(id, e.name_step, e.name_held).c_str(),
                   O_RDONLY | O_CLOEXEC));
    if (!fd.ok()) return sys_fail("open", where, errno);
    std::string buf(e.end - tail_off, '\0');
    ssize_t n = pread_all(fd.get(), buf.data(), buf.size(), tail_off);
    if (n < 0) return sys_fail("read", where, errno);
    std::string_view rest(buf.data(), static_cast<std::size_t>(n));
    std::uint64_t offset = tail_off;
    while (!rest.empty()) {
      RecordView rv;
      std::string why;
      if (detail::parse_record(rest, &rv) != RecordStatus::ok) {
        why = "record at offset " + std::to_string(offset) + " fails its checksum";
      } else if (rv.type == RecordType::attempt) {
        AttemptRecord a;
        if (detail::decode_attempt(rv.payload, &a, &why)) out.push_back(std::move(a));
      }
      if (!why.empty()) return fail(errc::corrupt_record, where + ": " + why);
      rest.remove_prefix(rv.size);
      offset += rv.size;
    }
    return out;
  }

  // --- recovery -----------------------------------------------------------------------------

  struct LoadContext {
    const std::function<void(MessageRecord&&)>* each;
    RecoveryReport* report;
    std::set<std::uint32_t> changed_dirs;  // renames and quarantines to sync at the end
    bool quarantine_dirty = false;
  };

  // Moves a file out of the queue, keeping it for a human. Never loses it: a name clash in
  // quarantine/ gets a numeric suffix.
  void quarantine(LoadContext& ctx, std::uint32_t ch, const std::string& name,
                  const std::string& reason) {
    const std::string from = "queue/" + channels[ch].name + "/" + name;
    std::string target;
    const int err = detail::rename_aside(channels[ch].fd, name, quarantine_fd.get(),
                                         channels[ch].name + "." + name, &target);
    if (err != 0) {
      problem(ctx.report, from + ": " + reason + "; could not move it to quarantine/: " +
                              errno_text(err) + "; left in place");
      stats.last_load_skipped++;
      return;
    }
    ctx.quarantine_dirty = true;
    ctx.changed_dirs.insert(ch);
    stats.last_load_quarantined++;
    if (ctx.report) ctx.report->quarantined++;
    problem(ctx.report, from + ": " + reason + "; moved to quarantine/" + target);
  }

  // Reads more of the file into `head` so that it holds at least `upto` bytes (or the whole
  // file). Returns false on a read error (errno set).
  bool read_head(int fd, std::size_t upto, bool* eof) {
    if (head.size() >= upto || *eof) return true;
    if (upto > 4 * kHeadRead) {
      // Do not trust a length read from a damaged file with a large allocation.
      struct stat st;
      if (::fstat(fd, &st) != 0) return false;
      upto = std::min<std::size_t>(upto, static_cast<std::size_t>(st.st_size));
      if (head.size() >= upto) {
        *eof = true;
        return true;
      }
    }
    const std::size_t have = head.size();
    head.resize(upto);
    ssize_t n = read_at(fd, head.data() + have, upto - have, have);
    if (n < 0) {
      head.resize(have);
      return false;
    }
    head.resize(have + static_cast<std::size_t>(n));
    if (head.size() < upto) *eof = true;
    return true;
  }

  ssize_t read_at(int fd, char* p, std::size_t n, std::uint64_t off) const {
    if (careful) return pread_all(fd, p, n, off);
    for (;;) {
      ssize_t r = ::pread(fd, p, n, static_cast<off_t>(off));
      if (r >= 0 || errno != EINTR) return r;
    }
  }

  // Recovers one message file. Returns an error only for conditions that must stop the scan
  // (no more file descriptors, no memory); damaged files are quarantined.
  Result<void> recover_file(LoadContext& ctx, std::uint32_t ch, const std::string& name) {
    careful = false;
    retry_careful = false;
    Result<void> scanned = scan_file(ctx, ch, name);
    if (scanned && retry_careful) {
      careful = true;
      retry_careful = false;
      scanned = scan_file(ctx, ch, name);
      careful = false;
    }
    return scanned;
  }

  Result<void> scan_file(LoadContext& ctx, std::uint32_t ch, const std::string& name) {
    auto where = [&] { return "queue/" + channels[ch].name + "/" + name; };
    // A verdict that rests on where the file ends: first make sure of the end.
    auto truncated = [&](const std::string& reason) {
      if (!careful) {
        retry_careful = true;
        return;
      }
      quarantine(ctx, ch, name, reason);
    };
    MessageId name_id;
    if (!parse_file_name(name, &name_id)) {
      quarantine(ctx, ch, name, "not a queue file name");
      return {};
    }
    const int dir_fd = channels[ch].fd;
    Fd fd;
    if (noatime) {
      fd = Fd(::openat(dir_fd, name.c_str(), O_RDONLY | O_CLOEXEC | O_NOATIME));
      if (!fd.ok() && errno == EPERM) noatime = false;  // not the owner: plain open below
    }
    if (!fd.ok()) fd = Fd(::openat(dir_fd, name.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.ok()) {
      int err = errno;
      if (err == EMFILE || err == ENFILE || err == ENOMEM) return sys_fail("open", where(), err);
      if (err == ENOENT) return {};  // gone since the directory was listed
      quarantine(ctx, ch, name, "cannot be opened (" + errno_text(err) + ")");
      return {};
    }

    head.clear();
    bool eof = false;
    if (!read_head(fd.get(), kHeadRead, &eof)) {
      quarantine(ctx, ch, name, "cannot be read (" + errno_text(errno) + ")");
      return {};
    }

    // Preamble.
    std::uint32_t version = 0;
    switch (detail::check_preamble(head, &version)) {
      case detail::PreambleStatus::ok:
        break;
      case detail::PreambleStatus::truncated:
        truncated("truncated in its preamble (" + std::to_string(head.size()) + " bytes)");
        return {};
      case detail::PreambleStatus::foreign:
        quarantine(ctx, ch, name, "not a mailq spool file");
        return {};
      case detail::PreambleStatus::corrupt:
        quarantine(ctx, ch, name, "corrupt preamble");
        return {};
      case detail::PreambleStatus::newer_version:
        stats.last_load_skipped++;
        problem(ctx.report, where() + ": spool format version " + std::to_string(version) +
                                " is newer than this build reads (" +
                                std::to_string(detail::kFormatVersion) + "); left in place");
        return {};
    }

    // Metadata.
    RecordType type;
    std::uint32_t length = 0;
    const std::size_t meta_off = detail::kPreambleSize;
    if (!read_head(fd.get(), meta_off + detail::kRecordHeaderSize, &eof)) {
      quarantine(ctx, ch, name, "cannot be read (" + errno_text(errno) + ")");
      return {};
    }
    if (head.size() < meta_off + detail::kRecordHeaderSize) {
      truncated("truncated before its metadata");
      return {};
    }
    if (!detail::parse_record_header(std::string_view(head).substr(meta_off), &type, &length) ||
        type != RecordType::meta || length > kMaxMetaSize) {
      quarantine(ctx, ch, name, "corrupt metadata header");
      return {};
    }
    const std::uint64_t body_off = meta_off + detail::kRecordOverhead + std::uint64_t{length};
    // The body record's header is read along with the metadata.
    if (!read_head(fd.get(), static_cast<std::size_t>(body_off + detail::kRecordHeaderSize),
                   &eof)) {
      quarantine(ctx, ch, name, "cannot be read (" + errno_text(errno) + ")");
      return {};
    }
    RecordView rv;
    const RecordStatus ms = detail::parse_record(std::string_view(head).substr(meta_off), &rv);
    if (ms == RecordStatus::incomplete) {
      truncated("truncated in its metadata");
      return {};
    }
    if (ms != RecordStatus::ok) {
      quarantine(ctx, ch, name, "metadata fails its checksum");
      return {};
    }
    MessageRecord record;
    std::string why;
    if (!detail::decode_meta(rv.payload, &record, &why)) {
      quarantine(ctx, ch, name, "bad metadata: " + why);
      return {};
    }
    if (record.id != name_id) {
      quarantine(ctx, ch, name,
                 "holds message " + record.id.to_string() + ", not " + name_id.to_string());
      return {};
    }
    if (const Entry* dup = index.find(record.id.value)) {
      quarantine(ctx, ch, name, "duplicate of " + path_of(record.id, *dup));
      return {};
    }

    // Body: only its header and checksum, unless it is in the buffer already.
    if (head.size() < body_off + detail::kRecordHeaderSize) {
      truncated("truncated before its body");
      return {};
    }
    if (!detail::parse_record_header(std::string_view(head).substr(body_off), &type, &length) ||
        type != RecordType::body) {
      quarantine(ctx, ch, name, "corrupt body header");
      return {};
    }
    const std::uint64_t tail_off = body_off + detail::kRecordOverhead + std::uint64_t{length};
    std::string_view tail_bytes;
    if (eof || head.size() >= tail_off) {
      // The whole body is in the buffer (or the file ends inside it).
      if (head.size() < tail_off) {
        truncated("truncated in its body (" + std::to_string(head.size()) + " of at least " +
                  std::to_string(tail_off) + " bytes)");
        return {};
      }
      if (detail::parse_record(std::string_view(head).substr(body_off), &rv) != RecordStatus::ok) {
        quarantine(ctx, ch, name, "body fails its checksum");
        return {};
      }
      if (!eof) {
        // More than the buffer: the rest of the records follow.
        tail.assign(head, static_cast<std::size_t>(tail_off), std::string::npos);
        if (!read_rest(fd.get(), head.size(), &tail)) {
          quarantine(ctx, ch, name, "cannot be read (" + errno_text(errno) + ")");
          return {};
        }
        tail_bytes = tail;
      } else {
        tail_bytes = std::string_view(head).substr(static_cast<std::size_t>(tail_off));
      }
    } else {
      // A large body: read from its last 4 bytes (its checksum) to the end of the file.
      tail.clear();
      if (!read_rest(fd.get(), tail_off - detail::kRecordTrailerSize, &tail)) {
        quarantine(ctx, ch, name, "cannot be read (" + errno_text(errno) + ")");
        return {};
      }
      if (tail.size() < detail::kRecordTrailerSize) {
        truncated("truncated in its body");
        return {};
      }
      if (options.verify_bodies_on_load) {
        std::string body(tail_off - body_off, '\0');
        ssize_t n = pread_all(fd.get(), body.data(), body.size(), body_off);
        if (n < 0 || static_cast<std::size_t>(n) != body.size() ||
            detail::parse_record(body, &rv) != RecordStatus::ok) {
          quarantine(ctx, ch, name, "body fails its checksum");
          return {};
        }
      }
      tail_bytes = std::string_view(tail).substr(detail::kRecordTrailerSize);
    }

    // Appended records, oldest first: the last valid state wins.
    std::uint64_t offset = tail_off;
    std::string_view rest = tail_bytes;
    bool torn = false;
    while (!rest.empty()) {
      const RecordStatus st = detail::parse_record(rest, &rv);
      if (st == RecordStatus::ok) {
        if (rv.type == RecordType::update) {
          if (!detail::apply_update(rv.payload, &record, &why)) {
            quarantine(ctx, ch, name,
                       "bad update record at offset " + std::to_string(offset) + ": " + why);
            return {};
          }
        } else if (rv.type != RecordType::attempt) {
          quarantine(ctx, ch, name, "unexpected record at offset " + std::to_string(offset));
          return {};
        }
        rest.remove_prefix(rv.size);
        offset += rv.size;
        continue;
      }
      // A damaged record with no valid record after it is the torn last append of a crash
      // (or the zeros or stale blocks a file system leaves in a file extended at a power
      // loss): cut it off, the state before it stands. Damage followed by a valid record is
      // not a crash's doing: quarantine.
      if (all_zero(rest) || !valid_record_after(rest)) {
        torn = true;
        break;
      }
      quarantine(ctx, ch, name,
                 "damaged record at offset " + std::to_string(offset) + " followed by " +
                     std::to_string(rest.size()) + " more bytes");
      return {};
    }
    if (torn && !careful) {
      retry_careful = true;
      return {};
    }
    fd.reset();
    if (torn) {
      Fd w(::openat(dir_fd, name.c_str(), O_WRONLY | O_CLOEXEC));
      int err = w.ok() ? 0 : errno;
      if (err == 0 && ::ftruncate(w.get(), static_cast<off_t>(offset)) != 0) err = errno;
      if (err == 0) err = fsync_retry(w.get(), true);
      if (err != 0) {
        // Appends go to the end of the valid records anyway; the next load retries.
        sys_fail("cut the torn last record of", where(), err);
      }
      stats.last_load_repaired++;
    }

    Entry e;
    e.id = record.id.value;
    e.end = offset;
    e.body_off = static_cast<std::uint32_t>(body_off);  // below 2^29: length <= kMaxMetaSize
    e.body_size = static_cast<std::uint32_t>(tail_off - body_off - detail::kRecordOverhead);
    e.channel = ch;
    e.attempts = record.attempts;
    e.held = record.held;
    e.name_step = name_step(record.attempts);
    e.name_held = record.held;
    std::string want = file_name_for(record.id, record.attempts, record.held);
    if (want != name) {
      // The state was recorded but the rename did not happen (crash in between).
      if (int err = rename_noreplace(dir_fd, name.c_str(), dir_fd, want.c_str())) {
        if (err == EEXIST) {
          quarantine(ctx, ch, name, "duplicate of queue/" + channels[ch].name + "/" + want);
          return {};
        }
        // Keep using the old name.
        sys_fail("rename " + where() + " to", "queue/" + channels[ch].name + "/" + want, err);
        e.name_held = has_suffix(name, kHeldSuffix);
        e.name_step = static_cast<std::uint32_t>('Z' - name[1]);
      } else {
        stats.last_load_renamed++;
        ctx.changed_dirs.insert(ch);
      }
    }
    e.recipients = static_cast<std::uint32_t>(record.recipients.size());
    index.insert(std::move(e));
    stats.last_load_recovered++;
    if (ctx.report) ctx.report->recovered++;
    (*ctx.each)(std::move(record));
    return {};
  }

  // Appends the file's bytes from `off` to its end to `out`.
  bool read_rest(int fd, std::uint64_t off, std::string* out) {
    for (;;) {
      const std::size_t have = out->size();
      const std::size_t chunk = std::max<std::size_t>(kHeadRead, have);
      out->resize(have + chunk);
      ssize_t n = read_at(fd, out->data() + have, chunk, off);
      if (n < 0) {
        out->resize(have);
        return false;
      }
      out->resize(have + static_cast<std::size_t>(n));
      if (static_cast<std::size_t>(n) < chunk) return true;
      off += chunk;
    }
  }

  Result<void> load(const std::function<void(MessageRecord&&)>& each,
                    RecoveryReport* report) override {
    const auto started = std::chrono::steady_clock::now();
    flush_batch(true);
    sync_lazy();
    index.clear();
    stats.last_load_recovered = stats.last_load_quarantined = stats.last_load_tmp_removed = 0;
    stats.last_load_repaired = stats.last_load_renamed = stats.last_load_skipped = 0;
    LoadContext ctx{&each, report, {}, false};
    Result<void> result;

    // Unfinished writes: never acknowledged, so never anyone's message yet.
    std::vector<DirEntry> entries;
    if (int err = list_directory(tmp_fd.get(), &entries)) {
      result = sys_fail("list", "tmp", err);
    }
    bool tmp_changed = false;
    for (const auto& e : entries) {
      if (entry_type(tmp_fd.get(), e) == DT_DIR) continue;
      if (::unlinkat(tmp_fd.get(), e.name.c_str(), 0) == 0) {
        stats.last_load_tmp_removed++;
        tmp_changed = true;
      } else {
        sys_fail("remove", "tmp/" + e.name, errno);
      }
    }
    if (tmp_changed) {
      stats.dir_syncs++;
      fsync_retry(tmp_fd.get(), false);
    }

    entries.clear();
    if (int err = list_directory(queue_fd.get(), &entries)) {
      result = sys_fail("list", "queue", err);
    }
    std::sort(entries.begin(), entries.end(),
              [](const DirEntry& a, const DirEntry& b) { return a.name < b.name; });
    for (const auto& de : entries) {
      if (entry_type(queue_fd.get(), de) != DT_DIR) {
        problem(ctx.report, "queue/" + de.name + ": not a channel directory; left in place");
        stats.last_load_skipped++;
        continue;
      }
      Error error;
      const std::uint32_t ch = channel(de.name, false, &error);
      if (ch == UINT32_MAX) {
        result = error;
        continue;
      }
      std::vector<DirEntry> files;
      if (int err = list_directory(channels[ch].fd, &files)) {
        result = sys_fail("list", "queue/" + de.name, err);
      }
      index.reserve(index.size() + files.size());
      // Inode order reads a cold disk mostly forward (and is kinder to caches when warm).
      std::sort(files.begin(), files.end(),
                [](const DirEntry& a, const DirEntry& b) { return a.ino < b.ino; });
      for (const auto& f : files) {
        const unsigned char t = entry_type(channels[ch].fd, f);
        if (t == DT_DIR) {
          problem(ctx.report,
                  "queue/" + de.name + "/" + f.name + ": unexpected directory; left in place");
          stats.last_load_skipped++;
          continue;
        }
        if (auto recovered = recover_file(ctx, ch, f.name); !recovered) return recovered;
      }
    }

    for (std::uint32_t c : ctx.changed_dirs) {
      stats.dir_syncs++;
      if (int err = fsync_retry(channels[c].fd, false)) {
        sys_fail("sync directory", "queue/" + channels[c].name, err);
      }
    }
    if (ctx.quarantine_dirty) {
      stats.dir_syncs++;
      if (int err = fsync_retry(quarantine_fd.get(), false)) {
        sys_fail("sync directory", "quarantine", err);
      }
    }
    stats.last_load_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    return result;
  }
};

// ------------------------------------------------------------------------------------------

SpoolStorage::SpoolStorage(std::string directory, Clock& clock, SpoolOptions options)
    : DurableStorage(std::make_unique<Impl>(std::move(directory), clock, std::move(options))) {}

SpoolStorage::Impl& SpoolStorage::impl() const {
  return static_cast<Impl&>(*impl_);
}

Result<std::unique_ptr<SpoolStorage>> SpoolStorage::open(std::string directory, Clock& clock,
                                                         SpoolOptions options) {
  return detail::open_spool_as<SpoolStorage>(std::move(directory), clock, std::move(options));
}

SpoolStats SpoolStorage::stats() const {
  return impl().stats;
}

std::string SpoolStorage::file_of(MessageId id) const {
  const auto* e = impl().index.find(id.value);
  if (!e) return {};
  return impl().path_of(id, *e);
}

std::string SpoolStorage::locator(const MessageRecord& m, std::uint32_t attempts_before) const {
  const auto* e = impl().index.find(m.id.value);
  if (!e) return Storage::locator(m, attempts_before);
  // The channel directory the file is in (a route name made safe for a path) and ".HELD"
  // when held; the attempt letter as the event counts it (seed 002).
  return "queue/" + impl().channels[e->channel].name + "/" +
         file_name_for(m.id, attempts_before, e->name_held);
}

std::string SpoolStorage::channel_directory(std::string_view route) {
  std::string out;
  out.reserve(std::min<std::size_t>(route.size(), 200));
  for (char c : route.substr(0, 200)) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-';
    out.push_back(ok ? c : '_');
  }
  if (out.empty() || out == "." || out == "..") out = "_";
  return out;
}

}  // namespace spool
}  // namespace mailq
