// mailq — mailboxes, paths and envelopes (RFC 5321 §4.1.2, RFC 3461 DSN parameters).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mailq/error.h"

namespace mailq {

/// Limits of RFC 5321 §4.5.3.1.
inline constexpr std::size_t kMaxLocalPart = 64;
inline constexpr std::size_t kMaxDomain = 255;
inline constexpr std::size_t kMaxPath = 256;

/// A validated mailbox `local-part@domain`. The domain is kept as given (case preserved) and
/// also available lowercased for routing. An IP literal domain (`[192.0.2.1]`) is accepted.
class Address {
 public:
  /// Parses `s` (without angle brackets). Errors: `errc::forbidden_character` (CR, LF, NUL or
  /// another control character), `errc::too_long` (RFC 5321 limits), `errc::invalid_address`
  /// (anything else malformed; the message says what and where).
  static Result<Address> parse(std::string_view s);

  const std::string& local_part() const noexcept { return local_; }
  const std::string& domain() const noexcept { return domain_; }
  /// The domain lowercased (ASCII), the key for routing and domain state.
  std::string routing_domain() const;
  std::string to_string() const { return local_ + "@" + domain_; }

  friend bool operator==(const Address& a, const Address& b) {
    return a.local_ == b.local_ && a.domain_ == b.domain_;
  }

 private:
  Address(std::string l, std::string d) : local_(std::move(l)), domain_(std::move(d)) {}
  std::string local_;
  std::string domain_;
};

/// The addr-specs an RFC 5322 address list names (§3.4: the unfolded value of a From, To, Cc,
/// Bcc or Reply-To header field, or a recipient given the same way), in order and as written:
/// display names and comments dropped; a group gives its members ("team: a@x.test, b@y.test;")
/// and "undisclosed-recipients:;" none; quoted strings and domain literals ("x@[IPv6:::1]")
/// kept whole; obsolete source routes ("<@a.test,@b.test:user@host.test>") removed. Nothing is
/// validated: a text that is no address stays in the list (text after an angle address is
/// kept with it) for `Address::parse` to refuse with its reason.
std::vector<std::string> split_address_list(std::string_view value);

/// The mailboxes of an RFC 5322 address list: `split_address_list`, each text through
/// `Address::parse`. Errors: `errc::forbidden_character` when the value holds a control
/// character other than a tab, anywhere (a CR or LF: it was not unfolded, or carries a line of
/// its own), with its offset ("address list contains a line feed (LF) at offset 9"); else
/// the error of the first address `Address::parse` refuses, its message led by the text:
/// "\"bob@\": empty domain".
Result<std::vector<Address>> parse_address_list(std::string_view value);

/// Checks an arbitrary envelope value (HELO name, ENVID, ORCPT, ...) for the characters that
/// would let it inject SMTP commands: CR, LF, NUL and other controls. Empty error code when
/// clean.
std::error_code check_envelope_value(std::string_view value, std::string* message = nullptr);

/// DSN NOTIFY flags (RFC 3461 §4.1). `never` excludes the others.
enum NotifyFlags : std::uint8_t {
  kNotifyDefault = 0,  ///< no NOTIFY parameter: failure notices only
  kNotifyNever = 1,
  kNotifySuccess = 2,
  kNotifyFailure = 4,
  kNotifyDelay = 8,
};

/// DSN RET parameter (RFC 3461 §4.3).
enum class DsnRet : std::uint8_t { unspecified, full, headers };

/// One forward path with its DSN parameters.
struct Recipient {
  Address address;
  std::uint8_t notify = kNotifyDefault;
  std::string orcpt;  ///< ORCPT value "rfc822;user@example.org", empty = none given

  explicit Recipient(Address a) : address(std::move(a)) {}
};

/// The envelope of a message: reverse path (empty optional = the null reverse path `<>`),
/// forward paths, and message-level DSN parameters.
struct Envelope {
  std::optional<Address> reverse_path;
  std::vector<Recipient> recipients;
  DsnRet ret = DsnRet::unspecified;
  std::string envid;  ///< DSN ENVID (xtext already decoded), empty = none

  /// Validates everything that will reach the wire: at least one recipient, no control
  /// characters in any value, ENVID/ORCPT syntax and length. Errors as in `Address::parse`
  /// plus `errc::no_recipients` and `errc::invalid_parameter`.
  std::error_code validate(std::string* message = nullptr) const;
};

/// Convenience: builds an envelope from strings, validating each. "" or "<>" as `from` is the
/// null reverse path.
Result<Envelope> make_envelope(std::string_view from, const std::vector<std::string>& to);

}  // namespace mailq
