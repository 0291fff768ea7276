// The maildrop: where mailq-send leaves a message when no relay answers on the control socket,
// and where a relay picks it up.
//
//   <spool>/maildrop/ID          one message: its envelope in a few text lines, then the body
//   <spool>/maildrop/tmp/        files being written (tmp + fsync + link, then removed)
//   <spool>/maildrop/active/     files the relay is taking (moved there first: claimed)
//   <spool>/maildrop/corrupt/    files the relay could not take, kept for the operator
//
// Writing takes no lock and reads nothing of the queue: its cost does not depend on what the
// spool holds, and any number of submitters write at once. The file name is the queue id the
// submitter reserved and printed; the relay queues the message under it (unless a message of
// the queue has it already, see `Queue::enqueue` and `EnqueueOptions::id`).
#pragma once

#include <uv.h>

#include <deque>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "mailq/address.h"
#include "mailq/clock.h"
#include "mailq/error.h"
#include "mailq/message.h"

namespace mailq {
class Queue;
}

namespace mailq::relay {

/// One message of the maildrop.
struct MaildropEntry {
  MessageId id;         ///< the file name: the id the submitter printed
  TimePoint submitted;  ///< when it was written
  Envelope envelope;    ///< sender, recipients and their DSN parameters
  std::string body;     ///< the message, CRLF line ends
};

/// The file's bytes. Values are the envelope's, checked (`Envelope::validate`) before.
std::string encode_maildrop(const MaildropEntry& entry);

/// Reads a maildrop file's bytes back, checking everything: the version line, each key, every
/// address and DSN value (`Envelope::validate`), the body's announced size. `id` is the file's
/// name. Errors: `errc::corrupt_record` with what is wrong ("line 3: unknown key \"x\"").
Result<MaildropEntry> decode_maildrop(std::string_view bytes, MessageId id);

/// `<spool>/maildrop`.
std::string maildrop_dir(const std::string& spool);

/// Writes one message into the maildrop of `spool` durably (the file and its name are on disk
/// when it returns) and returns the id it was filed under: a new one, time-ordered like the
/// queue's. Creates the directories when missing. Errors carry the path and the system's
/// words (`errc::storage_failure`, or `errc::bad_state` for a spool that is no directory).
Result<MessageId> write_maildrop(const std::string& spool, const Envelope& envelope,
                                 std::string_view body);

/// The ids of the files waiting in the maildrop of `spool`, oldest first (nothing when there is
/// no maildrop). Names that are no queue id are not listed.
Result<std::vector<MessageId>> list_maildrop(const std::string& spool);

/// Reads and decodes one file of the maildrop (`errc::not_found` when it is not there).
Result<MaildropEntry> read_maildrop(const std::string& spool, MessageId id);
/// Reads and decodes the maildrop file at `path` (named `id`): a symbolic link, a FIFO or
/// anything else that is not a regular file, and a file over `max_octets` (0: no limit), are
/// `errc::corrupt_record` without being read.
Result<MaildropEntry> read_maildrop_file(const std::string& path, MessageId id,
                                         std::uint64_t max_octets);

/// Moves a file the relay cannot take to `maildrop/corrupt/` (never deletes it).
Result<void> quarantine_maildrop(const std::string& spool, MessageId id);

/// Removes a file once its message is queued.
Result<void> remove_maildrop(const std::string& spool, MessageId id);

/// Moves what the maildrop of `spool` holds into `queue`, one message after the other:
/// enqueue, `flush` (which must make the insert complete, e.g. the spool's flush), then the
/// file goes. For tools and tests that hold the spool themselves; the relay uses
/// `MaildropPickup`. Returns how many were queued; `notice` gets every file that was not.
std::size_t import_maildrop(const std::string& spool, Queue& queue,
                            const std::function<void()>& flush,
                            const std::function<void(const std::string&)>& notice);

/// The relay's side: picks files up as they arrive (an inotify watch through uv_fs_event),
/// finds those left while no relay ran at start, and looks again every minute (a watch can
/// miss events when the kernel's queue overflows). Every file is first moved into
/// `maildrop/active/` (one the relay cannot move is left alone and never queued), then queued
/// with the submitter's id and time and removed; a file that cannot be read or whose message
/// the queue refuses for good is moved to `maildrop/corrupt/`; one the queue cannot take now
/// (its storage failing) goes back and is tried again. The removal is not synced: a power cut
/// right after a pickup can bring a file back, which is not queued twice while its message is
/// still queued (at least once otherwise, like every acknowledgement of the spool).
class MaildropPickup {
 public:
  struct Options {
    std::string spool;
    std::string source_channel = "local";
    std::size_t max_in_flight = 64;  ///< enqueues waiting for the storage at once
    /// A file larger than this is set aside unread (the queue's size limit and room for the
    /// envelope).
    std::uint64_t max_file_size = 64ull << 20;
    Duration rescan = std::chrono::seconds(60);
    std::function<void(const std::string&)> notice;
  };
  MaildropPickup(uv_loop_t* loop, Queue& queue, Options options);
  ~MaildropPickup();
  MaildropPickup(const MaildropPickup&) = delete;
  MaildropPickup& operator=(const MaildropPickup&) = delete;

  /// Creates the directories, starts the watch and the first scan. The error says what could
  /// not be done (the relay runs on, without a maildrop).
  Result<void> start();
  /// Stops watching; enqueues in flight complete (their files go when they do).
  void close();

  /// Files seen and not queued (or set aside) yet.
  std::size_t pending() const noexcept { return todo_.size() + in_flight_.size(); }
  std::uint64_t picked_up() const noexcept { return picked_up_; }
  std::uint64_t quarantined() const noexcept { return quarantined_; }

 private:
  void scan();
  /// A scan on the next loop turn (once, however often asked).
  void scan_soon();
  void pump();
  void take(MessageId id);
  /// A claimed file the queue could not take now: back into the maildrop, tried again later.
  void give_back(MessageId id);
  void finished(MessageId id, MessageId queued_as, const Error* error);
  void set_aside(MessageId id, const std::string& why);
  void say(const std::string& text) const;

  uv_loop_t* loop_;
  Queue& queue_;
  Options options_;
  uv_fs_event_t* watch_ = nullptr;
  uv_timer_t* timer_ = nullptr;     // the periodic scan
  uv_idle_t* scan_soon_ = nullptr;  // a scan asked for by the watch, run once per loop turn
  bool scan_wanted_ = false;
  bool closed_ = false;
  bool pumping_ = false;
  bool pump_again_ = false;
  std::deque<MessageId> todo_;
  std::set<MessageId> queued_;       // in todo_
  std::set<MessageId> in_flight_;    // enqueued, waiting for the storage
  std::set<MessageId> retry_later_;  // the queue could not take them now: the next periodic scan
  std::uint64_t picked_up_ = 0;
  std::uint64_t quarantined_ = 0;
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);
};

}  // namespace mailq::relay
