// mailq — the queue's in-memory form of a message: one heap block per message.
//
// A MessageRecord is 192 bytes plus 232 per recipient before its strings; a queue of a
// million messages would spend most of its memory on empty strings and pointers. The queue
// keeps each message packed instead (lengths and numbers as varints, strings inline) and
// unpacks it when it needs the whole record (a delivery, an operator action). Scheduling
// reads the recipients through RecipientView without allocating.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "mailq/message.h"

namespace mailq::detail {

/// One recipient as stored in a PackedRecord (views into the record).
struct RecipientView {
  std::string_view address;
  std::string_view route;
  std::uint32_t destination = 0;  ///< the queue's number for its destination
  RecipientState state = RecipientState::queued;
  TimePoint next_attempt{};
  std::string_view orcpt;
  std::uint8_t notify = 0;
  std::uint32_t attempts = 0;
  int reply_code = 0;
  std::string_view reply_enhanced;
  std::string_view reply_text;
  std::string_view remote_mta;
  bool delay_notified = false;
};

class PackedRecord {
 public:
  PackedRecord() = default;
  /// Packs everything but the id and the held flag (the queue keeps those beside it), with
  /// each recipient's destination number (`destinations[i]`; all 0 when null).
  explicit PackedRecord(const MessageRecord& m, const std::uint32_t* destinations = nullptr);

  explicit operator bool() const noexcept { return data_ != nullptr; }
  MessageRecord unpack(MessageId id, bool held) const;

  TimePoint arrival() const noexcept;
  /// Calls f(index, const RecipientView&) for each recipient, in order.
  template <class F>
  void each_recipient(F&& f) const {
    Reader r = recipients();
    for (std::uint32_t i = 0; i < r.count; ++i) {
      RecipientView v = next_recipient(r);
      f(static_cast<std::size_t>(i), v);
    }
  }
  /// Bytes of the block (the memory figure).
  std::size_t size() const noexcept;

 private:
  struct Reader {
    const std::uint8_t* p = nullptr;
    std::uint32_t count = 0;
    TimePoint arrival{};
  };
  Reader recipients() const noexcept;
  static RecipientView next_recipient(Reader& r) noexcept;

  std::unique_ptr<std::uint8_t[]> data_;
};

}  // namespace mailq::detail
