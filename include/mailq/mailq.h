// mailq — the whole public API of the core in one include.
//
//     #include <mailq/mailq.h>
//
// Brings in every core header (value types, Queue, routes, domain state, Deliverer, the
// SMTP protocol core, and the Storage / Resolver / Transport / Clock / EventSink seams). It
// needs nothing but the C++17 standard library. The adapters (libuv, c-ares, mbedTLS, the
// file spool) have their own headers, included separately by the programs that use them, so
// that this one never pulls in <uv.h>, <ares.h> or mbedTLS.
#pragma once

#include "mailq/address.h"
#include "mailq/clock.h"
#include "mailq/deliverer.h"
#include "mailq/domain_state.h"
#include "mailq/dsn.h"
#include "mailq/error.h"
#include "mailq/events.h"
#include "mailq/log.h"
#include "mailq/message.h"
#include "mailq/net.h"
#include "mailq/queue.h"
#include "mailq/record_codec.h"
#include "mailq/reply.h"
#include "mailq/resolver.h"
#include "mailq/route.h"
#include "mailq/smtp_client.h"
#include "mailq/storage.h"
#include "mailq/time.h"
#include "mailq/transport.h"
