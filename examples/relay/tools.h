// mailq-send / mailq-queue — what the tools share: finding the spool and the relay that may
// hold it.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "examples/relay/config.h"
#include "mailq/clock.h"
#include "mailq/error.h"
#include "mailq/spool/file_spool.h"

namespace mailq::relay {

/// Where a tool works: the relay's configuration (when `--config` was given), the spool
/// directory and the control socket of the relay that would hold it.
struct ToolTarget {
  std::optional<RelayConfig> config;
  std::string spool;
  std::string control;
};

/// The configuration the tools read when neither `--spool` nor `--config` is given and the
/// environment names none in MAILQ_CONFIG (a `sendmail` link is called without options).
inline constexpr const char* kSystemConfig = "/etc/mailq/mailq-relay.toml";

/// Resolves `--spool`, `--config` and `--control`: the spool from the option or else the
/// configuration (with neither: MAILQ_CONFIG's file, else `kSystemConfig` when it exists); the
/// socket from the option, else the configuration's `control` (when it is about the same spool),
/// else the path a running relay left in `<spool>/control.path`, else
/// `<spool>/control.sock`. Errors: the configuration's own
/// (`errc::invalid_parameter` / `errc::storage_failure`, "FILE:LINE: key: what"), or
/// `errc::bad_state` "--spool or --config is required ..." when nothing names a spool.
Result<ToolTarget> resolve_tool_target(const std::string& spool_option,
                                       const std::string& config_path,
                                       const std::string& control_option);

/// Opens the spool a tool works on, in the layout the directory holds (`spool::detect_layout`),
/// else the configuration's `spool_layout`, else segments (a new spool). `on_error` receives every
/// failure the spool meets, those with no caller to return to (a background sync) included.
Result<std::unique_ptr<spool::DurableStorage>> open_tool_spool(
    const ToolTarget& target, Clock& clock, std::function<void(const Error&)> on_error = {});

/// Checks a tool's command line before anything reads it: no argument may hold a CR, LF,
/// NUL or other control character (a horizontal tab aside). An argument is one value (an
/// address, a path, a queue id): a line break in it is never data, and passing it on would
/// let whoever wrote the value add recipients or requests (`r@t.test\r\nRCPT TO:<x@y>`).
/// Returns the complaint naming the argument (its position and its text with the controls
/// shown escaped), or nothing when every argument is clean.
std::optional<std::string> check_arguments(int argc, const char* const* argv);

/// `text` with CR, LF, NUL and the other controls written as \r, \n, \0, \xHH (for messages
/// quoting a hostile value).
std::string escape_controls(std::string_view text);

/// Did opening the spool fail because another process (a running relay) holds its lock?
bool spool_in_use(const Error& open_error);

}  // namespace mailq::relay
