#include "mailq/error.h"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace mailq {
namespace {

class MailqCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "mailq"; }

  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::ok:
        return "success";
      case errc::invalid_address:
        return "invalid address";
      case errc::forbidden_character:
        return "forbidden control character in envelope value";
      case errc::too_long:
        return "value exceeds the RFC 5321 length limit";
      case errc::no_recipients:
        return "no recipients";
      case errc::invalid_parameter:
        return "invalid parameter";
      case errc::message_too_large:
        return "message too large";
      case errc::not_found:
        return "not found";
      case errc::bad_state:
        return "operation not valid in the current state";
      case errc::storage_failure:
        return "storage failure";
      case errc::corrupt_record:
        return "corrupt stored record";
      case errc::protocol_error:
        return "SMTP protocol error";
      case errc::tls_failure:
        return "TLS failure";
      case errc::resolver_failure:
        return "DNS resolver failure";
      case errc::shutting_down:
        return "shutting down";
      case errc::in_use:
        return "in use by another process";
      case errc::queue_full:
        return "the queue is full";
      case errc::storage_full:
        return "no space left on the storage";
    }
    return "unknown mailq error " + std::to_string(value);
  }
};

}  // namespace

namespace detail {
void result_misuse(const char* what) noexcept {
  std::fprintf(stderr, "mailq: a Result was used for what it does not hold: %s\n", what);
  std::abort();
}
}  // namespace detail

const std::error_category& error_category() noexcept {
  // A function-local static: one instance for the whole program, constructed on first use,
  // so error_code comparisons by category address work across translation units.
  static const MailqCategory category;
  return category;
}

}  // namespace mailq
