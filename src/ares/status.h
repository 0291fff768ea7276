// What a c-ares status code means for the engine. Internal to the c-ares adapter.
#pragma once

#include <string>
#include <string_view>

#include "mailq/resolver.h"

namespace mailq::ares::detail {

struct StatusMapping {
  DnsStatus status = DnsStatus::error;
  std::string detail;  ///< for the log; "" for success, exactly "cancelled" for cancellations
};

/// Maps a c-ares status (`ARES_SUCCESS`, `ARES_ENOTFOUND`, ...; plain int so that this header
/// needs no <ares.h>) for the query `what` ("example.org MX") sent to `servers`
/// ("127.0.0.1:53, 127.0.0.2:53").
///
/// ARES_ECONNREFUSED is what c-ares 1.18.1 reports when every server answered SERVFAIL or
/// REFUSED (or refused the connection): it maps to `servfail`, and the detail says so.
/// Cancellations (ARES_ECANCELLED, ARES_EDESTRUCTION) map to `cancelled` with detail
/// "cancelled".
StatusMapping map_ares_status(int ares_status, std::string_view what, std::string_view servers);

}  // namespace mailq::ares::detail
