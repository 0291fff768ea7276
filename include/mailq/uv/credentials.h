// mailq — SMTP AUTH credentials from a file of hashed passwords (`mailq::uv`).
//
// The file has one user per line, `user:hash[:senders]`; blank lines and lines starting with
// '#' are skipped:
//
//   # mailq credentials: user:crypt(3) hash[:senders the user may use in MAIL FROM]
//   alice:$y$j9T$...:alice@example.org,@billing.example.org
//   relay-web:$6$rounds=5000$...
//
// `hash` is a crypt(3) string of libxcrypt: yescrypt ($y$, what `hash_password` and
// `mailq-relay --hash-password` write), bcrypt ($2b$), SHA-512 ($6$) or SHA-256 ($5$) crypt
// (`mkpasswd -m yescrypt`, `openssl passwd -6` make them too). Plain text passwords and the
// old DES / MD5 schemes are refused at load. `senders` (optional) lists the envelope senders
// the user may give: addresses, `@domain` for any address of a domain, `*` for any; without it
// any sender is allowed. The null sender <> is always allowed (bounces).
//
// Checking a password runs the hash (milliseconds for yescrypt: that is its point): use
// `password_authenticator`, which runs it on libuv's thread pool, from a server.
#pragma once

#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mailq/address.h"
#include "mailq/error.h"
#include "mailq/smtp_server.h"

namespace mailq::uv {

class PasswordFile {
 public:
  /// Reads and checks the whole file. Errors name the file and the line: "credentials
  /// /etc/mailq/passwd line 3: the password is not a crypt(3) hash (write one with mailq-relay
  /// --hash-password)" (`errc::invalid_parameter`), or the system error reading it.
  static Result<std::shared_ptr<const PasswordFile>> load(const std::string& path);
  /// The same from text (`origin` names it in errors).
  static Result<std::shared_ptr<const PasswordFile>> parse(std::string_view text,
                                                           const std::string& origin);

  /// Whether `password` is `user`'s. Runs the hash — for an unknown user the hash of a user
  /// of the file (its scheme and cost), so that the time taken does not tell which users
  /// exist. Thread-safe.
  bool verify(const std::string& user, const std::string& password) const;
  /// Whether `user` may use `sender` in MAIL FROM (see the file format above).
  bool may_send_as(const std::string& user, const std::optional<Address>& sender) const;
  std::size_t size() const noexcept { return users_.size(); }
  /// Whether the file could be read by anyone on the machine (a warning for the log).
  bool world_readable() const noexcept { return world_readable_; }

 private:
  static Result<std::shared_ptr<PasswordFile>> read_lines(std::string_view text,
                                                          const std::string& origin);
  struct User {
    std::string hash;
    std::vector<std::string> senders;  // lower case; empty = any
  };
  std::map<std::string, User, std::less<>> users_;
  bool world_readable_ = false;
};

/// A yescrypt crypt(3) hash of `password` with a fresh random salt, for a credentials file.
Result<std::string> hash_password(std::string_view password);

/// An `SmtpServerSession::Callbacks::authenticate` that checks credentials against the file
/// `current()` returns at each attempt (so a host can swap it on reload), hashing on libuv's
/// thread pool of `loop`, at most 8 at once (beyond: `AuthVerdict::unavailable`, 454, so that
/// a flood of logins leaves the pool and the CPU to the rest). A null file answers
/// `AuthVerdict::unavailable`.
std::function<void(AuthRequest, std::function<void(AuthVerdict)>)> password_authenticator(
    uv_loop_t* loop, std::function<std::shared_ptr<const PasswordFile>()> current);

}  // namespace mailq::uv
