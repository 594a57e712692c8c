// SPDX-License-Identifier: MIT
// nbdwire-server: the memory and file backends.
#include "backends.hpp"

#include <fcntl.h>         // open, posix_fadvise
#include <linux/falloc.h>  // FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE
#include <linux/fs.h>      // BLKGETSIZE64
#include <sys/ioctl.h>     // ioctl: block device size
#include <sys/mman.h>      // mmap, madvise: sparse memory exports
#include <sys/stat.h>      // fstat
#include <unistd.h>        // pread, pwrite, fdatasync, lseek, close

#include <algorithm>  // std::min, std::max
#include <atomic>     // state shared by the event loops
#include <cerrno>     // errno
#include <cstring>    // std::memcpy, std::memset

#include "../common.hpp"

namespace nbdwire_server {

using examples::fail;

/// Appends a run, merging it with the previous one of the same kind.
void add_run(std::vector<alloc_run>& out, std::uint64_t length, bool hole) {
  if (length == 0) return;
  if (!out.empty() && out.back().hole == hole)
    out.back().length += length;
  else
    out.push_back({length, hole});
}


namespace {

/// A sparse in-memory export: private anonymous pages, reserved lazily, so an untouched
/// 1 GiB export costs no memory.
///
/// Called by every event loop at once (--threads). The page bitmap is atomic: two loops
/// writing different pages that share a word must both leave their bit set. The export's
/// bytes are not guarded: two loops copying into overlapping ranges at once race on those
/// bytes only, and NBD leaves the result of overlapping requests in flight together
/// undefined anyway; a client that waits for one reply before sending the next request
/// sees the first request's bytes, since the reply leaves only after the copy.
class memory_backend final : public backend {
 public:
  explicit memory_backend(std::uint64_t size) : size_(size) {
    page_ = static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
    if (size_ == 0) return;
    map_len_ = (size_ + page_ - 1) / page_ * page_;
    void* p = mmap(nullptr, map_len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) examples::fail_errno("cannot map a memory export of " + std::to_string(size) + " bytes");
    base_ = static_cast<std::byte*>(p);
    written_ = std::make_unique<std::atomic<std::uint64_t>[]>(static_cast<std::size_t>((map_len_ / page_ + 63) / 64));
  }
  ~memory_backend() override {
    if (base_) munmap(base_, map_len_);
  }
  memory_backend(const memory_backend&) = delete;
  memory_backend& operator=(const memory_backend&) = delete;

  [[nodiscard]] std::uint64_t size() const override { return size_; }
  [[nodiscard]] bool can_fast_zero() const override { return true; }
  [[nodiscard]] std::byte* in_place(std::uint64_t off) override { return base_ ? base_ + off : nullptr; }
  int read(std::uint64_t off, std::byte* dst, std::size_t len) override {
    std::memcpy(dst, base_ + off, len);
    return 0;
  }
  int write(std::uint64_t off, const std::byte* src, std::size_t len) override {
    will_write(off, len);
    std::memcpy(base_ + off, src, len);
    return 0;
  }
  void will_write(std::uint64_t off, std::uint64_t len) override {
    if (len != 0) mark(off / page_, (off + len - 1) / page_ + 1, true);
  }
  int flush() override { return 0; }
  int trim(std::uint64_t off, std::uint64_t len) override {
    discard(off, len);
    return 0;
  }
  int zero(std::uint64_t off, std::uint64_t len, bool may_punch, bool) override {
    // Both ways are at least as fast as writing, so FAST_ZERO never fails here.
    if (may_punch) {
      discard(off, len);
    } else {
      will_write(off, len);  // NO_HOLE: the range stays allocated
      std::memset(base_ + off, 0, static_cast<std::size_t>(len));
    }
    return 0;
  }
  int cache(std::uint64_t, std::uint64_t) override { return 0; }

  int allocation(std::uint64_t off, std::uint64_t len, std::size_t max_runs, std::vector<alloc_run>& out) override {
    out.clear();
    const std::uint64_t end = off + len;
    std::uint64_t pos = off;
    while (pos < end && out.size() < max_runs) {
      const std::uint64_t p = pos / page_;
      const bool data = bit(p);
      const std::uint64_t stop = std::min(end, next_change(p, data, (end + page_ - 1) / page_) * page_);
      add_run(out, stop - pos, !data);
      pos = stop;
    }
    return 0;
  }

