#include "uv/tls.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/pk.h>
#include <mbedtls/sha256.h>
#include <mbedtls/sha512.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <uv.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "mailq/net.h"

namespace mailq {
namespace uv {
namespace detail {

std::string mbedtls_error_text(int ret) {
  char buf[200];
  mbedtls_strerror(ret, buf, sizeof buf);
  char code[24];
  std::snprintf(code, sizeof code, " (-0x%04X)", static_cast<unsigned>(ret < 0 ? -ret : ret));
  return std::string(buf) + code;
}

namespace {

// Whether a TLS server name is an IPv4 or IPv6 address (brackets and a "%scope" allowed
// around it): such a name is sent as no SNI and cannot be verified.
bool names_ip_address(std::string_view server_name) {
  if (server_name.size() >= 2 && server_name.front() == '[' && server_name.back() == ']') {
    server_name = server_name.substr(1, server_name.size() - 2);
  }
  if (auto pct = server_name.find('%'); pct != std::string_view::npos) {
    server_name = server_name.substr(0, pct);
  }
  return is_ip_literal(server_name);
}

}  // namespace

// --- shared contexts ----------------------------------------------------------------------

class TlsRandom {
 public:
  TlsRandom() {
    mbedtls_entropy_init(&entropy_);
    mbedtls_ctr_drbg_init(&drbg_);
    static const char kPersonalization[] = "mailq tls client";
    const int ret = mbedtls_ctr_drbg_seed(&drbg_, mbedtls_entropy_func, &entropy_,
                                          reinterpret_cast<const unsigned char*>(kPersonalization),
                                          sizeof kPersonalization - 1);
    if (ret != 0) error_ = "cannot seed the random generator: " + mbedtls_error_text(ret);
  }
  ~TlsRandom() {
    mbedtls_ctr_drbg_free(&drbg_);
    mbedtls_entropy_free(&entropy_);
  }
  TlsRandom(const TlsRandom&) = delete;
  TlsRandom& operator=(const TlsRandom&) = delete;

  const std::string& error() const noexcept { return error_; }
  mbedtls_ctr_drbg_context* drbg() noexcept { return &drbg_; }

 private:
  mbedtls_entropy_context entropy_;
  mbedtls_ctr_drbg_context drbg_;
  std::string error_;
};

class TlsConfig {
 public:
  explicit TlsConfig(std::shared_ptr<TlsRandom> random) : random_(std::move(random)) {
    mbedtls_x509_crt_init(&ca_);
    mbedtls_x509_crt_init(&own_cert_);
    mbedtls_pk_init(&own_key_);
    mbedtls_ssl_config_init(&conf_);
  }
  ~TlsConfig() {
    mbedtls_ssl_config_free(&conf_);
    mbedtls_pk_free(&own_key_);
    mbedtls_x509_crt_free(&own_cert_);
    mbedtls_x509_crt_free(&ca_);
  }
  TlsConfig(const TlsConfig&) = delete;
  TlsConfig& operator=(const TlsConfig&) = delete;

  // Loads a PEM bundle. A bundle where some certificates are not understood by mbedTLS is
  // still usable when at least one was (system bundles carry a few exotic ones).
  bool load_ca(const std::string& path, std::string* error) {
    std::error_code fs_ec;
    if (!std::filesystem::is_regular_file(path, fs_ec)) {
      *error = "cannot load CA file " + path + ": no such file";
      return false;
    }
    const int ret = mbedtls_x509_crt_parse_file(&ca_, path.c_str());
    if (ret < 0 || ca_.version == 0) {
      *error = "cannot load CA file " + path + ": " +
               (ret < 0 ? mbedtls_error_text(ret) : std::string("no usable certificate"));
      return false;
    }
    ca_path_ = path;
    return true;
  }

