// mailq — the time types every part of the API shares.
#pragma once

#include <chrono>
#include <cstdint>

namespace mailq {

/// Wall-clock time: what log lines, DSNs and the spool record.
using TimePoint = std::chrono::system_clock::time_point;
/// Durations are milliseconds throughout the API.
using Duration = std::chrono::milliseconds;

using TimerId = std::uint64_t;
inline constexpr TimerId kNoTimer = 0;

}  // namespace mailq