 private:
  /// Gives whole pages back (they read as zeroes again) and zeroes the partial edges.
  void discard(std::uint64_t off, std::uint64_t len) {
    if (len == 0) return;
    const std::uint64_t end = off + len;
    const std::uint64_t first = (off + page_ - 1) / page_ * page_;
    const std::uint64_t last = end / page_ * page_;
    if (first >= last) {
      std::memset(base_ + off, 0, static_cast<std::size_t>(len));
      return;
    }
    std::memset(base_ + off, 0, static_cast<std::size_t>(first - off));
    if (madvise(base_ + first, static_cast<std::size_t>(last - first), MADV_DONTNEED) != 0)
      std::memset(base_ + first, 0, static_cast<std::size_t>(last - first));
    else
      mark(first / page_, last / page_, false);  // given back: a hole again
    std::memset(base_ + last, 0, static_cast<std::size_t>(end - last));
  }

  // One bit per page: set once the page was written, cleared when it is given back. Relaxed
  // atomics: a bit orders nothing else, it only must not be lost to another loop's update.
  [[nodiscard]] bool bit(std::uint64_t p) const {
    return (written_[p / 64].load(std::memory_order_relaxed) >> (p % 64)) & 1u;
  }
  void mark(std::uint64_t from, std::uint64_t to, bool value) {
    constexpr auto relaxed = std::memory_order_relaxed;
    for (std::uint64_t p = from; p < to;) {
      std::atomic<std::uint64_t>& w = written_[p / 64];
      if (p % 64 == 0 && to - p >= 64) {  // whole words at once
        w.store(value ? ~std::uint64_t{0} : 0, relaxed);
        p += 64;
        continue;
      }
      // The bits of this word in [p, to), in one update.
      const std::uint64_t lo = p % 64, n = std::min<std::uint64_t>(64 - lo, to - p);
      const std::uint64_t m = (n == 64 ? ~std::uint64_t{0} : ((std::uint64_t{1} << n) - 1)) << lo;
      if (value) w.fetch_or(m, relaxed);
      else w.fetch_and(~m, relaxed);
      p += n;
    }
  }
  /// The first page in [p, limit) whose bit differs from `value`, or `limit`.
  [[nodiscard]] std::uint64_t next_change(std::uint64_t p, bool value, std::uint64_t limit) const {
    const std::uint64_t same = value ? ~std::uint64_t{0} : 0;
    while (p < limit) {
      if (p % 64 == 0 && written_[p / 64].load(std::memory_order_relaxed) == same) {
        p += 64;
        continue;
      }
      if (bit(p) != value) return p;
      ++p;
    }
    return limit;
  }

  std::uint64_t size_, page_ = 4096, map_len_ = 0;
  std::byte* base_ = nullptr;
  std::unique_ptr<std::atomic<std::uint64_t>[]> written_;
};

/// An existing file or block device, accessed with pread/pwrite, which every event loop may
/// call at once on the one descriptor (they take their offset as an argument).
class file_backend final : public backend {
 public:
  file_backend(const std::string& path, bool read_only) {
    fd_ = open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd_ < 0) examples::fail_errno("cannot open " + path);
    struct stat st{};
    if (fstat(fd_, &st) != 0) examples::fail_errno("stat " + path);
    if (S_ISREG(st.st_mode)) {
      size_ = static_cast<std::uint64_t>(st.st_size);
      regular_ = true;
      // Punching beyond the end changes nothing, and tells whether the file system can.
      fast_zero_ = !read_only && fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, st.st_size, 1) == 0;
    } else if (S_ISBLK(st.st_mode)) {
      if (ioctl(fd_, BLKGETSIZE64, &size_) != 0) examples::fail_errno("BLKGETSIZE64 " + path);
    } else {
      close(fd_);
      fail(path + " is neither a regular file nor a block device");
    }
  }
  ~file_backend() override { close(fd_); }
  file_backend(const file_backend&) = delete;
  file_backend& operator=(const file_backend&) = delete;

