// mailq — error values.
//
// Expected failures are values, never exceptions: functions that can fail return
// `std::error_code` (mechanism) or `Result<T>` (a value or an `Error` with a message a human
// can act on). No exception crosses the public API.
#pragma once

#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace mailq {

/// Error codes of the mailq category. Values are stable.
enum class errc {
  ok = 0,
  invalid_address = 1,  ///< syntactically invalid mailbox or domain
  forbidden_character,  ///< CR, LF, NUL or another control character in an envelope value
  too_long,             ///< local part > 64, domain > 255, path > 256 octets, line > 998
  no_recipients,        ///< an envelope with no forward path
  invalid_parameter,    ///< a malformed DSN parameter or option value
  message_too_large,    ///< over the configured size limit
  not_found,            ///< no such message, route or recipient
  bad_state,            ///< the operation does not apply in the object's current state
  storage_failure,      ///< the storage could not make the data durable
  corrupt_record,       ///< a stored record failed validation
  protocol_error,       ///< the peer violated the SMTP protocol
  tls_failure,          ///< TLS handshake or verification failed
  resolver_failure,     ///< DNS failure that is not a definite answer
  shutting_down,        ///< the object is being destroyed; pending work was cancelled
  in_use,               ///< held by another process (a spool whose lock is taken)
  queue_full,           ///< the queue holds as many messages as it is allowed to
  storage_full,         ///< the medium has no space left (ENOSPC, EDQUOT): worth a retry later
};

const std::error_category& error_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

/// An error code with a message for humans ("address contains a line feed at offset 7").
struct Error {
  std::error_code code;
  std::string message;

  Error() = default;
  Error(std::error_code c, std::string m) : code(c), message(std::move(m)) {}
  Error(errc c, std::string m) : code(make_error_code(c)), message(std::move(m)) {}
};

namespace detail {
/// A Result was asked for what it does not hold (the value of an error, the error of a
/// value): a programming error. Prints what happened and aborts; never throws.
[[noreturn]] void result_misuse(const char* what) noexcept;
}  // namespace detail

/// A value or an `Error`. Minimal C++17 stand-in for `std::expected`, checked: asking for the
/// value of an error (or the error of a value) is a programming error that aborts with a
/// message, never an exception.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}      // NOLINT: implicit
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT: implicit

  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  T& value() & { return *checked(); }
  const T& value() const& { return *checked(); }
  T&& value() && { return std::move(*checked()); }
  T* operator->() { return checked(); }
  const T* operator->() const { return checked(); }
  T& operator*() & { return *checked(); }
  const T& operator*() const& { return *checked(); }
  /// The value, or `fallback` for an error.
  T value_or(T fallback) const& { return ok() ? *std::get_if<0>(&v_) : std::move(fallback); }

  const Error& error() const {
    if (const Error* e = std::get_if<1>(&v_)) return *e;
    detail::result_misuse("error() of a Result that holds a value");
  }

 private:
  T* checked() {
    if (T* v = std::get_if<0>(&v_)) return v;
    detail::result_misuse(std::get_if<1>(&v_)->message.c_str());
  }
  const T* checked() const {
    if (const T* v = std::get_if<0>(&v_)) return v;
    detail::result_misuse(std::get_if<1>(&v_)->message.c_str());
  }

  std::variant<T, Error> v_;
};

/// Success, or an `Error` with its words: what a fallible call without a value returns.
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;                                               // success
  Result(Error error) : error_(std::move(error)), failed_(true) {}  // NOLINT: implicit
  Result(std::error_code code, std::string message) : Result(Error(code, std::move(message))) {}

  bool ok() const noexcept { return !failed_; }
  explicit operator bool() const noexcept { return ok(); }
  const Error& error() const {
    if (!failed_) detail::result_misuse("error() of a successful Result");
    return error_;
  }
  /// The error code; empty on success.
  std::error_code code() const noexcept { return failed_ ? error_.code : std::error_code(); }

 private:
  Error error_;
  bool failed_ = false;
};

/// Success, for a `Result<void>`.
inline Result<void> success() {
  return {};
}

}  // namespace mailq

namespace std {
template <>
struct is_error_code_enum<mailq::errc> : true_type {};
}  // namespace std
