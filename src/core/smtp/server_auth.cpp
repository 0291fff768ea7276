// AUTH on the receiving side (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms. The
// session decodes what the client sends; whether the credentials are good is the host's
// `authenticate` (it may take its time: the session reads nothing until the verdict).

#include <fmt/format.h>

#include <string>
#include <string_view>
#include <utility>

#include "core/smtp/ascii.h"
#include "core/smtp/params.h"
#include "core/smtp/server_impl.h"

namespace mailq {
namespace {

using detail::upper;

// The 334 challenges of LOGIN: "Username:" and "Password:" in base64 (every client expects
// these; the mechanism has no specification but this custom).
constexpr std::string_view kLoginUser = "VXNlcm5hbWU6";
constexpr std::string_view kLoginPassword = "UGFzc3dvcmQ6";

}  // namespace

bool SmtpServerSession::Impl::auth_offered() const noexcept {
  return config.auth.enabled && callbacks.authenticate && (tls || config.auth.allow_plaintext);
}

void SmtpServerSession::Impl::cmd_auth(std::string_view args) {
  if (!tls && !config.auth.allow_plaintext) {
    return error(538, "5.7.11", "Encryption required for requested authentication mechanism");
  }
  if (!greeted || !esmtp) return error(503, "5.5.1", "Error: send EHLO first");
  if (!auth_user.empty()) return error(503, "5.5.1", "Error: already authenticated");
  if (in_transaction) return error(503, "5.5.1", "Error: MAIL transaction in progress");
  const std::size_t sp = args.find(' ');
  const std::string mechanism = upper(args.substr(0, sp));
  const std::string_view initial =
      sp == std::string_view::npos ? std::string_view{} : args.substr(sp + 1);
  const bool has_initial = sp != std::string_view::npos;
  if (mechanism.empty()) return error(501, "5.5.4", "Syntax: AUTH mechanism");
  if (mechanism != "PLAIN" && mechanism != "LOGIN") {
    return error(504, "5.5.4", "Unrecognized authentication type (PLAIN or LOGIN)");
  }
  if (has_initial && (initial.empty() || initial.find(' ') != std::string_view::npos)) {
    return error(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]");
  }
  auth_login_user.clear();
  if (mechanism == "PLAIN") {
    auth_step = AuthStep::plain;
    if (!has_initial) {
      mode = Mode::auth;
      line("334 ");
      return;
    }
  } else {
    auth_step = AuthStep::login_user;
    if (!has_initial) {
      mode = Mode::auth;
      line(fmt::format("334 {}", kLoginUser));
      return;
    }
  }
  mode = Mode::auth;
  // RFC 4954 §4: "=" is an initial response of zero length.
  auth_response(initial == "=" ? std::string_view("") : initial);
}

void SmtpServerSession::Impl::auth_response(std::string_view response) {
  mode = Mode::command;
  if (response == "*") return error(501, "5.0.0", "Authentication aborted");
  auto decoded = detail::base64_decode(response);
  if (!decoded) return error(501, "5.5.2", "Cannot decode response");
  switch (auth_step) {
    case AuthStep::plain: {
      // authzid NUL authcid NUL passwd (RFC 4616 §2).
      const std::string& d = *decoded;
      const std::size_t a = d.find('\0');
      const std::size_t b = a == std::string::npos ? a : d.find('\0', a + 1);
      if (a == std::string::npos || b == std::string::npos ||
          d.find('\0', b + 1) != std::string::npos) {
        return error(501, "5.5.2", "Invalid PLAIN response (authzid NUL user NUL password)");
      }
      std::string authzid = d.substr(0, a);
      std::string user = d.substr(a + 1, b - a - 1);
      std::string password = d.substr(b + 1);
      if (user.empty()) return error(501, "5.5.2", "Invalid PLAIN response: no user name");
      if (!authzid.empty() && authzid != user) {
        // Acting as someone else is not offered: the credentials are not even checked.
        return auth_rejected("Authentication credentials invalid (no proxy authorization)");
      }
      return authenticate("PLAIN", std::move(user), std::move(password));
    }
    case AuthStep::login_user:
      if (decoded->empty()) return error(501, "5.5.2", "Invalid LOGIN response: no user name");
      auth_login_user = std::move(*decoded);
      auth_step = AuthStep::login_password;
      mode = Mode::auth;
      line(fmt::format("334 {}", kLoginPassword));
      return;
    case AuthStep::login_password:
      // crypt(3) would stop at a NUL: such a password is nobody's.
      if (decoded->find('\0') != std::string::npos) {
        auth_login_user.clear();
        return auth_rejected("Authentication credentials invalid");
      }
      return authenticate("LOGIN", std::exchange(auth_login_user, {}), std::move(*decoded));
  }
}

void SmtpServerSession::Impl::authenticate(std::string mechanism, std::string user,
                                           std::string password) {
  for (char c : user) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return error(501, "5.5.2", "Invalid user name");
  }
  waiting = true;
  const std::uint64_t serial = ++message_serial;
  std::weak_ptr<Impl> weak = weak_from_this();
  auto done = [weak, serial, user](AuthVerdict verdict) {
    if (auto self = weak.lock()) self->on_auth_done(serial, user, verdict);
  };
  AuthRequest request{std::move(mechanism), user, std::move(password), client_address, tls};
  try {
    callbacks.authenticate(std::move(request), std::move(done));
  } catch (...) {
    on_auth_done(serial, {}, AuthVerdict::unavailable);
  }
}

void SmtpServerSession::Impl::auth_rejected(std::string_view text) {
  reply(535, "5.7.8", text);
  if (++auth_failures >= config.auth.max_failures) {
    reply(421, "4.7.0",
          fmt::format("{} Too many failed authentication attempts, closing connection",
                      config.hostname));
    close("too many authentication failures");
  } else {
    count_error();
  }
}

void SmtpServerSession::Impl::on_auth_done(std::uint64_t serial, std::string user,
                                           AuthVerdict verdict) {
  if (!waiting || serial != message_serial) return;  // a second call: ignored
  waiting = false;
  if (mode == Mode::closed) return;
  switch (verdict) {
    case AuthVerdict::accepted:
      auth_user = std::move(user);
      auth_failures = 0;
      reply(235, "2.7.0", "Authentication successful");
      break;
    case AuthVerdict::rejected:
      auth_rejected("Authentication credentials invalid");
      break;
    case AuthVerdict::unavailable:
      reply(454, "4.7.0", "Temporary authentication failure");
      break;
  }
  process();
}

}  // namespace mailq
