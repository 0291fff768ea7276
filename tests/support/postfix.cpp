#include "support/postfix.h"

#include <filesystem>
#include <thread>

namespace mailq::test {

namespace fs = std::filesystem;

namespace {

// Debian's master.cf with every service unchrooted (fifth field "n") and the smtp listener
// moved to 127.0.0.1:`port`, or left out when `port` is 0.
std::string private_master_cf(std::uint16_t port) {
  const std::string stock = read_file("/etc/postfix/master.cf");
  std::string master;
  std::size_t p = 0;
  while (p < stock.size()) {
    std::size_t e = stock.find('\n', p);
    if (e == std::string::npos) e = stock.size();
    std::string line = stock.substr(p, e - p);
    p = e + 1;
    const bool listener = line.rfind("smtp      inet", 0) == 0;
    if (listener && port == 0) continue;
    if (!line.empty() && line[0] >= 'a' && line[0] <= 'z') {
      std::vector<std::string> f;
      std::size_t q = 0;
      while (q < line.size()) {
        const std::size_t s = line.find_first_not_of(' ', q);
        if (s == std::string::npos) break;
        const std::size_t t = line.find(' ', s);
        f.push_back(line.substr(s, t == std::string::npos ? std::string::npos : t - s));
        q = t == std::string::npos ? line.size() : t;
      }
      if (f.size() >= 8) {
        if (listener) f[0] = "127.0.0.1:" + std::to_string(port);
        f[4] = "n";
        line.clear();
        for (const auto& x : f) line += (line.empty() ? "" : " ") + x;
      }
    }
    master += line + "\n";
  }
  return master;
}

}  // namespace

bool PostfixInstance::start(const Options& options, std::string* error) {
  fs::permissions(dir_.path(), fs::perms::owner_all | fs::perms::group_read |
                                   fs::perms::group_exec | fs::perms::others_read |
                                   fs::perms::others_exec);
  etc_ = dir_.file("etc");
  fs::create_directories(etc_);
  fs::create_directories(dir_.file("queue"));
  fs::create_directories(dir_.file("data"));
  if (run_program({"chown", "postfix", dir_.file("data")}) != 0) {
    *error = "chown postfix " + dir_.file("data") + " failed";
    return false;
  }
  for (const char* f : {"dynamicmaps.cf", "postfix-files"})
    fs::copy_file(std::string("/etc/postfix/") + f, etc_ + "/" + f);
  for (const char* d : {"dynamicmaps.cf.d", "postfix-files.d"}) {
    std::error_code ec;
    fs::copy(std::string("/etc/postfix/") + d, etc_ + "/" + d, fs::copy_options::recursive, ec);
  }
  write_file(etc_ + "/master.cf", private_master_cf(options.smtpd_port));
  write_file(etc_ + "/main.cf", "");
  write_file(dir_.file("maillog"), "");
  std::vector<std::string> argv = {"postconf",
                                   "-c",
                                   etc_,
                                   "-e",
                                   "queue_directory=" + dir_.file("queue"),
                                   "data_directory=" + dir_.file("data"),
                                   "meta_directory=" + etc_,
                                   "shlib_directory=/usr/lib/postfix",
                                   "compatibility_level=3.6",
                                   "mail_owner=postfix",
                                   "setgid_group=postdrop",
                                   "myhostname=postfix.mailq.test",
                                   "mydomain=mailq.test",
                                   "mydestination=",
                                   "alias_maps=",
                                   "alias_database=",
                                   "biff=no",
                                   "inet_interfaces=loopback-only",
                                   "inet_protocols=ipv4",
                                   "maillog_file=" + dir_.file("maillog"),
                                   "maillog_file_prefixes=" + dir_.path()};
  argv.insert(argv.end(), options.settings.begin(), options.settings.end());
  std::string out;
  if (run_program(argv, &out) != 0) {
    *error = "postconf failed: " + out;
    return false;
  }
  run_program({"postfix", "-c", etc_, "set-permissions"}, &out);
  if (run_program({"postfix", "-c", etc_, "start"}, &out) != 0) {
    *error = "postfix start failed: " + out;
    return false;
  }
  started_ = true;
  return true;
}

void PostfixInstance::stop() {
  if (!started_) return;
  started_ = false;
  run_program({"postfix", "-c", etc_, "stop"});
}

std::string PostfixInstance::maillog() const {
  return read_file(dir_.file("maillog"));
}

bool PostfixInstance::wait_for_log(std::string_view needle, std::chrono::milliseconds limit) const {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (true) {
    if (maillog().find(needle) != std::string::npos) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(50ms);
  }
}

}  // namespace mailq::test
