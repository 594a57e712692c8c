/* SPDX-License-Identifier: MIT
 * nbd_disk: a remote NBD export as a local disk of 512-byte sectors, for boot firmware.
 *
 * One disk at a time, held in static storage: no heap, no exceptions, no RTTI, no threads.
 * The firmware's network stack supplies a non-blocking transport; every call below blocks
 * by stepping that transport (poll) until the operation completes, fails, or makes no
 * progress for `timeout` ticks. The protocol itself is nbdwire's client machine.
 *
 * Usable from C and C++. RAM: nbd_disk_ram_bytes() (docs/firmware.md lists it per build).
 */
#ifndef NBDWIRE_EXAMPLES_NBD_DISK_HPP
#define NBDWIRE_EXAMPLES_NBD_DISK_HPP

#ifdef __cplusplus
#include <cstddef>
#include <cstdint>
extern "C" {
#else
#include <stddef.h>
#include <stdint.h>
#endif

#define NBD_DISK_SECTOR_SIZE 512u

/* What send() and recv() return besides a byte count. */
#define NBD_TRANSPORT_CLOSED (-1L) /* the peer closed the connection */
#define NBD_TRANSPORT_ERROR (-2L)  /* the connection broke */

/* Hint to poll(): the shim has bytes to send and waits for room. */
#define NBD_POLL_SEND 1u

/* The firmware's connection, as non-blocking callbacks on an opaque context. */
struct nbd_transport {
  void* ctx;
  /* Starts connecting to host:port; 0 when under way (send() may take 0 bytes until it is
   * established), negative on failure. `host` is a name or a numeric address. */
  int (*connect)(void* ctx, const char* host, uint16_t port);
  /* Never block. Return the bytes taken or given (0: none now), or NBD_TRANSPORT_*. */
  long (*send)(void* ctx, const void* data, size_t len);
  long (*recv)(void* ctx, void* buf, size_t len);
  /* One step of the network stack. Called whenever the shim made no progress; it may wait
   * briefly for activity. `flags` holds NBD_POLL_SEND when output is waiting. */
  void (*poll)(void* ctx, unsigned flags);
  /* Monotonic tick counter (may wrap). NULL: every poll() counts as one tick. */
  uint32_t (*ticks)(void* ctx);
  /* Releases the connection; called by nbd_disk_close() and on a failed open. May be NULL. */
  void (*close)(void* ctx);
  /* Ticks an operation may go without progress before it fails with NBD_DISK_TIMEOUT;
   * 0 waits forever. */
  uint32_t timeout;
};

/* Results: 0 or a negative status. nbd_disk_detail() refines the last failure. */
enum nbd_disk_status {
  NBD_DISK_OK = 0,
  NBD_DISK_BAD_PATH = -1,    /* not nbd://HOST[:PORT][/EXPORT], or a part too long; detail:
                                nbdwire::uri_errc number */
  NBD_DISK_BUSY = -2,        /* nbd_disk_open() while a disk is open */
  NBD_DISK_NOT_OPEN = -3,    /* no disk is open */
  NBD_DISK_TRANSPORT = -4,   /* connect failed, the connection broke, or the peer closed */
  NBD_DISK_TIMEOUT = -5,     /* no progress for `timeout` ticks; the disk must be closed */
  NBD_DISK_PROTOCOL = -6,    /* the server broke the protocol; detail: nbdwire errc number */
  NBD_DISK_REFUSED = -7,     /* the server refused the export; detail: NBD_REP_ERR_* value */
  NBD_DISK_RANGE = -8,       /* sectors beyond the end of the disk, or a null buffer */
  NBD_DISK_READ_ONLY = -9,   /* write to a read-only export */
  NBD_DISK_IO = -10,         /* the server reported an error; detail: NBD error value */
  NBD_DISK_UNSUPPORTED = -11 /* the export's minimum block size exceeds 512 bytes */
};

struct nbd_disk_info {
  uint64_t sectors;              /* export size / 512 (a partial last sector is not addressable) */
  uint64_t export_bytes;         /* export size as the server reported it */
  uint32_t max_sectors_per_request; /* larger transfers are split into several requests */
  uint8_t read_only;
  uint8_t can_flush;             /* the server advertised NBD_CMD_FLUSH */
};

/* Connects to `root_path` (nbd://HOST[:PORT][/EXPORT]; port 10809 by default; the export
 * name is percent-decoded, and empty selects the server's default export), negotiates
 * (fixed newstyle with GO, falling back to EXPORT_NAME; oldstyle servers too), and leaves
 * the disk open. `t` must stay valid until nbd_disk_close(). */
int nbd_disk_open(const char* root_path, const struct nbd_transport* t);
int nbd_disk_get_info(struct nbd_disk_info* info);
/* `count` sectors at `lba` into / from `buf` (count * 512 bytes). count 0 does nothing. */
int nbd_disk_read(uint64_t lba, uint32_t count, void* buf);
int nbd_disk_write(uint64_t lba, uint32_t count, const void* buf);
/* Makes completed writes durable; succeeds at once if the export has no FLUSH (no cache). */
int nbd_disk_flush(void);
/* Sends NBD_CMD_DISC, drains it, and releases the transport. Always leaves the disk closed. */
int nbd_disk_close(void);

/* The refinement of the last failure (see nbd_disk_status), 0 if none. */
long nbd_disk_detail(void);
const char* nbd_disk_strerror(int status);
/* Bytes of static RAM the shim uses (its whole state, the client machine included). */
size_t nbd_disk_ram_bytes(void);

#ifdef __cplusplus
}
#endif

#endif /* NBDWIRE_EXAMPLES_NBD_DISK_HPP */
