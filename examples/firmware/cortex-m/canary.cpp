// SPDX-License-Identifier: MIT
// An image the symbol check must reject: it uses malloc and operator new.
#include <cstdlib>
#include <new>

extern "C" void* _sbrk(int) { return reinterpret_cast<void*>(-1); }  // newlib's malloc asks for it

int main() {
  void* p = std::malloc(16);
  int* q = new (std::nothrow) int(1);
  const int r = (p != nullptr) + (q != nullptr);
  std::free(p);
  delete q;
  return r;
}
