// The segment spool (include/mailq/spool/segment_spool.h, docs/spool-format.md "The segment
// spool").
#include <fcntl.h>
#include <limits.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <set>
#include <unordered_set>
#include <utility>
#include <vector>

#include "mailq/spool/file_spool.h"
#include "mailq/spool/layout.h"
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
using detail::list_directory;
using detail::pread_all;
using detail::pwritev_all;
using detail::RecordStatus;
using detail::RecordType;
using detail::RecordView;
using detail::rename_noreplace;
using detail::valid_record_after;

constexpr std::size_t kIdSize = 8;
// Metadata of a million recipients stays below this; a larger length is damage.
constexpr std::uint32_t kMaxMetaSize = 256u << 20;
// Load reads segments in chunks of up to kLoadChunk. A body record larger than kSkipBodyAbove
// is skipped (its header and id are read, its bytes are not) unless verify_bodies_on_load;
// the read after it is kSmallRead, doubling from there while no body is skipped.
constexpr std::size_t kLoadChunk = 4u << 20;
constexpr std::size_t kSkipBodyAbove = 64u << 10;
constexpr std::size_t kSmallRead = 4096;
// Record offsets are kept in 32 bits: a record starts before `segment_size`.
constexpr std::uint64_t kMaxSegmentSize = 0xFFFFFFFFull;

std::string segment_name(std::uint32_t n) {
  static const char kHex[] = "0123456789abcdef";
  std::string s(16, '0');
  std::uint64_t v = n;
  for (int i = 15; i >= 0 && v != 0; --i, v >>= 4) s[static_cast<std::size_t>(i)] = kHex[v & 15];
  return s + ".seg";
}

// "0000000000000001.seg" -> 1. False for anything else (and for numbers above 32 bits).
bool parse_segment_name(std::string_view name, std::uint64_t* n) {
  if (name.size() != 20 || name.substr(16) != ".seg") return false;
  std::uint64_t v = 0;
  for (char c : name.substr(0, 16)) {
    int d;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if (c >= 'a' && c <= 'f')
      d = c - 'a' + 10;
    else
      return false;
    v = (v << 4) | static_cast<std::uint64_t>(d);
  }
  *n = v;
  return v != 0;
}

std::uint64_t pack(std::uint32_t seg, std::uint32_t off) {
  return (std::uint64_t{seg} << 32) | off;
}
std::uint32_t seg_of(std::uint64_t loc) {
  return static_cast<std::uint32_t>(loc >> 32);
}
std::uint32_t off_of(std::uint64_t loc) {
  return static_cast<std::uint32_t>(loc & 0xFFFFFFFFu);
}

// The staging area of a large load is touched once, page by page: with transparent huge
// pages offered (THP "madvise" mode) that is one fault per 2 MiB instead of one per 4 KiB.
// Advice only: nothing changes where the kernel does not take it.
void advise_huge_pages(void* p, std::size_t bytes) {
  constexpr std::uintptr_t kHuge = 2u << 20;
  const auto begin = (reinterpret_cast<std::uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const auto end = (reinterpret_cast<std::uintptr_t>(p) + bytes) & ~(kHuge - 1);
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}

void put_u32_le(unsigned char* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>((v >> (8 * i)) & 0xFFu);
}

// A record "u64 id + payload" of `type`, appended to `out`.
void put_id_record(std::string& out, RecordType type, MessageId id, const std::string& payload) {
  const std::size_t start = detail::begin_record(out, type);
  detail::put_u64_le(out, id.value);
  out += payload;
  detail::end_record(out, start);
}

}  // namespace

// ------------------------------------------------------------------------------------------

struct SegmentStorage::Impl final : detail::SpoolBase {
  // What the spool keeps in memory per stored message (40 bytes): where its records are,
  // how many recipients it has (to check an update's indices), and the attempts and held flag
  // it recorded last. The rare and growing part lives elsewhere: the locations of its 'u' and
  // 'a' records (none until it is deferred) in `changes`.
  struct Entry {
    std::uint64_t id = 0;
    std::uint32_t seg = 0;         // segment of its insert (or full-state copy) and body
    std::uint32_t meta_off = 0;    // offset of the 'i' record
    std::uint32_t body_off = 0;    // offset of the 'b' record
    std::uint32_t body_size = 0;   // body bytes (below 4 GiB: kMaxPayload)
    std::uint32_t attempts = 0;    // as recorded
    std::uint32_t recipients = 0;  // the recipient count (at least one)
    // Bytes of the 'i' record: at most kMaxMetaSize plus the overhead (kMetaSizeBits).
    std::uint32_t meta_size : 29 = 0;
    std::uint32_t held : 1 = 0;
    std::uint32_t has_changes : 1 = 0;  // `changes` holds its 'u' and 'a' records
  };

  // The per-message memory figure of docs/spool-format.md ("The segment spool", Memory).
  static_assert(sizeof(void*) != 8 || sizeof(Entry) == 40, "update the documented entry size");
  static constexpr unsigned kMetaSizeBits = 29;
  static_assert(kMaxMetaSize + detail::kRecordOverhead < (std::uint64_t{1} << kMetaSizeBits),
                "an 'i' record's size must fit Entry::meta_size");

  // The locations of a message's 'u' and 'a' records, in order (pack()), and their bytes.
  struct Changes {
    std::uint64_t id = 0;
    std::uint64_t bytes = 0;
    std::vector<std::uint64_t> locations;
  };

  struct Segment {
    Fd fd;
    std::uint64_t end = 0;       // end of the valid records: where the next one goes
    std::uint64_t messages = 0;  // stored or pending messages whose 'i' record is here
    std::uint64_t live_bytes = 0;
    // A failed fdatasync: what was written since the last good one may be lost, and a retry
    // may report success without writing it (Linux). Inserts that were waiting on it fail,
    // and appends go to a new segment from then on.
    int sync_error = 0;
  };

  using Pending = detail::PendingInsert<Entry>;

  Impl(std::string d, Clock& c, SegmentOptions o)
      : SpoolBase(std::move(d), c, detail::base_options_of(o)), options(std::move(o)) {
    options.segment_size =
        std::clamp<std::uint64_t>(options.segment_size, detail::kPreambleSize + 1, kMaxSegmentSize);
    open();
  }

  SegmentOptions options;

  Fd seg_dir_fd, quarantine_fd;

  detail::IdTable<Entry> index;
  detail::IdTable<Changes> changes;  // of the messages with 'u' or 'a' records
  std::map<std::uint32_t, Segment> segments;
  std::uint32_t active = 0;  // 0: none yet (created by the first write)
  std::uint64_t next_number = 1;
  std::set<std::uint32_t> unsynced;      // segments with appended records not yet synced
  bool dir_dirty = false;                // a segment was created: sync the directory before acks
  bool dir_lazy = false;                 // a segment was deleted: sync the directory later
  bool roll_next = false;                // the active segment failed a sync: start a new one
  std::vector<std::uint32_t> new_names;  // segments created since the last directory sync

