// SPDX-License-Identifier: MIT
// posix.hpp: errno -> NBD error for servers, NBD error -> errno for clients.
#include <doctest/doctest.h>

#include <cerrno>

#include "nbdwire/posix.hpp"

using namespace nbdwire;

static_assert(to_nbd_error(0) == nbd_error::ok);
static_assert(to_errno(nbd_error::enospc) == ENOSPC);

TEST_CASE("posix: errno to NBD error") {
  CHECK(to_nbd_error(0) == nbd_error::ok);
  CHECK(to_nbd_error(EPERM) == nbd_error::eperm);
  CHECK(to_nbd_error(EACCES) == nbd_error::eperm);
  CHECK(to_nbd_error(EROFS) == nbd_error::eperm);
  CHECK(to_nbd_error(EIO) == nbd_error::eio);
  CHECK(to_nbd_error(ENOMEM) == nbd_error::enomem);
  CHECK(to_nbd_error(EINVAL) == nbd_error::einval);
  CHECK(to_nbd_error(ENOSPC) == nbd_error::enospc);
  CHECK(to_nbd_error(EFBIG) == nbd_error::enospc);
  CHECK(to_nbd_error(EDQUOT) == nbd_error::enospc);
  CHECK(to_nbd_error(EOVERFLOW) == nbd_error::eoverflow);
  CHECK(to_nbd_error(ENOTSUP) == nbd_error::enotsup);
  CHECK(to_nbd_error(EOPNOTSUPP) == nbd_error::enotsup);
  CHECK(to_nbd_error(ESHUTDOWN) == nbd_error::eshutdown);
  // no NBD name: an I/O error
  CHECK(to_nbd_error(ENXIO) == nbd_error::eio);
  CHECK(to_nbd_error(ESTALE) == nbd_error::eio);
  CHECK(to_nbd_error(EBADF) == nbd_error::eio);
  CHECK(to_nbd_error(-1) == nbd_error::eio);
}

TEST_CASE("posix: NBD error to errno, and back") {
  CHECK(to_errno(nbd_error::ok) == 0);
  CHECK(to_errno(nbd_error::eperm) == EPERM);
  CHECK(to_errno(nbd_error::eio) == EIO);
  CHECK(to_errno(nbd_error::enomem) == ENOMEM);
  CHECK(to_errno(nbd_error::einval) == EINVAL);
  CHECK(to_errno(nbd_error::enospc) == ENOSPC);
  CHECK(to_errno(nbd_error::eoverflow) == EOVERFLOW);
  CHECK(to_errno(nbd_error::enotsup) == ENOTSUP);
  CHECK(to_errno(nbd_error::eshutdown) == ESHUTDOWN);
  // "treat an unexpected error value as if it had been NBD_EINVAL"
  CHECK(to_errno(static_cast<nbd_error>(7)) == EINVAL);
  // Every NBD value survives the round trip.
  for (const nbd_error e : {nbd_error::ok, nbd_error::eperm, nbd_error::eio, nbd_error::enomem, nbd_error::einval,
                            nbd_error::enospc, nbd_error::eoverflow, nbd_error::enotsup, nbd_error::eshutdown})
    CHECK(to_nbd_error(to_errno(e)) == e);
  // On Linux the NBD numbers are the errno numbers.
#ifdef __linux__
  for (const nbd_error e : {nbd_error::eperm, nbd_error::eio, nbd_error::enomem, nbd_error::einval,
                            nbd_error::enospc, nbd_error::eoverflow, nbd_error::enotsup, nbd_error::eshutdown})
    CHECK(static_cast<std::uint32_t>(to_errno(e)) == static_cast<std::uint32_t>(e));
#endif
}
