// 8-bit to 7-bit conversion (see downgrade.h).
#include "core/smtp/downgrade.h"

#include <fmt/format.h>

#include <optional>
#include <vector>

#include "core/text.h"

namespace mailq::detail {

namespace {

constexpr int kMaxDepth = 20;  // nested multiparts / messages followed

bool is_wsp(char c) {
  return c == ' ' || c == '\t';
}

std::string normalise_crlf(std::string_view in) {
  std::string out;
  out.reserve(in.size() + in.size() / 32);
  for (std::size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c == '\r') {
      out += "\r\n";
      if (i + 1 < in.size() && in[i + 1] == '\n') ++i;
    } else if (c == '\n') {
      out += "\r\n";
    } else {
      out += c;
    }
  }
  return out;
}

// One MIME entity: its header section (each field ending in CRLF, the empty line excluded)
// and its body.
struct Entity {
  std::string headers;
  std::string_view body;
  bool separated = false;  // an empty line ends the header section
};

bool is_field_line(std::string_view line) {
  const std::size_t colon = line.find(':');
  if (colon == std::string_view::npos || colon == 0) return false;
  std::string_view name = line.substr(0, colon);
  while (!name.empty() && is_wsp(name.back())) name.remove_suffix(1);
  if (name.empty()) return false;
  for (char c : name)
    if (static_cast<unsigned char>(c) <= 32 || static_cast<unsigned char>(c) >= 127) return false;
  return true;
}

// The header section runs to the empty line; a line that is neither a field nor a
// continuation starts the body early (a message written without its empty line).
Entity split_entity(std::string_view text) {
  Entity e;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t eol = text.find("\r\n", pos);
    const std::size_t next = eol == std::string_view::npos ? text.size() : eol + 2;
    if (eol == std::string_view::npos) eol = text.size();
    const std::string_view line = text.substr(pos, eol - pos);
    if (line.empty()) {
      e.separated = true;
      e.body = text.substr(next);
      return e;
    }
    const bool continuation = is_wsp(line[0]) && !e.headers.empty();
    if (!continuation && !is_field_line(line)) break;
    e.headers += line;
    e.headers += "\r\n";
    pos = next;
  }
  e.body = text.substr(std::min(pos, text.size()));
  return e;
}

// The unfolded value of the first field `name`, nothing when there is none.
std::optional<std::string> field(std::string_view headers, std::string_view name) {
  bool found = false;
  for_each_header_line(headers, [&](std::string_view line, std::size_t) {
    found = line.size() > name.size() && line[name.size()] == ':' &&
            to_lower(line.substr(0, name.size())) == to_lower(name);
    return !found;
  });
  if (!found) return std::nullopt;
  return header_value(headers, name);
}

// The header section without the fields named `name`.
std::string without_field(std::string_view headers, std::string_view name) {
  std::string out;
  bool dropping = false;
  std::size_t pos = 0;
  while (pos < headers.size()) {
    std::size_t eol = headers.find("\r\n", pos);
    eol = eol == std::string_view::npos ? headers.size() : eol + 2;
    const std::string_view line = headers.substr(pos, eol - pos);
    if (!line.empty() && is_wsp(line[0])) {
      if (!dropping) out += line;
    } else {
      const std::size_t colon = line.find(':');
      std::string_view fname = line.substr(0, colon == std::string_view::npos ? 0 : colon);
      while (!fname.empty() && is_wsp(fname.back())) fname.remove_suffix(1);
      dropping = to_lower(fname) == to_lower(name);
      if (!dropping) out += line;
    }
    pos = eol;
  }
  return out;
}

struct ContentType {
  std::string type;  // "text/plain", lowercased
  std::string boundary;
};