  std::vector<Pending> pending;
  std::unordered_set<std::uint64_t> pending_ids;
  std::size_t size() const noexcept override { return index.size(); }
  std::size_t pending_inserts() const noexcept override { return pending_ids.size(); }
  TimerId compact_timer = kNoTimer;
  std::uint32_t compact_seg = 0;  // segment whose messages compact_ids lists
  std::vector<std::uint64_t> compact_ids;
  std::uint32_t compact_blocked = 0;  // a segment compaction failed on (until the next load)

  SegmentStats stats;

  static std::string where_seg(std::uint32_t n) { return "segments/" + segment_name(n); }

  // --- set-up -----------------------------------------------------------------------------

  void open() {
    std::vector<Fd> fds;
    if (!open_directory({"segments", "quarantine"},
                        {"file", "queue", "files", detail::has_queue_files},
                        detail::has_segment_files, &fds, &stats.dir_syncs)) {
      return;
    }
    seg_dir_fd = std::move(fds[0]);
    quarantine_fd = std::move(fds[1]);
    // New segments continue the numbering (load() reads the existing ones).
    std::vector<DirEntry> entries;
    if (int err = list_directory(seg_dir_fd.get(), &entries)) {
      open_error = Error(errc::storage_failure, "list " + dir + "/segments: " + errno_text(err));
      return;
    }
    for (const auto& e : entries) {
      std::uint64_t n = 0;
      if (parse_segment_name(e.name, &n)) next_number = std::max(next_number, n + 1);
    }
  }

  void cancel_timers() override {
    SpoolBase::cancel_timers();
    stop_timer(compact_timer);
  }

  // --- segments ---------------------------------------------------------------------------

  Result<void> create_segment() {
    if (next_number > 0xFFFFFFFFull) {
      return fail(errc::storage_failure,
                  "create segment in " + dir + "/segments: segment numbers exhausted");
    }
    auto n = static_cast<std::uint32_t>(next_number);
    std::string name = segment_name(n);
    Fd fd(::openat(seg_dir_fd.get(), name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
                   options.file_mode));
    for (int tries = 0; !fd.ok() && errno == EEXIST && tries < 100 && n < 0xFFFFFFFFu; ++tries) {
      // A file that appeared since the numbering was read (never ours: we hold the lock):
      // left for the next load to judge, and the next number used.
      next_number++;
      n = static_cast<std::uint32_t>(next_number);
      name = segment_name(n);
      fd = Fd(::openat(seg_dir_fd.get(), name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
                       options.file_mode));
    }
    if (!fd.ok()) return sys_fail("create", where_seg(n), errno);
    next_number++;
    std::string pre;
    detail::put_segment_preamble(pre);
    iovec iov{pre.data(), pre.size()};
    if (int err = pwritev_all(fd.get(), &iov, 1, 0)) {
      fd.reset();
      ::unlinkat(seg_dir_fd.get(), name.c_str(), 0);
      return sys_fail("write", where_seg(n), err);
    }
    Segment s;
    s.fd = std::move(fd);
    s.end = pre.size();
    segments.emplace(n, std::move(s));
    // The new name must be on disk before anything in the file is acknowledged.
    dir_dirty = true;
    new_names.push_back(n);
    unsynced.insert(n);
    stats.segments_created++;
    stats.total_bytes += pre.size();
    stats.bytes_written += pre.size();
    const std::uint32_t old = active;
    active = n;
    if (old != 0) delete_dead_segments();
    return {};
  }

  // Appends `total` bytes (the iovecs) to the active segment, starting a new one when it is
  // full. On failure the segment is cut back to its previous end, so that no partial record
  // precedes later ones.
  Result<void> append(iovec* iov, int count, std::uint64_t total, std::uint32_t* seg,
                      std::uint32_t* off) {
    if (active == 0 || roll_next) {
      if (auto created = create_segment(); !created) return created;
      roll_next = false;
    } else {
      const Segment& a = segments.at(active);
      if (a.end > detail::kPreambleSize && a.end + total > options.segment_size) {
        if (auto created = create_segment(); !created) return created;
      }
    }
    Segment& s = segments.at(active);
    if (int err = pwritev_all(s.fd.get(), iov, count, s.end)) {
      if (::ftruncate(s.fd.get(), static_cast<off_t>(s.end)) != 0) {
        // The partial record stays: load() recognises it by its checksum, and the next
        // append overwrites it (appends go to `end`, not to the file size).
      }
      return sys_fail("write", where_seg(active), err);
    }
    *seg = active;
    *off = static_cast<std::uint32_t>(s.end);
    s.end += total;
    stats.bytes_written += total;
    stats.total_bytes += total;
    unsynced.insert(active);
    return {};
  }

  Result<void> append(const std::string& bytes, std::uint32_t* seg, std::uint32_t* off) {
    iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
    return append(&iov, 1, bytes.size(), seg, off);
  }

  // Cuts the active segment back to `off` (an append whose sync failed).
  void cut_back(std::uint32_t seg, std::uint32_t off) {
    auto it = segments.find(seg);
    if (it == segments.end() || seg != active) return;
    if (::ftruncate(it->second.fd.get(), off) == 0) {
      stats.total_bytes -= it->second.end - off;
      it->second.end = off;
    }
  }

  // Makes every appended record (and every new segment's name) durable.
  Result<void> sync_segments() {
    Result<void> result;
    for (std::uint32_t n : unsynced) {
      auto it = segments.find(n);
      if (it == segments.end()) continue;
      stats.syncs++;
      if (int err = fsync_retry(it->second.fd.get(), true)) {
        it->second.sync_error = err;
        if (n == active) roll_next = true;
        result = sys_fail("sync", where_seg(n), err);
      }
    }
    unsynced.clear();
    if (dir_dirty || dir_lazy) {
      stats.dir_syncs++;
      if (int err = fsync_retry(seg_dir_fd.get(), false)) {
        result = sys_fail("sync directory", "segments", err);
        // Whether the new segments' names reached the disk is unknown: nothing in them is
        // acknowledged, and appends go to yet another segment.
        for (std::uint32_t n : new_names) {
          auto it = segments.find(n);
          if (it == segments.end()) continue;
          it->second.sync_error = err;
          if (n == active) roll_next = true;
        }
      } else {
        dir_dirty = dir_lazy = false;
      }
      new_names.clear();
    }
    return result;
  }

  // The prefix rule: the oldest segment goes once it is not the active one and holds no
  // stored message; then the next one may go. A segment is never deleted while an older one
  // exists, so no record a replay needs disappears before the records it depends on.
  void delete_dead_segments() {
    while (!segments.empty()) {
      auto it = segments.begin();
      if (it->first == active || it->second.messages > 0) return;
      const std::string name = segment_name(it->first);
      if (::unlinkat(seg_dir_fd.get(), name.c_str(), 0) != 0 && errno != ENOENT) {
        sys_fail("remove", where_seg(it->first), errno);
        return;
      }
      stats.total_bytes -= it->second.end;
      stats.segments_deleted++;
      unsynced.erase(it->first);
      if (compact_seg == it->first) {
        compact_seg = 0;
        compact_ids.clear();
      }
      segments.erase(it);
      dir_lazy = true;
      schedule_lazy();
    }
  }

