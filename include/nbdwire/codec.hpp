// SPDX-License-Identifier: MIT
// nbdwire codec: encoders and streaming decoders for every variable-length body (option
// requests, option replies, structured reply chunk payloads), between layer 1's fixed records
// (wire.hpp) and the machines. One concern per header:
#pragma once

#include "nbdwire/codec/body_errc.hpp"       // body_errc, to_string, machine_errc mapping
#include "nbdwire/codec/core.hpp"            // body_event/body_step, encode_result, shared state
#include "nbdwire/codec/option_request.hpp"  // EXPORT_NAME, INFO/GO, LIST/SET_META_CONTEXT
#include "nbdwire/codec/option_reply.hpp"    // REP_SERVER, REP_INFO, REP_META_CONTEXT, REP_ERR_*
#include "nbdwire/codec/chunk.hpp"           // OFFSET_DATA/HOLE, ERROR[_OFFSET], BLOCK_STATUS[_EXT]
