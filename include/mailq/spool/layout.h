// mailq — spool layouts: which durable spool a directory holds, and opening it
// (CMake target `mailq::spool`).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "mailq/clock.h"
#include "mailq/error.h"
#include "mailq/spool/durable_storage.h"
#include "mailq/spool/file_spool.h"
#include "mailq/spool/segment_spool.h"

namespace mailq {
namespace spool {

/// How a spool directory keeps its messages.
enum class Layout : std::uint8_t {
  files,     ///< `SpoolStorage` (file_spool.h): a file per message, queue/<channel>/ZZ<id>.00
  segments,  ///< `SegmentStorage` (segment_spool.h): append-only segment files, for throughput
};
/// The layout of a new spool when nothing asks for one: segments (the file spool's fsync and
/// directory update per message cap its throughput; docs/spool-format.md, bench/README.md).
inline constexpr Layout kDefaultLayout = Layout::segments;
const char* to_string(Layout layout) noexcept;
/// "files" or "segments"; nullopt for anything else.
std::optional<Layout> parse_layout(std::string_view text) noexcept;
/// The layout of an existing spool directory: `segments` when segments/ holds a segment file,
/// `files` when queue/ exists; nullopt for a missing or new directory.
std::optional<Layout> detect_layout(const std::string& directory);
/// The layout to open `directory` with: `configured` when given (a directory holding the other
/// layout then fails to open), else the layout the directory holds, else `kDefaultLayout`. An
/// existing spool keeps its layout when the default changes.
Layout choose_layout(const std::string& directory, std::optional<Layout> configured);
/// Opens the spool of the given layout and returns it, or its open error (a lock held by
/// another process, a directory holding the other layout, permissions, ...).
Result<std::unique_ptr<DurableStorage>> open_spool(const std::string& directory, Clock& clock,
                                                   Layout layout, const SpoolOptions& files = {},
                                                   const SegmentOptions& segments = {});

}  // namespace spool
}  // namespace mailq