  // Bytes of a message's records (the live-bytes accounting): its 'i' and 'b' records and,
  // once it has some, its 'u' and 'a' records.
  std::uint64_t entry_bytes(const Entry& e) const {
    std::uint64_t bytes = e.meta_size + detail::kRecordOverhead + kIdSize + e.body_size;
    if (e.has_changes) {
      if (const Changes* c = changes.find(e.id)) bytes += c->bytes;
    }
    return bytes;
  }

  void account_add(const Entry& e) {
    const std::uint64_t bytes = entry_bytes(e);
    Segment& s = segments.at(e.seg);
    s.messages++;
    s.live_bytes += bytes;
    stats.live_bytes += bytes;
  }

  void account_remove(const Entry& e) {
    const std::uint64_t bytes = entry_bytes(e);
    auto it = segments.find(e.seg);
    if (it != segments.end()) {
      it->second.messages--;
      it->second.live_bytes -= bytes;
    }
    stats.live_bytes -= bytes;
  }

  // Records that the message of `e` has a new 'u' or 'a' record of `bytes` at `loc`.
  void add_change(Entry& e, std::uint64_t loc, std::uint64_t bytes) {
    Changes* c = e.has_changes ? changes.find(e.id) : nullptr;
    if (!c) {
      Changes fresh;
      fresh.id = e.id;
      c = &changes.insert(std::move(fresh));
      e.has_changes = 1;
    }
    c->locations.push_back(loc);
    c->bytes += bytes;
    segments.at(e.seg).live_bytes += bytes;
    stats.live_bytes += bytes;
  }

  // The locations of the 'u' and 'a' records of the message of `e`, in order.
  const std::vector<std::uint64_t>& change_locations(const Entry& e) const {
    static const std::vector<std::uint64_t> kNone;
    const Changes* c = e.has_changes ? changes.find(e.id) : nullptr;
    return c ? c->locations : kNone;
  }

  // --- insert -------------------------------------------------------------------------------

  void insert(const MessageRecord& record, std::string_view body, Done done) override {
    Pending p;
    p.id = record.id;
    p.done = std::move(done);
    p.result = write_new(record, body, &p.entry);
    if (!p.result) stats.insert_failures++;
    if (p.result) pending_ids.insert(record.id.value);
    pending.push_back(std::move(p));
    schedule_batch();
  }

  // Writes the 'i' and 'b' records of a message (one pwritev), and `trailer` after them; `e`
  // receives their places (seg, offsets and sizes; nothing else of it changes).
  Result<void> write_message(const MessageRecord& record, std::string_view body,
                             const std::string& trailer, Entry* e) {
    std::string head;
    const std::size_t start = detail::begin_record(head, RecordType::seg_insert);
    detail::put_meta_payload(head, record);
    if (head.size() - detail::kRecordHeaderSize > kMaxMetaSize) {
      return fail(errc::message_too_large,
                  "insert " + record.id.to_string() + ": metadata too large");
    }
    detail::end_record(head, start);
    unsigned char body_head[detail::kRecordHeaderSize + kIdSize];
    detail::record_header(RecordType::seg_body, static_cast<std::uint32_t>(kIdSize + body.size()),
                          body_head);
    for (std::size_t i = 0; i < kIdSize; ++i)
      body_head[detail::kRecordHeaderSize + i] =
          static_cast<unsigned char>((record.id.value >> (8 * i)) & 0xFFu);
    unsigned char crc[4];
    put_u32_le(crc, detail::crc32c(detail::crc32c(0, body_head, sizeof body_head), body.data(),
                                   body.size()));
    iovec iov[5] = {
        {head.data(), head.size()},
        {body_head, sizeof body_head},
        {const_cast<char*>(body.data()), body.size()},
        {crc, sizeof crc},
        {const_cast<char*>(trailer.data()), trailer.size()},
    };
    const std::uint64_t body_record = sizeof body_head + body.size() + sizeof crc;
    const std::uint64_t total = head.size() + body_record + trailer.size();
    std::uint32_t seg = 0, off = 0;
    if (auto written = append(iov, trailer.empty() ? 4 : 5, total, &seg, &off); !written)
      return written;
    e->seg = seg;
    e->meta_off = off;
    e->body_off = static_cast<std::uint32_t>(off + head.size());
    e->body_size = static_cast<std::uint32_t>(body.size());
    e->meta_size = static_cast<std::uint32_t>(head.size());
    return {};
  }

  Result<void> write_new(const MessageRecord& record, std::string_view body, Entry* e) {
    const bool known = index.contains(record.id.value) || pending_ids.count(record.id.value);
    if (auto fits = check_insert(record, known); !fits) return fits;
    const std::string id_text = record.id.to_string();
    if (body.size() + kIdSize >= detail::kMaxPayload) {
      return fail(errc::message_too_large,
                  "insert " + id_text + ": a body of 4 GiB or more does not fit the spool");
    }
    if (auto written = write_message(record, body, {}, e); !written) return written;
    e->id = record.id.value;
    e->attempts = record.attempts;
    e->held = record.held;
    e->recipients = static_cast<std::uint32_t>(record.recipients.size());
    account_add(*e);
    return {};
  }

  // Whether a batch insert sits in a segment whose sync failed (now or in an earlier sync).
  bool failed_syncs(const std::vector<Pending>& batch) const {
    for (const auto& p : batch) {
      if (!p.result) continue;
      auto it = segments.find(p.entry.seg);
      if (it != segments.end() && it->second.sync_error != 0) return true;
    }
    return false;
  }

  // The group commit: one fdatasync per segment written since the last sync (normally one),
  // the directory when a segment was created, then the callbacks.
  void flush_batch(bool run_callbacks) override {
    stop_timer(batch_timer);
    std::vector<Pending> batch = std::move(pending);
    pending.clear();
    pending_ids.clear();
    bool any = false;
    for (auto& p : batch) any = any || p.result;
    if (any) {
      stats.batches++;
      if (Result<void> synced = sync_segments(); !synced || failed_syncs(batch)) {
        // Whether the records reached the disk is unknown: report the inserts failed, and
        // append removals so that a replay does not bring them back (best effort).
        for (auto& p : batch) {
          if (!p.result) continue;
          auto sit = segments.find(p.entry.seg);
          if (sit != segments.end() && sit->second.sync_error == 0) continue;  // durable
          if (!synced) {
            p.result = synced;
          } else {  // an earlier sync of its segment failed
            const int err = sit != segments.end() ? sit->second.sync_error : EIO;
            p.result =
                Error(err == ENOSPC || err == EDQUOT ? errc::storage_full : errc::storage_failure,
                      "sync " + dir + "/" + where_seg(p.entry.seg) + ": " + errno_text(err));
          }
          stats.insert_failures++;
          account_remove(p.entry);
          std::string bytes;
          put_id_record(bytes, RecordType::seg_remove, p.id, {});
          std::uint32_t seg = 0, off = 0;
          (void)append(bytes, &seg, &off);  // best effort: a failure is reported to on_error
        }
        delete_dead_segments();
      }
    }
    for (auto& p : batch) {
      if (!p.result) continue;
      stats.inserts++;
      index.insert(std::move(p.entry));
    }
    if (!run_callbacks) return;
    for (auto& p : batch) complete_insert(p.done, std::move(p.result));
  }

