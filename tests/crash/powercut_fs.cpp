// powercut_fs: a FUSE file system for crash tests that loses, on command, everything a power
// cut loses: what was written but not made durable (LazyFS's "lose un-fsynced writes").
//
//   powercut_fs MOUNTPOINT        (foreground, single-threaded; SIGTERM or fusermount3 -u ends it)
//
// Everything is held in memory. Each file has its current contents and its durable contents
// (copied at fsync / fdatasync); each directory has its current entries and its durable entries
// (copied at fsync of the directory). Writing "cut" to MOUNTPOINT/.powercut drops everything
// not durable, as a power cut and a remount would: every directory's entries become its durable
// entries, every file's contents its durable contents, and whatever is no longer reachable from
// the root is gone. So a new file survives only once it was fsynced and its directory too; a
// rename or an unlink only once the directories involved were fsynced. This is POSIX's promise,
// and stricter than ext4's ordered mode: what passes here does not lean on a particular file
// system. Reading MOUNTPOINT/.powercut gives "cuts N lost_writes W lost_entries E fsyncs F
// dirsyncs D used U capacity C". Writing "capacity BYTES" makes it a disk of that size (0, the
// start: as good as unlimited): statfs says what is free, and a write or truncate that would
// need more than is free fails with ENOSPC, as a full disk does. syncfs(2) never reaches a FUSE
// file system (the kernel answers it alone), so a program that relies on syncfs loses its data
// here: that is true of any FUSE mount.
//
// Only what a spool needs: regular files, directories, hard links, rename (with
// RENAME_NOREPLACE), truncate, chmod/chown/utimens as no-ops that keep the mode. Locks are
// left to the kernel (flock works locally). The kernel's caches are off (direct I/O, no
// attribute or entry caching), so a read after a cut sees what the cut left.
#define FUSE_USE_VERSION 31

#include <fuse.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace {

constexpr const char* kControl = "/.powercut";

struct Node {
  mode_t mode = 0;
  std::uint32_t nlink = 0;         // current entries naming it
  std::uint32_t durable_refs = 0;  // durable entries naming it
  std::uint32_t open = 0;          // open handles
  std::string data, durable_data;
  std::map<std::string, std::uint64_t> entries, durable_entries;  // directories
  timespec mtime{}, ctime{};
  bool dir() const { return S_ISDIR(mode); }
};

struct State {
  std::unordered_map<std::uint64_t, Node> nodes;
  std::uint64_t next_ino = 2;
  std::uint64_t cuts = 0, lost_writes = 0, lost_entries = 0, fsyncs = 0, dirsyncs = 0;
  std::uint64_t used = 0;      // octets of file contents, as they are now
  std::uint64_t capacity = 0;  // 0: no limit
  uid_t uid = 0;
  gid_t gid = 0;
};

State* g = nullptr;

// A handle names its node and the cut it was opened after: a handle from before a cut (a
// release the killed process left queued, say) no longer names anything.
constexpr int kEpochShift = 40;
std::uint64_t handle(std::uint64_t ino) {
  return (g->cuts << kEpochShift) | ino;
}
std::uint64_t ino_of(std::uint64_t fh) {
  if ((fh >> kEpochShift) != g->cuts) return 0;
  return fh & ((std::uint64_t{1} << kEpochShift) - 1);
}
bool is_control(const char* path) {
  return path && std::strcmp(path, kControl) == 0;
}

timespec now() {
  timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  return t;
}

Node* node(std::uint64_t ino) {
  auto it = g->nodes.find(ino);
  return it == g->nodes.end() ? nullptr : &it->second;
}

// Sets a file's contents to `size` octets (zeros added); false (nothing changed) when the disk
// has not that much free.
bool resize(Node& n, std::size_t size) {
  if (size > n.data.size()) {
    const std::uint64_t more = size - n.data.size();
    if (g->capacity != 0 && g->used + more > g->capacity) return false;
    g->used += more;
  } else {
    g->used -= n.data.size() - size;
  }
  n.data.resize(size, '\0');
  return true;
}

// Removes a node, giving back the space of its contents.
void erase_node(std::unordered_map<std::uint64_t, Node>::iterator it) {
  g->used -= it->second.data.size();
  g->nodes.erase(it);
}

