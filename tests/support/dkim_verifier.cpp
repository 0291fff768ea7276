#include "support/dkim_verifier.h"

#include <sstream>

#include "support/servers.h"

namespace mailq::test {

namespace {

constexpr const char* kVerifyScript = R"PY(
import sys
import dkim

message = open(sys.argv[1], 'rb').read().replace(b'\r\n', b'\n').replace(b'\n', b'\r\n')
source = sys.argv[2]
if source.startswith('dns:'):
    import dns.resolver
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ['127.0.0.1']
    resolver.port = int(source[4:])
    def txt(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        try:
            answer = resolver.resolve(name, 'TXT', lifetime=timeout)
        except Exception:
            return None
        for rr in answer:
            return b''.join(rr.strings)
        return None
else:
    records = {}
    for line in open(source[5:], 'rb').read().split(b'\n'):
        if b'\t' in line:
            k, v = line.split(b'\t', 1)
            records[k.decode().rstrip('.') + '.'] = v
    def txt(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        return records.get(name.rstrip('.') + '.')

d = dkim.DKIM(message)
count = sum(1 for name, _ in d.headers if name.lower() == b'dkim-signature')
for idx in range(count):
    checker = dkim.DKIM(message)
    try:
        ok = checker.verify(idx=idx, dnsfunc=txt)
        why = ''
    except Exception as e:
        ok, why = False, repr(e)
    sig = checker.signature_fields or {}
    def tag(t):
        v = sig.get(t, b'')
        return v.decode() if isinstance(v, bytes) else str(v)
    print('\t'.join(['SIG', tag(b'd'), tag(b's'), tag(b'a'), 'pass' if ok else 'fail',
                     why.replace('\t', ' ').replace('\n', ' ')]))
print('DONE', count)
)PY";

// run_program, with what it printed in `error` when it fails.
bool run(const std::vector<std::string>& argv, std::string* out, std::string* error) {
  if (run_program(argv, out) == 0) return true;
  *error = argv[0] + " failed: " + *out;
  return false;
}

}  // namespace

std::vector<DkimResult> dkim_verify(const std::string& message, std::uint16_t dns_port,
                                    const std::map<std::string, std::string>& records,
                                    std::string* error) {
  TempDir dir;
  write_file(dir.file("verify.py"), kVerifyScript);
  write_file(dir.file("message.eml"), message);
  std::string source = "dns:" + std::to_string(dns_port);
  if (dns_port == 0) {
    std::string lines;
    for (const auto& [name, text] : records) lines += name + "\t" + text + "\n";
    write_file(dir.file("records"), lines);
    source = "file:" + dir.file("records");
  }
  std::string out;
  if (!run({system_python(), dir.file("verify.py"), dir.file("message.eml"), source}, &out, error))
    return {};
  if (out.find("DONE ") == std::string::npos) {
    *error = "dkimpy printed no verdict: " + out;
    return {};
  }
  std::vector<DkimResult> results;
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("SIG\t", 0) != 0) continue;
    std::vector<std::string> f;
    std::size_t pos = 0;
    while (true) {
      std::size_t tab = line.find('\t', pos);
      f.push_back(line.substr(pos, tab == std::string::npos ? std::string::npos : tab - pos));
      if (tab == std::string::npos) break;
      pos = tab + 1;
    }
    f.resize(6);
    results.push_back({f[1], f[2], f[3], f[4] == "pass", f[5]});
  }
  return results;
}

std::string dkim_txt_with_openssl(const std::string& key_file, std::string* error) {
  TempDir dir;
  std::string text;
  if (!run({"openssl", "pkey", "-in", key_file, "-pubout", "-outform", "DER", "-out",
            dir.file("pub.der")},
           &text, error))
    return {};
  const std::string der = read_file(dir.file("pub.der"));
  std::string p;
  const bool ed25519 = der.size() == 44;  // SPKI of an Ed25519 key: 12 octets + the key
  // p= is the SPKI for RSA, the raw 32-octet key for Ed25519 (RFC 8463 §4.2).
  write_file(dir.file("p.bin"), ed25519 ? der.substr(12) : der);
  if (!run({"openssl", "base64", "-A", "-in", dir.file("p.bin")}, &p, error)) return {};
  while (!p.empty() && (p.back() == '\n' || p.back() == '\r')) p.pop_back();
  return std::string("v=DKIM1; k=") + (ed25519 ? "ed25519" : "rsa") + "; p=" + p;
}

bool openssl_key(const std::string& kind, const std::string& file, std::string* error) {
  std::vector<std::string> argv = {"openssl", "genpkey", "-out", file};
  if (kind.rfind("rsa", 0) == 0) {
    argv.insert(argv.end(), {"-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:" + kind.substr(3)});
  } else if (kind == "ed25519") {
    argv.insert(argv.end(), {"-algorithm", "ed25519"});
  } else {
    argv.insert(argv.end(), {"-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"});
  }
  std::string out;
  return run(argv, &out, error);
}

}  // namespace mailq::test
