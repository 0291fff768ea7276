#include "support/loop_server.h"

#include <cstring>

namespace mailq {
namespace test {

namespace {

struct WriteReq {
  uv_write_t req;
  std::string data;
};

void on_peer_closed(uv_handle_t* h) {
  auto* p = static_cast<LoopServer::Peer*>(h->data);
  p->handle_closed = true;
  if (p->orphan) delete p;
}

}  // namespace

void LoopServer::Peer::write(std::string data) {
  if (closed) return;
  auto* w = new WriteReq;
  w->data = std::move(data);
  uv_buf_t b = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  w->req.data = w;
  if (uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&tcp), &b, 1,
               [](uv_write_t* req, int) { delete static_cast<WriteReq*>(req->data); }) != 0) {
    delete w;
  }
}

void LoopServer::Peer::close() {
  if (closed) return;
  closed = true;
  // The Peer stays allocated (the server's list points to it) until the server goes.
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp), &on_peer_closed);
}

LoopServer::LoopServer(uv_loop_t* loop, const char* address)
    : loop_(loop), listener_(new uv_tcp_t), address_(address) {
  uv_tcp_init(loop, listener_);
  listener_->data = this;
  sockaddr_storage ss;
  std::memset(&ss, 0, sizeof ss);
  const bool v6 = std::strchr(address, ':') != nullptr;
  if (v6) {
    uv_ip6_addr(address, 0, reinterpret_cast<sockaddr_in6*>(&ss));
  } else {
    uv_ip4_addr(address, 0, reinterpret_cast<sockaddr_in*>(&ss));
  }
  if (uv_tcp_bind(listener_, reinterpret_cast<sockaddr*>(&ss), 0) != 0) return;
  if (uv_listen(reinterpret_cast<uv_stream_t*>(listener_), 16, &LoopServer::on_connection) != 0) {
    return;
  }
  int len = sizeof ss;
  uv_tcp_getsockname(listener_, reinterpret_cast<sockaddr*>(&ss), &len);
  port_ = ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                   : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

LoopServer::~LoopServer() {
  uv_close(reinterpret_cast<uv_handle_t*>(listener_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
  for (Peer* p : peers_) {
    if (p->handle_closed) {
      delete p;
      continue;
    }
    p->orphan = true;
    if (!p->closed) {
      p->closed = true;
      uv_close(reinterpret_cast<uv_handle_t*>(&p->tcp), &on_peer_closed);
    }
  }
}

void LoopServer::on_connection(uv_stream_t* listener, int status) {
  auto* self = static_cast<LoopServer*>(listener->data);
  if (status < 0) return;
  auto* p = new Peer;
  p->server = self;
  uv_tcp_init(self->loop_, &p->tcp);
  p->tcp.data = p;
  if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(&p->tcp)) != 0) {
    p->orphan = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&p->tcp), &on_peer_closed);
    return;
  }
  self->peers_.push_back(p);
  sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_tcp_getpeername(&p->tcp, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    char name[64] = {};
    if (ss.ss_family == AF_INET6) {
      uv_ip6_name(reinterpret_cast<sockaddr_in6*>(&ss), name, sizeof name);
      p->remote.port = ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
    } else {
      uv_ip4_name(reinterpret_cast<sockaddr_in*>(&ss), name, sizeof name);
      p->remote.port = ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    }
    p->remote.address = name;
  }
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&p->tcp),
      [](uv_handle_t*, std::size_t suggested, uv_buf_t* buf) {
        buf->base = new char[suggested];
        buf->len = suggested;
      },
      [](uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
        auto* peer = static_cast<Peer*>(stream->data);
        if (nread > 0) {
          const std::string_view data(buf->base, static_cast<std::size_t>(nread));
          peer->received.append(data);
          if (peer->server->on_data) peer->server->on_data(*peer, data);
        } else if (nread < 0) {
          peer->eof = true;
          uv_read_stop(stream);
        }
        delete[] buf->base;
      });
  if (self->on_accept) self->on_accept(*p);
}

}  // namespace test
}  // namespace mailq
