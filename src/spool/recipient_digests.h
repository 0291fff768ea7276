// The recipients' state digests a spool keeps per stored message, so that an update writes
// only the recipients that changed: 16 bytes holding the one recipient's digest inline (the
// common case), or a pointer to an array of its own for several. Internal to the spools.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

#include "mailq/message.h"
#include "spool/format.h"

namespace mailq {
namespace spool {
namespace detail {

class RecipientDigests {
 public:
  RecipientDigests() = default;
  RecipientDigests(const RecipientDigests&) = delete;
  RecipientDigests& operator=(const RecipientDigests&) = delete;
  RecipientDigests(RecipientDigests&& o) noexcept
      : r_(o.r_), one_attempts_(o.one_attempts_), word_(o.word_) {
    o.word_ = 0;  // o no longer owns the array
  }
  RecipientDigests& operator=(RecipientDigests&& o) noexcept {
    if (this != &o) {
      release();
      r_ = o.r_;
      one_attempts_ = o.one_attempts_;
      word_ = o.word_;
      o.word_ = 0;
    }
    return *this;
  }
  ~RecipientDigests() { release(); }

  std::size_t count() const noexcept { return several() ? word_ & ~kSeveral : 1; }

  RecipientDigest get(std::size_t i) const noexcept {
    if (several()) return r_.many[i];
    RecipientDigest d;
    d.hash = r_.hash;
    d.attempts = one_attempts_;
    d.state = static_cast<RecipientState>(word_);
    return d;
  }

  void set(std::size_t i, const RecipientDigest& d) noexcept {
    if (several()) {
      r_.many[i] = d;
      return;
    }
    r_.hash = d.hash;
    one_attempts_ = d.attempts;
    word_ = static_cast<std::uint32_t>(d.state);
  }

  // The digests of `record`'s recipients (at least one).
  void assign(const MessageRecord& record) {
    release();
    const std::size_t n = record.recipients.size();
    if (n > 1) {
      r_.many = new RecipientDigest[n];
      word_ = kSeveral | static_cast<std::uint32_t>(n);
    }
    for (std::size_t i = 0; i < n; ++i) set(i, digest(record.recipients[i]));
  }

 private:
  static constexpr std::uint32_t kSeveral = 0x80000000u;

  bool several() const noexcept { return (word_ & kSeveral) != 0; }
  void release() noexcept {
    if (several()) delete[] r_.many;
    r_.hash = 0;
    word_ = 0;
  }

  union {
    std::uint64_t hash;     // the one recipient's digest hash
    RecipientDigest* many;  // several: the array of count() digests
  } r_{0};
  std::uint32_t one_attempts_ = 0;  // the one recipient's digest attempts
  std::uint32_t word_ = 0;          // kSeveral | count, else the one recipient's state
};

static_assert(sizeof(void*) != 8 || sizeof(RecipientDigests) == 16);

}  // namespace detail
}  // namespace spool
}  // namespace mailq
