// SPDX-License-Identifier: MIT
// Allocates on purpose: the symbol check must reject this program (core-freestanding-canary).
#include <cstdlib>  // std::malloc, std::free

// Stored through volatile so the optimizer cannot elide the allocations.
int* volatile g_int = nullptr;
void* volatile g_block = nullptr;

int main(int argc, char**) {
  g_int = new int(argc);
  g_block = std::malloc(static_cast<std::size_t>(argc) * 16u);
  const int r = *g_int + (g_block == nullptr ? 1 : 0);
  delete g_int;
  std::free(g_block);
  return r == argc ? 0 : 1;
}