ContentType parse_content_type(std::string_view value, std::string_view fallback) {
  ContentType ct;
  std::size_t i = 0;
  while (i < value.size() && is_wsp(value[i])) ++i;
  std::size_t j = i;
  while (j < value.size() && value[j] != ';' && !is_wsp(value[j]) && value[j] != '(') ++j;
  ct.type = to_lower(value.substr(i, j - i));
  if (ct.type.find('/') == std::string::npos) ct.type = std::string(fallback);
  // Parameters: name=token or name="quoted".
  while (j < value.size()) {
    const std::size_t semi = value.find(';', j);
    if (semi == std::string_view::npos) break;
    std::size_t k = semi + 1;
    while (k < value.size() && is_wsp(value[k])) ++k;
    const std::size_t eq = value.find('=', k);
    if (eq == std::string_view::npos) break;
    if (const std::size_t next = value.find(';', k); next < eq) {
      j = next;  // a parameter without a value: the next one
      continue;
    }
    std::string_view pname = value.substr(k, eq - k);
    while (!pname.empty() && is_wsp(pname.back())) pname.remove_suffix(1);
    std::size_t v = eq + 1;
    while (v < value.size() && is_wsp(value[v])) ++v;
    std::string pvalue;
    if (v < value.size() && value[v] == '"') {
      ++v;
      while (v < value.size() && value[v] != '"') {
        if (value[v] == '\\' && v + 1 < value.size()) ++v;
        pvalue += value[v++];
      }
      if (v < value.size()) ++v;
    } else {
      while (v < value.size() && value[v] != ';' && !is_wsp(value[v])) pvalue += value[v++];
    }
    if (to_lower(pname) == "boundary") ct.boundary = pvalue;
    j = v;
  }
  return ct;
}

// Octets above 127 of text no reader shows (a multipart preamble or epilogue) become '?'.
std::string seven_bit_only(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (static_cast<unsigned char>(c) >= 0x80) c = '?';
  return out;
}

Result<std::string> convert(std::string_view text, std::string_view default_type, int depth,
                            bool top);

// A multipart body, part by part. `subtype_default` is the default type of its parts.
Result<std::string> convert_multipart(std::string_view body, const std::string& boundary,
                                      std::string_view part_default, int depth) {
  const std::string dash = "--" + boundary;
  // The delimiter lines: "--boundary" (then white space only) or "--boundary--".
  struct Delim {
    std::size_t start, end;  // of the line, CRLF excluded
    bool close;
  };
  std::vector<Delim> delims;
  std::size_t pos = 0;
  while (pos <= body.size()) {
    std::size_t eol = body.find("\r\n", pos);
    if (eol == std::string_view::npos) eol = body.size();
    const std::string_view line = body.substr(pos, eol - pos);
    if (line.substr(0, dash.size()) == dash) {
      std::string_view rest = line.substr(dash.size());
      const bool close = rest.substr(0, 2) == "--";
      if (close) rest.remove_prefix(2);
      bool only_wsp = true;
      for (char c : rest)
        if (!is_wsp(c)) only_wsp = false;
      if (only_wsp) {
        delims.push_back({pos, eol, close});
        if (close) break;
      }
    }
    if (eol == body.size()) break;
    pos = eol + 2;
  }
  if (delims.empty()) {
    if (has_8bit(body))
      return Error(errc::invalid_parameter,
                   "a multipart body with 8-bit octets has no line with its boundary");
    return std::string(body);
  }
  std::string out;
  // The preamble: what comes before the first delimiter (its CRLF belongs to the delimiter).
  const std::size_t first = delims[0].start;
  out += seven_bit_only(body.substr(0, first));
  for (std::size_t i = 0; i < delims.size(); ++i) {
    const Delim& d = delims[i];
    out += body.substr(d.start, d.end - d.start);
    if (d.close) {
      // The epilogue, after the close delimiter's line.
      out += seven_bit_only(body.substr(d.end));
      return out;
    }
    out += "\r\n";
    const std::size_t part_start = std::min(d.end + 2, body.size());
    // The part ends at the CRLF before the next delimiter, or with the body.
    std::size_t part_end = body.size();
    if (i + 1 < delims.size()) part_end = delims[i + 1].start >= 2 ? delims[i + 1].start - 2 : 0;
    if (part_end < part_start) part_end = part_start;
    auto part =
        convert(body.substr(part_start, part_end - part_start), part_default, depth + 1, false);
    if (!part) return part.error();
    out += part.value();
    if (i + 1 < delims.size()) out += "\r\n";
  }
  return out;  // no close delimiter: the last part ran to the end
}

std::string with_encoding(const std::string& headers, std::string_view cte) {
  return without_field(headers, "Content-Transfer-Encoding") +
         fmt::format("Content-Transfer-Encoding: {}\r\n", cte);
}

