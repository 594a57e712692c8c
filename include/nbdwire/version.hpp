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

// Code-size attributes. NBDWIRE_SIZE_OUTLINE keeps a small helper out of line when the
// program is built for size (-Os, -Oz): each call site is then a call instead of a copy of
// the helper; built for speed the helper stays inline. NBDWIRE_COLD marks a path taken at
// most once per connection (failures), kept out of line whatever the optimisation level.
#if defined(__GNUC__) || defined(__clang__)
#if defined(__OPTIMIZE_SIZE__)
#define NBDWIRE_SIZE_OUTLINE [[gnu::noinline]]
#else
#define NBDWIRE_SIZE_OUTLINE
#endif
#define NBDWIRE_COLD [[gnu::cold, gnu::noinline]]
#else
#define NBDWIRE_SIZE_OUTLINE
#define NBDWIRE_COLD
#endif
