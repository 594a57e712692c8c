// SPDX-License-Identifier: MIT
// nbdwire: the Network Block Device protocol without I/O. Umbrella header.
#pragma once

#include "nbdwire/version.hpp"    // version and ABI namespace
#include "nbdwire/config.hpp"     // compile-time limits
#include "nbdwire/bytes.hpp"      // big-endian fields, range arithmetic
#include "nbdwire/constants.hpp"  // magics, flags, options, commands, errors
#include "nbdwire/wire.hpp"       // layer 1: fixed-size wire records
#include "nbdwire/codec.hpp"      // layer 1: variable-length bodies (codec/)
#include "nbdwire/errors.hpp"     // errc, category, result<T>
#include "nbdwire/events.hpp"     // events, negotiated, request
#include "nbdwire/client.hpp"     // the client machine
#include "nbdwire/server.hpp"     // the server machine
#include "nbdwire/uri.hpp"       // NBD URIs, parsed without a heap
#include "nbdwire/transfer.hpp"  // request sizes, range splitting, gathered sends
#include "nbdwire/kernel.hpp"    // handing a connection to the Linux kernel's NBD driver
