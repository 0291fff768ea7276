#include "mailq/resolver.h"

namespace mailq {

const char* to_string(DnsStatus s) noexcept {
  switch (s) {
    case DnsStatus::ok:
      return "ok";
    case DnsStatus::nxdomain:
      return "nxdomain";
    case DnsStatus::no_data:
      return "no_data";
    case DnsStatus::servfail:
      return "servfail";
    case DnsStatus::refused:
      return "refused";
    case DnsStatus::timeout:
      return "timeout";
    case DnsStatus::error:
      return "error";
    case DnsStatus::cancelled:
      return "cancelled";
  }
  return "unknown";
}

}  // namespace mailq
