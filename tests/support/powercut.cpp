#include "support/powercut.h"

#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <thread>

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace mailq {
namespace test {

PowerCutMount::PowerCutMount() {
#ifdef MAILQ_POWERCUT_FS
  const std::string program = MAILQ_POWERCUT_FS;
#else
  const std::string program;
  FAIL("the power-cut file system was not built: libfuse3-dev is missing (scripts/deps.sh)");
#endif
  if (!fs::exists("/dev/fuse")) FAIL("no /dev/fuse: the power-cut file system cannot mount");
  mount_ = dir_.file("mnt");
  fs::create_directories(mount_);
  std::string error;
  const bool started = process_.start({program, mount_}, dir_.file("powercut.out"), &error);
  INFO(error);
  REQUIRE(started);
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!fs::exists(mount_ + "/.powercut")) {
    INFO(read_file(dir_.file("powercut.out")));
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::sleep_for(20ms);
  }
}

PowerCutMount::~PowerCutMount() {
  process_.stop();  // SIGTERM: fuse_main unmounts
  run_program({"fusermount3", "-u", "-q", mount_});
}

void PowerCutMount::command(const std::string& text) {
  const int fd = ::open((mount_ + "/.powercut").c_str(), O_WRONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  REQUIRE(written);
}

void PowerCutMount::cut() {
  command("cut");
}

void PowerCutMount::set_capacity(std::uint64_t bytes) {
  command("capacity " + std::to_string(bytes));
}

std::string PowerCutMount::stats() const {
  std::string s = read_file(mount_ + "/.powercut");
  if (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

}  // namespace test
}  // namespace mailq
