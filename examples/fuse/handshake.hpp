// SPDX-License-Identifier: MIT
// nbdwire-fuse: the handshake, run before mounting so that its errors reach the terminal.
#pragma once

#include <cstddef>  // std::byte
#include <memory>   // std::unique_ptr
#include <vector>   // leftover input

#include "../sockets/tls_uri.hpp"
#include "nbdwire/nbdwire.hpp"

namespace fuse_adapter {

/// Runs the handshake on a blocking socket (with timeouts) up to `ready`, STARTTLS first for
/// an nbds URI (`tls` then holds the session). Returns what was negotiated; `leftover` gets
/// the bytes received after `ready` (none from a sane server). `trace`: --debug.
nbdwire::negotiated handshake(int fd, const examples::client_uri& u, std::vector<std::byte>& leftover,
                              std::unique_ptr<examples::tls_session>& tls, nbdwire::client_trace trace = {});

}  // namespace fuse_adapter
