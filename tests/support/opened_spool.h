// Test helper of the program tests: a spool opened the way a relay opens it at start (its
// layout found in the directory, recovered into a Queue without routes), what it holds, and
// the import of its maildrop.
#pragma once

#include <catch2/catch.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "examples/relay/maildrop.h"
#include "mailq/queue.h"
#include "mailq/spool/file_spool.h"
#include "mailq/spool/layout.h"

namespace mailq::test {

struct OpenedSpool {
  std::string path;
  ManualClock clock{std::chrono::system_clock::now()};
  std::unique_ptr<spool::DurableStorage> storage;
  RouteTable routes;
  std::unique_ptr<Queue> queue;  // destroyed before the storage

  explicit OpenedSpool(std::string dir) : path(std::move(dir)) {
    auto s = spool::open_spool(path, clock, spool::choose_layout(path, std::nullopt));
    INFO((s ? std::string() : s.error().message));
    REQUIRE(s);
    storage = std::move(s.value());
    queue = std::make_unique<Queue>(*storage, routes, clock);
    REQUIRE(queue->recover());
  }

  /// The maildrop into the queue, as a relay does at start.
  std::size_t import_maildrop(const std::function<void(const std::string&)>& notice) {
    return relay::import_maildrop(
        path, *queue, [this] { storage->flush(); }, notice);
  }

  struct Stored {
    MessageRecord record;
    std::string body;
  };
  std::vector<Stored> stored() const {
    std::vector<Stored> out;
    for (MessageId id : queue->list()) {
      auto body = queue->read_body(id);
      REQUIRE(body);
      out.push_back({*queue->find(id), body.value()});
    }
    return out;
  }
};

}  // namespace mailq::test
