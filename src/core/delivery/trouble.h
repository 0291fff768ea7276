// mailq — what a failure means: failure + phase + policy -> verdict. Internal and pure.
//
// The rules of Postfix's smtp_trouble.c, as mailq applies them: a failure that says the host
// cannot be reached or does not speak SMTP counts against the destination and moves on to the
// next host; a failure before the session was usable that is about policy or configuration
// (EHLO refused, STARTTLS required but missing, AUTH refused) moves on without counting, and
// its reply is softened to a deferral, so that fixing the configuration loses nothing; an
// opportunistic STARTTLS that failed is tried once more in plaintext.
#pragma once

#include <system_error>

#include "mailq/hop.h"
#include "mailq/reply.h"
#include "mailq/smtp_client.h"
#include "mailq/transport.h"

namespace mailq::detail {

struct SessionVerdict {
  enum class Action {
    none,             ///< the session was usable: it just ends (its transaction reported itself)
    retry_plaintext,  ///< reconnect to the same host without STARTTLS, remember it as broken
    unreachable,      ///< a connection-level failure: counts against the destination
    next_host,        ///< not counted; `reply` (softened) is what the jobs get if no host works
  };
  Action action = Action::none;
  Reply reply;
};

/// The verdict on a session that failed. `was_ready`: the session had become usable;
/// `plaintext_retry`: it already was the plaintext retry of an opportunistic STARTTLS.
SessionVerdict judge_session_failure(const smtp_event::Failed& failed, bool was_ready,
                                     TlsPolicy policy, bool plaintext_retry);

/// A permanent reply turned into a deferral (5xx -> 451, 5.x.x -> 4.x.x).
Reply soften(Reply reply);

/// Whether a failed connect says something about the destination: a shortage of this host
/// (no descriptor, no memory for a socket) does not.
bool counts_against_destination(std::error_code connect_error);

/// The last failure of a destination's hosts, as its jobs get it when none worked.
struct HostFailure {
  bool set = false;
  Note note;    ///< what the log shows (a connect error's words, or the hop and its reply)
  Reply reply;  ///< a softened reply of a host that refused to talk; empty for connect errors
};

/// The reply and log line for jobs none of whose hosts worked.
Reply exhausted_reply(const HostFailure& last);
Note exhausted_note(const HostFailure& last, const Reply& reply);

}  // namespace mailq::detail