  [[nodiscard]] std::uint64_t size() const override { return size_; }
  [[nodiscard]] bool can_fast_zero() const override { return fast_zero_; }
  [[nodiscard]] int sendfile_source() const override { return regular_ ? fd_ : -1; }
  int read(std::uint64_t off, std::byte* dst, std::size_t len) override {
    while (len > 0) {
      const ssize_t n = pread(fd_, dst, len, static_cast<off_t>(off));
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      if (n == 0) return EIO;  // the file shrank under us
      dst += n;
      off += static_cast<std::uint64_t>(n);
      len -= static_cast<std::size_t>(n);
    }
    return 0;
  }
  int write(std::uint64_t off, const std::byte* src, std::size_t len) override {
    while (len > 0) {
      const ssize_t n = pwrite(fd_, src, len, static_cast<off_t>(off));
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      src += n;
      off += static_cast<std::uint64_t>(n);
      len -= static_cast<std::size_t>(n);
    }
    return 0;
  }
  int flush() override { return fdatasync(fd_) == 0 ? 0 : errno; }
  int trim(std::uint64_t off, std::uint64_t len) override {
    forget_data();
    // TRIM is advisory: where the file system cannot punch, doing nothing is correct.
    if (fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off), static_cast<off_t>(len)) == 0)
      return 0;
    return errno == EOPNOTSUPP || errno == ENOSYS ? 0 : errno;
  }
  int zero(std::uint64_t off, std::uint64_t len, bool may_punch, bool fast_only) override {
    forget_data();
    const auto o = static_cast<off_t>(off), l = static_cast<off_t>(len);
    if (may_punch && fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, o, l) == 0) return 0;
    if (fallocate(fd_, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, o, l) == 0) return 0;
    if (fast_only) return ENOTSUP;
    static const std::vector<std::byte> zeroes(1024 * 1024);
    while (len > 0) {
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(len, zeroes.size()));
      if (const int e = write(off, zeroes.data(), n)) return e;
      off += n;
      len -= n;
    }
    return 0;
  }
  int cache(std::uint64_t off, std::uint64_t len) override {
    (void)posix_fadvise(fd_, static_cast<off_t>(off), static_cast<off_t>(len), POSIX_FADV_WILLNEED);
    return 0;
  }

  int allocation(std::uint64_t off, std::uint64_t len, std::size_t max_runs, std::vector<alloc_run>& out) override {
    out.clear();
    const std::uint64_t end = off + len;
    // Inside the data run found last time: no system call. SEEK_HOLE can cost time in
    // proportion to the run's length (tmpfs walks its pages), so random reads of a large
    // allocated file would otherwise scan it on every request. A stale answer can only say
    // "data" for what became a hole elsewhere, which is always correct.
    if (off >= data_from_.load(std::memory_order_relaxed) && end <= data_to_.load(std::memory_order_relaxed)) {
      add_run(out, len, false);
      return 0;
    }
    std::uint64_t pos = off;
    while (pos < end && out.size() < max_runs) {
      const off_t d = lseek(fd_, static_cast<off_t>(pos), SEEK_DATA);
      if (d < 0) {
        // ENXIO: no data from here to the end of the file. Anything else (a block device, a
        // file system without SEEK_DATA): report data, which is always correct.
        const bool no_data = errno == ENXIO;
        // A file that shrank while served ends before the export does: what lies past its
        // end is not a hole but gone, an I/O error (as a READ of it with pread() reports).
        struct stat st{};
        if (no_data && fstat(fd_, &st) == 0 && S_ISREG(st.st_mode) && static_cast<std::uint64_t>(st.st_size) < end)
          return EIO;
        add_run(out, end - pos, no_data);
        return 0;
      }
      const std::uint64_t data = std::min(end, static_cast<std::uint64_t>(d));
      add_run(out, data - pos, true);
      pos = data;
      if (pos >= end) break;
      const off_t h = lseek(fd_, static_cast<off_t>(pos), SEEK_HOLE);
      if (h > 0 && static_cast<std::uint64_t>(h) > pos) {
        data_from_.store(pos, std::memory_order_relaxed);
        data_to_.store(static_cast<std::uint64_t>(h), std::memory_order_relaxed);
      }
      const std::uint64_t hole = h < 0 ? end : std::min(end, std::max(pos + 1, static_cast<std::uint64_t>(h)));
      add_run(out, hole - pos, false);
      pos = hole;
    }
    return 0;
  }

 private:
  /// Our own TRIM or zeroing may punch holes: forget the known data run.
  void forget_data() {
    data_from_.store(0, std::memory_order_relaxed);
    data_to_.store(0, std::memory_order_relaxed);
  }

  int fd_ = -1;
  std::uint64_t size_ = 0;
  bool fast_zero_ = false;
  bool regular_ = false;
  // A run known to be data, [from, to), shared by the event loops. The two halves are read
  // and written apart, so a loop may see the start of one run with the end of another; that
  // can only make allocation() say "data" for a hole, which is always correct (a hole reads
  // as zeroes either way), and only until the next SEEK_DATA sets a whole run again.
  std::atomic<std::uint64_t> data_from_{0}, data_to_{0};
};

}  // namespace

std::unique_ptr<backend> make_memory_backend(std::uint64_t size) { return std::make_unique<memory_backend>(size); }

std::unique_ptr<backend> make_file_backend(const std::string& path, bool read_only) {
  return std::make_unique<file_backend>(path, read_only);
}

}  // namespace nbdwire_server
