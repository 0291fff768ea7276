#include "mailq/transport.h"

#include <cctype>
#include <cerrno>
#include <string>

namespace mailq {

const char* to_string(TlsPolicy p) noexcept {
  switch (p) {
    case TlsPolicy::none:
      return "none";
    case TlsPolicy::opportunistic:
      return "opportunistic";
    case TlsPolicy::required:
      return "required";
    case TlsPolicy::verify:
      return "verify";
  }
  return "unknown";
}

namespace {

// Fixed lower-case texts for the errors a connect() commonly ends with, so that the log line
// is the same on every libc and locale (seed 002: "Error: no route to host").
const char* known_connect_error(std::error_code ec) {
  using std::errc;
  if (ec == errc::connection_refused) return "connection refused";
  if (ec == errc::host_unreachable) return "no route to host";
  if (ec == errc::network_unreachable) return "network is unreachable";
  if (ec == errc::timed_out) return "connection timed out";
  if (ec == errc::connection_reset) return "connection reset by peer";
  if (ec == errc::connection_aborted) return "connection aborted";
  if (ec == errc::network_down) return "network is down";
  if (ec == errc::address_not_available) return "cannot assign requested address";
  if (ec == errc::address_in_use) return "address already in use";
  if (ec == errc::permission_denied) return "permission denied";
  if (ec == errc::operation_not_permitted) return "operation not permitted";
  if (ec == errc::operation_canceled) return "operation canceled";
  if (ec == errc::too_many_files_open) return "too many open files";
  if (ec == errc::address_family_not_supported) return "address family not supported";
  // EHOSTDOWN has no std::errc name.
  if ((ec.category() == std::generic_category() || ec.category() == std::system_category()) &&
      ec.value() == EHOSTDOWN) {
    return "host is down";
  }
  return nullptr;
}

}  // namespace

std::string connect_failure_text(std::error_code ec) {
  std::string text = "TCP active open: Failed connect() Error: ";
  if (!ec) {
    text += "unknown error";
  } else if (const char* known = known_connect_error(ec)) {
    text += known;
  } else {
    std::string m = ec.message();
    for (char& c : m) {
      // Keep the line a single line of plain text whatever the category's message contains.
      if (c == '\r' || c == '\n') c = ' ';
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    text += m;
  }
  return text;
}

}  // namespace mailq
