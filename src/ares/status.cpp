#include "ares/status.h"

#include <ares.h>
#include <fmt/format.h>

namespace mailq::ares::detail {

StatusMapping map_ares_status(int ares_status, std::string_view what, std::string_view servers) {
  const auto say = [&](DnsStatus s, std::string_view text) {
    return StatusMapping{s, fmt::format("{}: {}", what, text)};
  };
  const auto say_servers = [&](DnsStatus s, std::string_view text) {
    return StatusMapping{s, fmt::format("{}: {} ({})", what, text, servers)};
  };
  switch (ares_status) {
    case ARES_SUCCESS:
      return {DnsStatus::ok, ""};
    case ARES_ENODATA:
      return say(DnsStatus::no_data, "no records of this type (NODATA)");
    case ARES_ENOTFOUND:
      return say(DnsStatus::nxdomain, "no such domain (NXDOMAIN)");
    case ARES_ESERVFAIL:
      return say_servers(DnsStatus::servfail, "SERVFAIL from the nameservers");
    case ARES_EREFUSED:
      return say_servers(DnsStatus::refused, "REFUSED by the nameservers");
    case ARES_ECONNREFUSED:
      // c-ares 1.18.1 moves on to the next server on SERVFAIL, REFUSED and NOTIMP and, when
      // none is left, reports this code for all of them alike.
      return say_servers(DnsStatus::servfail,
                         "SERVFAIL or REFUSED from every nameserver, or connection refused");
    case ARES_ETIMEOUT:
      return say_servers(DnsStatus::timeout, "timed out, no answer from the nameservers");
    case ARES_EFORMERR:
      return say_servers(DnsStatus::error, "FORMERR, the nameservers could not parse the query");
    case ARES_ENOTIMP:
      return say_servers(DnsStatus::error, "NOTIMP from the nameservers");
    case ARES_EBADRESP:
      return say_servers(DnsStatus::error, "malformed response from the nameservers");
    case ARES_EOF:
      return say_servers(DnsStatus::error, "connection closed by the nameservers");
    case ARES_EBADQUERY:
    case ARES_EBADNAME:
    case ARES_EBADSTR:
      return say(DnsStatus::error, "invalid query name");
    case ARES_ENOMEM:
      return say(DnsStatus::error, "out of memory");
    case ARES_ECANCELLED:
    case ARES_EDESTRUCTION:
      return {DnsStatus::cancelled, "cancelled"};
    default:
      // Codes that the query path does not produce (file, getaddrinfo and library-init
      // errors): kept visible rather than guessed at.
      return say(DnsStatus::error,
                 fmt::format("c-ares error {} ({})", ares_status, ares_strerror(ares_status)));
  }
}

}  // namespace mailq::ares::detail
