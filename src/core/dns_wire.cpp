#include "core/dns_wire.h"

#include <algorithm>

namespace mailq::detail {
namespace {

constexpr std::size_t kHeaderSize = 12;
constexpr std::size_t kRrFixedSize = 10;  // TYPE, CLASS, TTL, RDLENGTH
constexpr std::size_t kSoaTailSize = 20;  // SERIAL, REFRESH, RETRY, EXPIRE, MINIMUM
constexpr std::uint16_t kDnsClassIn = 1;

std::uint16_t read16(const unsigned char* p) {
  return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}

std::uint32_t read32(const unsigned char* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

// RFC 2181 §8: a TTL with the most significant bit set is treated as zero.
std::uint32_t sane_ttl(std::uint32_t ttl) {
  return ttl > 0x7fffffffu ? 0 : ttl;
}

// Moves `pos` past a domain name. A compression pointer ends the name in place, so the
// pointer target never needs to be visited to skip it.
bool skip_name(const unsigned char* msg, std::size_t len, std::size_t& pos) {
  // A name has at most 127 labels; the bound also stops malformed input early.
  for (int labels = 0; labels < 128; ++labels) {
    if (pos >= len) return false;
    const unsigned char l = msg[pos];
    if (l == 0) {
      pos += 1;
      return true;
    }
    if ((l & 0xC0) == 0xC0) {
      if (pos + 2 > len) return false;
      pos += 2;
      return true;
    }
    if ((l & 0xC0) != 0) return false;  // 0x40 / 0x80: extended or reserved label types
    pos += 1 + l;
  }
  return false;
}

// Reads the name at `pos` (following compression pointers, at most 64 of them) into `out`,
// lowercased, labels joined with '.', no final dot. Does not move `pos`.
bool read_name(const unsigned char* msg, std::size_t len, std::size_t pos, std::string& out) {
  out.clear();
  for (int hops = 0, labels = 0; hops < 64 && labels < 128;) {
    if (pos >= len) return false;
    const unsigned char l = msg[pos];
    if (l == 0) return true;
    if ((l & 0xC0) == 0xC0) {
      if (pos + 2 > len) return false;
      pos = static_cast<std::size_t>(((l & 0x3F) << 8) | msg[pos + 1]);
      ++hops;
      continue;
    }
    if ((l & 0xC0) != 0 || pos + 1 + l > len) return false;
    if (!out.empty()) out += '.';
    for (std::size_t i = 0; i < l; ++i) {
      const unsigned char c = msg[pos + 1 + i];
      out += static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    pos += 1 + l;
    ++labels;
  }
  return false;
}

// The end of the CNAME chain from `qname` when nothing of the asked type answers it.
std::string chain_end(const std::string& qname, const std::vector<std::string>& owners_of_type,
                      const std::vector<std::pair<std::string, std::string>>& cnames) {
  std::string at = qname;
  for (int links = 0; links <= 16; ++links) {
    for (const auto& o : owners_of_type)
      if (o == at) return std::string();  // answered: the parser follows the chain itself
    const std::string* next = nullptr;
    for (const auto& c : cnames)
      if (c.first == at) next = &c.second;
    if (!next) return at == qname ? std::string() : at;
    at = *next;
  }
  return std::string();  // a loop, or longer than any resolver follows
}

// A name worth asking for: letters, digits, '-', '_' in non-empty labels (what a mail host's
// name may hold); anything else in a CNAME target is not followed.
bool host_like(const std::string& name) {
  if (name.empty() || name.front() == '.' || name.back() == '.') return false;
  char previous = 0;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
                    (c == '.' && previous != '.');
    if (!ok) return false;
    previous = c;
  }
  return true;
}

void take_min(std::optional<std::uint32_t>& slot, std::uint32_t v) {
  slot = slot ? std::min(*slot, v) : v;
}

}  // namespace

std::string dns_type_name(std::uint16_t type) {
  switch (type) {
    case kDnsTypeA:
      return "A";
    case kDnsTypeCname:
      return "CNAME";
    case kDnsTypeSoa:
      return "SOA";
    case kDnsTypeMx:
      return "MX";
    case kDnsTypeTxt:
      return "TXT";
    case kDnsTypeAaaa:
      return "AAAA";
    case kDnsTypeTlsa:
      return "TLSA";
    default:
      return "TYPE" + std::to_string(type);
  }
}

std::optional<DnsTtls> scan_dns_ttls(const unsigned char* msg, std::size_t len,
                                     std::uint16_t qtype) {
  if (msg == nullptr || len < kHeaderSize) return std::nullopt;
  DnsTtls out;
  const std::uint16_t flags = read16(msg + 2);
  out.rcode = static_cast<std::uint8_t>(flags & 0x000F);
  out.truncated = (flags & 0x0200) != 0;
  out.authenticated = (flags & 0x0020) != 0;
  const std::uint16_t qdcount = read16(msg + 4);
  out.answers = read16(msg + 6);
  const std::uint16_t nscount = read16(msg + 8);

  std::size_t pos = kHeaderSize;
  std::string qname, owner, target;
  std::vector<std::string> owners_of_type;
  std::vector<std::pair<std::string, std::string>> cnames;
  std::vector<std::pair<std::string, dane::TlsaRecord>> tlsa;  // with their owners
  for (std::uint16_t i = 0; i < qdcount; ++i) {
    if (i == 0 && !read_name(msg, len, pos, qname)) return std::nullopt;
    if (!skip_name(msg, len, pos)) return std::nullopt;
    if (pos + 4 > len) return std::nullopt;  // QTYPE, QCLASS
    pos += 4;
  }
  const std::size_t records = std::size_t{out.answers} + nscount;
  for (std::size_t i = 0; i < records; ++i) {
    const bool in_answer = i < out.answers;
    const std::size_t owner_at = pos;
    if (!skip_name(msg, len, pos)) return std::nullopt;
    if (pos + kRrFixedSize > len) return std::nullopt;
    const std::uint16_t type = read16(msg + pos);
    const std::uint32_t ttl = sane_ttl(read32(msg + pos + 4));
    const std::uint16_t rdlength = read16(msg + pos + 8);
    pos += kRrFixedSize;
    if (pos + rdlength > len) return std::nullopt;
    if (in_answer) {
      if (type == qtype || type == kDnsTypeCname) take_min(out.answer_ttl, ttl);
      if (type == qtype || type == kDnsTypeCname) {
        if (!read_name(msg, len, owner_at, owner)) return std::nullopt;
        if (type == qtype) {
          owners_of_type.push_back(owner);
          if (type == kDnsTypeTlsa) {
            if (rdlength < 3) return std::nullopt;
            const unsigned char* r = msg + pos;
            if (read16(msg + pos - kRrFixedSize + 2) == kDnsClassIn) {
              tlsa.emplace_back(
                  owner, dane::TlsaRecord{
                             r[0], r[1], r[2],
                             std::string(reinterpret_cast<const char*>(r + 3), rdlength - 3)});
            }
          }
        } else {
          if (!read_name(msg, len, pos, target)) return std::nullopt;
          cnames.emplace_back(owner, target);
        }
      }
    } else if (type == kDnsTypeSoa) {
      // MNAME and RNAME (possibly compressed) come first; the five 32-bit fields end RDATA.
      if (rdlength < kSoaTailSize) return std::nullopt;
      const std::uint32_t minimum = sane_ttl(read32(msg + pos + rdlength - 4));
      take_min(out.negative_ttl, std::min(ttl, minimum));
    }
    pos += rdlength;
  }
  if (!cnames.empty()) {
    out.cname_target = chain_end(qname, owners_of_type, cnames);
    if (!host_like(out.cname_target)) out.cname_target.clear();
  }
  // Only the records of the question's name, or of where its CNAME chain leads: anything
  // else in the answer section answers another question.
  if (!tlsa.empty()) {
    std::vector<std::string> chain{qname};
    for (int links = 0; links < 16; ++links) {
      const std::string* next = nullptr;
      for (const auto& c : cnames)
        if (c.first == chain.back()) next = &c.second;
      if (!next || std::find(chain.begin(), chain.end(), *next) != chain.end()) break;
      chain.push_back(*next);
    }
    for (auto& [owner_name, record] : tlsa)
      if (std::find(chain.begin(), chain.end(), owner_name) != chain.end())
        out.tlsa.push_back(std::move(record));
  }
  return out;
}

}  // namespace mailq::detail
