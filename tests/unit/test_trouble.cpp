// The trouble room (src/core/delivery/trouble.h): failure + phase + policy -> verdict. Pure.
#include <catch2/catch.hpp>

#include "core/delivery/trouble.h"
#include "mailq/log.h"

using namespace mailq;
using namespace mailq::detail;

namespace {
smtp_event::Failed failed(Reply r, bool connection_level, bool tls_failure = false) {
  smtp_event::Failed f;
  f.phase = SmtpPhase::ehlo;
  f.reply = std::move(r);
  f.connection_level = connection_level;
  f.tls_failure = tls_failure;
  return f;
}
Hop hop() {
  return Hop{"mx.example.com", {"127.0.0.1", 40312}, {"127.0.0.10", 25}, std::nullopt, {}};
}
}  // namespace

TEST_CASE("trouble: a usable session that fails just ends: its transaction reported itself",
          "[delivery][trouble]") {
  auto v = judge_session_failure(failed(Reply(554, "5.3.0", "bye"), false), true,
                                 TlsPolicy::opportunistic, false);
  CHECK(v.action == SessionVerdict::Action::none);
}

TEST_CASE("trouble: connection-level failures count against the destination, also after Ready",
          "[delivery][trouble]") {
  const Reply r(421, "4.4.2", "[internal] timeout waiting for the greeting");
  for (bool ready : {false, true}) {
    auto v = judge_session_failure(failed(r, true), ready, TlsPolicy::none, false);
    CHECK(v.action == SessionVerdict::Action::unreachable);
    CHECK(v.reply == r);
  }
}

TEST_CASE("trouble: an opportunistic STARTTLS that failed is retried once in plaintext",
          "[delivery][trouble]") {
  const Reply r(421, "4.7.5", "[internal] TLS handshake failed");
  CHECK(judge_session_failure(failed(r, false, true), false, TlsPolicy::opportunistic, false)
            .action == SessionVerdict::Action::retry_plaintext);
  // Not twice, and never when the policy requires TLS: then it is the next host.
  CHECK(
      judge_session_failure(failed(r, false, true), false, TlsPolicy::opportunistic, true).action ==
      SessionVerdict::Action::next_host);
  CHECK(judge_session_failure(failed(r, false, true), false, TlsPolicy::required, false).action ==
        SessionVerdict::Action::next_host);
  CHECK(judge_session_failure(failed(r, false, true), false, TlsPolicy::verify, false).action ==
        SessionVerdict::Action::next_host);
}

TEST_CASE("trouble: a refusal before the session was usable moves on, softened to a deferral",
          "[delivery][trouble]") {
  auto v = judge_session_failure(failed(Reply(535, "5.7.8", "authentication failed"), false), false,
                                 TlsPolicy::none, false);
  CHECK(v.action == SessionVerdict::Action::next_host);
  CHECK(v.reply == Reply(451, "4.7.8", "authentication failed"));
  CHECK(soften(Reply(550, "", "no")) == Reply(451, "", "no"));
  CHECK(soften(Reply(451, "4.3.5", "later")) == Reply(451, "4.3.5", "later"));
}

TEST_CASE("trouble: a shortage of this host does not count against the destination",
          "[delivery][trouble]") {
  CHECK(counts_against_destination(std::make_error_code(std::errc::connection_refused)));
  CHECK(counts_against_destination(std::make_error_code(std::errc::host_unreachable)));
  CHECK(counts_against_destination(std::make_error_code(std::errc::timed_out)));
  CHECK_FALSE(counts_against_destination(std::make_error_code(std::errc::too_many_files_open)));
  CHECK_FALSE(
      counts_against_destination(std::make_error_code(std::errc::too_many_files_open_in_system)));
  CHECK_FALSE(counts_against_destination(std::make_error_code(std::errc::not_enough_memory)));
  CHECK_FALSE(counts_against_destination(std::make_error_code(std::errc::no_buffer_space)));
}

TEST_CASE("trouble: jobs none of whose hosts worked get the last host's failure",
          "[delivery][trouble]") {
  HostFailure none;
  Reply r = exhausted_reply(none);
  CHECK(r == Reply(421, "4.4.1", "[internal] no usable host"));
  CHECK(diagnostic_lines({exhausted_note(none, r)}) ==
        std::vector<std::string>{"421 4.4.1 [internal] no usable host"});

  HostFailure refused{
      true, Note::words("TCP active open: Failed connect() Error: connection refused"), Reply{}};
  r = exhausted_reply(refused);
  CHECK(r == Reply(421, "4.4.1",
                   "[internal] TCP active open: Failed connect() Error: connection refused"));
  CHECK(diagnostic_lines({exhausted_note(refused, r)}) ==
        std::vector<std::string>{"TCP active open: Failed connect() Error: connection refused"});

  HostFailure no_greeting{
      true, Note::of_session(hop(), Reply(421, "4.4.2", "[internal] no greeting")), Reply{}};
  r = exhausted_reply(no_greeting);
  // One code: the session's own, with the host where it happened.
  CHECK(r.to_string() ==
        "421 4.4.2 [internal] dns;mx.example.com (TCP|127.0.0.1|40312|127.0.0.10|25) no greeting");
  CHECK(diagnostic_lines({exhausted_note(no_greeting, r)}) ==
        std::vector<std::string>{"dns;mx.example.com (TCP|127.0.0.1|40312|127.0.0.10|25) 421 "
                                 "4.4.2 [internal] no greeting"});

  // A server that refused to talk (554 greeting): its words, softened, no code nested in
  // another.
  HostFailure no_service{true, Note::of_session(hop(), Reply(554, "5.3.2", "no service")), Reply{}};
  CHECK(exhausted_reply(no_service).to_string() == "451 4.3.2 no service");
  HostFailure busy{true, Note::of_session(hop(), Reply(421, "4.7.0", "too busy")), Reply{}};
  CHECK(exhausted_reply(busy).to_string() == "421 4.7.0 too busy");

  const Reply soft(451, "4.7.8", "authentication failed");
  HostFailure refused_auth{true, Note::of_session(hop(), soft), soft};
  CHECK(exhausted_reply(refused_auth) == soft);
  CHECK(diagnostic_lines({exhausted_note(refused_auth, soft)}) ==
        std::vector<std::string>{
            "dns;mx.example.com (TCP|127.0.0.1|40312|127.0.0.10|25) 451 4.7.8 authentication "
            "failed"});
}
