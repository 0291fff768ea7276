// Opening a spool directory by layout, and telling which layout a directory holds.
#include <fcntl.h>
#include <sys/stat.h>

#include <memory>
#include <string>

#include "mailq/spool/file_spool.h"
#include "mailq/spool/layout.h"
#include "spool/file_io.h"

namespace mailq {
namespace spool {

const char* to_string(Layout layout) noexcept {
  switch (layout) {
    case Layout::files:
      return "files";
    case Layout::segments:
      return "segments";
  }
  return "files";
}

std::optional<Layout> parse_layout(std::string_view text) noexcept {
  if (text == "files") return Layout::files;
  if (text == "segments") return Layout::segments;
  return std::nullopt;
}

std::optional<Layout> detect_layout(const std::string& directory) {
  // Segment files decide first, then message files under queue/, then whichever directory
  // of the two exists (a spool opened but never written to).
  detail::Fd dir(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() < 0) return std::nullopt;
  bool found = false;
  if (detail::has_segment_files(dir.get(), &found) == 0 && found) return Layout::segments;
  if (detail::has_queue_files(dir.get(), &found) == 0 && found) return Layout::files;
  struct stat st {};
  if (::fstatat(dir.get(), "queue", &st, 0) == 0 && S_ISDIR(st.st_mode)) return Layout::files;
  if (::fstatat(dir.get(), "segments", &st, 0) == 0 && S_ISDIR(st.st_mode)) return Layout::segments;
  return std::nullopt;
}

Layout choose_layout(const std::string& directory, std::optional<Layout> configured) {
  if (configured) return *configured;
  return detect_layout(directory).value_or(kDefaultLayout);
}

Result<std::unique_ptr<DurableStorage>> open_spool(const std::string& directory, Clock& clock,
                                                   Layout layout, const SpoolOptions& files,
                                                   const SegmentOptions& segments) {
  std::unique_ptr<DurableStorage> s;
  if (layout == Layout::segments)
    s = std::make_unique<SegmentStorage>(directory, clock, segments);
  else
    s = std::make_unique<SpoolStorage>(directory, clock, files);
  if (s->open_error().code) return s->open_error();
  return s;
}

}  // namespace spool
}  // namespace mailq
