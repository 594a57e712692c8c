// SPDX-License-Identifier: MIT
// nbdwire-server: carrying out requests against an export's backend, and answering them.
// The machine has validated every request it reports (range, flags, read-only), so these
// only do the storage work and report its errno as an NBD error.
#pragma once

#include "connection.hpp"
#include "nbdwire/events.hpp"

namespace nbdwire_server {

/// A `request` event: carried out and answered now; a WRITE once its payload is in (its
/// `remaining` says how much follows). False: close the connection.
bool on_request(connection& c, const nbdwire::event& ev);

/// A `payload` event: WRITE data from the input buffer, written to the export; the WRITE is
/// answered with its last piece. False: close.
bool on_payload(connection& c, const nbdwire::event& ev);

/// Answers the WRITE in `c.writing`, whose payload is all in. False: close.
bool finish_write(connection& c);

}  // namespace nbdwire_server
