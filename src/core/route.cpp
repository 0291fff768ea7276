#include "mailq/route.h"

#include "core/smtp/reply_parse.h"
#include "mailq/address.h"
#include "mailq/net.h"

#include <algorithm>
#include <cctype>

namespace mailq {
namespace {

// A value in an error message: quoted, controls escaped, so that the words stay on one line.
std::string quoted(std::string_view text) {
  return "\"" + detail::printable(text, 256) + "\"";
}

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

Result<void> RouteTable::add(Route route) {
  if (route.name.empty()) return Error(errc::invalid_parameter, "route: the name is empty");
  for (unsigned char c : route.name)
    if (c <= ' ' || c == 0x7f || c == '/')
      return Error(errc::forbidden_character, "route " + quoted(route.name) +
                                                  ": a name holds no space, '/' or control "
                                                  "character");
  std::string why;
  if (check_envelope_value(route.helo, &why))
    return Error(errc::forbidden_character,
                 "route " + quoted(route.name) + ": helo " + quoted(route.helo) + ": " + why);
  for (auto& h : route.hosts) {
    if (!valid_host(h.host))
      return Error(errc::invalid_parameter, "route " + quoted(route.name) + ": host " +
                                                quoted(h.host) +
                                                " is not a host name or IP address");
    if (h.port == 0)
      return Error(errc::invalid_parameter,
                   "route " + quoted(route.name) + ": host " + quoted(h.host) + " has port 0");
  }
  auto it = by_name_.find(route.name);
  if (it != by_name_.end()) {
    routes_[it->second] = std::make_shared<const Route>(std::move(route));
  } else {
    by_name_.emplace(route.name, routes_.size());
    routes_.push_back(std::make_shared<const Route>(std::move(route)));
  }
  return success();
}

Result<void> RouteTable::map(std::string_view pattern, std::string_view route) {
  auto it = by_name_.find(std::string(route));
  if (it == by_name_.end())
    return Error(errc::not_found, "map " + quoted(pattern) + ": no route " + quoted(route));
  std::string why;
  if (pattern.empty() || check_envelope_value(pattern, &why))
    return Error(errc::invalid_parameter,
                 "map " + quoted(pattern) + ": " + (pattern.empty() ? "an empty pattern" : why));
  if (pattern.front() == '.') {
    std::string k = lower(pattern.substr(1));
    if (k.empty())
      return Error(
          errc::invalid_parameter,
          "map " + quoted(pattern) + ": a wildcard names a parent domain (\".example.com\")");
    wildcard_[k] = it->second;
  } else {
    exact_[lower(pattern)] = it->second;
  }
  return success();
}

Result<void> RouteTable::set_default(std::string_view route) {
  auto it = by_name_.find(std::string(route));
  if (it == by_name_.end()) return Error(errc::not_found, "default: no route " + quoted(route));
  default_ = it->second;
  return success();
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
