// Output of the crash writers: one write(2) per line, so that a SIGKILL never leaves half a
// line and nothing sits in a stdio buffer when the process dies.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <string>

namespace mailq_crash {

inline void say(const std::string& line) {
  std::string l = line + "\n";
  const char* p = l.data();
  std::size_t n = l.size();
  while (n > 0) {
    ssize_t w = ::write(1, p, n);
    if (w <= 0) std::_Exit(9);
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

}  // namespace mailq_crash
