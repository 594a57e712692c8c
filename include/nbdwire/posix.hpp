// SPDX-License-Identifier: MIT
// nbdwire: POSIX errno values <-> NBD error values ("Error values").
//
// Hosted only: it needs <cerrno>, whose values differ between systems (the NBD values are
// Linux's numbers, fixed on the wire). Not included by nbdwire.hpp, so the core stays
// freestanding; include it where a server reports storage errors or a client turns replies
// into errno. No state, no heap.
#pragma once

#include <cerrno>  // errno values

#include "nbdwire/constants.hpp"
#include "nbdwire/version.hpp"

namespace nbdwire {
NBDWIRE_BEGIN_NAMESPACE

/// The NBD error a server reports for a failed storage call that set `errno_value`.
/// - EPERM, and what means the same to a client: EACCES, and EROFS (qemu and nbdkit report a
///   read-only store as EPERM; the spec uses EPERM for writes to a read-only export).
/// - ENOSPC, with EDQUOT and EFBIG: the spec's "map EDQUOT and EFBIG to ENOSPC".
/// - ENOTSUP and EOPNOTSUPP (the same number on Linux) to NBD_ENOTSUP.
/// - EIO, ENOMEM, EINVAL, EOVERFLOW, ESHUTDOWN to themselves; 0 to success.
/// - Anything else to EIO: a storage failure the protocol has no name for is an I/O error
///   to the client. (qemu sends EINVAL here; EINVAL tells a client its request was bad.)
[[nodiscard]] constexpr nbd_error to_nbd_error(int errno_value) noexcept {
  switch (errno_value) {
    case 0: return nbd_error::ok;
    case EPERM:
    case EACCES:
    case EROFS: return nbd_error::eperm;
    case EIO: return nbd_error::eio;
    case ENOMEM: return nbd_error::enomem;
    case EINVAL: return nbd_error::einval;
    case ENOSPC:
    case EFBIG:
#ifdef EDQUOT
    case EDQUOT:
#endif
      return nbd_error::enospc;
    case EOVERFLOW: return nbd_error::eoverflow;
    case ENOTSUP:
#if defined(EOPNOTSUPP) && EOPNOTSUPP != ENOTSUP
    case EOPNOTSUPP:
#endif
      return nbd_error::enotsup;
#ifdef ESHUTDOWN
    case ESHUTDOWN: return nbd_error::eshutdown;
#endif
    default: return nbd_error::eio;
  }
}

/// The errno a client reports for an NBD error reply: each value to the errno of the same
/// name (NBD_ENOTSUP to ENOTSUP; NBD_ESHUTDOWN to ESHUTDOWN where the system has it, else
/// EIO). A value outside the list is treated as EINVAL, as the spec asks of clients.
[[nodiscard]] constexpr int to_errno(nbd_error e) noexcept {
  switch (e) {
    case nbd_error::ok: return 0;
    case nbd_error::eperm: return EPERM;
    case nbd_error::eio: return EIO;
    case nbd_error::enomem: return ENOMEM;
    case nbd_error::einval: return EINVAL;
    case nbd_error::enospc: return ENOSPC;
    case nbd_error::eoverflow: return EOVERFLOW;
    case nbd_error::enotsup: return ENOTSUP;
    case nbd_error::eshutdown:
#ifdef ESHUTDOWN
      return ESHUTDOWN;
#else
      return EIO;
#endif
  }
  return EINVAL;
}

NBDWIRE_END_NAMESPACE
}  // namespace nbdwire
