#include "support/daemon.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

namespace mailq::test {

using namespace std::chrono_literals;

Daemon::~Daemon() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  if (wait(10s) < 0) {
    ::kill(pid_, SIGKILL);
    wait(10s);
  }
}

bool Daemon::start(const std::vector<std::string>& argv, const std::string& output_file,
                   std::string* error) {
  if (pid_ > 0) {
    if (error) *error = "already running";
    return false;
  }
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const int out = ::open(output_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out < 0) {
    if (error) *error = "cannot open " + output_file + ": " + std::strerror(errno);
    return false;
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    if (error) *error = std::string("fork: ") + std::strerror(errno);
    ::close(out);
    return false;
  }
  if (pid == 0) {
    // Only async-signal-safe calls until exec.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::dup2(out, 1);
    ::dup2(out, 2);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(out);
  pid_ = pid;
  status_ = -1;
  return true;
}

bool Daemon::signal(int signum) {
  return pid_ > 0 && ::kill(pid_, signum) == 0;
}

int Daemon::wait(std::chrono::milliseconds limit) {
  if (pid_ <= 0) return status_;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      pid_ = -1;
      return status_;
    }
    if (r < 0) {
      pid_ = -1;
      return status_ = 255;
    }
    if (std::chrono::steady_clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(10ms);
  }
}

bool Daemon::running() {
  return wait(0ms) < 0 && pid_ > 0;
}

}  // namespace mailq::test
