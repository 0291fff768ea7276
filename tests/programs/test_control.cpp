// The control socket of mailq-relay: the wire format (requests, responses, malformed and
// oversized input) and the serving side against the blocking client over a real Unix socket.
#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "examples/relay/control.h"
#include "support/raw_client.h"
#include "support/servers.h"
#include "support/test_loop.h"

using namespace mailq;
using namespace mailq::relay;
using namespace mailq::test;
using namespace std::chrono_literals;

namespace {

std::size_t parse_ok(std::string_view bytes, ControlRequest* out, std::uint64_t max_body = 1000) {
  auto r = parse_control_request(bytes, max_body, out);
  INFO((r ? std::string() : r.error().message));
  REQUIRE(r);
  return r.value();
}

std::string parse_error(std::string_view bytes, std::uint64_t max_body = 1000) {
  ControlRequest out;
  auto r = parse_control_request(bytes, max_body, &out);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == make_error_code(errc::invalid_parameter));
  return r.error().message;
}

// Runs a blocking client call on a thread while the test loop serves it.
Result<ControlResponse> call(TestLoop& loop, const std::string& path, ControlRequest request) {
  std::optional<Result<ControlResponse>> out;
  REQUIRE(run_beside_loop(
      loop, [&] { out.emplace(control_call(path, request, Duration(20s))); }, 30s));
  REQUIRE(out);
  return std::move(*out);
}

// Sends raw bytes and reads until the server closes (for malformed requests).
std::string raw_exchange(TestLoop& loop, const std::string& path, const std::string& bytes,
                         bool half_close) {
  std::string in;
  auto client = [&] {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    timeval tv{20, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      std::size_t sent = 0;
      while (sent < bytes.size()) {
        ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) break;
        sent += static_cast<std::size_t>(n);
      }
      if (half_close) ::shutdown(fd, SHUT_WR);
      char buf[4096];
      ssize_t n;
      while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) in.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
  };
  REQUIRE(run_beside_loop(loop, client, 30s));
  return in;
}

}  // namespace

TEST_CASE("Control requests: a verb line is split on single spaces and consumed through its LF",
          "[control][wire]") {
  ControlRequest req;
  CHECK(parse_ok("hold 01J9ZK3D2ZP7F\nextra", &req) == 19);
  CHECK(req.argv == std::vector<std::string>{"hold", "01J9ZK3D2ZP7F"});
  CHECK(req.body.empty());
  CHECK(parse_ok("status\n", &req) == 7);
  CHECK(req.argv == std::vector<std::string>{"status"});
}

TEST_CASE("Control requests: an incomplete line or submit body asks for more bytes",
          "[control][wire]") {
  ControlRequest req;
  CHECK(parse_ok("", &req) == 0);
  CHECK(parse_ok("flu", &req) == 0);
  CHECK(parse_ok("submit 5 a@b.example c@d.example\nabc", &req) == 0);
  CHECK(parse_ok("submit 5 a@b.example c@d.example\nabcde", &req) == 38);
  CHECK(req.argv == std::vector<std::string>{"submit", "5", "a@b.example", "c@d.example"});
  CHECK(req.body == "abcde");
  // The body is taken as octets: LFs, CRs and NULs inside it are data.
  const std::string body("x\r\n\0.\n", 6);
  CHECK(parse_ok("submit 6 <> c@d.example e@f.example\n" + body + "next", &req) == 36 + 6);
  CHECK(req.body == body);
  CHECK(req.argv[2] == "<>");
  CHECK(parse_ok("submit 0 <> c@d.example\n", &req) == 24);
  CHECK(req.body.empty());
}

TEST_CASE("Control requests: malformed lines are refused with the reason", "[control][wire]") {
  CHECK(parse_error("\n") == "empty request line");
  CHECK(parse_error("hold  X\n") == "empty argument (arguments are separated by single spaces)");
  CHECK(parse_error("hold X \n") == "empty argument (arguments are separated by single spaces)");
  CHECK(parse_error(" hold\n") == "empty argument (arguments are separated by single spaces)");
  CHECK(parse_error("status\r\n") == "CR in the request line (lines end with LF alone)");
  CHECK(parse_error(std::string("sta\0tus\n", 8)) == "NUL in the request line");
  CHECK(parse_error(std::string("sta\0tus", 7)) == "NUL in the request line");
  CHECK(parse_error("hold\tX\n") == "control character in the request line");
  CHECK(parse_error("submit 5 a@b.example\nabcde") == "usage: submit SIZE FROM RCPT...");
  CHECK(parse_error("submit 5x a@b.example c@d.example\n") ==
        "submit: SIZE \"5x\" is not a decimal number");
  CHECK(parse_error("submit -1 a@b.example c@d.example\n") ==
        "submit: SIZE \"-1\" is not a decimal number");
  CHECK(parse_error("submit 05 a@b.example c@d.example\n") ==
        "submit: SIZE \"05\" is not a decimal number");
  CHECK(parse_error("submit 99999999999999999999999 a@b.example c@d.example\n") ==
        "submit: SIZE \"99999999999999999999999\" is not a decimal number");
}

