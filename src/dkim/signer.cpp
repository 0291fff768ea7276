#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>

#include "core/text.h"
#include "dkim/canon.h"
#include "dkim/keys.h"
#include "mailq/address.h"
#include "mailq/dkim.h"

namespace mailq::dkim {

using detail::iequals;

std::string_view to_string(Algorithm a) noexcept {
  return a == Algorithm::rsa_sha256 ? "rsa-sha256" : "ed25519-sha256";
}

std::string_view to_string(Canonicalization c) noexcept {
  return c == Canonicalization::simple ? "simple" : "relaxed";
}

Result<Canonicalization> parse_canonicalization(std::string_view s) {
  if (iequals(s, "relaxed")) return Canonicalization::relaxed;
  if (iequals(s, "simple")) return Canonicalization::simple;
  return Error(errc::invalid_parameter,
               "canonicalization \"" + std::string(s) + "\": expected relaxed or simple");
}

const std::vector<std::string>& default_headers() {
  static const std::vector<std::string> kHeaders = {"From",
                                                    "Reply-To",
                                                    "Subject",
                                                    "Date",
                                                    "To",
                                                    "Cc",
                                                    "Message-ID",
                                                    "In-Reply-To",
                                                    "References",
                                                    "MIME-Version",
                                                    "Content-Type",
                                                    "Content-Transfer-Encoding",
                                                    "Content-ID",
                                                    "Content-Description",
                                                    "Resent-Date",
                                                    "Resent-From",
                                                    "Resent-Sender",
                                                    "Resent-To",
                                                    "Resent-Cc",
                                                    "Resent-Message-ID",
                                                    "List-Id",
                                                    "List-Help",
                                                    "List-Unsubscribe",
                                                    "List-Unsubscribe-Post",
                                                    "List-Subscribe",
                                                    "List-Post",
                                                    "List-Owner",
                                                    "List-Archive",
                                                    "Sender"};
  return kHeaders;
}

std::string DnsRecord::zone_line() const {
  std::string out = name + ". IN TXT";
  for (std::size_t i = 0; i < text.size(); i += 255) out += " \"" + text.substr(i, 255) + "\"";
  return out;
}

namespace {

struct Key {
  KeyConfig config;  // domain lowercased; headers and oversign filled in
  std::unique_ptr<detail::PrivateKey> key;
};

bool valid_field_name(std::string_view s) {
  if (s.empty()) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u >= 33 && u <= 126 && c != ':' && c != ';';
  });
}

bool contains(const std::vector<std::string>& names, std::string_view name) {
  return std::any_of(names.begin(), names.end(),
                     [&](const std::string& n) { return iequals(n, name); });
}

bool in_domain(std::string_view domain, std::string_view parent) {
  return domain == parent ||
         (domain.size() > parent.size() &&
          domain.compare(domain.size() - parent.size(), parent.size(), parent) == 0 &&
          domain[domain.size() - parent.size() - 1] == '.');
}

Result<std::string> read_key_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error(errc::invalid_parameter, "cannot read key file " + path);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return Error(errc::invalid_parameter, "cannot read key file " + path);
  return text.str();
}

