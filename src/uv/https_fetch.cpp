#include "uv/https_fetch.h"

#include <llhttp.h>

#include <algorithm>
#include <cctype>

namespace mailq::uv::detail {

namespace {

using Failure = HttpsResponse::Failure;

class Fetch final : public ConnectionHandler, public std::enable_shared_from_this<Fetch> {
 public:
  Fetch(Resolver& resolver, Transport& transport, Clock& clock, HttpsRequest request,
        std::function<void(HttpsResponse)> done)
      : resolver_(resolver),
        transport_(transport),
        clock_(clock),
        request_(std::move(request)),
        done_(std::move(done)) {
    llhttp_settings_init(&settings_);
    // llhttp bounds nothing itself: the status line and the header section together get
    // kMaxHead octets, the body request_.max_body.
    settings_.on_status = [](llhttp_t* p, const char*, std::size_t n) {
      return static_cast<Fetch*>(p->data)->count_head(n);
    };
    settings_.on_header_field = [](llhttp_t* p, const char* at, std::size_t n) {
      auto* self = static_cast<Fetch*>(p->data);
      if (self->count_head(n) != 0) return -1;
      if (self->value_done_) self->field_.clear(), self->value_done_ = false;
      self->field_.append(at, n);
      return 0;
    };
    settings_.on_header_value = [](llhttp_t* p, const char* at, std::size_t n) {
      auto* self = static_cast<Fetch*>(p->data);
      if (self->count_head(n) != 0) return -1;
      self->value_done_ = true;
      std::string lower = self->field_;
      for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (lower == "content-type") self->response_.content_type.append(at, n);
      return 0;
    };
    settings_.on_headers_complete = [](llhttp_t* p) {
      auto* self = static_cast<Fetch*>(p->data);
      self->response_.status = p->status_code;
      return 0;
    };
    settings_.on_body = [](llhttp_t* p, const char* at, std::size_t n) {
      auto* self = static_cast<Fetch*>(p->data);
      if (self->response_.body.size() + n > self->request_.max_body) {
        self->too_large_ = true;
        return -1;
      }
      self->response_.body.append(at, n);
      return 0;
    };
    settings_.on_message_complete = [](llhttp_t* p) {
      static_cast<Fetch*>(p->data)->complete_ = true;
      return 0;
    };
    llhttp_init(&parser_, HTTP_RESPONSE, &settings_);
    parser_.data = this;
  }

  void start() {
    auto self = shared_from_this();
    timer_ = clock_.schedule(request_.timeout, [self] {
      self->timer_ = kNoTimer;
      self->fail(Failure::timeout,
                 "no complete answer from https://" + self->request_.host + " within " +
                     std::to_string(
                         std::chrono::duration_cast<std::chrono::seconds>(self->request_.timeout)
                             .count()) +
                     " s");
    });
    resolver_.query_addresses(request_.host, [self](AddressAnswer a) {
      if (self->finished_) return;
      if (a.status != DnsStatus::ok || a.addresses.empty()) {
        self->fail(Failure::dns, self->request_.host + ": " + to_string(a.status) +
                                     (a.detail.empty() ? "" : " (" + a.detail + ")"));
        return;
      }
      std::vector<std::string> refused;
      for (auto& addr : a.addresses) {
        const bool allowed =
            !is_internal_address(addr) ||
            std::any_of(self->request_.allow_internal.begin(), self->request_.allow_internal.end(),
                        [&](const Network& n) { return n.contains(addr); });
        (allowed ? self->addresses_ : refused).push_back(addr);
      }
      if (self->addresses_.empty()) {
        std::string list;
        for (const auto& r : refused) list += (list.empty() ? "" : ", ") + r;
        self->fail(Failure::dns, self->request_.host + " has only internal addresses (" + list +
                                     "): not dialled");
        return;
      }
      self->connect_next();
    });
  }

  // --- ConnectionHandler ---
  void on_connect(const Result<void>& r) override {
    if (finished_) return;
    if (!r) {
      last_connect_error_ = endpoint_text() + ": " + r.error().message;
      conn_.reset();
      post([](Fetch& f) { f.connect_next(); });
      return;
    }
    TlsClientOptions tls;
    tls.server_name = request_.host;
    tls.verify = true;
    tls.ca_file = request_.ca_file;
    conn_->start_tls(tls);
  }

  void on_tls(const Result<TlsInfo>& r) override {
    if (finished_) return;
    if (!r) {
      fail(Failure::tls, endpoint_text() + ": TLS: " + r.error().message);
      return;
    }
    if (!r->verified) {
      fail(Failure::tls, endpoint_text() + ": the certificate is not valid for " + request_.host);
      return;
    }
    conn_->write("GET " + request_.path + " HTTP/1.1\r\nHost: " + request_.host +
                 "\r\nUser-Agent: mailq\r\nAccept: text/plain\r\nConnection: close\r\n\r\n");
  }

  void on_read(std::string_view data) override {
    if (finished_) return;
    const llhttp_errno_t rc = llhttp_execute(&parser_, data.data(), data.size());
    if (rc != HPE_OK) {
      malformed(rc);
      return;
    }
    if (complete_) answer();
  }

