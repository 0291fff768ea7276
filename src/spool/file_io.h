// File and directory I/O shared by the spool storages (spool_storage.cpp,
// segment_storage.cpp): retrying system-call wrappers and a descriptor owner.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>  // renameat2
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "spool/format.h"

namespace mailq {
namespace spool {
namespace detail {

inline std::string errno_text(int err) {
  return std::generic_category().message(err);
}

// Closes on scope exit.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// Moves `iov` / `count` past `n` bytes written (a short write leaves the rest to write).
inline void advance_iov(iovec*& iov, int& count, std::size_t n) {
  while (count > 0 && n >= iov->iov_len) {
    n -= iov->iov_len;
    ++iov;
    --count;
  }
  if (count > 0) {
    iov->iov_base = static_cast<char*>(iov->iov_base) + n;
    iov->iov_len -= n;
  }
}

// 0 on success, else errno. Retries short writes and EINTR.
inline int writev_all(int fd, iovec* iov, int count) {
  while (count > 0) {
    ssize_t n = ::writev(fd, iov, count);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EIO;
    advance_iov(iov, count, static_cast<std::size_t>(n));
  }
  return 0;
}

// 0 on success, else errno. Writes everything at `off`, retrying short writes and EINTR.
inline int pwritev_all(int fd, iovec* iov, int count, std::uint64_t off) {
  while (count > 0) {
    ssize_t n = ::pwritev(fd, iov, std::min(count, IOV_MAX), static_cast<off_t>(off));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EIO;
    off += static_cast<std::uint64_t>(n);
    advance_iov(iov, count, static_cast<std::size_t>(n));
  }
  return 0;
}

inline int pwrite_all(int fd, const char* p, std::size_t n, std::uint64_t off) {
  while (n > 0) {
    ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (w == 0) return EIO;
    p += w;
    n -= static_cast<std::size_t>(w);
    off += static_cast<std::uint64_t>(w);
  }
  return 0;
}

// Reads up to `n` bytes (fewer only at end of file). Returns the count, or -1 with errno.
inline ssize_t pread_all(int fd, char* p, std::size_t n, std::uint64_t off) {
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = ::pread(fd, p + got, n - got, static_cast<off_t>(off + got));
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  return static_cast<ssize_t>(got);
}

// Fault injection for the spool tests: when set, fsync_retry calls it first, and a non-zero
// result is returned as that sync's errno (the sync is not made). Never set outside tests.
inline int (*sync_fault_hook)(int fd, bool data_only) = nullptr;

// Whether syncfs(2) on the file system holding `fd` writes its files' data and commits them:
// true for the local file systems known to (ext2/3/4, XFS, Btrfs, F2FS, ZFS, bcachefs; overlayfs
// over one of them; tmpfs, where there is nothing to write). False for anything else, FUSE first of
// all: the kernel answers syncfs for a FUSE mount without asking the file system, so nothing would
// be made durable (found with tests/crash/powercut_fs.cpp). Callers then fdatasync per file.
inline bool syncfs_writes_data(int fd) {
  struct statfs st;
  if (::fstatfs(fd, &st) != 0) return false;
  switch (static_cast<unsigned long>(st.f_type)) {
    case 0xEF53UL:      // ext2, ext3, ext4
    case 0x58465342UL:  // XFS
    case 0x9123683EUL:  // Btrfs
    case 0xF2F52010UL:  // F2FS
    case 0x2FC12FC1UL:  // ZFS
    case 0xCA451A4EUL:  // bcachefs
    case 0x794C7630UL:  // overlayfs: syncs its upper file system
    case 0x01021994UL:  // tmpfs
      return true;
    default:
      return false;
  }
}

inline int fsync_retry(int fd, bool data_only) {
  if (sync_fault_hook) {
    if (int err = sync_fault_hook(fd, data_only)) return err;
  }
  for (;;) {
    int r = data_only ? ::fdatasync(fd) : ::fsync(fd);
    if (r == 0) return 0;
    if (errno != EINTR) return errno;
  }
}

// Renames without replacing an existing target. 0 or errno.
inline int rename_noreplace(int from_dir, const char* from, int to_dir, const char* to) {
#ifdef RENAME_NOREPLACE
  if (::renameat2(from_dir, from, to_dir, to, RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS) return errno;
#endif
  // The file system cannot refuse to replace: check first (we hold the spool lock, so no
  // one else creates names in our directories).
  struct stat st;
  if (::fstatat(to_dir, to, &st, AT_SYMLINK_NOFOLLOW) == 0) return EEXIST;
  if (::renameat(from_dir, from, to_dir, to) == 0) return 0;
  return errno;
}

// Renames `name` (in `from_dir`) to `base` in `to_dir`, or to base.1, base.2, ... when that
// name is taken: a file set aside is never lost to a name clash. 0 or errno; `target`
// receives the name used.
inline int rename_aside(int from_dir, const std::string& name, int to_dir, const std::string& base,
                        std::string* target) {
  int err = EEXIST;
  for (int n = 0; n < 1000 && err == EEXIST; ++n) {
    *target = n == 0 ? base : base + "." + std::to_string(n);
    err = rename_noreplace(from_dir, name.c_str(), to_dir, target->c_str());
  }
  return err;
}

struct DirEntry {
  std::string name;
  ino_t ino = 0;
  unsigned char type = DT_UNKNOWN;
};

// Lists a directory (without "." and ".."). 0 or errno.
inline int list_directory(int dir_fd, std::vector<DirEntry>* out) {
  int fd = ::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno;
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    int err = errno;
    ::close(fd);
    return err;
  }
  for (;;) {
    errno = 0;
    dirent* e = ::readdir(d);
    if (e == nullptr) {
      int err = errno;
      ::closedir(d);
      return err;
    }
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    out->push_back(DirEntry{e->d_name, e->d_ino, e->d_type});
  }
}

inline unsigned char entry_type(int dir_fd, const DirEntry& e) {
  if (e.type != DT_UNKNOWN) return e.type;
  struct stat st;
  if (::fstatat(dir_fd, e.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return DT_UNKNOWN;
  if (S_ISDIR(st.st_mode)) return DT_DIR;
  if (S_ISREG(st.st_mode)) return DT_REG;
  return DT_UNKNOWN;
}

// Whether a valid record starts anywhere after the first byte of `s`.
inline bool valid_record_after(std::string_view s) {
  for (std::size_t i = 1; i + kRecordOverhead <= s.size(); ++i) {
    RecordView rv;
    if (parse_record(s.substr(i), &rv) == RecordStatus::ok) return true;
  }
  return false;
}

inline bool all_zero(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == 0; });
}

inline bool has_suffix(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Layout detection, so that a spool written in one layout is never opened in the other with
// its messages silently ignored. Each returns 0 (with *found set) or errno; a missing
// subdirectory means "not found".

/// Whether `<spool>/segments/` holds a segment file ("*.seg").
inline int has_segment_files(int spool_fd, bool* found) {
  *found = false;
  int fd = ::openat(spool_fd, "segments", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? 0 : errno;
  std::vector<DirEntry> entries;
  int err = list_directory(fd, &entries);
  ::close(fd);
  for (const auto& e : entries) {
    if (has_suffix(e.name, ".seg")) *found = true;
  }
  return err;
}

/// Whether `<spool>/queue/` holds a file in one of its channel directories (or directly).
inline int has_queue_files(int spool_fd, bool* found) {
  *found = false;
  int fd = ::openat(spool_fd, "queue", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? 0 : errno;
  std::vector<DirEntry> entries;
  int err = list_directory(fd, &entries);
  for (const auto& e : entries) {
    if (err != 0 || *found) break;
    if (entry_type(fd, e) != DT_DIR) {
      *found = true;
      break;
    }
    int ch = ::openat(fd, e.name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (ch < 0) {
      err = errno;
      break;
    }
    std::vector<DirEntry> files;
    err = list_directory(ch, &files);
    ::close(ch);
    if (!files.empty()) *found = true;
  }
  ::close(fd);
  return err;
}

}  // namespace detail
}  // namespace spool
}  // namespace mailq
