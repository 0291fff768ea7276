#include <algorithm>
#include <cctype>

#include "mailq/resolver.h"

namespace mailq {
namespace {
std::string key(const std::string& name) {
  std::string k = name;
  while (!k.empty() && k.back() == '.') k.pop_back();
  std::transform(k.begin(), k.end(), k.begin(), [](unsigned char c) { return std::tolower(c); });
  return k;
}
}  // namespace

void StaticResolver::set_mx(const std::string& domain, std::vector<MxRecord> records) {
  MxAnswer a;
  a.status = DnsStatus::ok;
  a.records = std::move(records);
  mx_[key(domain)] = std::move(a);
}

void StaticResolver::set_mx_status(const std::string& domain, DnsStatus status) {
  MxAnswer a;
  a.status = status;
  a.detail = std::string("static: ") + to_string(status);
  mx_[key(domain)] = std::move(a);
}

void StaticResolver::set_addresses(const std::string& host, std::vector<std::string> addresses) {
  AddressAnswer a;
  a.status = DnsStatus::ok;
  a.addresses = std::move(addresses);
  addresses_[key(host)] = std::move(a);
}

void StaticResolver::set_addresses_status(const std::string& host, DnsStatus status) {
  AddressAnswer a;
  a.status = status;
  a.detail = std::string("static: ") + to_string(status);
  addresses_[key(host)] = std::move(a);
}

template <class Answer>
void StaticResolver::answer_later(Answer a, std::function<void(Answer)> done) {
  ++queries_;
  auto shared = std::make_shared<std::function<void(Answer)>>(std::move(done));
  auto id = std::make_shared<TimerId>(kNoTimer);
  *id = clock_.schedule(latency_, [this, shared, id, a = std::move(a)]() mutable {
    pending_.erase(*id);
    (*shared)(std::move(a));
  });
  pending_[*id] = [shared] {
    Answer cancelled;
    cancelled.status = DnsStatus::error;
    cancelled.detail = "cancelled";
    (*shared)(std::move(cancelled));
  };
}

void StaticResolver::query_mx(const std::string& domain, std::function<void(MxAnswer)> done) {
  MxAnswer a;
  auto it = mx_.find(key(domain));
  if (it != mx_.end()) {
    a = it->second;
  } else if (addresses_.count(key(domain))) {
    a.status = DnsStatus::no_data;  // the name exists (it has addresses) but no MX
  } else {
    a.status = DnsStatus::nxdomain;
    a.detail = "static: NXDOMAIN";
  }
  a.secure = !is_transient(a.status) && secure_.count(key(domain)) > 0;
  answer_later(std::move(a), std::move(done));
}

void StaticResolver::query_addresses(const std::string& host,
                                     std::function<void(AddressAnswer)> done) {
  AddressAnswer a;
  auto it = addresses_.find(key(host));
  if (it != addresses_.end()) {
    a = it->second;
  } else if (mx_.count(key(host))) {
    a.status = DnsStatus::no_data;
  } else {
    a.status = DnsStatus::nxdomain;
    a.detail = "static: NXDOMAIN";
  }
  a.secure = !is_transient(a.status) && secure_.count(key(host)) > 0;
  answer_later(std::move(a), std::move(done));
}

void StaticResolver::set_txt(const std::string& name, std::vector<std::string> records) {
  TxtAnswer a;
  a.status = DnsStatus::ok;
  a.records = std::move(records);
  txt_[key(name)] = std::move(a);
}

void StaticResolver::set_txt_status(const std::string& name, DnsStatus status) {
  TxtAnswer a;
  a.status = status;
  a.detail = std::string("static: ") + to_string(status);
  txt_[key(name)] = std::move(a);
}

void StaticResolver::query_txt(const std::string& name, std::function<void(TxtAnswer)> done) {
  TxtAnswer a;
  auto it = txt_.find(key(name));
  if (it != txt_.end()) {
    a = it->second;
  } else if (mx_.count(key(name)) || addresses_.count(key(name))) {
    a.status = DnsStatus::no_data;
  } else {
    a.status = DnsStatus::nxdomain;
    a.detail = "static: NXDOMAIN";
  }
  a.secure = !is_transient(a.status) && secure_.count(key(name)) > 0;
  answer_later(std::move(a), std::move(done));
}

void StaticResolver::set_tlsa(const std::string& name, std::vector<dane::TlsaRecord> records) {
  TlsaAnswer a;
  a.status = DnsStatus::ok;
  a.records = std::move(records);
  tlsa_[key(name)] = std::move(a);
}

void StaticResolver::set_tlsa_status(const std::string& name, DnsStatus status) {
  TlsaAnswer a;
  a.status = status;
  a.detail = std::string("static: ") + to_string(status);
  tlsa_[key(name)] = std::move(a);
}

void StaticResolver::set_secure(const std::string& name, bool secure) {
  if (secure)
    secure_.insert(key(name));
  else
    secure_.erase(key(name));
}

void StaticResolver::query_tlsa(const std::string& name, std::function<void(TlsaAnswer)> done) {
  TlsaAnswer a;
  auto it = tlsa_.find(key(name));
  if (it != tlsa_.end()) {
    a = it->second;
  } else {
    a.status = DnsStatus::nxdomain;
    a.detail = "static: NXDOMAIN";
  }
  a.secure = !is_transient(a.status) && secure_.count(key(name)) > 0;
  answer_later(std::move(a), std::move(done));
}

StaticResolver::~StaticResolver() {
  // Every query still pending is answered once, now; its timer never runs.
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& [id, cancel] : pending) {
    clock_.cancel(id);
    cancel();
  }
}

}  // namespace mailq