  void sync_lazy() override {
    stop_timer(lazy_timer);
    (void)sync_segments();  // failures are reported through on_error
  }

  // --- changes to stored messages ----------------------------------------------------------

  Result<void> update(const RecordChange& change) override {
    Entry* found = index.find(change.id.value);
    if (auto fits = check_update(change, found ? &found->recipients : nullptr); !fits) {
      return fits;
    }
    Entry& e = *found;
    // The at-least-once rule (see spool_storage.cpp): final states, hold and release are on
    // disk before update returns.
    const bool held_changes = change.held != static_cast<bool>(e.held);
    const bool sync = held_changes || change.makes_final();
    if (change.recipients.empty() && change.attempts == e.attempts && !held_changes) return {};
    std::string payload;
    detail::put_update_payload(payload, change);
    std::string bytes;
    put_id_record(bytes, RecordType::seg_update, change.id, payload);
    std::uint32_t seg = 0, off = 0;
    if (auto written = append(bytes, &seg, &off); !written) return written;
    if (sync) {
      if (auto synced = sync_segments(); !synced) {
        cut_back(seg, off);
        return synced;
      }
      stats.synced_updates++;
    } else {
      schedule_lazy();
    }
    stats.updates++;
    add_change(e, pack(seg, off), bytes.size());
    e.attempts = change.attempts;
    e.held = change.held;
    return {};
  }

  Result<void> append_attempt(MessageId id, const AttemptRecord& attempt) override {
    Entry* e = index.find(id.value);
    if (!e) return no_message("append_attempt", id);
    std::string payload;
    detail::put_attempt_payload(payload, attempt);
    std::string bytes;
    put_id_record(bytes, RecordType::seg_attempt, id, payload);
    std::uint32_t seg = 0, off = 0;
    if (auto written = append(bytes, &seg, &off); !written) return written;
    schedule_lazy();
    stats.attempts++;
    add_change(*e, pack(seg, off), bytes.size());
    return {};
  }

  Result<void> remove(MessageId id) override {
    Entry* e = index.find(id.value);
    if (!e) return no_message("remove", id);
    std::string bytes;
    put_id_record(bytes, RecordType::seg_remove, id, {});
    std::uint32_t seg = 0, off = 0;
    if (auto written = append(bytes, &seg, &off); !written) return written;
    schedule_lazy();
    stats.removes++;
    account_remove(*e);
    if (e->has_changes) changes.erase(id.value);
    index.erase(id.value);
    delete_dead_segments();
    schedule_compaction();
    return {};
  }

  // --- reading -------------------------------------------------------------------------------

  // Reads the record at `loc` into `buf`. Success, or corrupt_record / storage_failure.
  Result<void> read_record(std::uint32_t seg, std::uint32_t off, std::string* buf, RecordView* rv) {
    auto it = segments.find(seg);
    if (it == segments.end()) {
      return fail(errc::storage_failure, where_seg(seg) + " is gone but still referenced (offset " +
                                             std::to_string(off) + ")");
    }
    const int fd = it->second.fd.get();
    buf->resize(detail::kRecordHeaderSize);
    ssize_t n = pread_all(fd, buf->data(), buf->size(), off);
    if (n < 0) return sys_fail("read", where_seg(seg), errno);
    RecordType type;
    std::uint32_t length = 0;
    if (static_cast<std::size_t>(n) != buf->size() ||
        !detail::parse_record_header(*buf, &type, &length) ||
        std::uint64_t{off} + length + detail::kRecordOverhead > it->second.end) {
      return fail(errc::corrupt_record,
                  where_seg(seg) + ": damaged record header at offset " + std::to_string(off));
    }
    buf->resize(length + detail::kRecordOverhead);
    n = pread_all(fd, buf->data(), buf->size(), off);
    if (n < 0) return sys_fail("read", where_seg(seg), errno);
    if (static_cast<std::size_t>(n) != buf->size() ||
        detail::parse_record(*buf, rv) != RecordStatus::ok) {
      return fail(errc::corrupt_record, where_seg(seg) + ": the record at offset " +
                                            std::to_string(off) + " fails its checksum");
    }
    return {};
  }

  Result<std::string> read_body(MessageId id) override {
    const Entry* found = index.find(id.value);
    if (!found) return Error(errc::not_found, "no message " + id.to_string());
    const Entry& e = *found;
    auto sit = segments.find(e.seg);
    if (sit == segments.end()) {
      return fail(errc::storage_failure, where_seg(e.seg) + " is gone");
    }
    std::string buf(detail::kRecordOverhead + kIdSize + e.body_size, '\0');
    ssize_t n = pread_all(sit->second.fd.get(), buf.data(), buf.size(), e.body_off);
    if (n < 0) return sys_fail("read", where_seg(e.seg), errno);
    RecordView rv;
    if (static_cast<std::size_t>(n) != buf.size() ||
        detail::parse_record(buf, &rv) != RecordStatus::ok || rv.type != RecordType::seg_body ||
        detail::get_u64_le(rv.payload) != id.value) {
      return fail(errc::corrupt_record, where_seg(e.seg) + ": the body of " + id.to_string() +
                                            " at offset " + std::to_string(e.body_off) +
                                            " fails its checksum");
    }
    buf.erase(0, detail::kRecordHeaderSize + kIdSize);
    buf.resize(e.body_size);
    return buf;
  }

  Result<std::vector<AttemptRecord>> read_attempts(MessageId id) override {
    const Entry* e = index.find(id.value);
    if (!e) return Error(errc::not_found, "no message " + id.to_string());
    std::vector<AttemptRecord> out;
    std::string buf;
    // A copy: reading may fail, and failing reports to a host handler that may call in.
    const std::vector<std::uint64_t> locations = change_locations(*e);
    for (std::uint64_t loc : locations) {
      RecordView rv;
      if (auto read = read_record(seg_of(loc), off_of(loc), &buf, &rv); !read) return read.error();
      if (rv.type != RecordType::seg_attempt) continue;
      AttemptRecord a;
      std::string why;
      if (rv.payload.size() < kIdSize ||
          !detail::decode_attempt(rv.payload.substr(kIdSize), &a, &why)) {
        return fail(errc::corrupt_record, where_seg(seg_of(loc)) + ": attempt record at offset " +
                                              std::to_string(off_of(loc)) + " malformed");
      }
      out.push_back(std::move(a));
    }
    return out;
  }

