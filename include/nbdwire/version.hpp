// SPDX-License-Identifier: MIT
// nbdwire: version and the ABI-tagged inline namespace.
#pragma once

#include <string_view>  // std::string_view: used by every header that includes this one

#define NBDWIRE_VERSION_MAJOR 0
#define NBDWIRE_VERSION_MINOR 1
#define NBDWIRE_VERSION_PATCH 0

// The inline namespace carries the major version. The limits of config.hpp change the layout
// of the machines, so every translation unit of one program must use the same limits.
#define NBDWIRE_BEGIN_NAMESPACE inline namespace v0 {
#define NBDWIRE_END_NAMESPACE }
