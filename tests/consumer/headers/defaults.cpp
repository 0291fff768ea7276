// A host translation unit that builds the engine's objects with every default argument:
// Queue and Deliverer with their default configurations (QueueConfig{}, DelivererConfig{}),
// over the in-memory seams and a transport that connects nowhere. The headers test compiles
// it at -O2 and -O3 with -Werror, where the optimiser's warnings (-Wmaybe-uninitialized,
// -Wstringop-overflow, ...) about inline code and default arguments from the headers would
// reach the host's build.
#include <mailq/mailq.h>

#include <memory>

namespace {

class NoTransport final : public mailq::Transport {
 public:
  std::unique_ptr<mailq::Connection> connect(const mailq::Endpoint&, const mailq::ConnectOptions&,
                                             mailq::ConnectionHandler&) override {
    return nullptr;
  }
};

}  // namespace

int host_main() {
  mailq::ManualClock clock;
  mailq::MemoryStorage storage;
  mailq::RouteTable routes;
  mailq::StaticResolver resolver(clock);
  NoTransport transport;
  mailq::Queue queue(storage, routes, clock);
  mailq::Deliverer deliverer(queue, resolver, transport);
  return static_cast<int>(queue.size()) + (deliverer.idle() ? 0 : 1);
}