TEST_CASE("Control requests: an oversized line or body is refused before it is buffered",
          "[control][wire]") {
  const std::string long_line(64 * 1024 + 1, 'a');
  CHECK(parse_error(long_line) == "request line longer than 65536 octets");
  CHECK(parse_error(long_line + "\n") == "request line longer than 65536 octets");
  // Exactly 64 KiB including the LF is allowed.
  ControlRequest req;
  CHECK(parse_ok(std::string(64 * 1024 - 1, 'a') + "\n", &req) == 64 * 1024);
  CHECK(parse_error("submit 1001 a@b.example c@d.example\n", 1000) ==
        "submit: message of 1001 octets exceeds the limit of 1000 octets");
}

TEST_CASE("Control wire: requests and responses encode to the documented bytes",
          "[control][wire]") {
  CHECK(*encode_control_request({{"release", "example.com"}, {}}) == "release example.com\n");
  CHECK(*encode_control_request({{"submit", "3", "<>", "a@b.example"}, "abc"}) ==
        "submit 3 <> a@b.example\nabc");
  // The line is the framing: an argument that would split it is refused, never sent.
  auto refused = [](std::vector<std::string> argv) {
    auto r = encode_control_request({std::move(argv), {}});
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == errc::invalid_parameter);
    return r.error().message;
  };
  CHECK(refused({"submit", "3", "<>", "a@b.example\nRCPT TO:<evil@x.test>"}) ==
        "argument 3 (\"a@b.example RCPT TO:<evil@x.test>\") holds a control character, which a "
        "control request cannot carry");
  CHECK(refused({"hold", "a b"}) ==
        "argument 1 (\"a b\") holds a space, which a control request cannot carry");
  CHECK(refused({"hold", "x\ry"}) ==
        "argument 1 (\"x y\") holds a control character, which a control request cannot carry");
  CHECK(refused({"hold", ""}) == "argument 1 is empty");
  CHECK(refused({}) == "a request needs a verb");
  CHECK(encode_control_response(ControlResponse::success()) == "ok\n");
  CHECK(encode_control_response(ControlResponse::success("01J9ZK3D2ZP7F")) ==
        "ok\n01J9ZK3D2ZP7F\n");
  CHECK(encode_control_response(ControlResponse::success("a\nb\n")) == "ok\na\nb\n");
  CHECK(encode_control_response(ControlResponse::failure("no such message\r\nX")) ==
        "error: no such message  X\n");
  CHECK(encode_control_response(ControlResponse::failure("")) == "error: failed\n");
}

TEST_CASE("Control wire: responses parse back, truncated or foreign ones are errors",
          "[control][wire]") {
  auto ok = parse_control_response("ok\na\nb\n");
  REQUIRE(ok);
  CHECK(ok->ok);
  CHECK(ok->payload == "a\nb\n");
  auto err = parse_control_response("error: no such message 01J9ZK3D2ZP7F\n");
  REQUIRE(err);
  CHECK_FALSE(err->ok);
  CHECK(err->error == "no such message 01J9ZK3D2ZP7F");
  auto empty = parse_control_response("");
  REQUIRE_FALSE(empty);
  CHECK(empty.error().message == "empty response (the relay closed the connection)");
  auto truncated = parse_control_response("o");
  REQUIRE_FALSE(truncated);
  CHECK(truncated.error().message == "truncated response: no end of line");
  auto foreign = parse_control_response("HTTP/1.1 200 OK\r\n");
  REQUIRE_FALSE(foreign);
  CHECK(foreign.error().message == "malformed response line \"HTTP/1.1 200 OK \"");
  auto trailing = parse_control_response("error: x\nmore\n");
  REQUIRE_FALSE(trailing);
  CHECK(trailing.error().message == "unexpected data after an error response");
  // Whatever sent it, an escape sequence never reaches the operator's terminal.
  auto escape = parse_control_response("error: no \x1b[2Jsuch\tmessage\x7f\n");
  REQUIRE(escape);
  CHECK(escape->error == "no  [2Jsuch message ");
  CHECK(encode_control_response(ControlResponse::failure("bad \x1b]0;title\x07")) ==
        "error: bad  ]0;title \n");
}

