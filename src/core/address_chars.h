// The characters of addresses and envelope values: shared by the address parser
// (address.cpp) and the address-list parser (address_list.cpp). Internal.
#pragma once

#include <string>

namespace mailq::detail {

inline bool is_control(unsigned char c) {
  return c < 0x20 || c == 0x7f;
}

/// "a carriage return (CR)", "a NUL byte", "a control character (0x1B)"...: for messages.
std::string describe_control(unsigned char c);

}  // namespace mailq::detail
