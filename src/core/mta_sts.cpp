#include "mailq/mta_sts.h"

#include "core/text.h"

#include <algorithm>
#include <cctype>

namespace mailq::sts {

namespace {

Error invalid(std::string what) {
  return Error(errc::invalid_parameter, std::move(what));
}

bool wsp(char c) {
  return c == ' ' || c == '\t';
}

bool iequals(std::string_view a, std::string_view b) {
  return detail::to_lower(a) == detail::to_lower(b);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && wsp(s.front())) s.remove_prefix(1);
  while (!s.empty() && wsp(s.back())) s.remove_suffix(1);
  return s;
}

std::string without_dot(std::string_view s) {
  std::string out = detail::to_lower(s);
  if (!out.empty() && out.back() == '.') out.pop_back();
  return out;
}

}  // namespace

std::string_view to_string(Mode m) noexcept {
  switch (m) {
    case Mode::enforce:
      return "enforce";
    case Mode::testing:
      return "testing";
    case Mode::none:
      break;
  }
  return "none";
}

Result<Policy> parse_policy(std::string_view body) {
  if (body.size() > kMaxPolicySize) return invalid("the policy is larger than 64 KiB");
  Policy p;
  bool have_version = false, have_mode = false, have_max_age = false;
  std::size_t pos = 0;
  std::size_t line_no = 0;
  while (pos < body.size()) {
    std::size_t eol = body.find('\n', pos);
    std::string_view line =
        body.substr(pos, eol == std::string_view::npos ? std::string_view::npos : eol - pos);
    pos = eol == std::string_view::npos ? body.size() : eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (trim(line).empty()) continue;
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0)
      return invalid("line " + std::to_string(line_no) + " is not \"key: value\"");
    const std::string key = detail::to_lower(line.substr(0, colon));
    const std::string_view value = trim(line.substr(colon + 1));
    if (std::any_of(key.begin(), key.end(), [](char c) {
          return !(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.');
        }))
      return invalid("line " + std::to_string(line_no) + " has a malformed key");
    if (key == "version") {
      if (have_version) continue;  // the first one counts
      if (value != "STSv1") return invalid("version is \"" + std::string(value) + "\", not STSv1");
      have_version = true;
    } else if (key == "mode") {
      if (have_mode) continue;
      if (iequals(value, "enforce"))
        p.mode = Mode::enforce;
      else if (iequals(value, "testing"))
        p.mode = Mode::testing;
      else if (iequals(value, "none"))
        p.mode = Mode::none;
      else
        return invalid("mode \"" + std::string(value) + "\" is not enforce, testing or none");
      have_mode = true;
    } else if (key == "max_age") {
      if (have_max_age) continue;
      if (value.empty() || value.size() > 10 ||
          !std::all_of(value.begin(), value.end(),
                       [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
        return invalid("max_age \"" + std::string(value) + "\" is not 1 to 10 digits");
      const std::int64_t age = std::stoll(std::string(value));
      p.max_age = std::chrono::seconds(std::min(age, kMaxAgeLimit));
      have_max_age = true;
    } else if (key == "mx") {
      std::string pattern = without_dot(value);
      const std::string_view name =
          pattern.rfind("*.", 0) == 0 ? std::string_view(pattern).substr(2) : pattern;
      if (!detail::is_host_name(name))
        return invalid("mx \"" + std::string(value) + "\" is not a host name or *.domain");
      if (std::find(p.mx.begin(), p.mx.end(), pattern) == p.mx.end())
        p.mx.push_back(std::move(pattern));
    }
    // Other keys: extensions, ignored (RFC 8461 §3.2).
  }
  if (!have_version) return invalid("no version field");
  if (!have_mode) return invalid("no mode field");
  if (!have_max_age) return invalid("no max_age field");
  if (p.mode != Mode::none && p.mx.empty()) return invalid("no mx field");
  return p;
}

Result<std::string> parse_txt_record(std::string_view text) {
  // Fields separated by ';', white space around them allowed; v first.
  std::vector<std::string_view> fields;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    std::size_t semi = text.find(';', pos);
    std::string_view f = trim(
        text.substr(pos, semi == std::string_view::npos ? std::string_view::npos : semi - pos));
    if (!f.empty()) fields.push_back(f);
    if (semi == std::string_view::npos) break;
    pos = semi + 1;
  }
  if (fields.empty() || fields[0] != "v=STSv1")
    return invalid("not an STSv1 record (v=STSv1 first)");
  for (std::size_t i = 1; i < fields.size(); ++i) {
    const std::size_t eq = fields[i].find('=');
    if (eq == std::string_view::npos)
      return invalid("field \"" + std::string(fields[i]) + "\" has no '='");
    if (trim(fields[i].substr(0, eq)) != "id") continue;
    const std::string_view id = trim(fields[i].substr(eq + 1));
    if (id.empty() || id.size() > 32 || !std::all_of(id.begin(), id.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c));
        }))
      return invalid("id \"" + std::string(id) + "\" is not 1 to 32 letters and digits");
    return std::string(id);
  }
  return invalid("the record has no id");
}

Result<std::string> policy_id(const std::vector<std::string>& txt_records) {
  std::vector<const std::string*> sts;
  for (const auto& r : txt_records) {
    const std::string_view t = trim(r);
    // "v=STSv1" then the end, ';' or white space: "v=STSv12" is another version.
    if (t.rfind("v=STSv1", 0) == 0 && (t.size() == 7 || t[7] == ';' || wsp(t[7])))
      sts.push_back(&r);
  }
  if (sts.empty()) return Error(errc::not_found, "no v=STSv1 record");
  if (sts.size() > 1)
    return Error(errc::not_found,
                 std::to_string(sts.size()) + " v=STSv1 records (RFC 8461 §3.1: no policy)");
  return parse_txt_record(*sts[0]);
}

bool mx_matches(std::string_view pattern, std::string_view host) {
  const std::string h = without_dot(host);
  const std::string p = without_dot(pattern);
  if (p.rfind("*.", 0) != 0) return h == p;
  const std::string_view suffix = std::string_view(p).substr(1);  // ".example.com"
  if (h.size() <= suffix.size() || h.compare(h.size() - suffix.size(), suffix.size(), suffix) != 0)
    return false;
  const std::string_view label = std::string_view(h).substr(0, h.size() - suffix.size());
  return !label.empty() && label.find('.') == std::string_view::npos;
}

bool mx_allowed(const Policy& policy, std::string_view host) {
  return std::any_of(policy.mx.begin(), policy.mx.end(),
                     [&](const std::string& p) { return mx_matches(p, host); });
}

}  // namespace mailq::sts