TEST_CASE("Control socket: a request reaches the handler and the response reaches the client",
          "[control][socket]") {
  TempDir dir;
  TestLoop loop;
  const std::string path = dir.file("control.sock");
  std::vector<ControlRequest> seen;
  {
    ControlServer server(
        loop.get(), path,
        [&](ControlRequest request, std::function<void(ControlResponse)> respond) {
          seen.push_back(request);
          if (request.argv[0] == "status")
            respond(ControlResponse::success("queue: 0 messages\n"));
          else if (request.argv[0] == "submit")
            respond(ControlResponse::success("ID-" + request.body));
          else
            respond(ControlResponse::failure("unknown verb " + request.argv[0]));
        },
        1 << 20);
    REQUIRE_FALSE(server.start());
    struct stat st;
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    CHECK((st.st_mode & 0777) == 0660);

    auto r = call(loop, path, {{"status"}, {}});
    REQUIRE(r);
    CHECK(r->ok);
    CHECK(r->payload == "queue: 0 messages\n");

    auto bad = call(loop, path, {{"frobnicate", "x"}, {}});
    REQUIRE(bad);
    CHECK_FALSE(bad->ok);
    CHECK(bad->error == "unknown verb frobnicate");

    // A body larger than a socket buffer goes through in pieces.
    std::string body(300000, 'b');
    auto sub =
        call(loop, path, {{"submit", std::to_string(body.size()), "<>", "a@b.example"}, body});
    REQUIRE(sub);
    CHECK(sub->payload == "ID-" + body + "\n");
    REQUIRE(seen.size() == 3);
    CHECK(seen[2].body == body);
    server.close();
    CHECK(::access(path.c_str(), F_OK) != 0);  // the socket file is gone
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("Control socket: a handler may answer later and the client waits for it",
          "[control][socket]") {
  TempDir dir;
  TestLoop loop;
  const std::string path = dir.file("c.sock");
  uv_timer_t timer;
  uv_timer_init(loop.get(), &timer);
  std::function<void(ControlResponse)> pending;
  {
    ControlServer server(
        loop.get(), path, [&](ControlRequest, std::function<void(ControlResponse)> respond) {
          pending = std::move(respond);
          timer.data = &pending;
          uv_timer_start(
              &timer,
              [](uv_timer_t* t) {
                auto* p = static_cast<std::function<void(ControlResponse)>*>(t->data);
                (*p)(ControlResponse::success("later"));
              },
              50, 0);
        });
    REQUIRE_FALSE(server.start());
    auto r = call(loop, path, {{"flush"}, {}});
    REQUIRE(r);
    CHECK(r->payload == "later\n");
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&timer), nullptr);
  CHECK(loop.close() == 0);
}

TEST_CASE("Control socket: malformed and oversized requests get an error line and are closed",
          "[control][socket]") {
  TempDir dir;
  TestLoop loop;
  const std::string path = dir.file("c.sock");
  int calls = 0;
  {
    ControlServer server(
        loop.get(), path,
        [&](ControlRequest, std::function<void(ControlResponse)> respond) {
          ++calls;
          respond(ControlResponse::success());
        },
        100);
    REQUIRE_FALSE(server.start());
    CHECK(raw_exchange(loop, path, "hold  X\n", false) ==
          "error: empty argument (arguments are separated by single spaces)\n");
    CHECK(raw_exchange(loop, path, std::string(70000, 'x'), false) ==
          "error: request line longer than 65536 octets\n");
    CHECK(raw_exchange(loop, path, "submit 101 <> a@b.example\n", false) ==
          "error: submit: message of 101 octets exceeds the limit of 100 octets\n");
    CHECK(raw_exchange(loop, path, "submit 10 <> a@b.example\nabc", true) ==
          "error: incomplete request\n");
    CHECK(raw_exchange(loop, path, "status\n", false) == "ok\n");
    CHECK(calls == 1);
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("Control socket: a stale socket file is replaced, a live one or a regular file is not",
          "[control][socket]") {
  TempDir dir;
  TestLoop loop;
  const std::string path = dir.file("c.sock");
  auto handler = [](ControlRequest, std::function<void(ControlResponse)> respond) {
    respond(ControlResponse::success("first"));
  };
  {
    // A stale socket: bound, then its owner vanished without unlinking it.
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    ::close(fd);

    ControlServer first(loop.get(), path, handler);
    REQUIRE_FALSE(first.start());
    ControlServer second(loop.get(), path, handler);
    CHECK(second.start() == std::errc::address_in_use);
    CHECK(second.last_error().message ==
          "control socket " + path + " is live: another mailq-relay is running");
    auto r = call(loop, path, {{"status"}, {}});
    REQUIRE(r);
    CHECK(r->payload == "first\n");

    write_file(dir.file("plain"), "x");
    ControlServer third(loop.get(), dir.file("plain"), handler);
    CHECK(third.start() == std::errc::file_exists);
    CHECK(third.last_error().message ==
          "control socket " + dir.file("plain") + " exists and is not a socket; not replacing it");
    CHECK(read_file(dir.file("plain")) == "x");

    ControlServer fourth(loop.get(), dir.path() + "/" + std::string(120, 'n'), handler);
    CHECK(fourth.start() == std::errc::filename_too_long);
  }
  CHECK(loop.close() == 0);
}

TEST_CASE("Control client: no relay at the path is an error naming the path", "[control][socket]") {
  TempDir dir;
  const std::string path = dir.file("none.sock");
  auto r = control_call(path, {{"status"}, {}}, Duration(5s));
  REQUIRE_FALSE(r);
  CHECK(r.error().code == std::errc::no_such_file_or_directory);
  CHECK(r.error().message == "connect " + path + ": No such file or directory");
}
