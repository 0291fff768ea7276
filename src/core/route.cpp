#include "mailq/route.h"

#include "mailq/address.h"
#include "mailq/net.h"

#include <algorithm>
#include <cctype>

namespace mailq {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  while (!out.empty() && out.back() == '.') out.pop_back();
  return out;
}

// A host field as RouteHost::parse leaves it: a name or an IP literal, no brackets, no port.
bool valid_host(const std::string& host) {
  auto hp = HostPort::parse(host);
  return hp && hp->host == host && hp->port == 0;
}

}  // namespace

Result<RouteHost> RouteHost::parse(std::string_view s) {
  auto hp = HostPort::parse(s);
  if (!hp) return Error(errc::invalid_parameter, "route host " + hp.error().message);
  RouteHost h;
  h.host = std::move(hp->host);
  if (hp->port != 0) h.port = hp->port;
  return h;
}

RouteTable::RouteTable() {
  auto def = std::make_shared<Route>();
  def->name = "default-non-local-route";
  by_name_.emplace(def->name, 0);
  routes_.push_back(std::move(def));
  default_ = 0;
}

std::error_code RouteTable::add(Route route) {
  if (route.name.empty()) return make_error_code(errc::invalid_parameter);
  for (unsigned char c : route.name)
    if (c <= ' ' || c == 0x7f || c == '/') return make_error_code(errc::forbidden_character);
  if (check_envelope_value(route.helo)) return make_error_code(errc::forbidden_character);
  for (auto& h : route.hosts)
    if (!valid_host(h.host) || h.port == 0) return make_error_code(errc::invalid_parameter);
  auto it = by_name_.find(route.name);
  if (it != by_name_.end()) {
    routes_[it->second] = std::make_shared<const Route>(std::move(route));
  } else {
    by_name_.emplace(route.name, routes_.size());
    routes_.push_back(std::make_shared<const Route>(std::move(route)));
  }
  return {};
}

std::error_code RouteTable::map(std::string_view pattern, std::string_view route) {
  auto it = by_name_.find(std::string(route));
  if (it == by_name_.end()) return make_error_code(errc::not_found);
  if (pattern.empty() || check_envelope_value(pattern))
    return make_error_code(errc::invalid_parameter);
  if (pattern.front() == '.') {
    std::string k = lower(pattern.substr(1));
    if (k.empty()) return make_error_code(errc::invalid_parameter);
    wildcard_[k] = it->second;
  } else {
    exact_[lower(pattern)] = it->second;
  }
  return {};
}

std::error_code RouteTable::set_default(std::string_view route) {
  auto it = by_name_.find(std::string(route));
  if (it == by_name_.end()) return make_error_code(errc::not_found);
  default_ = it->second;
  return {};
}

std::size_t RouteTable::index_of_domain(std::string_view domain) const {
  std::string d = lower(domain);
  if (auto it = exact_.find(d); it != exact_.end()) return it->second;
  // Parent wildcards, most specific first: a.b.example.com tries b.example.com, example.com, com.
  for (std::size_t dot = d.find('.'); dot != std::string::npos; dot = d.find('.', dot + 1)) {
    if (auto it = wildcard_.find(d.substr(dot + 1)); it != wildcard_.end()) return it->second;
  }
  return default_;
}

const Route& RouteTable::lookup(std::string_view domain) const {
  return *routes_[index_of_domain(domain)];
}

std::shared_ptr<const Route> RouteTable::lookup_shared(std::string_view domain) const {
  return routes_[index_of_domain(domain)];
}

const Route* RouteTable::find(std::string_view name) const {
  auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? nullptr : routes_[it->second].get();
}

std::shared_ptr<const Route> RouteTable::find_shared(std::string_view name) const {
  auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? nullptr : routes_[it->second];
}

const Route& RouteTable::default_route() const {
  return *routes_[default_];
}

std::string destination_key(const Route& route, std::string_view routing_domain) {
  if (route.is_static()) return route.name;
  return lower(routing_domain);
}

}  // namespace mailq