Result<Key> make_key(const KeyConfig& in) {
  Key k;
  k.config = in;
  KeyConfig& c = k.config;
  const std::string where = "DKIM key " + in.selector + "._domainkey." + in.domain + ": ";
  auto fail = [&](const std::string& why) { return Error(errc::invalid_parameter, where + why); };
  c.domain = mailq::detail::to_lower(c.domain);
  if (!c.domain.empty() && c.domain.back() == '.') c.domain.pop_back();
  if (!mailq::detail::is_host_name(c.domain))
    return fail("domain \"" + in.domain + "\" is not a domain name");
  if (!mailq::detail::is_host_name(c.selector, true))
    return fail("selector \"" + in.selector +
                "\" is not a selector (labels of letters, digits, '-')");
  if (!c.identity.empty()) {
    const std::size_t at = c.identity.rfind('@');
    const bool clean = std::none_of(c.identity.begin(), c.identity.end(), [](char ch) {
      auto u = static_cast<unsigned char>(ch);
      return u <= 32 || u >= 127 || ch == ';' || ch == '=';
    });
    if (at == std::string::npos || !clean ||
        !in_domain(mailq::detail::to_lower(std::string_view(c.identity).substr(at + 1)), c.domain))
      return fail("identity \"" + in.identity + "\" must be [local]@" + c.domain +
                  " or @ a subdomain of it (RFC 6376 i=)");
  }
  if (c.expiry && c.expiry->count() <= 0) return fail("expiry must be positive");
  if (c.headers.empty()) c.headers = default_headers();
  for (const auto& h : c.headers)
    if (!valid_field_name(h)) return fail("\"" + h + "\" is not a header field name");
  if (!contains(c.headers, "From"))
    return fail("the signed header fields must include From (RFC 6376 §5.4)");
  if (!c.oversign) {
    c.oversign.emplace();
    for (const auto& h : c.headers)
      if (!iequals(h, "Sender")) c.oversign->push_back(h);
  }
  for (const auto& h : *c.oversign) {
    if (iequals(h, "Sender"))
      return fail(
          "Sender is never oversigned (a mailing list adds one; the signature would break)");
    if (!contains(c.headers, h)) return fail("oversign names \"" + h + "\", which is not signed");
  }
  std::string text;
  if (!c.key_file.empty()) {
    auto read = read_key_file(c.key_file);
    if (!read) return fail(read.error().message);
    text = std::move(*read);
  } else if (!c.key_pem.empty()) {
    text = c.key_pem;
  } else {
    return fail("no key (key_file)");
  }
  auto key = detail::PrivateKey::parse(text);
  std::fill(text.begin(), text.end(), '\0');
  if (!key)
    return fail((c.key_file.empty() ? std::string() : c.key_file + ": ") + key.error().message);
  k.key = std::move(*key);
  c.key_pem.clear();
  return k;
}

// Builds a header field from tokens, folding before a token that would take the line past
// 78 octets.
class Folder {
 public:
  explicit Folder(std::string start) : out_(std::move(start)), line_(out_.size()) {}
  void token(std::string_view t, bool space = true) {
    const std::size_t need = t.size() + (space ? 1 : 0);
    if (line_ + need > 78 && line_ > 1) {
      out_ += "\r\n\t";
      line_ = 1;
    } else if (space) {
      out_ += ' ';
      ++line_;
    }
    out_ += t;
    line_ += t.size();
  }
  // Base64 text, broken anywhere (FWS may appear inside it: RFC 6376 §3.5 base64string).
  void base64(std::string_view b) {
    while (!b.empty()) {
      std::size_t room = line_ < 78 ? 78 - line_ : 0;
      if (room < 8) {
        out_ += "\r\n\t";
        line_ = 1;
        continue;
      }
      std::size_t n = std::min(room, b.size());
      out_.append(b.data(), n);
      line_ += n;
      b.remove_prefix(n);
    }
  }
  const std::string& text() const { return out_; }

 private:
  std::string out_;
  std::size_t line_;
};

}  // namespace

struct Signer::Impl {
  std::vector<Key> keys;
};

Signer::Signer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Signer::~Signer() = default;

Result<std::shared_ptr<const Signer>> Signer::create(const SignerConfig& config) {
  auto impl = std::make_unique<Impl>();
  for (const auto& kc : config.keys) {
    auto k = make_key(kc);
    if (!k) return k.error();
    for (const auto& other : impl->keys)
      if (other.config.domain == k->config.domain && other.config.selector == k->config.selector)
        return Error(errc::invalid_parameter, "DKIM key " + kc.selector + "._domainkey." +
                                                  kc.domain + " is configured twice");
    impl->keys.push_back(std::move(*k));
  }
  return std::shared_ptr<const Signer>(new Signer(std::move(impl)));
}

