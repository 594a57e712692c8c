// SPDX-License-Identifier: MIT
// nbdwire: version and the ABI-tagged inline namespace.
#pragma once

#include <string_view>  // std::string_view: used by every header that includes this one

#define NBDWIRE_VERSION_MAJOR 0
#define NBDWIRE_VERSION_MINOR 1
#define NBDWIRE_VERSION_PATCH 0

// Limits change the layout of the machines (see config.hpp), so a translation unit built with
// other limits lands in another inline namespace and cannot be linked against this one silently.
#define NBDWIRE_BEGIN_NAMESPACE inline namespace v0 {
#define NBDWIRE_END_NAMESPACE }
