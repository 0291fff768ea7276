#include "fake_transport.h"

#include <algorithm>

namespace mailq::test {

class FakeTransport::Conn final : public Connection {
 public:
  Conn(FakeTransport& t, Endpoint remote, Behaviour b, ConnectionHandler& h)
      : t_(t),
        remote_(std::move(remote)),
        b_(std::move(b)),
        h_(&h),
        alive_(std::make_shared<bool>(true)),
        open_(t.open_),
        max_open_(t.max_open_) {
    std::weak_ptr<bool> alive = alive_;
    t_.clock_.schedule(Duration{0}, [this, alive] {
      if (alive.expired()) return;
      if (b_.mode == Mode::refuse) {
        const std::error_code ec = std::make_error_code(b_.error);
        h_->on_connect(Error(ec, ec.message()));
        return;
      }
      if (b_.mode == Mode::silent) return;  // the connect timeout is the transport's; not here
      connected_ = true;
      ++*open_;
      *max_open_ = std::max(*max_open_, *open_);
      h_->on_connect(success());
      send(b_.script.greeting + "\r\n");
    });
  }
  ~Conn() override {
    if (connected_ && !closed_) --*open_;
  }

  void write(std::string_view bytes) override {
    if (closed_) return;
    if (in_data_ && b_.script.stall_body) {
      stalled_ = true;  // queued forever: no progress, never idle
      return;
    }
    in_ += bytes;
    process();
    // The write completes on a later turn, as a socket's would.
    std::weak_ptr<bool> alive = alive_;
    t_.clock_.schedule(Duration{0}, [this, alive] {
      if (!alive.expired() && !closed_) h_->on_write_progress(!stalled_);
    });
  }
  void start_tls(const TlsClientOptions&) override {
    std::weak_ptr<bool> alive = alive_;
    t_.clock_.schedule(Duration{0}, [this, alive] {
      if (alive.expired()) return;
      const std::error_code ec = std::make_error_code(std::errc::not_supported);
      h_->on_tls(Error(ec, ec.message()));
    });
  }
  bool write_idle() const override { return !stalled_; }
  Endpoint local_endpoint() const override { return {"127.0.0.1", 40000}; }
  Endpoint remote_endpoint() const override { return remote_; }

 private:
  void send(std::string bytes) {
    std::weak_ptr<bool> alive = alive_;
    t_.clock_.schedule(Duration{0}, [this, alive, bytes = std::move(bytes)] {
      if (alive.expired() || closed_) return;
      h_->on_read(bytes);
    });
  }
  void close_from_server() {
    std::weak_ptr<bool> alive = alive_;
    t_.clock_.schedule(Duration{0}, [this, alive] {
      if (alive.expired() || closed_) return;
      closed_ = true;
      --*open_;
      h_->on_close(success());
    });
  }

  void process() {
    while (true) {
      if (in_data_) {
        auto end = in_.find("\r\n.\r\n");
        if (end == std::string::npos) return;
        current_.data = in_.substr(0, end + 2);
        in_.erase(0, end + 5);
        in_data_ = false;
        if (b_.script.no_final_reply) return;
        const std::string& fr = b_.script.final_reply;
        if (!fr.empty() && fr[0] == '2') {
          current_.server = remote_.address + ":" + std::to_string(remote_.port);
          t_.received.push_back(current_);
          ++accepted_;
        }
        send(fr + "\r\n");
        current_ = ReceivedMessage{};
        if (b_.script.drop_after_messages && accepted_ >= b_.script.drop_after_messages)
          close_from_server();
        continue;
      }
      auto eol = in_.find("\r\n");
      if (eol == std::string::npos) return;
      std::string line = in_.substr(0, eol);
      in_.erase(0, eol + 2);
      command(line);
    }
  }

  void command(const std::string& line) {
    std::string verb = line.substr(0, line.find_first_of(" :"));
    std::transform(verb.begin(), verb.end(), verb.begin(), ::toupper);
    if (verb == "EHLO") {
      if (!b_.script.ehlo_supported) {
        send("502 5.5.2 Error: command not recognized\r\n");
        return;
      }
      std::string r;
      for (std::size_t i = 0; i < b_.script.ehlo_lines.size(); ++i)
        r += "250" + std::string(i + 1 < b_.script.ehlo_lines.size() ? "-" : " ") +
             b_.script.ehlo_lines[i] + "\r\n";
      send(r);
    } else if (verb == "HELO") {
      send(b_.script.helo_reply + "\r\n");
    } else if (verb == "MAIL") {
      current_ = ReceivedMessage{};
      current_.mail_from = line;
      mail_ok_ = b_.script.mail_reply[0] == '2';
      send(b_.script.mail_reply + "\r\n");
    } else if (verb == "RCPT") {
      if (!mail_ok_) {
        send("503 5.5.1 Error: need MAIL command\r\n");
        return;
      }
      auto lt = line.find('<'), gt = line.find('>');
      std::string addr = line.substr(lt + 1, gt - lt - 1);
      auto it = b_.script.rcpt_replies.find(addr);
      std::string r = it == b_.script.rcpt_replies.end() ? "250 2.1.5 Ok" : it->second;
      if (b_.script.max_recipients && current_.rcpt_to.size() >= b_.script.max_recipients)
        r = b_.script.over_limit;
      if (r[0] == '2') current_.rcpt_to.push_back(addr);
      send(r + "\r\n");
    } else if (verb == "DATA") {
      if (!mail_ok_) {
        send("503 5.5.1 Error: need RCPT command\r\n");
        return;
      }
      if (current_.rcpt_to.empty() || b_.script.data_reply[0] != '3') {
        send((current_.rcpt_to.empty() ? std::string("554 5.5.1 Error: no valid recipients")
                                       : b_.script.data_reply) +
             "\r\n");
        return;
      }
      in_data_ = true;
      mail_ok_ = false;
      send(b_.script.data_reply + "\r\n");
    } else if (verb == "RSET") {
      current_ = ReceivedMessage{};
      mail_ok_ = false;
      send("250 2.0.0 Ok\r\n");
    } else if (verb == "QUIT") {
      send("221 2.0.0 Bye\r\n");
      close_from_server();
    } else if (verb == "STARTTLS") {
      ++t_.starttls_commands;
      send("220 2.0.0 Ready to start TLS\r\n");
    } else if (verb == "NOOP") {
      send("250 2.0.0 Ok\r\n");
    } else {
      send("502 5.5.2 Error: command not recognized\r\n");
    }
  }

  FakeTransport& t_;
  Endpoint remote_;
  Behaviour b_;
  ConnectionHandler* h_;
  std::shared_ptr<bool> alive_;
  std::shared_ptr<std::size_t> open_, max_open_;
  bool connected_ = false;
  bool closed_ = false;
  bool in_data_ = false;
  bool stalled_ = false;
  bool mail_ok_ = false;
  int accepted_ = 0;
  std::string in_;
  ReceivedMessage current_;
};

std::unique_ptr<Connection> FakeTransport::connect(const Endpoint& remote,
                                                   const ConnectOptions& /*options*/,
                                                   ConnectionHandler& handler) {
  std::string key = remote.address + ":" + std::to_string(remote.port);
  connects.push_back(key);
  auto it = behaviours_.find(key);
  Behaviour b = it == behaviours_.end() ? fallback_ : it->second;
  return std::make_unique<Conn>(*this, remote, std::move(b), handler);
}

}  // namespace mailq::test
