#include <catch2/catch.hpp>

#include <cerrno>
#include <string>
#include <system_error>

#include "mailq/dsn.h"
#include "mailq/error.h"
#include "mailq/events.h"
#include "mailq/reply.h"
#include "mailq/resolver.h"
#include "mailq/transport.h"

using namespace mailq;

TEST_CASE("Reply::to_string renders code, enhanced code and text", "[reply]") {
  CHECK(Reply(250, "2.0.0", "Ok").to_string() == "250 2.0.0 Ok");
  CHECK(Reply(250, "", "Ok").to_string() == "250 Ok");
  CHECK(Reply(354, "", "").to_string() == "354");
  CHECK(Reply().to_string().empty());
  // Multi-line replies: later lines joined with "; ", never a raw line break.
  CHECK(Reply(550, "5.1.1", "no such user\nsee https://example.org/help").to_string() ==
        "550 5.1.1 no such user; see https://example.org/help");
  CHECK(Reply(421, "", "a\r\nb").to_string() == "421 a; b");
}

TEST_CASE("Reply classes", "[reply]") {
  CHECK(Reply(250, "", "").positive());
  CHECK(Reply(354, "", "").positive());
  CHECK(Reply(451, "", "").transient());
  CHECK(Reply(550, "", "").permanent());
  CHECK(Reply().empty());
  CHECK_FALSE(Reply().transient());
  CHECK(Reply(250, "2.0.0", "Ok") == Reply(250, "2.0.0", "Ok"));
  CHECK(Reply(250, "2.0.0", "Ok") != Reply(250, "", "Ok"));
}

TEST_CASE("mailq's own replies have the exact texts of the seeds", "[reply][seed000][seed001]") {
  CHECK(replies::domain_marked_down().to_string() ==
        "451 4.4.1 [internal] connection was not attempted: domain is marked down (too many "
        "connection failures)");
  CHECK(replies::domain_does_not_resolve().to_string() ==
        "421 4.4.4 [internal] domain does not resolve");
  CHECK(replies::domain_does_not_exist().to_string() ==
        "550 5.1.2 [internal] domain does not exist");
  CHECK(replies::null_mx().to_string() ==
        "556 5.1.10 [internal] recipient domain has a null MX (it does not accept mail)");
  CHECK(replies::mx_loops_to_self().to_string() ==
        "554 5.4.6 [internal] MX records point to this host (mail loop)");
  CHECK(replies::connection_failed("TCP active open: Failed connect() Error: connection refused")
            .to_string() ==
        "421 4.4.1 [internal] TCP active open: Failed connect() Error: connection refused");
  CHECK(replies::connection_lost("connection reset by peer").to_string() ==
        "421 4.4.2 [internal] connection reset by peer");
  CHECK(replies::expired("421 4.4.4 [internal] domain does not resolve").to_string() ==
        "550 5.4.7 [internal] message expired in the queue; last error: 421 4.4.4 [internal] "
        "domain does not resolve");
  CHECK(replies::expired("").to_string() == "550 5.4.7 [internal] message expired in the queue");
  CHECK(replies::domain_marked_down().transient());
  CHECK(replies::domain_does_not_resolve().transient());
  CHECK(replies::null_mx().permanent());
  CHECK(replies::expired("x").permanent());
}

TEST_CASE("the mailq error category", "[reply][error]") {
  CHECK(std::string(error_category().name()) == "mailq");
  std::error_code ec = errc::forbidden_character;
  CHECK(ec.category() == error_category());
  CHECK(ec.message() == "forbidden control character in envelope value");
  CHECK(make_error_code(errc::no_recipients).message() == "no recipients");
  CHECK(make_error_code(errc::too_long).message() == "value exceeds the RFC 5321 length limit");
  CHECK(std::error_code(999, error_category()).message() == "unknown mailq error 999");
  // Every code has its own text.
  for (int i = 1; i <= static_cast<int>(errc::shutting_down); ++i) {
    for (int j = i + 1; j <= static_cast<int>(errc::shutting_down); ++j) {
      CHECK(std::error_code(i, error_category()).message() !=
            std::error_code(j, error_category()).message());
    }
  }
  Error e(errc::invalid_address, "missing '@'");
  CHECK(e.code == errc::invalid_address);
  Result<int> r(e);
  CHECK_FALSE(r.ok());
  CHECK(r.error().message == "missing '@'");
}

