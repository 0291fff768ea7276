// One HTTPS GET over the transport seam (mailq/transport.h): the name looked up through the
// Resolver, a connection, TLS from the first byte with the certificate verified for the host
// name (PKIX), a request, a response parsed by llhttp (Node.js's parser, from Debian's
// node-llhttp). For MTA-STS policies (RFC 8461 §3.3): no redirects followed, 200 only, the
// body capped, one deadline for the whole fetch. Internal to mailq::uv.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mailq/clock.h"
#include "mailq/net.h"
#include "mailq/resolver.h"
#include "mailq/transport.h"

namespace mailq::uv::detail {

struct HttpsRequest {
  std::string host;  ///< looked up, sent as SNI and Host, verified against the certificate
  std::uint16_t port = 443;
  std::string path = "/";
  std::string ca_file;  ///< PEM bundle of trusted CAs; "" = the system's
  Duration timeout{std::chrono::seconds(60)};
  std::size_t max_body = 64 * 1024;
  std::string source_address;  ///< bind address for the connection; "" = any
  /// The host's name is the recipient domain's word: an internal address (loopback,
  /// private, link-local: `is_internal_address`) is not dialled unless it is in one of these.
  std::vector<Network> allow_internal;
};

struct HttpsResponse {
  enum class Failure : std::uint8_t {
    none,
    dns,        ///< the host has no address (or the lookup failed)
    connect,    ///< no address could be connected to
    tls,        ///< the handshake failed or the certificate was not valid for the host
    status,     ///< not 200 (a redirect included: never followed)
    malformed,  ///< not HTTP, cut short, too large, or not text/plain
    timeout,
  };
  Failure failure = Failure::none;
  std::string detail;  ///< what went wrong, for the log
  int status = 0;
  std::string content_type;
  std::string body;
};

/// A fetch under way: destroying it cancels it (its connection closed, its timer stopped, no
/// callback). It must go before the resolver, transport and clock it uses.
class HttpsFetch {
 public:
  virtual ~HttpsFetch() = default;
};

/// Starts the fetch; `done` runs exactly once, on a later loop turn, unless the returned
/// handle is destroyed first.
std::unique_ptr<HttpsFetch> https_get(Resolver& resolver, Transport& transport, Clock& clock,
                                      HttpsRequest request,
                                      std::function<void(HttpsResponse)> done);

}  // namespace mailq::uv::detail
