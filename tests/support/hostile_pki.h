// Broken server certificates for the hostile-peer tests, signed by a TestPki's CA (so that
// the only thing wrong with each is what its name says): one for another host name, one
// that expired yesterday.
#pragma once

#include <string>

#include "support/servers.h"

namespace mailq {
namespace test {

struct HostilePki {
  static constexpr const char* kOtherName = "other.mailq.test";

  /// Writes the certificates next to `pki`'s files in `dir` (where `pki.generate(dir)` put
  /// them: its CA key is `dir`/ca.key).
  bool generate(const std::string& dir, const TestPki& pki, std::string* error);

  std::string wrong_name_cert;  ///< CN and subjectAltName DNS = kOtherName, signed by the CA
  std::string wrong_name_key;
  std::string expired_cert;  ///< CN and subjectAltName DNS = TestPki::kServerName, expired
  std::string expired_key;
};

}  // namespace test
}  // namespace mailq