Result<std::string> convert(std::string_view text, std::string_view default_type, int depth,
                            bool top) {
  if (depth > kMaxDepth)
    return Error(errc::invalid_parameter,
                 fmt::format("MIME entities nested deeper than {} levels", kMaxDepth));
  Entity e = split_entity(text);
  if (has_8bit(e.headers))
    return Error(errc::invalid_parameter, "a header field holds 8-bit octets");
  const std::optional<std::string> type = field(e.headers, "Content-Type");
  const bool has_type = type.has_value();
  const ContentType ct = parse_content_type(type.value_or(""), default_type);
  const std::string cte = to_lower(field(e.headers, "Content-Transfer-Encoding").value_or(""));
  const bool eight_bit_label = cte == "8bit" || cte == "binary";
  auto assemble = [&](const std::string& headers, std::string_view body) {
    std::string out = headers;
    if (e.separated || !body.empty()) out += "\r\n";
    out += body;
    return out;
  };

  if (ct.type.rfind("multipart/", 0) == 0 && !ct.boundary.empty()) {
    auto body =
        convert_multipart(e.body, ct.boundary,
                          ct.type == "multipart/digest" ? "message/rfc822" : "text/plain", depth);
    if (!body) return body.error();
    return assemble(eight_bit_label ? with_encoding(e.headers, "7bit") : e.headers, *body);
  }
  if (ct.type == "message/rfc822") {
    auto inner = convert(e.body, "text/plain", depth + 1, true);  // a message of its own
    if (!inner) return inner.error();
    return assemble(eight_bit_label ? with_encoding(e.headers, "7bit") : e.headers, *inner);
  }
  if (!has_8bit(e.body)) {
    // Labelled 8bit but 7-bit throughout: the label is all there is to change.
    return assemble(eight_bit_label ? with_encoding(e.headers, "7bit") : e.headers, e.body);
  }
  if (ct.type.rfind("message/", 0) == 0 || ct.type.rfind("multipart/", 0) == 0)
    return Error(errc::invalid_parameter,
                 "a " + ct.type + " entity holds 8-bit octets (it cannot be re-encoded)");
  if (cte == "quoted-printable" || cte == "base64")
    return Error(errc::invalid_parameter,
                 "a " + cte + " body holds 8-bit octets (it is not what it says)");
  std::string headers = e.headers;
  if (top && !has_type) {
    // Not MIME: a text whose charset nobody declared (RFC 1428).
    headers = without_field(headers, "MIME-Version") +
              "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=unknown-8bit\r\n";
  }
  if (ct.type.rfind("text/", 0) == 0)
    return assemble(with_encoding(headers, "quoted-printable"), quoted_printable(e.body));
  return assemble(with_encoding(headers, "base64"), base64_lines(e.body));
}

}  // namespace

std::string quoted_printable(std::string_view data) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(data.size() * 11 / 10 + 16);
  std::size_t pos = 0;
  while (pos < data.size()) {
    std::size_t eol = data.find("\r\n", pos);
    const bool hard = eol != std::string_view::npos;
    if (!hard) eol = data.size();
    const std::string_view line = data.substr(pos, eol - pos);
    std::size_t width = 0;
    for (std::size_t i = 0; i < line.size(); ++i) {
      const auto c = static_cast<unsigned char>(line[i]);
      const bool last = i + 1 == line.size();
      char buf[3];
      std::string_view token;
      if ((c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && !last)) {
        buf[0] = static_cast<char>(c);
        token = std::string_view(buf, 1);
      } else {
        buf[0] = '=';
        buf[1] = kHex[c >> 4];
        buf[2] = kHex[c & 15];
        token = std::string_view(buf, 3);
      }
      // At most 76 characters a line, the soft break's '=' included.
      if (width + token.size() > (last ? 76 : 75)) {
        out += "=\r\n";
        width = 0;
      }
      out += token;
      width += token.size();
    }
    if (hard) out += "\r\n";
    pos = hard ? eol + 2 : eol;
  }
  return out;
}

std::string base64_lines(std::string_view data) {
  static constexpr char k64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve(data.size() * 4 / 3 + data.size() / 57 * 2 + 8);
  std::size_t width = 0;
  for (std::size_t i = 0; i < data.size(); i += 3) {
    std::uint32_t v = static_cast<unsigned char>(data[i]) << 16;
    if (i + 1 < data.size()) v |= static_cast<unsigned char>(data[i + 1]) << 8;
    if (i + 2 < data.size()) v |= static_cast<unsigned char>(data[i + 2]);
    out += k64[(v >> 18) & 63];
    out += k64[(v >> 12) & 63];
    out += i + 1 < data.size() ? k64[(v >> 6) & 63] : '=';
    out += i + 2 < data.size() ? k64[v & 63] : '=';
    width += 4;
    if (width == 76) {
      out += "\r\n";
      width = 0;
    }
  }
  if (width) out += "\r\n";
  return out;
}

Result<std::string> downgrade_to_7bit(std::string_view message) {
  const std::string text = normalise_crlf(message);
  return convert(text, "text/plain", 0, true);
}

}  // namespace mailq::detail