// Frees a node nobody names or holds any more (now or after a cut).
void collect(std::uint64_t ino) {
  Node* n = node(ino);
  if (n && n->nlink == 0 && n->open == 0 && n->durable_refs == 0 && ino != 1) {
    if (n->dir()) {
      for (auto& [name, child] : n->durable_entries) {
        if (Node* c = node(child)) --c->durable_refs;
      }
      auto children = n->durable_entries;
      n->durable_entries.clear();
      erase_node(g->nodes.find(ino));
      for (auto& [name, child] : children) collect(child);
      return;
    }
    erase_node(g->nodes.find(ino));
  }
}

// The node of `path` ("/a/b"), 0 when there is none.
std::uint64_t lookup(const char* raw) {
  if (!raw) return 0;  // an unlinked file or directory still open: only its handle names it
  const std::string_view path(raw);
  std::uint64_t ino = 1;
  std::size_t at = 1;
  while (at < path.size()) {
    const std::size_t slash = std::min(path.find('/', at), path.size());
    const std::string name(path.substr(at, slash - at));
    at = slash + 1;
    if (name.empty()) continue;
    Node* n = node(ino);
    if (!n || !n->dir()) return 0;
    auto it = n->entries.find(name);
    if (it == n->entries.end()) return 0;
    ino = it->second;
  }
  return ino;
}

// The directory holding `path` and the last name.
std::pair<std::uint64_t, std::string> parent_of(std::string_view path) {
  const std::size_t slash = path.rfind('/');
  const std::string name(path.substr(slash + 1));
  const std::uint64_t dir = slash == 0 ? 1 : lookup(std::string(path.substr(0, slash)).c_str());
  Node* d = node(dir);
  if (!d || !d->dir()) return {0, name};
  return {dir, name};
}

std::uint64_t make(mode_t mode) {
  const std::uint64_t ino = g->next_ino++;
  Node& n = g->nodes[ino];
  n.mode = mode;
  n.mtime = n.ctime = now();
  return ino;
}

void add_entry(std::uint64_t dir, const std::string& name, std::uint64_t ino) {
  node(dir)->entries[name] = ino;
  ++node(ino)->nlink;
  node(dir)->mtime = now();
}

void remove_entry(std::uint64_t dir, const std::string& name) {
  Node* d = node(dir);
  auto it = d->entries.find(name);
  const std::uint64_t ino = it->second;
  d->entries.erase(it);
  d->mtime = now();
  --node(ino)->nlink;
  collect(ino);
}

// --- the power cut ------------------------------------------------------------------------

void restore(std::uint64_t ino, std::unordered_map<std::uint64_t, bool>& seen) {
  if (seen[ino]) return;
  seen[ino] = true;
  Node* n = node(ino);
  if (n->dir()) {
    for (auto& [name, child] : n->entries) {
      auto d = n->durable_entries.find(name);
      if (d == n->durable_entries.end() || d->second != child) ++g->lost_entries;
    }
    for (auto& [name, child] : n->durable_entries) {
      if (!n->entries.count(name)) ++g->lost_entries;  // an unlink or rename not durable
    }
    n->entries = n->durable_entries;
    for (auto& [name, child] : n->entries) restore(child, seen);
  } else if (n->data != n->durable_data) {
    ++g->lost_writes;
    g->used = g->used - n->data.size() + n->durable_data.size();  // may go over the capacity
    n->data = n->durable_data;
  }
}

void power_cut() {
  ++g->cuts;
  std::unordered_map<std::uint64_t, bool> seen;
  restore(1, seen);
  // Whatever the durable tree does not reach is gone; the rest is named as it says.
  for (auto it = g->nodes.begin(); it != g->nodes.end();) {
    if (!seen[it->first]) {
      g->used -= it->second.data.size();
      it = g->nodes.erase(it);
    } else {
      it->second.nlink = 0;
      it->second.durable_refs = 0;
      it->second.open = 0;  // handles from before the cut are stale
      ++it;
    }
  }
  for (auto& [ino, n] : g->nodes) {
    for (auto& [name, child] : n.entries) {
      Node& c = g->nodes.at(child);
      ++c.nlink;
      ++c.durable_refs;
    }
  }
}

std::string stats() {
  return "cuts " + std::to_string(g->cuts) + " lost_writes " + std::to_string(g->lost_writes) +
         " lost_entries " + std::to_string(g->lost_entries) + " fsyncs " +
         std::to_string(g->fsyncs) + " dirsyncs " + std::to_string(g->dirsyncs) + " used " +
         std::to_string(g->used) + " capacity " + std::to_string(g->capacity) + "\n";
}

