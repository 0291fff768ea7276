#include "support/hostile_pki.h"

#include "support/policy_server.h"

#include <vector>

namespace mailq {
namespace test {

bool HostilePki::generate(const std::string& dir, const TestPki& pki, std::string* error) {
  return make_signed_cert(dir, pki, "wrong-name", kOtherName, &wrong_name_cert, &wrong_name_key,
                          error) &&
         make_signed_cert(dir, pki, "expired", TestPki::kServerName, &expired_cert, &expired_key,
                          error, "-1");
}

}  // namespace test
}  // namespace mailq
