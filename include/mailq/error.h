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

/// A value or an `Error`. Minimal C++17 stand-in for `std::expected`.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}      // NOLINT: implicit
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT: implicit

  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

}  // namespace mailq

namespace std {
template <>
struct is_error_code_enum<mailq::errc> : true_type {};
}  // namespace std
