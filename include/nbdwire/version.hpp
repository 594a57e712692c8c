// SPDX-License-Identifier: MIT
// nbdwire: version and the ABI-tagged inline namespace.
#pragma once

// Every nbdwire header includes this one before any code of its own, so a translation unit
// built below C++20 stops here with one clear message instead of pages of errors about
// std::span and concepts. MSVC reports the standard in _MSVC_LANG (__cplusplus stays 199711L
// without /Zc:__cplusplus).
#if defined(_MSVC_LANG) && _MSVC_LANG > __cplusplus
#define NBDWIRE_CPLUSPLUS _MSVC_LANG
#else
#define NBDWIRE_CPLUSPLUS __cplusplus
#endif
#if NBDWIRE_CPLUSPLUS <= 201703L
#error "nbdwire needs C++20 (-std=c++20, or /std:c++20 with MSVC)"
#endif

#include <string_view>  // std::string_view: used by every header that includes this one

// The version of the headers; CMakeLists.txt checks that project(VERSION) says the same.
#define NBDWIRE_VERSION_MAJOR 0
#define NBDWIRE_VERSION_MINOR 2
#define NBDWIRE_VERSION_PATCH 0
// "MAJOR.MINOR.PATCH" as a string literal, built from the three numbers above.
#define NBDWIRE_STRINGIFY_IMPL(x) #x
#define NBDWIRE_STRINGIFY(x) NBDWIRE_STRINGIFY_IMPL(x)
#define NBDWIRE_VERSION_STRING                                                               \
  NBDWIRE_STRINGIFY(NBDWIRE_VERSION_MAJOR) "." NBDWIRE_STRINGIFY(NBDWIRE_VERSION_MINOR) "." \
      NBDWIRE_STRINGIFY(NBDWIRE_VERSION_PATCH)

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
