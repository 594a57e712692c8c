// SPDX-License-Identifier: MIT
// nbdwire-server: what an export is stored in. memory:SIZE is a sparse in-memory export
// (anonymous pages, allocated when written); file:PATH an existing file or block device
// (pread/pwrite, holes found with SEEK_DATA/SEEK_HOLE). Nothing here knows the protocol.
#pragma once

#include <cstddef>  // std::byte, std::size_t
#include <cstdint>  // fixed-width integers
#include <memory>   // std::unique_ptr
#include <string>   // paths
#include <vector>   // allocation runs

namespace nbdwire_server {

/// A stretch of an export that is either data or a hole (reads as zeroes, not allocated).
struct alloc_run {
  std::uint64_t length = 0;
  bool hole = false;
};

/// Appends a run, merging it with the previous one of the same kind.
void add_run(std::vector<alloc_run>& out, std::uint64_t length, bool hole);

/// What an export is stored in. Calls return 0 or an errno value.
class backend {
 public:
  virtual ~backend() = default;
  [[nodiscard]] virtual std::uint64_t size() const = 0;
  /// Whether zeroing is always cheap (so NBD_FLAG_SEND_FAST_ZERO can be honoured).
  [[nodiscard]] virtual bool can_fast_zero() const = 0;
  /// Export bytes addressable in place, or nullptr when they must be read or written by copy.
  [[nodiscard]] virtual std::byte* in_place(std::uint64_t) { return nullptr; }
  /// A regular file whose bytes at export offset X are at file offset X, for sendfile(); -1 if none.
  [[nodiscard]] virtual int sendfile_source() const { return -1; }
  virtual int read(std::uint64_t off, std::byte* dst, std::size_t len) = 0;
  virtual int write(std::uint64_t off, const std::byte* src, std::size_t len) = 0;
  virtual int flush() = 0;
  virtual int trim(std::uint64_t off, std::uint64_t len) = 0;
  /// Zeroes a range. `may_punch`: holes are fine (no NBD_CMD_FLAG_NO_HOLE); `fast_only`:
  /// fail with ENOTSUP rather than write zeroes slowly (NBD_CMD_FLAG_FAST_ZERO).
  virtual int zero(std::uint64_t off, std::uint64_t len, bool may_punch, bool fast_only) = 0;
  virtual int cache(std::uint64_t off, std::uint64_t len) = 0;
  /// A WRITE of [off, off + len) is about to arrive (its data may be received in place).
  virtual void will_write(std::uint64_t, std::uint64_t) {}
  /// Describes [off, off + len) as alternating data and hole runs, from `off` on. Stops after
  /// `max_runs` runs, so the runs may cover less than `len`; they never cover more.
  virtual int allocation(std::uint64_t off, std::uint64_t len, std::size_t max_runs, std::vector<alloc_run>& out) = 0;
};

/// A sparse memory export of `size` bytes; throws examples::failure when it cannot be mapped.
std::unique_ptr<backend> make_memory_backend(std::uint64_t size);
/// An existing file or block device, opened read-only with `read_only`; throws
/// examples::failure when it cannot be opened or is neither.
std::unique_ptr<backend> make_file_backend(const std::string& path, bool read_only);

}  // namespace nbdwire_server
