// Helpers shared by the benchmark programs (a header, so the bench/ glob of *.cpp does not
// turn it into a program of its own).
#pragma once

#include <uv.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "mailq/spool/file_spool.h"
#include "mailq/spool/layout.h"

namespace bench {

using Steady = std::chrono::steady_clock;

inline double seconds_since(Steady::time_point t0) {
  return std::chrono::duration<double>(Steady::now() - t0).count();
}

/// "--name value" flags; every flag must be known (a typo is an error, not a silent default).
class Args {
 public:
  Args(int argc, char** argv, std::map<std::string, std::string> defaults)
      : values_(std::move(defaults)) {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--", 0) != 0 || values_.count(a.substr(2)) == 0 || i + 1 >= argc) {
        std::fprintf(stderr, "%s: bad argument '%s'; flags (with defaults):\n", argv[0], a.c_str());
        for (auto& [k, v] : values_) std::fprintf(stderr, "  --%s %s\n", k.c_str(), v.c_str());
        std::exit(64);
      }
      values_[a.substr(2)] = argv[++i];
    }
  }
  std::string str(const std::string& k) const { return values_.at(k); }
  long long num(const std::string& k) const {
    const std::string& v = values_.at(k);
    char* end = nullptr;
    long long n = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || n < 0) {
      std::fprintf(stderr, "--%s: not a non-negative integer: '%s'\n", k.c_str(), v.c_str());
      std::exit(64);
    }
    return n;
  }

 private:
  std::map<std::string, std::string> values_;
};

/// One JSON object, flat, appended as one line to a file (JSON Lines); run.sh assembles them.
class JsonRecord {
 public:
  explicit JsonRecord(std::string bench) { add("bench", bench); }
  JsonRecord& add(const std::string& k, const std::string& v) {
    std::string e;
    for (char c : v) {
      if (c == '"' || c == '\\')
        e += '\\', e += c;
      else if (static_cast<unsigned char>(c) < 0x20)
        e += ' ';
      else
        e += c;
    }
    fields_.push_back("\"" + k + "\": \"" + e + "\"");
    return *this;
  }
  JsonRecord& add(const std::string& k, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    fields_.push_back("\"" + k + "\": " + buf);
    return *this;
  }
  JsonRecord& add(const std::string& k, long long v) {
    fields_.push_back("\"" + k + "\": " + std::to_string(v));
    return *this;
  }
  std::string str() const {
    std::string s = "{";
    for (std::size_t i = 0; i < fields_.size(); ++i) s += (i ? ", " : "") + fields_[i];
    return s + "}";
  }
  void append_to(const std::string& path) const {
    std::printf("%s\n", str().c_str());
    if (path.empty()) return;
    std::ofstream f(path, std::ios::app);
    f << str() << "\n";
  }

 private:
  std::vector<std::string> fields_;
};

/// A message body of about `size` octets: a few headers and 76-character lines, CRLF.
inline std::string make_body(std::size_t size, std::size_t seq) {
  std::string b = "Message-ID: <bench." + std::to_string(seq) +
                  "@bench.localhost>\r\nFrom: bench@bench.localhost\r\nTo: "
                  "sink@bench.localhost\r\nSubject: mailq bench " +
                  std::to_string(seq) + "\r\n\r\n";
  static const char kLine[] =
      "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 abcdefghijk\r\n";
  while (b.size() + sizeof kLine - 1 <= size) b += kLine;
  if (b.size() < size) b.append(size - b.size() - (size - b.size() >= 2 ? 2 : 0), 'x');
  if (b.size() + 2 <= size || b.compare(b.size() - 2, 2, "\r\n") != 0) b += "\r\n";
  return b;
}

/// Resident memory of this process in KiB (VmRSS of /proc/self/status), 0 when unknown.
inline long long vm_rss_kib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6);
  return 0;
}

/// Opens the spool at `dir` in the layout `--layout` names ("files" or "segments"); exits 64 on
/// an unknown layout and 73 when the spool cannot be opened.
inline std::unique_ptr<mailq::spool::DurableStorage> open_spool(const char* program,
                                                                const std::string& dir,
                                                                mailq::Clock& clock,
                                                                const std::string& layout) {
  auto l = mailq::spool::parse_layout(layout);
  if (!l) {
    std::fprintf(stderr, "%s: --layout: '%s' is not files or segments\n", program, layout.c_str());
    std::exit(64);
  }
  auto s = mailq::spool::open_spool(dir, clock, *l);
  if (!s) {
    std::fprintf(stderr, "%s: %s\n", program, s.error().message.c_str());
    std::exit(73);
  }
  return std::move(s.value());
}

/// The sync counters of either spool: group commits, and the syncs they cost.
struct SyncCounts {
  long long batches = 0, syncs = 0;
};
inline SyncCounts sync_counts(const mailq::spool::DurableStorage& s) {
  if (auto* f = dynamic_cast<const mailq::spool::SpoolStorage*>(&s)) {
    auto st = f->stats();
    return {static_cast<long long>(st.batches),
            static_cast<long long>(st.fs_syncs + st.file_syncs + st.dir_syncs)};
  }
  if (auto* g = dynamic_cast<const mailq::spool::SegmentStorage*>(&s)) {
    auto st = g->stats();
    return {static_cast<long long>(st.batches), static_cast<long long>(st.syncs + st.dir_syncs)};
  }
  return {};
}

/// Runs the loop until `done()` holds (checked after every loop iteration) or `limit` passed.
/// Returns whether `done()` held.
inline bool run_until(uv_loop_t* loop, const std::function<bool()>& done,
                      std::chrono::seconds limit) {
  const auto deadline = Steady::now() + limit;
  while (!done()) {
    if (Steady::now() > deadline) return false;
    uv_run(loop, UV_RUN_ONCE);
  }
  return true;
}

}  // namespace bench
