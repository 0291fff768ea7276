// mailq/error.h: error values, and a Result that is checked without throwing.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <string>

#include "mailq/error.h"

using namespace mailq;

namespace {

// Runs `f` in a child process; returns the signal that ended it (0 when it exited).
template <class F>
int signal_of(F f) {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // The child's complaint goes nowhere, and it dies of the abort as a process would (not
    // through the test framework's own signal handler): only how it ends matters.
    std::freopen("/dev/null", "w", stderr);
    std::freopen("/dev/null", "w", stdout);
    std::signal(SIGABRT, SIG_DFL);
    f();
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

}  // namespace

TEST_CASE("Result holds a value or an error with its words", "[error]") {
  Result<int> good(42);
  REQUIRE(good);
  CHECK(good.value() == 42);
  CHECK(*good == 42);
  CHECK(good.value_or(7) == 42);

  Result<int> bad(Error(errc::not_found, "no message 0123456789ABC"));
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == errc::not_found);
  CHECK(bad.error().message == "no message 0123456789ABC");
  CHECK(bad.value_or(7) == 7);

  Result<std::string> moved(std::string("text"));
  CHECK(std::move(moved).value() == "text");
}

TEST_CASE("Result<void> is success or an error, and code() is empty on success", "[error]") {
  Result<void> ok = success();
  CHECK(ok);
  CHECK_FALSE(ok.code());
  Result<void> failed(Error(errc::storage_failure, "write spool/x: No space left on device"));
  CHECK_FALSE(failed);
  CHECK(failed.code() == errc::storage_failure);
  CHECK(failed.error().message == "write spool/x: No space left on device");
  Result<void> from_code(make_error_code(errc::bad_state), "held");
  CHECK(from_code.error().code == errc::bad_state);
}

TEST_CASE("asking a Result for what it does not hold aborts instead of throwing", "[error]") {
  CHECK(signal_of([] {
          Result<int> bad(Error(errc::not_found, "gone"));
          (void)bad.value();
        }) == SIGABRT);
  CHECK(signal_of([] {
          Result<int> good(1);
          (void)good.error();
        }) == SIGABRT);
  CHECK(signal_of([] {
          Result<void> ok;
          (void)ok.error();
        }) == SIGABRT);
  CHECK(signal_of([] {
          Result<int> good(1);
          (void)good.value();
        }) == 0);
}

TEST_CASE("a resource held by another process has its own error code", "[error]") {
  const std::error_code ec = make_error_code(errc::in_use);
  CHECK(ec == errc::in_use);
  CHECK(ec != errc::storage_failure);
  CHECK(ec.message() == "in use by another process");
  CHECK(std::string(ec.category().name()) == "mailq");
}