  bool init(CertCheck mode, std::string* error) {
    mode_ = mode;
    int ret = mbedtls_ssl_config_defaults(&conf_, MBEDTLS_SSL_IS_CLIENT,
                                          MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
    if (ret != 0) {
      *error = "cannot set up the TLS configuration: " + mbedtls_error_text(ret);
      return false;
    }
    mbedtls_ssl_conf_rng(&conf_, mbedtls_ctr_drbg_random, random_->drbg());
    if (mode == CertCheck::dane) {
      mbedtls_ssl_conf_authmode(&conf_, MBEDTLS_SSL_VERIFY_OPTIONAL);
      mbedtls_ssl_conf_min_version(&conf_, MBEDTLS_SSL_MAJOR_VERSION_3,
                                   MBEDTLS_SSL_MINOR_VERSION_3);
    } else if (mode == CertCheck::check) {
      mbedtls_ssl_conf_authmode(&conf_, MBEDTLS_SSL_VERIFY_OPTIONAL);
      mbedtls_ssl_conf_ca_chain(&conf_, &ca_, nullptr);
      mbedtls_ssl_conf_min_version(&conf_, MBEDTLS_SSL_MAJOR_VERSION_3,
                                   MBEDTLS_SSL_MINOR_VERSION_1);
    } else if (mode == CertCheck::verify) {
      mbedtls_ssl_conf_authmode(&conf_, MBEDTLS_SSL_VERIFY_REQUIRED);
      mbedtls_ssl_conf_ca_chain(&conf_, &ca_, nullptr);
      mbedtls_ssl_conf_min_version(&conf_, MBEDTLS_SSL_MAJOR_VERSION_3,
                                   MBEDTLS_SSL_MINOR_VERSION_3);
    } else {
      // Opportunistic encryption (RFC 7435): an old server's TLS 1.0 is still better than
      // plaintext, and nothing is being authenticated anyway.
      mbedtls_ssl_conf_authmode(&conf_, MBEDTLS_SSL_VERIFY_NONE);
      mbedtls_ssl_conf_min_version(&conf_, MBEDTLS_SSL_MAJOR_VERSION_3,
                                   MBEDTLS_SSL_MINOR_VERSION_1);
    }
    mbedtls_ssl_conf_renegotiation(&conf_, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
    return true;
  }

  // The server side: our certificate chain and its key (PEM), TLS 1.2 at least, no client
  // certificates asked for.
  bool init_server(const std::string& cert_file, const std::string& key_file, std::string* error) {
    int ret = mbedtls_x509_crt_parse_file(&own_cert_, cert_file.c_str());
    if (ret != 0 || own_cert_.version == 0) {
      *error = "cannot load the certificate " + cert_file + ": " +
               (ret != 0 ? mbedtls_error_text(ret) : std::string("no certificate in it"));
      return false;
    }
    ret = mbedtls_pk_parse_keyfile(&own_key_, key_file.c_str(), nullptr);
    if (ret != 0) {
      *error = "cannot load the key " + key_file + ": " + mbedtls_error_text(ret);
      return false;
    }
    if (mbedtls_pk_check_pair(&own_cert_.pk, &own_key_) != 0) {
      *error = "the key " + key_file + " does not belong to the certificate " + cert_file;
      return false;
    }
    ret = mbedtls_ssl_config_defaults(&conf_, MBEDTLS_SSL_IS_SERVER, MBEDTLS_SSL_TRANSPORT_STREAM,
                                      MBEDTLS_SSL_PRESET_DEFAULT);
    if (ret != 0) {
      *error = "cannot set up the TLS configuration: " + mbedtls_error_text(ret);
      return false;
    }
    mbedtls_ssl_conf_rng(&conf_, mbedtls_ctr_drbg_random, random_->drbg());
    mbedtls_ssl_conf_authmode(&conf_, MBEDTLS_SSL_VERIFY_NONE);
    mbedtls_ssl_conf_min_version(&conf_, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_renegotiation(&conf_, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
    ret = mbedtls_ssl_conf_own_cert(&conf_, &own_cert_, &own_key_);
    if (ret != 0) {
      *error = "cannot use the certificate " + cert_file + ": " + mbedtls_error_text(ret);
      return false;
    }
    server_ = true;
    return true;
  }

  const mbedtls_ssl_config* conf() const noexcept { return &conf_; }
  CertCheck mode() const noexcept { return mode_; }
  bool server() const noexcept { return server_; }
  // The subject and the end of validity of our certificate, for the log.
  std::string own_certificate_summary() const {
    char dn[512] = {};
    if (mbedtls_x509_dn_gets(dn, sizeof dn, &own_cert_.subject) < 0) dn[0] = 0;
    const mbedtls_x509_time& t = own_cert_.valid_to;
    char until[40];
    std::snprintf(until, sizeof until, "%04d-%02d-%02d %02d:%02d:%02d UTC", t.year, t.mon, t.day,
                  t.hour, t.min, t.sec);
    return std::string(dn) + ", valid until " + until;
  }

 private:
  std::shared_ptr<TlsRandom> random_;  // conf_ points into it
  mbedtls_x509_crt ca_;
  mbedtls_x509_crt own_cert_;
  mbedtls_pk_context own_key_;
  bool server_ = false;
  mbedtls_ssl_config conf_;
  std::string ca_path_;
  CertCheck mode_ = CertCheck::none;
};

TlsContextCache::TlsContextCache(std::vector<std::string> system_ca_files)
    : system_ca_files_(std::move(system_ca_files)) {}

TlsContextCache::~TlsContextCache() = default;

std::shared_ptr<const TlsConfig> TlsContextCache::get(const TlsClientOptions& options,
                                                      std::string* error) {
  const CertCheck mode = !options.tlsa.empty() ? CertCheck::dane
                         : options.verify      ? CertCheck::verify
                         : options.check       ? CertCheck::check
                                               : CertCheck::none;
  const bool uses_cas = mode == CertCheck::verify || mode == CertCheck::check;
  auto key = std::make_pair(mode, uses_cas ? options.ca_file : std::string());
  if (auto it = configs_.find(key); it != configs_.end()) return it->second;

  if (!random_) {
    auto random = std::make_shared<TlsRandom>();
    if (!random->error().empty()) {
      *error = random->error();
      return nullptr;
    }
    random_ = std::move(random);
  }
  auto config = std::make_shared<TlsConfig>(random_);
  if (uses_cas) {
    if (!options.ca_file.empty()) {
      if (!config->load_ca(options.ca_file, error)) return nullptr;
    } else {
      std::string tried;
      bool loaded = false;
      for (const std::string& path : system_ca_files_) {
        std::string why;
        if (config->load_ca(path, &why)) {
          loaded = true;
          break;
        }
        if (!tried.empty()) tried += "; ";
        tried += why;
      }
      if (!loaded) {
        *error = "no usable system CA bundle" + (tried.empty() ? std::string() : ": " + tried);
        return nullptr;
      }
    }
  }
  if (!config->init(mode, error)) return nullptr;
  configs_.emplace(std::move(key), config);
  return config;
}

void TlsContextCache::clear() {
  configs_.clear();
}

std::shared_ptr<const TlsConfig> load_server_tls(const std::string& cert_file,
                                                 const std::string& key_file, std::string* error) {
  auto random = std::make_shared<TlsRandom>();
  if (!random->error().empty()) {
    *error = random->error();
    return nullptr;
  }
  auto config = std::make_shared<TlsConfig>(std::move(random));
  if (!config->init_server(cert_file, key_file, error)) return nullptr;
  return config;
}

std::string server_tls_summary(const TlsConfig& config) {
  return config.own_certificate_summary();
}

// --- DANE ----------------------------------------------------------------------------------

namespace {

bool association_matches(const dane::TlsaRecord& r, const mbedtls_x509_crt& crt) {
  const mbedtls_x509_buf& what = r.selector == 0 ? crt.raw : crt.pk_raw;
  if (what.p == nullptr || what.len == 0) return false;
  unsigned char digest[64];
  std::size_t n = 0;
  switch (static_cast<dane::Matching>(r.matching)) {
    case dane::Matching::full:
      return r.data.size() == what.len && std::memcmp(r.data.data(), what.p, what.len) == 0;
    case dane::Matching::sha256:
      if (mbedtls_sha256_ret(what.p, what.len, digest, 0) != 0) return false;
      n = 32;
      break;
    case dane::Matching::sha512:
      if (mbedtls_sha512_ret(what.p, what.len, digest, 0) != 0) return false;
      n = 64;
      break;
    default:
      return false;
  }
  return r.data.size() == n && std::memcmp(r.data.data(), digest, n) == 0;
}

// mbedTLS writes one reason per line: joined into one line for the log.
std::string verify_flags_text(std::uint32_t flags) {
  char info[512];
  const int n = mbedtls_x509_crt_verify_info(info, sizeof info, "", flags);
  std::string joined;
  std::string_view rest(info, n > 0 ? static_cast<std::size_t>(n) : 0);
  while (!rest.empty()) {
    const std::size_t nl = rest.find('\n');
    const std::string_view line = rest.substr(0, nl);
    if (!line.empty()) {
      if (!joined.empty()) joined += "; ";
      joined += line;
    }
    if (nl == std::string_view::npos) break;
    rest.remove_prefix(nl + 1);
  }
  return joined;
}

}  // namespace

std::optional<dane::TlsaRecord> dane_match(const mbedtls_x509_crt* chain,
                                           const std::vector<dane::TlsaRecord>& tlsa,
                                           const std::vector<std::string>& names,
                                           std::string* why) {
  if (chain == nullptr || chain->raw.p == nullptr) {
    *why = "the server sent no certificate";
    return std::nullopt;
  }
  // DANE-EE(3): the server's own certificate or key; no name, no dates (RFC 7672 3.1.1).
  for (const auto& r : tlsa)
    if (r.usage == static_cast<std::uint8_t>(dane::Usage::dane_ee) &&
        association_matches(r, *chain))
      return r;
  // DANE-TA(2): a certificate the server sent, which then issues the server's, for one of
  // the reference names (RFC 7672 3.1.2, 3.2.2).
  std::string ta_problem;
  for (const auto& r : tlsa) {
    if (r.usage != static_cast<std::uint8_t>(dane::Usage::dane_ta)) continue;
    for (const mbedtls_x509_crt* c = chain; c != nullptr && c->raw.p != nullptr; c = c->next) {
      if (!association_matches(r, *c)) continue;
      mbedtls_x509_crt anchor;
      mbedtls_x509_crt_init(&anchor);
      if (mbedtls_x509_crt_parse_der(&anchor, c->raw.p, c->raw.len) != 0) {
        mbedtls_x509_crt_free(&anchor);
        continue;
      }
      std::uint32_t flags = 0;
      bool ok = false;
      for (const auto& name : names) {
        flags = 0;
        const int ret = mbedtls_x509_crt_verify(const_cast<mbedtls_x509_crt*>(chain), &anchor,
                                                nullptr, name.c_str(), &flags, nullptr, nullptr);
        if (ret == 0) {
          ok = true;
          break;
        }
        if (flags != MBEDTLS_X509_BADCERT_CN_MISMATCH) break;  // a name will not help
      }
      mbedtls_x509_crt_free(&anchor);
      if (ok) return r;
      ta_problem =
          "the trust anchor of TLSA record " + dane::to_string(r) +
          " is in the chain, but the server certificate does not pass: " + verify_flags_text(flags);
    }
  }
  std::string names_text;
  for (const auto& n : names) names_text += (names_text.empty() ? "" : " or ") + n;
  *why = ta_problem.empty() ? "the certificate chain matches none of the " +
                                  std::to_string(tlsa.size()) + " usable TLSA record" +
                                  (tlsa.size() == 1 ? "" : "s") + " (for " + names_text + ")"
                            : ta_problem;
  return std::nullopt;
}

// --- session -------------------------------------------------------------------------------

struct TlsSession::Ssl {
  mbedtls_ssl_context ctx;
  Ssl() { mbedtls_ssl_init(&ctx); }
  ~Ssl() { mbedtls_ssl_free(&ctx); }
};

TlsSession::TlsSession() : ssl_(std::make_unique<Ssl>()) {}

TlsSession::~TlsSession() = default;

bool TlsSession::setup(std::shared_ptr<const TlsConfig> config, const TlsClientOptions& options) {
  config_ = std::move(config);
  verify_ = config_->mode() == CertCheck::verify;
  check_ = config_->mode() == CertCheck::check && !names_ip_address(options.server_name) &&
           !options.server_name.empty();
  if (config_->mode() == CertCheck::dane) {
    tlsa_ = options.tlsa;
    dane_names_ = {options.server_name};
    if (!options.dane_domain.empty() && options.dane_domain != options.server_name)
      dane_names_.push_back(options.dane_domain);
  }
  const bool ip = names_ip_address(options.server_name);
  if (verify_ || !tlsa_.empty()) {
    if (options.server_name.empty()) {
      error_ = "certificate verification requires a server name";
      return false;
    }
    if (ip) {
      // mbedTLS 2.28 matches names against subjectAltName dNSName entries and the CN only;
      // it cannot check an iPAddress entry, so an address cannot be verified honestly.
      error_ = "cannot verify a certificate for the IP address " + options.server_name +
               " (mbedTLS 2.28 checks host names only)";
      return false;
    }
  }
  int ret = mbedtls_ssl_setup(&ssl_->ctx, config_->conf());
  if (ret != 0) {
    set_error("cannot set up the TLS session", ret);
    return false;
  }
  // SNI carries host names only (RFC 6066 §3); with verify the same name is checked against
  // the certificate.
  if (!options.server_name.empty() && !ip) {
    ret = mbedtls_ssl_set_hostname(&ssl_->ctx, options.server_name.c_str());
    if (ret != 0) {
      set_error("invalid TLS server name \"" + options.server_name + "\"", ret);
      return false;
    }
  }
  mbedtls_ssl_set_bio(&ssl_->ctx, this, &TlsSession::bio_send, &TlsSession::bio_recv, nullptr);
  return true;
}

bool TlsSession::setup_server(std::shared_ptr<const TlsConfig> config) {
  config_ = std::move(config);
  verify_ = false;
  const int ret = mbedtls_ssl_setup(&ssl_->ctx, config_->conf());
  if (ret != 0) {
    set_error("cannot set up the TLS session", ret);
    return false;
  }
  mbedtls_ssl_set_bio(&ssl_->ctx, this, &TlsSession::bio_send, &TlsSession::bio_recv, nullptr);
  return true;
}

void TlsSession::close_notify() {
  (void)mbedtls_ssl_close_notify(&ssl_->ctx);
}

int TlsSession::bio_send(void* ctx, const unsigned char* buf, std::size_t len) {
  auto* self = static_cast<TlsSession*>(ctx);
  // Everything is accepted: the connection queues it for the socket. mbedTLS hands over at
  // most one record (about 16 KiB) per call.
  len = std::min<std::size_t>(len, INT_MAX);
  self->out_.append(reinterpret_cast<const char*>(buf), len);
  return static_cast<int>(len);
}

int TlsSession::bio_recv(void* ctx, unsigned char* buf, std::size_t len) {
  auto* self = static_cast<TlsSession*>(ctx);
  const std::size_t available = self->in_.size() - self->in_pos_;
  if (available == 0) return MBEDTLS_ERR_SSL_WANT_READ;
  const std::size_t n = std::min({len, available, static_cast<std::size_t>(INT_MAX)});
  std::copy_n(self->in_.data() + self->in_pos_, n, buf);
  self->in_pos_ += n;
  if (self->in_pos_ == self->in_.size()) {
    self->in_.clear();
    self->in_pos_ = 0;
  }
  return static_cast<int>(n);
}

void TlsSession::feed(std::string_view ciphertext) {
  // Drop the consumed prefix before growing, so the buffer stays as large as what is unread.
  if (in_pos_ > 0 && in_pos_ >= in_.size() / 2) {
    in_.erase(0, in_pos_);
    in_pos_ = 0;
  }
  in_.append(ciphertext);
}

void TlsSession::set_error(std::string_view what, int ret) {
  error_ = std::string(what) + ": " + mbedtls_error_text(ret);
}

TlsSession::Step TlsSession::handshake() {
  const int ret = mbedtls_ssl_handshake(&ssl_->ctx);
  if (ret == 0) {
    if (tlsa_.empty()) return Step::done;
    std::string why;
    if (auto matched =
            dane_match(mbedtls_ssl_get_peer_cert(&ssl_->ctx), tlsa_, dane_names_, &why)) {
      dane_matched_ = dane::to_string(*matched);
      return Step::done;
    }
    error_ = "DANE: " + why;
    // Tell the server why (the connection's last output is flushed before it closes).
    (void)mbedtls_ssl_send_alert_message(&ssl_->ctx, MBEDTLS_SSL_ALERT_LEVEL_FATAL,
                                         MBEDTLS_SSL_ALERT_MSG_BAD_CERT);
    return Step::failed;
  }
  if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) return Step::again;
  const std::uint32_t flags = mbedtls_ssl_get_verify_result(&ssl_->ctx);
  if (ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED && flags != 0 && flags != UINT32_MAX) {
    error_ = "certificate verification failed: " + verify_flags_text(flags);
  } else {
    set_error("TLS handshake failed", ret);
  }
  return Step::failed;
}

long TlsSession::read(char* buf, std::size_t len) {
  const int ret = mbedtls_ssl_read(&ssl_->ctx, reinterpret_cast<unsigned char*>(buf),
                                   std::min<std::size_t>(len, INT_MAX));
  if (ret > 0) return ret;
  if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) return kWant;
  if (ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || ret == 0) return kClosed;
  set_error("TLS read failed", ret);
  return kError;
}

bool TlsSession::write(std::string_view plaintext) {
  const auto* p = reinterpret_cast<const unsigned char*>(plaintext.data());
  std::size_t left = plaintext.size();
  while (left > 0) {
    const int ret = mbedtls_ssl_write(&ssl_->ctx, p, left);
    if (ret > 0) {
      p += ret;
      left -= static_cast<std::size_t>(ret);
      continue;
    }
    // The BIO never blocks and renegotiation is off, so "want" here would loop forever:
    // treat it, like every other error, as fatal.
    set_error("TLS write failed", ret == 0 ? MBEDTLS_ERR_SSL_INTERNAL_ERROR : ret);
    return false;
  }
  return true;
}

std::string TlsSession::take_output() {
  std::string out;
  out.swap(out_);
  return out;
}

TlsInfo TlsSession::info() const {
  TlsInfo info;
  if (const char* v = mbedtls_ssl_get_version(&ssl_->ctx)) info.version = v;
  if (const char* c = mbedtls_ssl_get_ciphersuite(&ssl_->ctx)) {
    // mbedTLS spells suites with dashes; the IANA registry (and every log reader) with
    // underscores: TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384 -> TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384.
    info.cipher = c;
    std::replace(info.cipher.begin(), info.cipher.end(), '-', '_');
  }
  const std::uint32_t flags = mbedtls_ssl_get_verify_result(&ssl_->ctx);
  info.verified = ((verify_ || check_) && flags == 0) || !dane_matched_.empty();
  if (check_ && flags != 0)
    info.verify_problem =
        flags == UINT32_MAX ? std::string("no certificate was checked") : verify_flags_text(flags);
  info.dane = dane_matched_;
  if (const mbedtls_x509_crt* peer = mbedtls_ssl_get_peer_cert(&ssl_->ctx)) {
    char dn[512];
    if (mbedtls_x509_dn_gets(dn, sizeof dn, &peer->subject) > 0) info.peer_subject = dn;
  }
  return info;
}

}  // namespace detail
}  // namespace uv
}  // namespace mailq
