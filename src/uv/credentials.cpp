// PasswordFile: SMTP AUTH credentials from a file of crypt(3) hashes, checked on libuv's
// thread pool.

#include "mailq/uv/credentials.h"

#include <crypt.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fcntl.h>
#include <cerrno>
#include <cstring>
#include <memory>
#include <system_error>
#include <utility>

#include "core/text.h"

namespace mailq::uv {
namespace {

// One crypt_data per call: about 32 KiB, too much for a thread pool's stack.
std::string run_crypt(const std::string& phrase, const std::string& setting) {
  auto data = std::make_unique<crypt_data>();
  std::memset(data.get(), 0, sizeof *data);
  const char* out = crypt_r(phrase.c_str(), setting.c_str(), data.get());
  // libxcrypt returns a string starting with '*' for a setting it cannot use.
  if (out == nullptr || out[0] == '*') return {};
  return out;
}

bool same(std::string_view a, std::string_view b) {
  // Constant time in the contents (the lengths of two hashes of one scheme are equal).
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

// The schemes accepted: strong ones only.
bool strong_scheme(std::string_view hash) {
  for (std::string_view prefix : {"$y$", "$gy$", "$7$", "$2b$", "$2y$", "$6$", "$5$"}) {
    if (hash.substr(0, prefix.size()) == prefix) return true;
  }
  return false;
}

Error file_error(const std::string& origin, std::size_t line, const std::string& what) {
  return Error(make_error_code(errc::invalid_parameter),
               "credentials " + origin + " line " + std::to_string(line) + ": " + what);
}

// Password hashes running at once on the thread pool, per authenticator.
constexpr std::size_t kMaxHashesInFlight = 8;

}  // namespace

Result<std::shared_ptr<const PasswordFile>> PasswordFile::parse(std::string_view text,
                                                                const std::string& origin) {
  auto file = read_lines(text, origin);
  if (!file) return file.error();
  return std::shared_ptr<const PasswordFile>(std::move(file.value()));
}

Result<std::shared_ptr<PasswordFile>> PasswordFile::read_lines(std::string_view text,
                                                               const std::string& origin) {
  auto file = std::make_shared<PasswordFile>();
  std::size_t number = 0;
  while (!text.empty()) {
    const std::size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    ++number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const std::size_t first = line.find_first_not_of(" \t");
    if (first == std::string_view::npos || line[first] == '#') continue;
    const std::size_t c1 = line.find(':');
    if (c1 == std::string_view::npos)
      return file_error(origin, number, "expected user:hash[:senders]");
    const std::string_view user = line.substr(0, c1);
    std::string_view rest = line.substr(c1 + 1);
    const std::size_t c2 = rest.find(':');
    const std::string_view hash = rest.substr(0, c2);
    const std::string_view senders =
        c2 == std::string_view::npos ? std::string_view{} : rest.substr(c2 + 1);
    if (user.empty()) return file_error(origin, number, "no user name");
    for (char c : user) {
      const auto u = static_cast<unsigned char>(c);
      if (u <= 0x20 || u == 0x7f)
        return file_error(origin, number, "the user name holds a space or a control character");
    }
    if (file->users_.count(user) != 0)
      return file_error(origin, number, "user " + std::string(user) + " is listed twice");
    // Checked by its form, not by hashing (a hash takes milliseconds on purpose, and the file
    // is read on the relay's loop).
    if (!strong_scheme(hash) || hash.size() < 20 || hash.find_first_of(" \t") != hash.npos ||
        crypt_checksalt(std::string(hash).c_str()) != CRYPT_SALT_OK) {
      return file_error(origin, number,
                        "the password of " + std::string(user) +
                            " is not a yescrypt, bcrypt, SHA-512 or SHA-256 crypt(3) hash "
                            "(write one with mailq-relay --hash-password)");
    }
    User u;
    u.hash = std::string(hash);
    std::string_view list = senders;
    while (!list.empty()) {
      const std::size_t comma = list.find(',');
      std::string_view item = list.substr(0, comma);
      while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
      while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
      list.remove_prefix(comma == std::string_view::npos ? list.size() : comma + 1);
      if (item.empty()) continue;
      const bool ok = item == "*" || (item.front() == '@' && item.size() > 1) ||
                      static_cast<bool>(Address::parse(item));
      if (!ok) {
        return file_error(origin, number,
                          "\"" + std::string(item) +
                              "\" is not an address, an @domain or * (senders of " +
                              std::string(user) + ")");
      }
      u.senders.push_back(detail::to_lower(item));
    }
    file->users_.emplace(std::string(user), std::move(u));
  }
  return file;
}

Result<std::shared_ptr<const PasswordFile>> PasswordFile::load(const std::string& path) {
  auto fail = [&path](int e) {
    return Error(std::error_code(e, std::generic_category()),
                 "credentials " + path + ": " + std::generic_category().message(e));
  };
  // One open for the text and the permissions both.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(errno);
  struct stat st;
  std::string text;
  int err = ::fstat(fd, &st) == 0 ? 0 : errno;
  char buf[8192];
  for (ssize_t n; err == 0 && (n = ::read(fd, buf, sizeof buf)) != 0;) {
    if (n < 0) {
      if (errno != EINTR) err = errno;
      continue;
    }
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  if (err != 0) return fail(err);
  auto file = read_lines(text, path);
  if (!file) return file.error();
  file.value()->world_readable_ = (st.st_mode & S_IROTH) != 0;
  return std::shared_ptr<const PasswordFile>(std::move(file.value()));
}

bool PasswordFile::verify(const std::string& user, const std::string& password) const {
  if (users_.empty()) return false;
  // A password with a NUL would be cut there by crypt(3): never a match.
  const bool usable = password.find('\0') == std::string::npos;
  const auto it = users_.find(user);
  if (it == users_.end()) {
    // An unknown user costs what a known one does: a real user's hash (scheme and cost), the
    // one the name points at, is computed and the result thrown away.
    const std::size_t pick = std::hash<std::string>{}(user) % users_.size();
    (void)run_crypt(password, std::next(users_.begin(), static_cast<long>(pick))->second.hash);
    return false;
  }
  const std::string computed = run_crypt(password, it->second.hash);
  return usable && !computed.empty() && same(computed, it->second.hash);
}

bool PasswordFile::may_send_as(const std::string& user,
                               const std::optional<Address>& sender) const {
  const auto it = users_.find(user);
  if (it == users_.end()) return false;
  if (!sender || it->second.senders.empty()) return true;
  const std::string address = detail::to_lower(sender->to_string());
  const std::string domain = "@" + detail::to_lower(sender->domain());
  for (const std::string& allowed : it->second.senders) {
    if (allowed == "*" || allowed == address || allowed == domain) return true;
  }
  return false;
}

Result<std::string> hash_password(std::string_view password) {
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  // yescrypt at libxcrypt's default cost, salt from the system's random source.
  if (crypt_gensalt_rn("$y$", 0, nullptr, 0, setting, sizeof setting) == nullptr) {
    const int e = errno != 0 ? errno : EINVAL;
    return Error(std::error_code(e, std::generic_category()),
                 "cannot make a password salt: " + std::generic_category().message(e));
  }
  std::string hash = run_crypt(std::string(password), setting);
  if (hash.empty()) {
    return Error(make_error_code(errc::invalid_parameter), "cannot hash the password");
  }
  return hash;
}

std::function<void(AuthRequest, std::function<void(AuthVerdict)>)> password_authenticator(
    uv_loop_t* loop, std::function<std::shared_ptr<const PasswordFile>()> current) {
  auto in_flight = std::make_shared<std::size_t>(0);
  return [loop, in_flight, current = std::move(current)](AuthRequest request,
                                                         std::function<void(AuthVerdict)> done) {
    struct Work {
      uv_work_t req;
      std::shared_ptr<const PasswordFile> file;
      AuthRequest request;
      std::function<void(AuthVerdict)> done;
      std::shared_ptr<std::size_t> in_flight;
      bool ok = false;
    };
    // Hashes are slow on purpose: a flood of logins must not take every thread of the pool
    // (or the CPU) from the rest. Beyond the cap: 454, try again later.
    if (*in_flight >= kMaxHashesInFlight) return done(AuthVerdict::unavailable);
    auto work = std::make_unique<Work>();
    work->file = current ? current() : nullptr;
    if (!work->file) return done(AuthVerdict::unavailable);
    work->in_flight = in_flight;
    ++*in_flight;
    work->request = std::move(request);
    work->done = std::move(done);
    work->req.data = work.get();
    const int r = uv_queue_work(
        loop, &work->req,
        [](uv_work_t* req) {
          auto* w = static_cast<Work*>(req->data);
          w->ok = w->file->verify(w->request.user, w->request.password);
        },
        [](uv_work_t* req, int status) {
          std::unique_ptr<Work> w(static_cast<Work*>(req->data));
          --*w->in_flight;
          w->done(status != 0 ? AuthVerdict::unavailable
                  : w->ok     ? AuthVerdict::accepted
                              : AuthVerdict::rejected);
        });
    if (r != 0) {
      --*in_flight;
      work->done(AuthVerdict::unavailable);
      return;
    }
    work.release();  // owned by the after-work callback
  };
}

}  // namespace mailq::uv
