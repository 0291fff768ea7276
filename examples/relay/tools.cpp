#include "examples/relay/tools.h"

#include <unistd.h>
#include <algorithm>

#include <cstdio>
#include <cstdlib>

#include "mailq/spool/file_spool.h"
#include "mailq/spool/layout.h"

namespace mailq::relay {

namespace {

bool is_forbidden_control(unsigned char c) {
  return (c < 0x20 && c != '\t') || c == 0x7f;
}

}  // namespace

std::string escape_controls(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\0') {
      out += "\\0";
    } else if (is_forbidden_control(u)) {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += c;
    }
  }
  return out;
}

std::optional<std::string> check_arguments(int argc, const char* const* argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    for (char c : a) {
      const auto u = static_cast<unsigned char>(c);
      if (!is_forbidden_control(u)) continue;
      const char* what = c == '\r' || c == '\n' ? "a line break (CR or LF)" : "a control character";
      return "argument " + std::to_string(i) + " (\"" + escape_controls(a) + "\") contains " +
             what + ", which no address, path or option value may hold: refused, nothing was done";
    }
  }
  return std::nullopt;
}

Result<ToolTarget> resolve_tool_target(const std::string& spool_option,
                                       const std::string& config_path,
                                       const std::string& control_option) {
  ToolTarget t;
  std::string config_file = config_path;
  if (config_file.empty() && spool_option.empty()) {
    // A host's `sendmail` link is called with no option naming the spool: the configuration
    // the environment names, else the system's.
    if (const char* env = std::getenv("MAILQ_CONFIG"); env && *env)
      config_file = env;
    else if (::access(kSystemConfig, F_OK) == 0)
      config_file = kSystemConfig;
  }
  if (!config_file.empty()) {
    auto c = load_config(config_file);
    if (!c) return c.error();
    t.config = std::move(c.value());
  }
  t.spool = !spool_option.empty() ? spool_option : (t.config ? t.config->spool : "");
  if (t.spool.empty())
    return Error(
        errc::bad_state,
        std::string("--spool or --config is required (or MAILQ_CONFIG, or ") + kSystemConfig + ")");
  t.control = control_option;
  if (t.control.empty() && t.config && t.config->spool == t.spool && !t.config->control.empty())
    t.control = t.config->control;
  if (t.control.empty()) {
    // A relay whose configuration moved the socket says where, in the spool.
    t.control = t.spool + "/control.sock";
    if (FILE* f = std::fopen((t.spool + "/" + kControlPathFile).c_str(), "r")) {
      char line[4096];
      if (std::fgets(line, sizeof line, f)) {
        std::string path(line);
        while (!path.empty() && (path.back() == '\n' || path.back() == '\r')) path.pop_back();
        const bool sane = !path.empty() && path[0] == '/' &&
                          std::none_of(path.begin(), path.end(),
                                       [](char c) { return static_cast<unsigned char>(c) < 0x20; });
        if (sane) t.control = path;
      }
      std::fclose(f);
    }
  }
  return t;
}

Result<std::unique_ptr<spool::DurableStorage>> open_tool_spool(
    const ToolTarget& target, Clock& clock, std::function<void(const Error&)> on_error) {
  // What the directory holds is the truth; the configuration decides for a new spool.
  std::optional<spool::Layout> configured;
  if (target.config) configured = target.config->spool_layout;
  const spool::Layout layout =
      spool::detect_layout(target.spool).value_or(configured.value_or(spool::kDefaultLayout));
  spool::SpoolOptions files;
  files.on_error = on_error;
  spool::SegmentOptions segments;
  segments.on_error = std::move(on_error);
  return spool::open_spool(target.spool, clock, layout, files, segments);
}

bool spool_in_use(const Error& open_error) {
  return open_error.code == errc::in_use;
}

}  // namespace mailq::relay