// --- operations ---------------------------------------------------------------------------

void fill(std::uint64_t ino, const Node& n, struct stat* st) {
  std::memset(st, 0, sizeof *st);
  st->st_ino = ino;
  st->st_mode = n.mode;
  st->st_nlink = n.dir() ? 2 : std::max<std::uint32_t>(n.nlink, 1);
  st->st_uid = g->uid;
  st->st_gid = g->gid;
  st->st_size = static_cast<off_t>(n.dir() ? 4096 : n.data.size());
  st->st_blocks = (st->st_size + 511) / 512;
  st->st_blksize = 4096;
  st->st_mtim = n.mtime;
  st->st_ctim = n.ctime;
  st->st_atim = n.mtime;
}

void* op_init(fuse_conn_info*, fuse_config* cfg) {
  cfg->use_ino = 1;
  cfg->direct_io = 1;
  cfg->kernel_cache = 0;
  cfg->attr_timeout = 0;
  cfg->entry_timeout = 0;
  cfg->negative_timeout = 0;
  cfg->hard_remove = 1;
  return nullptr;
}

int op_getattr(const char* path, struct stat* st, fuse_file_info* fi) {
  if (is_control(path)) {
    std::memset(st, 0, sizeof *st);
    st->st_mode = S_IFREG | 0600;
    st->st_nlink = 1;
    st->st_size = static_cast<off_t>(stats().size());
    return 0;
  }
  const std::uint64_t ino = fi && fi->fh ? ino_of(fi->fh) : lookup(path);
  Node* n = node(ino);
  if (!n) return fi && fi->fh ? -ESTALE : -ENOENT;
  fill(ino, *n, st);
  return 0;
}

