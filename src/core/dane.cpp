#include "mailq/dane.h"

#include <cctype>

namespace mailq::dane {

namespace {

constexpr char kHex[] = "0123456789abcdef";

std::string hex(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += kHex[c >> 4];
    out += kHex[c & 0x0f];
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

bool usable(const TlsaRecord& r) noexcept {
  if (r.usage != static_cast<std::uint8_t>(Usage::dane_ta) &&
      r.usage != static_cast<std::uint8_t>(Usage::dane_ee))
    return false;
  if (r.selector > static_cast<std::uint8_t>(Selector::spki)) return false;
  switch (static_cast<Matching>(r.matching)) {
    case Matching::full:
      return !r.data.empty();
    case Matching::sha256:
      return r.data.size() == 32;
    case Matching::sha512:
      return r.data.size() == 64;
  }
  return false;
}

std::vector<TlsaRecord> usable_records(const std::vector<TlsaRecord>& records) {
  std::vector<TlsaRecord> out;
  for (const auto& r : records)
    if (usable(r)) out.push_back(r);
  return out;
}

std::string to_string(const TlsaRecord& r) {
  std::string data;
  if (r.data.size() > 16) {
    const std::string_view d(r.data);
    data = hex(d.substr(0, 4)) + "…" + hex(d.substr(d.size() - 4));
  } else {
    data = hex(r.data);
  }
  return std::to_string(r.usage) + " " + std::to_string(r.selector) + " " +
         std::to_string(r.matching) + " " + (data.empty() ? "-" : data);
}

std::string tlsa_name(std::string_view host, std::uint16_t port) {
  std::string name = "_" + std::to_string(port) + "._tcp." + std::string(host);
  while (!name.empty() && name.back() == '.') name.pop_back();
  return name;
}

bool parse_record(std::string_view text, TlsaRecord& out, std::string* error) {
  auto fail = [&](std::string why) {
    if (error) *error = "TLSA record \"" + std::string(text) + "\": " + std::move(why);
    return false;
  };
  std::size_t pos = 0;
  auto skip_space = [&] {
    while (pos < text.size() && (text[pos] == ' ' || text[pos] == '\t')) ++pos;
  };
  std::uint8_t fields[3] = {};
  static const char* const kNames[3] = {"usage", "selector", "matching type"};
  for (int i = 0; i < 3; ++i) {
    skip_space();
    unsigned value = 0;
    std::size_t digits = 0;
    while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos]))) {
      value = value * 10 + static_cast<unsigned>(text[pos] - '0');
      ++pos;
      if (++digits > 3) break;
    }
    if (digits == 0 || digits > 3 || value > 255)
      return fail(std::string("the ") + kNames[i] + " is not a number from 0 to 255");
    fields[i] = static_cast<std::uint8_t>(value);
  }
  std::string data;
  int high = -1;
  for (; pos < text.size(); ++pos) {
    const char c = text[pos];
    if (c == ' ' || c == '\t') continue;
    const int v = hex_value(c);
    if (v < 0) return fail("the data is not hexadecimal");
    if (high < 0) {
      high = v;
    } else {
      data += static_cast<char>((high << 4) | v);
      high = -1;
    }
  }
  if (high >= 0) return fail("the data has an odd number of hex digits");
  if (data.empty()) return fail("no certificate association data");
  out = TlsaRecord{fields[0], fields[1], fields[2], std::move(data)};
  return true;
}

}  // namespace mailq::dane
