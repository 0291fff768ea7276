// The body the spool crash writer stores for a message id, so that the test can check every
// recovered body byte for byte without the writer telling it more than the id.
#pragma once

#include <cstdint>
#include <string>

namespace mailq_crash {

inline std::string body_for(std::uint64_t id) {
  std::uint64_t x = id * 0x9E3779B97F4A7C15ull + 1;
  auto next = [&x] {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  };
  // Mostly small bodies, some larger than one read of the recovery scan (4 KiB).
  // Two statements: the order of two calls in one expression is unspecified.
  const bool large = next() % 4 == 0;
  const std::size_t size = 64 + next() % (large ? 60000 : 3000);
  std::string body = "Subject: crash test " + std::to_string(id) + "\r\n\r\n";
  while (body.size() < size) body.push_back(static_cast<char>(next() & 0xFF));
  body.resize(size);
  return body;
}

}  // namespace mailq_crash