  // --- compaction ----------------------------------------------------------------------------

  bool compaction_due() const {
    if (!ready() || segments.size() < 2) return false;
    const std::uint32_t oldest = segments.begin()->first;
    if (oldest == active || oldest == compact_blocked) return false;
    return static_cast<double>(stats.live_bytes) <
           options.compact_below_live_fraction * static_cast<double>(stats.total_bytes);
  }

  void schedule_compaction() {
    if (compact_timer != kNoTimer || !compaction_due()) return;
    compact_timer = clock.schedule(Duration{0}, [this] {
      compact_timer = kNoTimer;
      bool progress = false;
      (void)compact_step(options.compact_bytes_per_turn, &progress);  // reported to on_error
      if (progress) schedule_compaction();
    });
  }

  // A full-state copy written by compaction: where its records are, and its 'a' records.
  struct Copy {
    Entry place;
    Changes trail;
  };

  // Writes a full-state copy of a stored message (current metadata, body, attempt rows) to
  // the active segment, not yet synced; `out` receives where the copy is.
  Result<void> relocate(MessageId id, const Entry& e, Copy* out) {
    std::string buf;
    RecordView rv;
    if (auto read = read_record(e.seg, e.meta_off, &buf, &rv); !read) return read;
    MessageRecord record;
    std::string why;
    if (rv.type != RecordType::seg_insert || !detail::decode_meta(rv.payload, &record, &why) ||
        record.id != id) {
      return fail(errc::corrupt_record, where_seg(e.seg) + ": the metadata of " + id.to_string() +
                                            " at offset " + std::to_string(e.meta_off) +
                                            " is unreadable" +
                                            (why.empty() ? std::string() : ": " + why));
    }
    std::string attempts;
    std::vector<std::size_t> attempt_offsets;
    const std::vector<std::uint64_t> locations = change_locations(e);
    for (std::uint64_t loc : locations) {
      if (auto read = read_record(seg_of(loc), off_of(loc), &buf, &rv); !read) return read;
      if (rv.payload.size() < kIdSize || detail::get_u64_le(rv.payload) != id.value ||
          (rv.type == RecordType::seg_update &&
           !detail::apply_update(rv.payload.substr(kIdSize), &record, &why))) {
        return fail(errc::corrupt_record, where_seg(seg_of(loc)) + ": the record of " +
                                              id.to_string() + " at offset " +
                                              std::to_string(off_of(loc)) + " is unreadable");
      }
      if (rv.type == RecordType::seg_attempt) {
        attempt_offsets.push_back(attempts.size());
        attempts.append(buf.data(), rv.size);  // copied as it is: same id, same bytes
      }
    }
    auto body = read_body(id);
    if (!body.ok()) return body.error();
    if (auto written = write_message(record, *body, attempts, &out->place); !written)
      return written;
    out->place.id = id.value;
    out->trail.id = id.value;
    out->trail.bytes = attempts.size();
    const std::uint32_t tail =
        out->place.body_off +
        static_cast<std::uint32_t>(detail::kRecordOverhead + kIdSize + body->size());
    for (std::size_t a : attempt_offsets)
      out->trail.locations.push_back(pack(out->place.seg, tail + static_cast<std::uint32_t>(a)));
    return {};
  }

  // Copies up to `budget` bytes of the oldest segment's messages forward, syncs, and then
  // switches the index to the copies (so the old segment can go).
  Result<void> compact_step(std::uint64_t budget, bool* progress) {
    *progress = false;
    if (!compaction_due()) return {};
    const std::uint32_t oldest = segments.begin()->first;
    if (compact_seg != oldest) {
      compact_ids.clear();
      for (const Entry& e : index) {
        if (e.seg == oldest) compact_ids.push_back(e.id);
      }
      compact_seg = oldest;
    }
    std::vector<Copy> copies;
    std::uint64_t copied = 0;
    Result<void> result;
    while (!compact_ids.empty() && copied < budget) {
      const std::uint64_t id = compact_ids.back();
      const Entry* e = index.find(id);
      if (!e || e->seg != oldest) {
        compact_ids.pop_back();
        continue;
      }
      Copy copy;
      if (auto copied_one = relocate(MessageId{id}, *e, &copy); !copied_one) {
        result = copied_one;
        compact_blocked = oldest;
        break;
      }
      compact_ids.pop_back();
      copied += entry_bytes(copy.place) + copy.trail.bytes;
      copies.push_back(std::move(copy));
    }
    if (!copies.empty()) {
      // The copies are durable before the old segment can be unlinked.
      if (auto synced = sync_segments(); !synced) return synced;
      for (Copy& copy : copies) {
        Entry* e = index.find(copy.place.id);
        if (!e) continue;  // removed by a host error handler since
        account_remove(*e);
        // The copy's records replace the old ones; the recipient count, attempts and hold
        // stay.
        e->seg = copy.place.seg;
        e->meta_off = copy.place.meta_off;
        e->body_off = copy.place.body_off;
        e->body_size = copy.place.body_size;
        e->meta_size = copy.place.meta_size;
        if (copy.trail.locations.empty()) {
          if (e->has_changes) changes.erase(e->id);
          e->has_changes = 0;
        } else if (Changes* c = e->has_changes ? changes.find(e->id) : nullptr) {
          *c = std::move(copy.trail);
        } else {
          changes.insert(std::move(copy.trail));
          e->has_changes = 1;
        }
        account_add(*e);
        stats.compacted_messages++;
        stats.compacted_bytes += entry_bytes(*e);
      }
      *progress = true;
    }
    const std::size_t before = segments.size();
    delete_dead_segments();
    if (segments.size() != before) *progress = true;
    return result;
  }

  Result<void> compact_now() {
    if (!ready()) return not_ready();
    flush_batch(true);
    for (;;) {
      bool progress = false;
      if (auto step = compact_step(UINT64_MAX, &progress); !step) return step;
      if (!progress) return {};
    }
  }

  // --- recovery -----------------------------------------------------------------------------

  // Segment::end marks during load, before a segment is replayed.
  static constexpr std::uint64_t kTornPreamble = 1;
  static constexpr std::uint64_t kBadPreamble = 2;

  struct LoadItem {
    MessageRecord record;
    Entry entry;  // its places; the rest is filled in when the index is built
    std::vector<std::uint64_t> changes;  // its 'u' and 'a' records (pack())
    std::uint64_t change_bytes = 0;
    bool has_body = false;
    bool dead = false;
    std::size_t replaced = SIZE_MAX;  // the item this full-state copy replaced
  };

  struct LoadContext {
    RecoveryReport* report = nullptr;
    std::vector<LoadItem> items;
    struct Where {
      std::uint64_t id = 0;
      std::size_t item = 0;  // in items
    };
    detail::IdTable<Where> where;   // the current item of each id
    std::size_t orphan = SIZE_MAX;  // the item of the last 'i' record while its 'b' is due
    bool quarantine_dirty = false;
  };