  void on_close(const Result<void>& r) override {
    if (finished_) return;
    if (!complete_ && r) {
      const llhttp_errno_t rc = llhttp_finish(&parser_);
      if (rc != HPE_OK) {
        malformed(rc);
        return;
      }
    }
    if (complete_) {
      answer();
      return;
    }
    fail(Failure::malformed, endpoint_text() + ": the connection ended before a whole response" +
                                 (r ? std::string() : ": " + r.error().message));
  }

 private:
  void post(void (*step)(Fetch&)) {
    auto self = shared_from_this();
    clock_.schedule(Duration{0}, [self, step] {
      if (!self->finished_) step(*self);
    });
  }

  std::string endpoint_text() const {
    return request_.host + " [" + current_address_ + "]:" + std::to_string(request_.port);
  }

  void connect_next() {
    if (next_address_ >= addresses_.size()) {
      fail(Failure::connect, "cannot connect to " + request_.host + ": " + last_connect_error_);
      return;
    }
    current_address_ = addresses_[next_address_++];
    ConnectOptions co;
    co.connect_timeout = request_.timeout;
    co.source_address = request_.source_address;
    conn_ = transport_.connect({current_address_, request_.port}, co, *this);
  }

  static constexpr std::size_t kMaxHead = 16 * 1024;

  int count_head(std::size_t n) {
    head_size_ += n;
    if (head_size_ <= kMaxHead) return 0;
    head_too_large_ = true;
    return -1;
  }

  void malformed(llhttp_errno_t rc) {
    if (head_too_large_) {
      fail(Failure::malformed, "https://" + request_.host + request_.path +
                                   ": the response header is larger than " +
                                   std::to_string(kMaxHead) + " octets");
      return;
    }
    if (too_large_) {
      fail(Failure::malformed, "https://" + request_.host + request_.path +
                                   ": the body is larger than " +
                                   std::to_string(request_.max_body) + " octets");
      return;
    }
    const char* reason = llhttp_get_error_reason(&parser_);
    fail(Failure::malformed, endpoint_text() + ": not an HTTP response (" + llhttp_errno_name(rc) +
                                 (reason ? std::string(": ") + reason : std::string()) + ")");
  }

  void answer() {
    const int status = response_.status;
    if (status != 200) {
      std::string why = "HTTP status " + std::to_string(status);
      if (status >= 300 && status < 400) why += " (a redirect: not followed, RFC 8461 §3.3)";
      fail(Failure::status, "https://" + request_.host + request_.path + ": " + why);
      return;
    }
    std::string type = response_.content_type.substr(0, response_.content_type.find(';'));
    type.erase(
        std::remove_if(type.begin(), type.end(), [](char c) { return c == ' ' || c == '\t'; }),
        type.end());
    for (auto& c : type) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (type != "text/plain") {
      fail(Failure::malformed, "https://" + request_.host + request_.path + ": Content-Type \"" +
                                   response_.content_type + "\", not text/plain");
      return;
    }
    finish(std::move(response_));
  }

  void fail(Failure f, std::string detail) {
    HttpsResponse r;
    r.failure = f;
    r.detail = std::move(detail);
    r.status = response_.status;
    finish(std::move(r));
  }

  void finish(HttpsResponse r) {
    if (finished_) return;
    finished_ = true;
    if (timer_ != kNoTimer) clock_.cancel(timer_);
    timer_ = kNoTimer;
    // The connection goes on a later turn: this may run inside one of its callbacks.
    auto self = shared_from_this();
    clock_.schedule(Duration{0}, [self, r = std::move(r)]() mutable {
      self->conn_.reset();
      if (auto done = std::move(self->done_)) done(std::move(r));
    });
  }

 public:
  // The handle went: nothing more happens.
  void cancel() {
    finished_ = true;
    done_ = nullptr;
    if (timer_ != kNoTimer) clock_.cancel(timer_);
    timer_ = kNoTimer;
    conn_.reset();
  }

 private:
  Resolver& resolver_;
  Transport& transport_;
  Clock& clock_;
  HttpsRequest request_;
  std::function<void(HttpsResponse)> done_;
  llhttp_settings_t settings_{};
  llhttp_t parser_{};
  std::unique_ptr<Connection> conn_;
  std::vector<std::string> addresses_;
  std::size_t next_address_ = 0;
  std::string current_address_;
  std::string last_connect_error_ = "no address";
  std::string field_;
  bool value_done_ = false;
  bool complete_ = false;
  bool too_large_ = false;
  bool head_too_large_ = false;
  std::size_t head_size_ = 0;
  bool finished_ = false;
  TimerId timer_ = kNoTimer;
  HttpsResponse response_;
};

class Handle final : public HttpsFetch {
 public:
  explicit Handle(std::shared_ptr<Fetch> f) : fetch_(std::move(f)) {}
  ~Handle() override { fetch_->cancel(); }

 private:
  std::shared_ptr<Fetch> fetch_;
};

}  // namespace

std::unique_ptr<HttpsFetch> https_get(Resolver& resolver, Transport& transport, Clock& clock,
                                      HttpsRequest request,
                                      std::function<void(HttpsResponse)> done) {
  auto fetch =
      std::make_shared<Fetch>(resolver, transport, clock, std::move(request), std::move(done));
  fetch->start();
  return std::make_unique<Handle>(std::move(fetch));
}

}  // namespace mailq::uv::detail
