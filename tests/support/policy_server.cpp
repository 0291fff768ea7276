#include "support/policy_server.h"

#include <filesystem>
#include <vector>

namespace mailq::test {

namespace {

constexpr const char* kScript = R"PY(
import http.server, os, ssl, sys
root, cert, key = sys.argv[1], sys.argv[2], sys.argv[3]

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        host = self.headers.get('Host', '').split(':')[0].lower()
        sys.stdout.write('GET %s %s\n' % (host, self.path))
        sys.stdout.flush()
        base = os.path.join(root, 'site-' + host)
        status = open(base + '.status').read().strip() if os.path.exists(base + '.status') else ''
        if status:
            code, _, location = status.partition(' ')
            self.send_response(int(code))
            if location:
                self.send_header('Location', location)
            self.send_header('Content-Length', '0')
            self.end_headers()
            return
        if self.path != '/.well-known/mta-sts.txt' or not os.path.exists(base):
            self.send_response(404)
            self.send_header('Content-Length', '0')
            self.end_headers()
            return
        body = open(base, 'rb').read()
        ctype = open(base + '.type').read().strip() if os.path.exists(base + '.type') else 'text/plain'
        self.send_response(200)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print('PORT %d' % server.server_address[1], flush=True)
server.serve_forever()
)PY";

}  // namespace

PolicyHttpsServer::PolicyHttpsServer(std::string cert_file, std::string key_file)
    : cert_(std::move(cert_file)), key_(std::move(key_file)) {}

bool PolicyHttpsServer::start(std::string* error) {
  const std::string script = dir_.file("server.py");
  write_file(script, kScript);
  const std::string out = dir_.file("server.out");
  if (!process_.start({system_python(), "-u", script, dir_.path(), cert_, key_}, out, error))
    return false;
  if (auto port = wait_for_port_line(process_, out, std::chrono::seconds(20))) {
    port_ = *port;
    return true;
  }
  *error = "policy HTTPS server did not start: " + read_file(out);
  process_.stop();
  return false;
}

void PolicyHttpsServer::serve(const std::string& host, const std::string& body,
                              const std::string& status, const std::string& type) {
  const std::string base = dir_.file("site-" + host);
  std::error_code ec;
  std::filesystem::remove(base, ec);
  std::filesystem::remove(base + ".status", ec);
  std::filesystem::remove(base + ".type", ec);
  if (!body.empty()) write_file(base, body);
  if (!status.empty()) write_file(base + ".status", status);
  if (!type.empty()) write_file(base + ".type", type);
}

std::size_t PolicyHttpsServer::requests(const std::string& host) const {
  const std::string text = read_file(dir_.file("server.out"));
  const std::string needle = "GET " + host + " ";
  std::size_t n = 0;
  for (auto p = text.find(needle); p != std::string::npos; p = text.find(needle, p + 1)) ++n;
  return n;
}

bool make_signed_cert(const std::string& dir, const TestPki& pki, const std::string& stem,
                      const std::string& names, std::string* cert, std::string* key,
                      std::string* error, const std::string& days) {
  *cert = dir + "/" + stem + ".pem";
  *key = dir + "/" + stem + ".key";
  const std::string csr = dir + "/" + stem + ".csr";
  const std::string ext = dir + "/" + stem + ".ext";
  std::string san;
  for (std::size_t pos = 0; pos <= names.size();) {
    std::size_t comma = names.find(',', pos);
    if (comma == std::string::npos) comma = names.size();
    san += (san.empty() ? "DNS:" : ",DNS:") + names.substr(pos, comma - pos);
    pos = comma + 1;
  }
  write_file(ext, "subjectAltName=" + san +
                      "\nbasicConstraints=critical,CA:FALSE\n"
                      "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n");
  const std::string first = names.substr(0, names.find(','));
  const std::vector<std::vector<std::string>> steps{
      {"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
       "-nodes", "-keyout", *key, "-out", csr, "-subj", "/O=mailq test/CN=" + first},
      {"openssl", "x509", "-req", "-in", csr, "-CA", pki.ca_cert, "-CAkey", dir + "/ca.key",
       "-CAcreateserial", "-out", *cert, "-days", days, "-extfile", ext},
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

}  // namespace mailq::test
