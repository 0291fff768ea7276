#include "support/hostile_pki.h"

#include <vector>

namespace mailq {
namespace test {

namespace {

// A server key and a certificate for `name` signed by the CA, valid for `days` days from
// now; "-1" gives a certificate whose notAfter is a day before its notBefore: expired.
bool make_cert(const std::string& dir, const TestPki& pki, const std::string& stem,
               const std::string& name, const std::string& days, std::string* cert,
               std::string* key, std::string* error) {
  *cert = dir + "/" + stem + ".pem";
  *key = dir + "/" + stem + ".key";
  const std::string csr = dir + "/" + stem + ".csr";
  const std::string ext = dir + "/" + stem + ".ext";
  write_file(ext, "subjectAltName=DNS:" + name +
                      "\nbasicConstraints=critical,CA:FALSE\n"
                      "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n");
  const std::vector<std::vector<std::string>> steps{
      {"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
       "-nodes", "-keyout", *key, "-out", csr, "-subj", "/O=mailq hostile/CN=" + name},
      {"openssl", "x509", "-req", "-in", csr, "-CA", pki.ca_cert, "-CAkey", dir + "/ca.key",
       "-set_serial", stem == "expired" ? "4343" : "4444", "-out", *cert, "-days", days, "-extfile",
       ext},
  };
  for (const auto& argv : steps) {
    std::string output;
    if (run_program(argv, &output, std::chrono::seconds(60)) != 0) {
      *error = "openssl " + argv[1] + " failed: " + output;
      return false;
    }
  }
  return true;
}

}  // namespace

bool HostilePki::generate(const std::string& dir, const TestPki& pki, std::string* error) {
  return make_cert(dir, pki, "wrong-name", kOtherName, "2", &wrong_name_cert, &wrong_name_key,
                   error) &&
         make_cert(dir, pki, "expired", TestPki::kServerName, "-1", &expired_cert, &expired_key,
                   error);
}

}  // namespace test
}  // namespace mailq
