#include "support/dnssec.h"

#include <cctype>
#include <vector>

#include "support/servers.h"

namespace mailq::test {

namespace {

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  std::size_t start = 0;
  while (start < s.size() && std::isspace(static_cast<unsigned char>(s[start]))) ++start;
  return s.substr(start);
}

// The last non-empty line (what a tool printed last, after any warnings).
std::string last_line(const std::string& text) {
  std::string t = trim(text);
  const auto nl = t.rfind('\n');
  return nl == std::string::npos ? t : trim(t.substr(nl + 1));
}

// Runs `script` with sh in `dir`; its output in `out`.
bool sh(const std::string& dir, const std::string& script, std::string* out, std::string* error) {
  const int rc = run_program({"/bin/sh", "-c", "cd " + shell_quote(dir) + " && " + script}, out);
  if (rc != 0) {
    *error = "`" + script + "` failed (status " + std::to_string(rc) + "): " + *out;
    return false;
  }
  return true;
}

}  // namespace

bool sign_zone(const std::string& dir, const std::string& origin, const std::string& zone_text,
               SignedZone* out, std::string* error) {
  std::string name = origin;
  if (!name.empty() && name.back() == '.') name.pop_back();
  std::string ksk, zsk;
  // ldns-keygen prints the base name of the files it wrote (K<name>.+013+<id>).
  if (!sh(dir, "ldns-keygen -a ECDSAP256SHA256 -k " + shell_quote(name), &ksk, error)) return false;
  if (!sh(dir, "ldns-keygen -a ECDSAP256SHA256 " + shell_quote(name), &zsk, error)) return false;
  ksk = last_line(ksk);
  zsk = last_line(zsk);
  write_file(dir + "/zone", zone_text);
  std::string output;
  if (!sh(dir,
          "ldns-signzone -o " + shell_quote(origin) + " -f zone.signed zone " + shell_quote(ksk) +
              " " + shell_quote(zsk),
          &output, error))
    return false;
  out->origin = origin;
  out->text = read_file(dir + "/zone.signed");
  out->trust_anchor = dir + "/" + ksk + ".key";
  if (out->text.empty()) {
    *error = "ldns-signzone wrote no zone: " + output;
    return false;
  }
  return true;
}

std::string tlsa_data(const std::string& cert_file, int selector, int matching,
                      std::string* error) {
  std::string script = "openssl x509 -in " + shell_quote(cert_file);
  script += selector == 0 ? " -outform DER" : " -pubkey -noout | openssl pkey -pubin -outform DER";
  if (matching == 1) script += " | openssl dgst -sha256 -binary";
  if (matching == 2) script += " | openssl dgst -sha512 -binary";
  script += " | od -An -v -tx1 | tr -d ' \\n'";
  std::string out;
  if (!sh("/", script, &out, error)) return std::string();
  out = trim(out);
  if (out.empty()) *error = "openssl gave no data for " + cert_file;
  return out;
}

}  // namespace mailq::test