  // Creates a fresh file in quarantine/ named `base` (or base.N). -1 with errno on failure.
  int quarantine_file(const std::string& base, std::string* name) {
    for (int n = 0; n < 1000; ++n) {
      *name = n == 0 ? base : base + "." + std::to_string(n);
      int fd = ::openat(quarantine_fd.get(), name->c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                        options.file_mode);
      if (fd >= 0 || errno != EEXIST) return fd;
    }
    errno = EEXIST;
    return -1;
  }

  // Moves a whole file of segments/ to quarantine/.
  void quarantine_whole(LoadContext& ctx, const std::string& name, const std::string& reason) {
    std::string target;
    const int err =
        detail::rename_aside(seg_dir_fd.get(), name, quarantine_fd.get(), name, &target);
    if (err != 0) {
      problem(ctx.report, "segments/" + name + ": " + reason +
                              "; could not move it to quarantine/: " + errno_text(err) +
                              "; left in place");
      return;
    }
    ctx.quarantine_dirty = true;
    dir_lazy = true;
    stats.last_load_quarantined++;
    if (ctx.report) ctx.report->quarantined++;
    problem(ctx.report, "segments/" + name + ": " + reason + "; moved to quarantine/" + target);
  }

  // Ends a segment's replay at `off`: a torn tail (nothing valid after it) is cut off; damage
  // followed by valid records is copied to quarantine/ first. Returns the new end.
  std::uint64_t end_segment_at(LoadContext& ctx, std::uint32_t n, Segment& s, std::uint64_t damage,
                               std::uint64_t size, const std::string& reason) {
    const std::string where = where_seg(n);
    // A message whose 'i' record is intact but whose 'b' record (written with it) is not:
    // the cut starts at its 'i' record, so that the message goes whole.
    std::uint64_t off = damage;
    if (ctx.orphan != SIZE_MAX) {
      LoadItem& item = ctx.items[ctx.orphan];
      if (!item.dead && !item.has_body && item.entry.seg == n) {
        off = item.entry.meta_off;
        item.dead = true;
        if (item.replaced != SIZE_MAX) {
          // A full-state copy cut short: the copy it was to replace stands.
          ctx.items[item.replaced].dead = false;
          if (LoadContext::Where* w = ctx.where.find(item.record.id.value)) w->item = item.replaced;
        } else {
          ctx.where.erase(item.record.id.value);
        }
      }
      ctx.orphan = SIZE_MAX;
    }
    std::string rest(static_cast<std::size_t>(size - off), '\0');
    ssize_t got = pread_all(s.fd.get(), rest.data(), rest.size(), off);
    if (got < 0) {
      problem(ctx.report, where + ": " + reason + " at offset " + std::to_string(off) +
                              " and the rest cannot be read (" + errno_text(errno) +
                              "); left in place");
      return off;
    }
    rest.resize(static_cast<std::size_t>(got));
    const std::string_view from_damage =
        std::string_view(rest).substr(std::min<std::size_t>(rest.size(), damage - off));
    if (all_zero(from_damage) || !valid_record_after(from_damage)) {
      // The torn last append of a crash, or the zeros / stale blocks a file system leaves in
      // a file extended at a power loss: the state before it stands.
      if (::ftruncate(s.fd.get(), static_cast<off_t>(off)) != 0 ||
          fsync_retry(s.fd.get(), true) != 0) {
        // Appends never go to a loaded segment but the active one; the next load retries.
        sys_fail("cut the torn last record of", where, errno);
      }
      stats.last_load_repaired++;
      return off;
    }
    const std::string base = segment_name(n) + "." + std::to_string(off);
    std::string qname;
    Fd q(quarantine_file(base, &qname));
    int err = q.ok() ? 0 : errno;
    if (err == 0) {
      iovec iov{rest.data(), rest.size()};
      err = pwritev_all(q.get(), &iov, 1, 0);
    }
    if (err == 0) err = fsync_retry(q.get(), true);
    if (err != 0) {
      if (q.ok()) ::unlinkat(quarantine_fd.get(), qname.c_str(), 0);
      problem(ctx.report, where + ": " + reason + " at offset " + std::to_string(off) +
                              "; could not copy the " + std::to_string(rest.size()) +
                              " bytes from there to quarantine/: " + errno_text(err) +
                              "; left in place");
      return off;
    }
    ctx.quarantine_dirty = true;
    stats.last_load_quarantined++;
    if (ctx.report) ctx.report->quarantined++;
    problem(ctx.report, where + ": " + reason + " at offset " + std::to_string(damage) + "; the " +
                            std::to_string(rest.size()) + " bytes from offset " +
                            std::to_string(off) + " moved to quarantine/" + qname);
    if (::ftruncate(s.fd.get(), static_cast<off_t>(off)) != 0 ||
        fsync_retry(s.fd.get(), true) != 0) {
      sys_fail("truncate", where, errno);
    }
    return off;
  }

  // The body record of a message whose 'i' record came before it in the same segment.
  static void note_body(LoadContext& ctx, LoadItem* item, std::uint32_t n, std::uint64_t off,
                        std::uint64_t body_size, std::uint64_t record_size) {
    // An 'i' and its 'b' are written together: whatever record follows an 'i', it is no longer
    // an insert torn at the end of the segment.
    ctx.orphan = SIZE_MAX;
    if (!item || item->has_body || item->entry.seg != n) return;  // not (or no longer) stored
    item->has_body = true;
    item->entry.body_off = static_cast<std::uint32_t>(off);
    item->entry.body_size = static_cast<std::uint32_t>(body_size);
    (void)record_size;  // kRecordOverhead + kIdSize + body_size: entry_bytes() derives it
  }

