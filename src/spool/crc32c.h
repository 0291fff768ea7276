// CRC-32C (Castagnoli), the checksum of every spool record.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace mailq {
namespace spool {
namespace detail {

/// Continues a CRC-32C over `n` bytes: start with `crc = 0`, feed the previous result to
/// checksum data in pieces. Uses the SSE4.2 instruction when the CPU has it.
std::uint32_t crc32c(std::uint32_t crc, const void* data, std::size_t n) noexcept;

inline std::uint32_t crc32c(std::string_view s) noexcept {
  return crc32c(0, s.data(), s.size());
}

}  // namespace detail
}  // namespace spool
}  // namespace mailq