std::vector<DnsRecord> Signer::dns_records() const {
  std::vector<DnsRecord> out;
  for (const auto& k : impl_->keys) {
    const bool rsa = k.key->algorithm() == Algorithm::rsa_sha256;
    out.push_back(
        {k.config.selector + "._domainkey." + k.config.domain,
         std::string("v=DKIM1; k=") + (rsa ? "rsa" : "ed25519") + "; p=" + k.key->public_key()});
  }
  return out;
}

Result<std::string> Signer::sign(std::string_view message, TimePoint now) const {
  const detail::ParsedMessage parsed = detail::parse_message(message);

  // The author's domain: the one From field's first address.
  const detail::HeaderField* from = nullptr;
  for (const auto& f : parsed.fields) {
    if (!iequals(f.name, "From")) continue;
    if (from) return std::string();  // two From fields: not signed
    from = &f;
  }
  if (!from) return std::string();
  std::string value(from->raw.substr(from->raw.find(':') + 1));
  value.erase(
      std::remove_if(value.begin(), value.end(), [](char c) { return c == '\r' || c == '\n'; }),
      value.end());
  auto authors = parse_address_list(value);
  if (!authors || authors->empty()) return std::string();
  const std::string author_domain = (*authors)[0].routing_domain();

  // Which keys sign: the author keys of the most specific matching domain, else the
  // fallback keys; and the "always" keys.
  std::size_t best = 0;
  for (const auto& k : impl_->keys)
    if (k.config.use == KeyConfig::Use::author && in_domain(author_domain, k.config.domain))
      best = std::max(best, k.config.domain.size());
  std::vector<const Key*> chosen;
  for (const auto& k : impl_->keys) {
    const auto use = k.config.use;
    if ((use == KeyConfig::Use::author && best > 0 && k.config.domain.size() == best &&
         in_domain(author_domain, k.config.domain)) ||
        (use == KeyConfig::Use::fallback && best == 0) || use == KeyConfig::Use::always)
      chosen.push_back(&k);
  }

  const auto t = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  std::optional<detail::Digest> body_hash[2];
  std::string out;
  for (const Key* k : chosen) {
    const KeyConfig& c = k->config;
    auto& bh = body_hash[c.body_canon == Canonicalization::relaxed ? 1 : 0];
    if (!bh) bh = detail::body_hash(parsed.body, c.body_canon);
    const std::vector<std::string> names = detail::signed_names(parsed, c.headers, *c.oversign);

    Folder f("DKIM-Signature:");
    f.token("v=1;");
    f.token("a=" + std::string(to_string(k->key->algorithm())) + ";");
    f.token("c=" + std::string(to_string(c.header_canon)) + "/" +
            std::string(to_string(c.body_canon)) + ";");
    f.token("d=" + c.domain + ";");
    f.token("s=" + c.selector + ";");
    if (!c.identity.empty()) f.token("i=" + c.identity + ";");
    f.token("t=" + std::to_string(t) + ";");
    if (c.expiry) f.token("x=" + std::to_string(t + c.expiry->count()) + ";");
    for (std::size_t i = 0; i < names.size(); ++i)
      f.token((i == 0 ? "h=" : "") + names[i] + (i + 1 == names.size() ? ";" : ":"), i == 0);
    f.token("bh=" + detail::base64(bh->data(), bh->size()) + ";");
    f.token("b=");
    const std::string data = detail::signed_data(parsed, names, f.text(), c.header_canon);
    auto sig = k->key->sign(detail::sha256(data));
    if (!sig)
      return Error(sig.error().code, "DKIM key " + c.selector + "._domainkey." + c.domain + ": " +
                                         sig.error().message);
    f.base64(detail::base64(reinterpret_cast<const unsigned char*>(sig->data()), sig->size()));
    out += f.text();
    out += "\r\n";
  }
  return out;
}

}  // namespace mailq::dkim