  // Applies one valid record. False (with `why`) when its payload is malformed.
  bool apply(LoadContext& ctx, std::uint32_t n, std::uint64_t off, const RecordView& rv,
             std::string* why) {
    const std::uint64_t size = rv.size;
    if (rv.type == RecordType::seg_insert) {
      MessageRecord record;
      if (!detail::decode_meta(rv.payload, &record, why)) return false;
      std::size_t replaced = SIZE_MAX;
      if (LoadContext::Where* w = ctx.where.find(record.id.value)) {
        replaced = w->item;  // a full-state copy replaces it
        ctx.items[replaced].dead = true;
        w->item = ctx.items.size();
      } else {
        ctx.where.insert(LoadContext::Where{record.id.value, ctx.items.size()});
      }
      ctx.orphan = ctx.items.size();
      LoadItem& item = ctx.items.emplace_back();
      item.replaced = replaced;
      item.entry.id = record.id.value;
      item.entry.seg = n;
      item.entry.meta_off = static_cast<std::uint32_t>(off);
      item.entry.meta_size = static_cast<std::uint32_t>(size);
      item.record = std::move(record);
      return true;
    }
    if (rv.payload.size() < kIdSize) {
      *why = "record without a message id";
      return false;
    }
    const std::uint64_t id = detail::get_u64_le(rv.payload);
    // Any record but the 'b' of the last 'i' means that insert was not torn at the end: an 'i'
    // without its 'b' in the middle is damage, reported when the index is built ("has no body
    // record"), and must not make a later cut take the records applied since.
    if (rv.type != RecordType::seg_body) ctx.orphan = SIZE_MAX;
    const LoadContext::Where* w = ctx.where.find(id);
    LoadItem* item = w ? &ctx.items[w->item] : nullptr;
    switch (rv.type) {
      case RecordType::seg_body:
        note_body(ctx, item, n, off, rv.payload.size() - kIdSize, size);
        return true;
      case RecordType::seg_update:
        if (!item) return true;  // its insert was in a deleted segment
        if (!detail::apply_update(rv.payload.substr(kIdSize), &item->record, why)) return false;
        item->changes.push_back(pack(n, static_cast<std::uint32_t>(off)));
        item->change_bytes += size;
        return true;
      case RecordType::seg_attempt:
        if (!item) return true;
        item->changes.push_back(pack(n, static_cast<std::uint32_t>(off)));
        item->change_bytes += size;
        return true;
      case RecordType::seg_remove:
        if (!item) return true;
        item->dead = true;
        ctx.where.erase(id);
        return true;
      default:
        *why = std::string("record type '") + static_cast<char>(rv.type) +
               "' does not belong in a segment";
        return false;
    }
  }

  // Replays one segment (whose preamble is valid). Returns its end after repairs.
  std::uint64_t scan_segment(LoadContext& ctx, std::uint32_t n, Segment& s, std::uint64_t size,
                             std::string& buf) {
    std::uint64_t buf_off = 0;  // file offset of buf[0]
    buf.clear();
    const int fd = s.fd.get();
    std::size_t chunk = kLoadChunk;
    // Makes [off, off + need) available in buf; false when the file ends first.
    auto have = [&](std::uint64_t off, std::uint64_t need, bool* read_error) -> bool {
      if (off >= buf_off && off + need <= buf_off + buf.size()) return true;
      if (off + need > size) return false;
      const std::uint64_t want =
          std::min<std::uint64_t>(std::max<std::uint64_t>(need, chunk), size - off);
      chunk = std::min(chunk * 2, kLoadChunk);
      buf.resize(static_cast<std::size_t>(want));
      ssize_t got = pread_all(fd, buf.data(), buf.size(), off);
      if (got < 0) {
        *read_error = true;
        buf.clear();
        return false;
      }
      buf.resize(static_cast<std::size_t>(got));
      buf_off = off;
      return buf.size() >= need;
    };
    std::uint64_t off = detail::kPreambleSize;
    std::string why;
    ctx.orphan = SIZE_MAX;
    while (off < size) {
      bool read_error = false;
      if (!have(off, detail::kRecordHeaderSize, &read_error)) {
        if (read_error) {
          problem(ctx.report, where_seg(n) + ": cannot be read at offset " + std::to_string(off) +
                                  " (" + errno_text(errno) + "); the rest is not replayed");
          return off;
        }
        return end_segment_at(ctx, n, s, off, size, "incomplete record");
      }
      std::string_view view(buf.data() + (off - buf_off), buf.size() - (off - buf_off));
      RecordType type;
      std::uint32_t length = 0;
      if (!detail::parse_record_header(view, &type, &length) || off > kMaxSegmentSize ||
          (type != RecordType::seg_body && length > kMaxMetaSize)) {
        return end_segment_at(ctx, n, s, off, size, "damaged record");
      }
      const std::uint64_t total = std::uint64_t{length} + detail::kRecordOverhead;
      if (off + total > size) return end_segment_at(ctx, n, s, off, size, "incomplete record");
      RecordView rv;
      if (type == RecordType::seg_body && total > kSkipBodyAbove &&
          !options.verify_bodies_on_load) {
        // A large body: its id only; read_body checks its checksum when it is needed.
        if (!have(off, detail::kRecordHeaderSize + kIdSize, &read_error) || length < kIdSize) {
          return end_segment_at(ctx, n, s, off, size, "damaged record");
        }
        const std::uint64_t id = detail::get_u64_le(
            std::string_view(buf.data() + (off - buf_off) + detail::kRecordHeaderSize, kIdSize));
        const LoadContext::Where* w = ctx.where.find(id);
        note_body(ctx, w ? &ctx.items[w->item] : nullptr, n, off, length - kIdSize, total);
        chunk = kSmallRead;  // the next message's metadata, not more of the bodies
        off += total;
        continue;
      }
      if (!have(off, total, &read_error)) {
        if (read_error) {
          problem(ctx.report, where_seg(n) + ": cannot be read at offset " + std::to_string(off) +
                                  " (" + errno_text(errno) + "); the rest is not replayed");
          return off;
        }
        return end_segment_at(ctx, n, s, off, size, "incomplete record");
      }
      view = std::string_view(buf.data() + (off - buf_off), static_cast<std::size_t>(total));
      if (detail::parse_record(view, &rv) != RecordStatus::ok) {
        return end_segment_at(ctx, n, s, off, size, "damaged record");
      }
      why.clear();
      if (!apply(ctx, n, off, rv, &why)) return end_segment_at(ctx, n, s, off, size, why);
      off += total;
    }
    // The segment ends after a message's 'i' record, without its 'b' record (written with it
    // in one write): a torn insert, cut off like any torn tail.
    if (ctx.orphan != SIZE_MAX) return end_segment_at(ctx, n, s, off, size, "incomplete record");
    return off;
  }

