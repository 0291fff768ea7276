// A program built with a plain Makefile against an installed mailq, found through pkg-config
// (`pkg-config --cflags --libs --static mailq`). It uses the core and every part the install
// holds (-DMAILQ_PART_uv, _ares, _spool, _engine from `pkg-config --variable=parts mailq`), so that
// a library or dependency missing from mailq.pc, or listed in the wrong order, fails the link.
#include <mailq/mailq.h>

#ifdef MAILQ_PART_uv
#include <mailq/uv/loop_clock.h>
#include <mailq/uv/transport.h>
#endif
#ifdef MAILQ_PART_ares
#include <mailq/ares/resolver.h>
#endif
#ifdef MAILQ_PART_spool
#include <mailq/spool/layout.h>

#include <stdlib.h>  // mkdtemp

#include <filesystem>
#endif
#ifdef MAILQ_PART_engine
#include <mailq/engine.h>
#endif
#if defined(MAILQ_PART_uv) || defined(MAILQ_PART_ares)
#include <uv.h>
#endif

#include <cstdio>
#include <string>

namespace {

int failures = 0;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "FAILED: %s\n", what);
    ++failures;
  }
}

// Enqueues one message into `storage` under a manual clock; true once it is stored.
bool enqueue_one(mailq::Storage& storage, mailq::ManualClock& clock) {
  mailq::RouteTable routes;
  mailq::Queue queue(storage, routes, clock);
  auto envelope = mailq::make_envelope("sender@example.net", {"user@example.org"});
  if (!envelope) return false;
  bool stored = false;
  queue.enqueue(*envelope, "Subject: hi\r\n\r\nhello\r\n",
                [&](mailq::Result<mailq::MessageId> id) { stored = id.ok(); });
  clock.run_pending();
  return stored && queue.size() == 1;
}

}  // namespace

int main() {
  std::string parts = "core";

  // The core: value types and the queue over in-memory storage.
  auto address = mailq::Address::parse("User@Example.ORG");
  check(address.ok() && address->routing_domain() == "example.org", "Address::parse");
  {
    mailq::ManualClock clock;
    mailq::MemoryStorage storage;
    check(enqueue_one(storage, clock) && storage.size() == 1, "enqueue into MemoryStorage");
  }

#if defined(MAILQ_PART_uv) || defined(MAILQ_PART_ares)
  uv_loop_t loop;
  uv_loop_init(&loop);
#endif
#ifdef MAILQ_PART_uv
  parts += " uv";
  {
    // A timer of the loop clock fires; the transport (mbedTLS inside) is built and torn down.
    mailq::uv::LoopClock clock(&loop);
    mailq::uv::UvTransport transport(&loop, clock);
    bool fired = false;
    clock.schedule(mailq::Duration(1), [&] { fired = true; });
    uv_run(&loop, UV_RUN_ONCE);
    uv_run(&loop, UV_RUN_NOWAIT);
    check(fired, "LoopClock timer");
  }
#endif
#ifdef MAILQ_PART_ares
  parts += " ares";
  {
    // Built only: nothing is asked, so nothing is sent (and nothing is posted: a manual clock
    // will do).
    mailq::ManualClock clock;
    mailq::ares::AresResolverOptions options;
    options.nameservers = {"127.0.0.1:53"};
    auto resolver = mailq::ares::AresResolver::open(&loop, clock, options);
    check(resolver.ok(), "AresResolver::open");
    if (resolver.ok()) {
      auto servers = (*resolver)->nameservers();
      check(servers.size() == 1 && servers[0] == "127.0.0.1:53", "AresResolver::nameservers");
    }
  }
#endif
#if defined(MAILQ_PART_uv) || defined(MAILQ_PART_ares)
  uv_run(&loop, UV_RUN_DEFAULT);  // the close callbacks
  check(uv_loop_close(&loop) == 0, "every libuv handle closed");
#endif
#ifdef MAILQ_PART_spool
  parts += " spool";
  {
    // A message made durable in a segment spool in a scratch directory.
    std::string tmpl = (std::filesystem::temp_directory_path() / "mailq-pc-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) {
      check(false, "mkdtemp");
    } else {
      {
        mailq::ManualClock clock;
        auto spool = mailq::spool::open_spool(tmpl, clock, mailq::spool::Layout::segments);
        check(spool.ok(), "open_spool");
        if (spool.ok()) check(enqueue_one(**spool, clock), "enqueue into the segment spool");
      }
      check(mailq::spool::detect_layout(tmpl) == mailq::spool::Layout::segments,
            "detect_layout finds the segments");
      std::error_code ec;
      std::filesystem::remove_all(tmpl, ec);
    }
  }
#endif

#ifdef MAILQ_PART_engine
  parts += " engine";
  {
    // An Engine opened on a scratch spool, and stopped: the loop ends with nothing left.
    std::string tmpl = (std::filesystem::temp_directory_path() / "mailq-pc-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) {
      check(false, "mkdtemp");
    } else {
      uv_loop_t engine_loop;
      uv_loop_init(&engine_loop);
      mailq::EngineConfig config;
      config.spool.directory = tmpl + "/spool";
      config.resolver.nameservers = {"127.0.0.1:53"};
      auto engine = mailq::Engine::open(&engine_loop, std::move(config));
      check(engine.ok(), "Engine::open");
      bool stopped = false;
      if (engine.ok()) (*engine)->stop([&] { stopped = true; });
      uv_run(&engine_loop, UV_RUN_DEFAULT);
      check(stopped, "Engine::stop");
      if (engine.ok()) engine.value().reset();
      check(uv_loop_close(&engine_loop) == 0, "every libuv handle of the engine closed");
      std::error_code ec;
      std::filesystem::remove_all(tmpl, ec);
    }
  }
#endif

  if (failures != 0) {
    std::fprintf(stderr, "mailq pkg-config consumer: %d check(s) failed\n", failures);
    return 1;
  }
  std::printf("mailq pkg-config consumer: ok (%s)\n", parts.c_str());
  return 0;
}
