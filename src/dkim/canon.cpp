#include "dkim/canon.h"

#include <mbedtls/base64.h>
#include <mbedtls/sha256.h>

#include <algorithm>
#include <cctype>

namespace mailq::dkim::detail {

namespace {

bool wsp(char c) noexcept {
  return c == ' ' || c == '\t';
}

char lower(char c) noexcept {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c;
}

// Appends `line` (no line end) in relaxed body form: runs of WSP as one SP, none at the end.
void relaxed_line(std::string_view line, std::string& out) {
  std::size_t end = line.size();
  while (end > 0 && wsp(line[end - 1])) --end;
  bool in_wsp = false;
  for (std::size_t i = 0; i < end; ++i) {
    if (wsp(line[i])) {
      in_wsp = true;
      continue;
    }
    if (in_wsp) out += ' ';
    in_wsp = false;
    out += line[i];
  }
}

// Walks the body's lines (CRLF-separated; a last line without CRLF counts as a line) in
// canonical form, calling `emit` with text to hash; trailing empty lines are held back and
// dropped at the end.
template <class Emit>
void walk_body(std::string_view body, Canonicalization c, Emit&& emit) {
  std::size_t held = 0;  // empty lines not yet emitted
  bool any = false;
  std::string scratch;
  std::size_t pos = 0;
  while (pos < body.size()) {
    std::size_t eol = body.find("\r\n", pos);
    std::string_view line =
        body.substr(pos, eol == std::string_view::npos ? std::string_view::npos : eol - pos);
    pos = eol == std::string_view::npos ? body.size() : eol + 2;
    std::string_view canon = line;
    if (c == Canonicalization::relaxed) {
      scratch.clear();
      relaxed_line(line, scratch);
      canon = scratch;
    }
    if (canon.empty()) {
      ++held;
      continue;
    }
    for (; held > 0; --held) emit(std::string_view("\r\n"));
    emit(canon);
    emit(std::string_view("\r\n"));
    any = true;
  }
  // Simple: an empty body is one CRLF. Relaxed: it stays empty (RFC 6376 errata 1384).
  if (!any && c == Canonicalization::simple) emit(std::string_view("\r\n"));
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

ParsedMessage parse_message(std::string_view message) {
  ParsedMessage m;
  std::size_t pos = 0;
  while (pos < message.size()) {
    std::size_t eol = message.find("\r\n", pos);
    std::size_t next = eol == std::string_view::npos ? message.size() : eol + 2;
    if (eol == pos) {  // the empty line: the body follows
      m.body = message.substr(next);
      return m;
    }
    if (wsp(message[pos]) && !m.fields.empty()) {
      auto& f = m.fields.back();
      f.raw = std::string_view(f.raw.data(), f.raw.size() + (next - pos));
    } else {
      std::string_view line = message.substr(pos, next - pos);
      std::string_view name;
      std::size_t colon = line.find(':');
      if (colon != std::string_view::npos && !wsp(line[0])) {
        name = line.substr(0, colon);
        while (!name.empty() && wsp(name.back())) name.remove_suffix(1);
      }
      m.fields.push_back({name, line});
    }
    pos = next;
  }
  return m;
}

std::string canonical_header(const HeaderField& field, Canonicalization c) {
  if (c == Canonicalization::simple) {
    std::string out(field.raw);
    if (out.size() < 2 || out.compare(out.size() - 2, 2, "\r\n") != 0) out += "\r\n";
    return out;
  }
  std::string out;
  out.reserve(field.raw.size());
  for (char ch : field.name) out += lower(ch);
  out += ':';
  std::size_t colon = field.raw.find(':');
  std::string_view value =
      colon == std::string_view::npos ? std::string_view() : field.raw.substr(colon + 1);
  // Unfold (drop CR and LF), runs of WSP as one SP, none at either end of the value.
  bool in_wsp = false;
  bool started = false;
  for (char ch : value) {
    if (ch == '\r' || ch == '\n') continue;
    if (wsp(ch)) {
      in_wsp = true;
      continue;
    }
    if (in_wsp && started) out += ' ';
    in_wsp = false;
    started = true;
    out += ch;
  }
  out += "\r\n";
  return out;
}

std::string canonical_body(std::string_view body, Canonicalization c) {
  std::string out;
  walk_body(body, c, [&](std::string_view s) { out += s; });
  return out;
}

Digest body_hash(std::string_view body, Canonicalization c) {
  mbedtls_sha256_context ctx;
  mbedtls_sha256_init(&ctx);
  mbedtls_sha256_starts_ret(&ctx, 0);
  walk_body(body, c, [&](std::string_view s) {
    mbedtls_sha256_update_ret(&ctx, reinterpret_cast<const unsigned char*>(s.data()), s.size());
  });
  Digest d{};
  mbedtls_sha256_finish_ret(&ctx, d.data());
  mbedtls_sha256_free(&ctx);
  return d;
}

std::vector<std::string> signed_names(const ParsedMessage& message,
                                      const std::vector<std::string>& sign,
                                      const std::vector<std::string>& oversign) {
  std::vector<std::string> names;
  for (const auto& want : sign) {
    std::size_t count = 0;
    for (const auto& f : message.fields)
      if (iequals(f.name, want)) ++count;
    if (count == 0) continue;
    const bool over = std::any_of(oversign.begin(), oversign.end(),
                                  [&](const std::string& o) { return iequals(o, want); });
    std::string lowered;
    for (char ch : want) lowered += lower(ch);
    for (std::size_t i = 0; i < count + (over ? 1 : 0); ++i) names.push_back(lowered);
  }
  return names;
}

std::string signed_data(const ParsedMessage& message, const std::vector<std::string>& names,
                        std::string_view signature_field, Canonicalization c) {
  std::string out;
  // Instances of each name already used, counted from the bottom.
  std::vector<std::pair<std::string_view, std::size_t>> used;
  for (const auto& name : names) {
    auto it = std::find_if(used.begin(), used.end(),
                           [&](const auto& u) { return iequals(u.first, name); });
    if (it == used.end()) it = used.insert(used.end(), {name, 0});
    std::size_t skip = it->second++;
    for (auto f = message.fields.rbegin(); f != message.fields.rend(); ++f) {
      if (!iequals(f->name, name)) continue;
      if (skip-- == 0) {
        out += canonical_header(*f, c);
        break;
      }
    }
  }
  std::string_view sig_name = signature_field.substr(0, signature_field.find(':'));
  std::string sig = canonical_header({sig_name, signature_field}, c);
  sig.resize(sig.size() - 2);  // no CRLF after the signature field itself
  out += sig;
  return out;
}

Digest sha256(std::string_view data) {
  Digest d{};
  mbedtls_sha256_ret(reinterpret_cast<const unsigned char*>(data.data()), data.size(), d.data(), 0);
  return d;
}

std::string base64(const unsigned char* data, std::size_t size) {
  std::size_t need = 0;
  mbedtls_base64_encode(nullptr, 0, &need, data, size);
  std::string out(need, '\0');
  std::size_t written = 0;
  mbedtls_base64_encode(reinterpret_cast<unsigned char*>(out.data()), out.size(), &written, data,
                        size);
  out.resize(written);
  return out;
}

std::vector<unsigned char> base64_decode(std::string_view text) {
  std::string compact;
  for (char ch : text)
    if (!std::isspace(static_cast<unsigned char>(ch))) compact += ch;
  std::size_t need = 0;
  const auto* in = reinterpret_cast<const unsigned char*>(compact.data());
  if (mbedtls_base64_decode(nullptr, 0, &need, in, compact.size()) ==
      MBEDTLS_ERR_BASE64_INVALID_CHARACTER)
    return {};
  std::vector<unsigned char> out(need);
  std::size_t written = 0;
  if (mbedtls_base64_decode(out.data(), out.size(), &written, in, compact.size()) != 0) return {};
  out.resize(written);
  return out;
}

}  // namespace mailq::dkim::detail
