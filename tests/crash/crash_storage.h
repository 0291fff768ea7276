// The storage a crash writer runs and a crash test opens after each kill, in either layout
// (`mailq::spool::Layout`: the file spool or the segment spool), opened through
// `mailq::spool::open_spool`. Both are a `DurableStorage`; this adapter adds the few
// layout-specific calls the crash tests need (load counters, compaction), so that each
// writer and each test stays one program for both layouts.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <utility>

#include "mailq/clock.h"
#include "mailq/error.h"
#include "mailq/spool/file_spool.h"
#include "mailq/spool/layout.h"

namespace mailq_crash {

using Layout = mailq::spool::Layout;

struct StorageTuning {
  /// Both layouts (the writers use a short delay so that a kill also lands among background
  /// syncs).
  mailq::Duration deferred_sync_delay{1000};
  /// Segment spool only: the size at which a new segment is started; 0 keeps the default.
  /// Small segments make kills land in segment rollover, deletion and compaction.
  std::uint64_t segment_size = 0;
  /// Segment spool only: `SegmentOptions::compact_below_live_fraction`; negative keeps the
  /// default. A high one makes compaction run in short runs too.
  double compact_below_live_fraction = -1;
  /// Both layouts: every failure, those with no caller to return to (a background sync or
  /// compaction) included.
  std::function<void(const mailq::Error&)> on_error;
};

/// What the last `load` did beyond the `RecoveryReport`, in the terms both spools share.
struct LoadCounts {
  std::uint64_t repaired = 0;     ///< torn tails cut off (of message files or segments)
  std::uint64_t quarantined = 0;  ///< files or segment tails moved to quarantine/
};

/// Segment spool counters the crash tests report (all zero for the file spool).
struct SegmentCounts {
  std::uint64_t created = 0;
  std::uint64_t deleted = 0;
  std::uint64_t compacted_messages = 0;
};

class CrashStorage {
 public:
  static mailq::Result<CrashStorage> open(Layout layout, const std::string& directory,
                                          mailq::Clock& clock, const StorageTuning& tuning) {
    mailq::spool::SpoolOptions files;
    files.deferred_sync_delay = tuning.deferred_sync_delay;
    files.on_error = tuning.on_error;
    mailq::spool::SegmentOptions segments;
    segments.deferred_sync_delay = tuning.deferred_sync_delay;
    if (tuning.segment_size != 0) segments.segment_size = tuning.segment_size;
    if (tuning.compact_below_live_fraction >= 0)
      segments.compact_below_live_fraction = tuning.compact_below_live_fraction;
    segments.on_error = tuning.on_error;
    auto opened = mailq::spool::open_spool(directory, clock, layout, files, segments);
    if (!opened) return opened.error();
    CrashStorage s;
    s.storage_ = std::move(opened).value();
    s.files_ = dynamic_cast<mailq::spool::SpoolStorage*>(s.storage_.get());
    s.segments_ = dynamic_cast<mailq::spool::SegmentStorage*>(s.storage_.get());
    return s;
  }

  Layout layout() const { return segments_ ? Layout::segments : Layout::files; }
  mailq::spool::DurableStorage& storage() { return *storage_; }

  LoadCounts last_load() const {
    LoadCounts c;
    if (files_) {
      const auto st = files_->stats();
      c.repaired = st.last_load_repaired;
      c.quarantined = st.last_load_quarantined;
    } else if (segments_) {
      const auto st = segments_->stats();
      c.repaired = st.last_load_repaired;
      c.quarantined = st.last_load_quarantined;
    }
    return c;
  }

  /// Compacts the segment spool until no segment qualifies; nothing to do for the file spool.
  mailq::Result<void> compact_now() {
    return segments_ ? segments_->compact_now() : mailq::success();
  }

  SegmentCounts segment_counts() const {
    SegmentCounts c;
    if (segments_) {
      const auto st = segments_->stats();
      c.created = st.segments_created;
      c.deleted = st.segments_deleted;
      c.compacted_messages = st.compacted_messages;
    }
    return c;
  }

 private:
  CrashStorage() = default;

  std::unique_ptr<mailq::spool::DurableStorage> storage_;
  mailq::spool::SpoolStorage* files_ = nullptr;       // storage_ when a file spool
  mailq::spool::SegmentStorage* segments_ = nullptr;  // storage_ when a segment spool
};

}  // namespace mailq_crash
