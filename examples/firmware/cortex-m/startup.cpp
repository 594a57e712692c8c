// SPDX-License-Identifier: MIT
// Start-up for a Cortex-M3 (QEMU mps2-an385): the vector table, a reset handler that sets up
// .data and .bss and calls main(), and fault handlers that report through semihosting.
#include <cstdint>
#include <cstring>

#include "semihost.hpp"

extern "C" {
// From mps2-an385.ld.
extern std::uint32_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[], __stack_top[];
extern void (*__init_array_start[])();
extern void (*__init_array_end[])();

int main();
[[noreturn]] void reset_handler();
[[noreturn]] void fault_handler();

/// std::abort (nbdwire's result<T>::value() on an error) ends the run as a failure. Defined
/// here so newlib's abort, whose signal emulation allocates, is never linked.
[[noreturn]] void abort() {
  semihost::print("abort\n");
  semihost::exit(false);
}
}

namespace {
using handler = void (*)();

// Armv7-M: initial stack pointer, then the 15 system exception vectors; no interrupts are used.
struct vector_table {
  const void* initial_sp;
  handler vectors[15];
};
}  // namespace

__attribute__((section(".vectors"), used)) const vector_table vectors = {
    __stack_top,
    {reset_handler, fault_handler, fault_handler, fault_handler, fault_handler, fault_handler, nullptr, nullptr,
     nullptr, nullptr, fault_handler, fault_handler, nullptr, fault_handler, fault_handler},
};

extern "C" void reset_handler() {
  const auto data_bytes = static_cast<std::size_t>(reinterpret_cast<std::uintptr_t>(__data_end) -
                                                   reinterpret_cast<std::uintptr_t>(__data_start));
  const auto bss_bytes = static_cast<std::size_t>(reinterpret_cast<std::uintptr_t>(__bss_end) -
                                                  reinterpret_cast<std::uintptr_t>(__bss_start));
  std::memcpy(__data_start, __data_load, data_bytes);
  std::memset(__bss_start, 0, bss_bytes);
  for (auto* f = __init_array_start; f != __init_array_end; ++f) (*f)();
  semihost::exit(main() == 0);
}

extern "C" void fault_handler() {
  semihost::print("fault\n");
  semihost::exit(false);
}
