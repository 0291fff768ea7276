// Test support: an HTTPS server (Python's http.server and ssl) on 127.0.0.1 that serves MTA-STS
// policies by Host header from files the test writes and may change between fetches:
//   <dir>/<host>          the body of /.well-known/mta-sts.txt (absent: 404)
//   <dir>/<host>.status   another status line ("404", "301 https://elsewhere/") instead of 200
//   <dir>/<host>.type     another Content-Type than text/plain
// It logs "GET <host> <path>" per request to its output.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "support/servers.h"

namespace mailq::test {

class PolicyHttpsServer {
 public:
  PolicyHttpsServer(std::string cert_file, std::string key_file);
  ~PolicyHttpsServer() { stop(); }

  bool start(std::string* error);
  void stop() { process_.stop(); }
  std::uint16_t port() const noexcept { return port_; }
  /// Writes (or with an empty `body` and `status` "404", removes) what `host` serves.
  void serve(const std::string& host, const std::string& body, const std::string& status = "",
             const std::string& type = "");
  /// Requests received so far for `host`.
  std::size_t requests(const std::string& host) const;

 private:
  std::string cert_;
  std::string key_;
  TempDir dir_;
  ChildProcess process_;
  std::uint16_t port_ = 0;
};

/// A key and a certificate for `names` (comma-separated DNS names) signed by `pki`'s CA (its
/// key at `dir`/ca.key, where `pki.generate(dir)` put it), valid for `days` days from now
/// ("-1": a certificate whose notAfter is a day before its notBefore, expired), written as
/// `dir`/`stem`.pem and .key.
bool make_signed_cert(const std::string& dir, const TestPki& pki, const std::string& stem,
                      const std::string& names, std::string* cert, std::string* key,
                      std::string* error, const std::string& days = "2");

}  // namespace mailq::test