TEST_CASE("connect_failure_text renders the seed 002 diagnostic", "[reply][seed002]") {
  CHECK(connect_failure_text(std::make_error_code(std::errc::connection_refused)) ==
        "TCP active open: Failed connect() Error: connection refused");
  CHECK(connect_failure_text(std::make_error_code(std::errc::host_unreachable)) ==
        "TCP active open: Failed connect() Error: no route to host");
  CHECK(connect_failure_text(std::make_error_code(std::errc::network_unreachable)) ==
        "TCP active open: Failed connect() Error: network is unreachable");
  CHECK(connect_failure_text(std::make_error_code(std::errc::timed_out)) ==
        "TCP active open: Failed connect() Error: connection timed out");
  CHECK(connect_failure_text(std::make_error_code(std::errc::connection_reset)) ==
        "TCP active open: Failed connect() Error: connection reset by peer");
  // system_category errno values (what an adapter may hand over) map the same way.
  CHECK(connect_failure_text(std::error_code(ECONNREFUSED, std::system_category())) ==
        "TCP active open: Failed connect() Error: connection refused");
  CHECK(connect_failure_text(std::error_code(EHOSTDOWN, std::system_category())) ==
        "TCP active open: Failed connect() Error: host is down");
  CHECK(connect_failure_text({}) == "TCP active open: Failed connect() Error: unknown error");
  // Anything else: the category's message, lower-cased, on one line.
  CHECK(connect_failure_text(make_error_code(errc::tls_failure)) ==
        "TCP active open: Failed connect() Error: tls failure");
}

TEST_CASE("names of enums", "[reply]") {
  CHECK(std::string(to_string(TlsPolicy::none)) == "none");
  CHECK(std::string(to_string(TlsPolicy::opportunistic)) == "opportunistic");
  CHECK(std::string(to_string(TlsPolicy::required)) == "required");
  CHECK(std::string(to_string(TlsPolicy::verify)) == "verify");
  CHECK(std::string(to_string(DnsStatus::ok)) == "ok");
  CHECK(std::string(to_string(DnsStatus::nxdomain)) == "nxdomain");
  CHECK(std::string(to_string(DnsStatus::no_data)) == "no_data");
  CHECK(std::string(to_string(DnsStatus::servfail)) == "servfail");
  CHECK(std::string(to_string(DnsStatus::refused)) == "refused");
  CHECK(std::string(to_string(DnsStatus::timeout)) == "timeout");
  CHECK(std::string(to_string(DnsStatus::error)) == "error");
  CHECK(std::string(to_string(DnsStatus::cancelled)) == "cancelled");
  CHECK(std::string(to_string(DsnAction::failed)) == "failed");
  CHECK(std::string(to_string(DsnAction::delayed)) == "delayed");
  CHECK(std::string(to_string(DsnAction::delivered)) == "delivered");
  CHECK(std::string(to_string(DsnAction::relayed)) == "relayed");
  CHECK(std::string(to_string(DsnAction::expanded)) == "expanded");
  CHECK(action_letter(EventKind::enqueued) == 'E');
  CHECK(action_letter(EventKind::deferred) == 'Q');
  CHECK(action_letter(EventKind::delivered) == 'D');
  CHECK(action_letter(EventKind::returned) == 'R');
  CHECK(action_letter(EventKind::destination_down) == ' ');
  CHECK(action_letter(EventKind::notice) == ' ');
}

TEST_CASE("DNS statuses: definite answers are not transient, failures and cancellations are",
          "[reply]") {
  CHECK_FALSE(is_transient(DnsStatus::ok));
  CHECK_FALSE(is_transient(DnsStatus::nxdomain));
  CHECK_FALSE(is_transient(DnsStatus::no_data));
  CHECK(is_transient(DnsStatus::servfail));
  CHECK(is_transient(DnsStatus::refused));
  CHECK(is_transient(DnsStatus::timeout));
  CHECK(is_transient(DnsStatus::error));
  CHECK(is_transient(DnsStatus::cancelled));
}
