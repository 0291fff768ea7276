#include "examples/relay/tools.h"

#include "mailq/segment_spool.h"
#include "mailq/spool.h"

namespace mailq::relay {

Result<ToolTarget> resolve_tool_target(const std::string& spool_option,
                                       const std::string& config_path,
                                       const std::string& control_option) {
  ToolTarget t;
  if (!config_path.empty()) {
    auto c = load_config(config_path);
    if (!c) return c.error();
    t.config = std::move(c.value());
  }
  t.spool = !spool_option.empty() ? spool_option : (t.config ? t.config->spool : "");
  if (t.spool.empty()) return Error(errc::bad_state, "--spool is required");
  t.control = control_option;
  if (t.control.empty())
    t.control = t.config && t.config->spool == t.spool && !t.config->control.empty()
                    ? t.config->control
                    : t.spool + "/control.sock";
  return t;
}

Result<std::unique_ptr<spool::DurableStorage>> open_tool_spool(const ToolTarget& target,
                                                               Clock& clock) {
  // What the directory holds is the truth; the configuration decides for a new spool.
  const spool::Layout layout =
      spool::detect_layout(target.spool)
          .value_or(target.config ? target.config->spool_layout : spool::Layout::files);
  return spool::open_spool(target.spool, clock, layout);
}

bool spool_in_use(const Error& open_error) {
  return open_error.message.find(spool::kSpoolInUse) != std::string::npos;
}

}  // namespace mailq::relay