int op_readdir(const char* path, void* buf, fuse_fill_dir_t filler, off_t, fuse_file_info* fi,
               fuse_readdir_flags) {
  Node* d = node(fi && fi->fh ? ino_of(fi->fh) : lookup(path));
  if (!d) return -ENOENT;
  if (!d->dir()) return -ENOTDIR;
  filler(buf, ".", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  filler(buf, "..", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  for (auto& [name, ino] : d->entries) {
    struct stat st;
    fill(ino, *node(ino), &st);
    filler(buf, name.c_str(), &st, 0, static_cast<fuse_fill_dir_flags>(0));
  }
  return 0;
}

int op_mkdir(const char* path, mode_t mode) {
  auto [dir, name] = parent_of(path);
  if (!dir) return -ENOENT;
  if (node(dir)->entries.count(name)) return -EEXIST;
  add_entry(dir, name, make(S_IFDIR | (mode & 07777)));
  return 0;
}

int op_rmdir(const char* path) {
  auto [dir, name] = parent_of(path);
  if (!dir || !node(dir)->entries.count(name)) return -ENOENT;
  Node* n = node(node(dir)->entries[name]);
  if (!n->dir()) return -ENOTDIR;
  if (!n->entries.empty()) return -ENOTEMPTY;
  remove_entry(dir, name);
  return 0;
}

int op_create(const char* path, mode_t mode, fuse_file_info* fi) {
  auto [dir, name] = parent_of(path);
  if (!dir) return -ENOENT;
  if (node(dir)->entries.count(name)) return -EEXIST;
  const std::uint64_t ino = make(S_IFREG | (mode & 07777));
  add_entry(dir, name, ino);
  ++node(ino)->open;
  fi->fh = handle(ino);
  fi->direct_io = 1;
  return 0;
}

int op_open(const char* path, fuse_file_info* fi) {
  if (is_control(path)) {
    fi->fh = 0;
    fi->direct_io = 1;
    return 0;
  }
  const std::uint64_t ino = lookup(path);
  Node* n = node(ino);
  if (!n) return -ENOENT;
  if (n->dir()) return -EISDIR;
  if (fi->flags & O_TRUNC) resize(*n, 0);
  ++n->open;
  fi->fh = handle(ino);
  fi->direct_io = 1;
  return 0;
}

int op_read(const char* path, char* buf, size_t size, off_t off, fuse_file_info* fi) {
  std::string text;
  const std::string* data = nullptr;
  if (fi->fh == 0 && is_control(path)) {
    text = stats();
    data = &text;
  } else {
    Node* n = node(ino_of(fi->fh));
    if (!n) return -ESTALE;
    data = &n->data;
  }
  if (off < 0) return -EINVAL;
  if (static_cast<std::size_t>(off) >= data->size()) return 0;
  const std::size_t n = std::min(size, data->size() - static_cast<std::size_t>(off));
  std::memcpy(buf, data->data() + off, n);
  return static_cast<int>(n);
}

int op_write(const char* path, const char* buf, size_t size, off_t off, fuse_file_info* fi) {
  if (fi->fh == 0 && is_control(path)) {
    const std::string_view command(buf, size);
    if (command.substr(0, 3) == "cut") {
      power_cut();
    } else if (command.substr(0, 9) == "capacity ") {
      const std::string number(command.substr(9));
      char* end = nullptr;
      const unsigned long long bytes = std::strtoull(number.c_str(), &end, 10);
      if (number.empty() || (*end != '\0' && *end != '\n')) return -EINVAL;
      g->capacity = bytes;
    } else {
      return -EINVAL;
    }
    return static_cast<int>(size);
  }
  Node* n = node(ino_of(fi->fh));
  if (!n) return -ESTALE;
  if (fi->flags & O_APPEND) off = static_cast<off_t>(n->data.size());
  const std::size_t end = static_cast<std::size_t>(off) + size;
  if (end > n->data.size() && !resize(*n, end)) return -ENOSPC;
  std::memcpy(n->data.data() + off, buf, size);
  n->mtime = now();
  return static_cast<int>(size);
}

int op_truncate(const char* path, off_t size, fuse_file_info* fi) {
  if (is_control(path)) return 0;
  Node* n = node(fi && fi->fh ? ino_of(fi->fh) : lookup(path));
  if (!n) return -ENOENT;
  if (n->dir()) return -EISDIR;
  if (!resize(*n, static_cast<std::size_t>(size))) return -ENOSPC;
  n->mtime = now();
  return 0;
}

int op_fsync(const char*, int, fuse_file_info* fi) {
  if (fi->fh == 0) return 0;  // the control file
  Node* n = node(ino_of(fi->fh));
  if (!n) return -ESTALE;
  n->durable_data = n->data;
  ++g->fsyncs;
  return 0;
}

int op_opendir(const char* path, fuse_file_info* fi) {
  const std::uint64_t ino = lookup(path);
  Node* n = node(ino);
  if (!n) return -ENOENT;
  if (!n->dir()) return -ENOTDIR;
  ++n->open;
  fi->fh = handle(ino);
  return 0;
}

int op_releasedir(const char*, fuse_file_info* fi) {
  const std::uint64_t ino = ino_of(fi->fh);
  if (Node* n = node(ino)) {
    if (n->open > 0) --n->open;
    collect(ino);
  }
  return 0;
}

int op_fsyncdir(const char*, int, fuse_file_info* fi) {
  Node* d = node(ino_of(fi->fh));
  if (!d) return -ESTALE;
  for (auto& [name, child] : d->entries) ++node(child)->durable_refs;
  auto old = std::move(d->durable_entries);
  d->durable_entries = d->entries;
  for (auto& [name, child] : old) {
    if (Node* c = node(child)) --c->durable_refs;
  }
  for (auto& [name, child] : old) collect(child);
  ++g->dirsyncs;
  return 0;
}

int op_release(const char*, fuse_file_info* fi) {
  const std::uint64_t ino = ino_of(fi->fh);
  if (Node* n = node(ino)) {
    if (n->open > 0) --n->open;
    collect(ino);
  }
  return 0;
}

int op_flush(const char*, fuse_file_info*) {
  return 0;
}

int op_unlink(const char* path) {
  auto [dir, name] = parent_of(path);
  if (!dir || !node(dir)->entries.count(name)) return -ENOENT;
  if (node(node(dir)->entries[name])->dir()) return -EISDIR;
  remove_entry(dir, name);
  return 0;
}

int op_link(const char* from, const char* to) {
  const std::uint64_t ino = lookup(from);
  Node* n = node(ino);
  if (!n) return -ENOENT;
  if (n->dir()) return -EPERM;
  auto [dir, name] = parent_of(to);
  if (!dir) return -ENOENT;
  if (node(dir)->entries.count(name)) return -EEXIST;
  add_entry(dir, name, ino);
  n->ctime = now();
  return 0;
}

int op_rename(const char* from, const char* to, unsigned int flags) {
  if (flags & RENAME_EXCHANGE) return -EINVAL;
  auto [fdir, fname] = parent_of(from);
  auto [tdir, tname] = parent_of(to);
  if (!fdir || !tdir || !node(fdir)->entries.count(fname)) return -ENOENT;
  const std::uint64_t ino = node(fdir)->entries[fname];
  auto existing = node(tdir)->entries.find(tname);
  if (existing != node(tdir)->entries.end()) {
    if (flags & RENAME_NOREPLACE) return -EEXIST;
    if (existing->second == ino) return 0;
    Node* target = node(existing->second);
    if (target->dir() != node(ino)->dir()) return target->dir() ? -EISDIR : -ENOTDIR;
    if (target->dir() && !target->entries.empty()) return -ENOTEMPTY;
    remove_entry(tdir, tname);
  }
  ++node(ino)->nlink;  // held while it moves
  remove_entry(fdir, fname);
  add_entry(tdir, tname, ino);
  --node(ino)->nlink;
  node(ino)->ctime = now();
  return 0;
}

int op_chmod(const char* path, mode_t mode, fuse_file_info* fi) {
  Node* n = node(fi && fi->fh ? ino_of(fi->fh) : lookup(path));
  if (!n) return -ENOENT;
  n->mode = (n->mode & S_IFMT) | (mode & 07777);
  return 0;
}

int op_chown(const char* path, uid_t, gid_t, fuse_file_info* fi) {
  return node(fi && fi->fh ? ino_of(fi->fh) : lookup(path)) ? 0 : -ENOENT;
}

int op_utimens(const char* path, const timespec tv[2], fuse_file_info* fi) {
  Node* n = node(fi && fi->fh ? ino_of(fi->fh) : lookup(path));
  if (!n) return -ENOENT;
  n->mtime = tv[1].tv_nsec == UTIME_NOW ? now() : tv[1];
  return 0;
}

int op_statfs(const char*, struct statvfs* st) {
  std::memset(st, 0, sizeof *st);
  st->f_bsize = st->f_frsize = 4096;
  st->f_blocks = st->f_bfree = st->f_bavail = 1u << 22;  // 16 GiB, as good as unlimited
  if (g->capacity != 0) {
    st->f_blocks = g->capacity / 4096;
    st->f_bfree = st->f_bavail = g->used >= g->capacity ? 0 : (g->capacity - g->used) / 4096;
  }
  st->f_files = st->f_ffree = st->f_favail = 1u << 22;
  st->f_namemax = 255;
  return 0;
}

int op_access(const char* path, int) {
  return is_control(path) || lookup(path) ? 0 : -ENOENT;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: powercut_fs MOUNTPOINT\n");
    return 64;
  }
  State state;
  state.uid = ::getuid();
  state.gid = ::getgid();
  Node& root = state.nodes[1];
  root.mode = S_IFDIR | 0755;
  root.nlink = 1;
  root.mtime = root.ctime = now();
  g = &state;

  fuse_operations ops{};
  ops.init = op_init;
  ops.getattr = op_getattr;
  ops.readdir = op_readdir;
  ops.mkdir = op_mkdir;
  ops.rmdir = op_rmdir;
  ops.create = op_create;
  ops.open = op_open;
  ops.read = op_read;
  ops.write = op_write;
  ops.truncate = op_truncate;
  ops.fsync = op_fsync;
  ops.opendir = op_opendir;
  ops.releasedir = op_releasedir;
  ops.fsyncdir = op_fsyncdir;
  ops.release = op_release;
  ops.flush = op_flush;
  ops.unlink = op_unlink;
  ops.link = op_link;
  ops.rename = op_rename;
  ops.chmod = op_chmod;
  ops.chown = op_chown;
  ops.utimens = op_utimens;
  ops.statfs = op_statfs;
  ops.access = op_access;

  // Foreground, one thread (the state has no lock), the mount gone when the process is.
  char prog[] = "powercut_fs", fg[] = "-f", single[] = "-s", o[] = "-o",
       opts[] = "auto_unmount,fsname=powercut,subtype=powercut";
  char* args[] = {prog, fg, single, o, opts, argv[1], nullptr};
  return fuse_main(6, args, &ops, nullptr);
}