  Result<void> load(const std::function<void(MessageRecord&&)>& each,
                    RecoveryReport* report) override {
    const auto started = std::chrono::steady_clock::now();
    flush_batch(true);
    (void)sync_segments();  // failures are reported through on_error
    stats.last_load_recovered = stats.last_load_segments = 0;
    stats.last_load_repaired = stats.last_load_quarantined = 0;
    LoadContext ctx;
    ctx.report = report;

    std::vector<DirEntry> entries;
    if (int err = list_directory(seg_dir_fd.get(), &entries)) {
      return sys_fail("list", "segments", err);
    }
    std::vector<std::pair<std::uint32_t, std::string>> found;
    for (const auto& e : entries) {
      const unsigned char t = entry_type(seg_dir_fd.get(), e);
      std::uint64_t n = 0;
      if (t == DT_DIR) {
        problem(ctx.report, "segments/" + e.name + ": unexpected directory; left in place");
      } else if (!parse_segment_name(e.name, &n)) {
        quarantine_whole(ctx, e.name, "not a segment file");
      } else if (n > 0xFFFFFFFFull) {
        return fail(errc::storage_failure, "segments/" + e.name +
                                               ": segment number beyond this build's range; "
                                               "refusing to start rather than ignore it");
      } else {
        found.emplace_back(static_cast<std::uint32_t>(n), e.name);
      }
    }
    std::sort(found.begin(), found.end());

    // Open every segment and check its preamble before changing anything: a segment of a
    // newer format stops the load (ignoring it would lose its messages).
    std::map<std::uint32_t, Segment> loaded;
    std::vector<std::uint64_t> sizes;
    for (const auto& [n, name] : found) {
      Segment s;
      auto existing = segments.find(n);
      if (existing != segments.end()) {
        s.fd = Fd(::dup(existing->second.fd.get()));
      } else {
        s.fd = Fd(::openat(seg_dir_fd.get(), name.c_str(), O_RDWR | O_CLOEXEC));
        if (!s.fd.ok() && (errno == EROFS || errno == EACCES)) {
          s.fd = Fd(::openat(seg_dir_fd.get(), name.c_str(), O_RDONLY | O_CLOEXEC));
        }
      }
      if (!s.fd.ok()) return sys_fail("open", where_seg(n), errno);
      struct stat st;
      if (::fstat(s.fd.get(), &st) != 0) return sys_fail("stat", where_seg(n), errno);
      char pre[detail::kPreambleSize];
      ssize_t got = pread_all(s.fd.get(), pre, sizeof pre, 0);
      if (got < 0) return sys_fail("read", where_seg(n), errno);
      std::uint32_t version = 0;
      switch (detail::check_segment_preamble(std::string_view(pre, static_cast<std::size_t>(got)),
                                             &version)) {
        case detail::PreambleStatus::ok:
          break;
        case detail::PreambleStatus::newer_version:
          return fail(errc::storage_failure,
                      where_seg(n) + ": segment format version " + std::to_string(version) +
                          " is newer than this build reads (" +
                          std::to_string(detail::kSegmentFormatVersion) +
                          "); refusing to start rather than ignore its messages");
        case detail::PreambleStatus::truncated:
          // Created by a crash before its preamble was written: nothing follows it.
          s.end = kTornPreamble;
          break;
        case detail::PreambleStatus::foreign:
        case detail::PreambleStatus::corrupt:
          s.end = kBadPreamble;
          break;
      }
      sizes.push_back(static_cast<std::uint64_t>(st.st_size));
      loaded.emplace(n, std::move(s));
    }

    // A guess at the message count (records of about 2 KB) saves rehashing and copying.
    std::uint64_t all_bytes = 0;
    for (std::uint64_t z : sizes) all_bytes += z;
    const auto guess =
        static_cast<std::size_t>(std::min<std::uint64_t>(all_bytes / 2048, 1u << 24));
    ctx.items.reserve(guess);
    advise_huge_pages(ctx.items.data(), ctx.items.capacity() * sizeof(LoadItem));
    ctx.where.reserve(guess);
    index.clear();
    changes.clear();
    compact_seg = 0;
    compact_ids.clear();
    compact_blocked = 0;
    std::string buf;
    std::size_t k = 0;
    for (auto it = loaded.begin(); it != loaded.end(); ++k) {
      const std::uint32_t n = it->first;
      Segment& s = it->second;
      const std::uint64_t size = sizes[k];
      if (s.end == kTornPreamble) {
        ::unlinkat(seg_dir_fd.get(), segment_name(n).c_str(), 0);
        dir_lazy = true;
        stats.last_load_repaired++;
        if (active == n) active = 0;
        it = loaded.erase(it);
        continue;
      }
      if (s.end == kBadPreamble) {
        s.fd.reset();
        quarantine_whole(ctx, segment_name(n), "not a segment file (bad preamble)");
        if (active == n) active = 0;
        it = loaded.erase(it);
        continue;
      }
      stats.last_load_segments++;
      s.end = scan_segment(ctx, n, s, size, buf);
      ++it;
    }
    buf.clear();
    buf.shrink_to_fit();

    // The index, the segments' accounting, then the callbacks.
    segments = std::move(loaded);
    stats.total_bytes = 0;
    stats.live_bytes = 0;
    for (const auto& [n, s] : segments) stats.total_bytes += s.end;
    if (active != 0 && !segments.count(active)) active = 0;
    index.reserve(ctx.where.size());
    std::size_t with_changes = 0;
    for (const auto& item : ctx.items) with_changes += !item.dead && !item.changes.empty();
    changes.reserve(with_changes);
    for (auto& item : ctx.items) {
      if (item.dead) continue;
      if (!item.has_body) {
        problem(ctx.report, where_seg(item.entry.seg) + ": message " + item.record.id.to_string() +
                                " (offset " + std::to_string(item.entry.meta_off) +
                                ") has no body record; not recovered");
        item.dead = true;
        continue;
      }
      Entry& e = item.entry;
      e.attempts = item.record.attempts;
      e.held = item.record.held;
      e.recipients = static_cast<std::uint32_t>(item.record.recipients.size());
      if (!item.changes.empty()) {
        Changes c;
        c.id = e.id;
        c.bytes = item.change_bytes;
        c.locations = std::move(item.changes);
        c.locations.shrink_to_fit();
        changes.insert(std::move(c));
        e.has_changes = 1;
      }
      account_add(e);
      index.insert(std::move(e));
    }
    ctx.where.clear();
    if (ctx.quarantine_dirty) {
      stats.dir_syncs++;
      if (int err = fsync_retry(quarantine_fd.get(), false)) {
        sys_fail("sync directory", "quarantine", err);
      }
    }
    delete_dead_segments();
    sync_lazy();
    // Every message is indexed (and accounted) before the first callback, which may change
    // or remove messages.
    for (auto& item : ctx.items) {
      if (item.dead) continue;
      stats.last_load_recovered++;
      if (report) report->recovered++;
      each(std::move(item.record));
    }
    ctx.items.clear();
    schedule_compaction();
    stats.last_load_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    return {};
  }
};

// ------------------------------------------------------------------------------------------

SegmentStorage::SegmentStorage(std::string directory, Clock& clock, SegmentOptions options)
    : DurableStorage(std::make_unique<Impl>(std::move(directory), clock, std::move(options))) {}

SegmentStorage::Impl& SegmentStorage::impl() const {
  return static_cast<Impl&>(*impl_);
}

Result<std::unique_ptr<SegmentStorage>> SegmentStorage::open(std::string directory, Clock& clock,
                                                             SegmentOptions options) {
  return detail::open_spool_as<SegmentStorage>(std::move(directory), clock, std::move(options));
}

Result<void> SegmentStorage::compact_now() {
  return impl().compact_now();
}

SegmentStats SegmentStorage::stats() const {
  SegmentStats s = impl().stats;
  s.segments = impl().segments.size();
  return s;
}

std::string SegmentStorage::segment_of(MessageId id) const {
  const Impl::Entry* e = impl().index.find(id.value);
  if (!e) return {};
  return Impl::where_seg(e->seg);
}

std::string SegmentStorage::locator(const MessageRecord& m, std::uint32_t attempts_before) const {
  std::string where = segment_of(m.id);
  if (where.empty()) where = "segments";  // not stored (an event after its removal)
  return where + "#" + queue_file_name(m.id, attempts_before);
}

}  // namespace spool
}  // namespace mailq
