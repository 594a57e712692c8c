// SPDX-License-Identifier: MIT
// The test runner: doctest's main. Every other tests/*.cpp only declares TEST_CASEs.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
