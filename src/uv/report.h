// Reporting of failures that have no caller to return to (exceptions from host callbacks).
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

#include "mailq/uv/loop_clock.h"
#include "mailq/uv/transport.h"

namespace mailq {
namespace uv {
namespace detail {

// Never throws: a throwing error handler is reported to stderr instead.
inline void report(const ErrorHandler& handler, std::string_view message) noexcept {
  if (handler) {
    try {
      handler(message);
      return;
    } catch (...) {
    }
  }
  std::fprintf(stderr, "%.*s\n", static_cast<int>(message.size()), message.data());
}

}  // namespace detail
}  // namespace uv
}  // namespace mailq
