// SPDX-License-Identifier: MIT
// Output and exit for the bare-metal image through ARM semihosting ("bkpt 0xab" on M-profile):
// QEMU started with -semihosting-config enable=on,target=native prints the text and ends with
// the status the image reports. No C library stdio: newlib's would bring in the allocator.
#pragma once

#include <cstdint>

namespace semihost {

inline constexpr int sys_write0 = 0x04;  // r1: NUL-terminated string
inline constexpr int sys_exit = 0x18;    // r1: reason code (32-bit ARM)
inline constexpr std::uint32_t adp_stopped_application_exit = 0x20026;  // QEMU exits 0
inline constexpr std::uint32_t adp_stopped_run_time_error = 0x20023;    // QEMU exits 1

inline int call(int op, const void* arg) {
  int r = 0;
  asm volatile("mov r0, %1\n\tmov r1, %2\n\tbkpt 0xab\n\tmov %0, r0"
               : "=r"(r)
               : "r"(op), "r"(arg)
               : "r0", "r1", "memory");
  return r;
}

inline void print(const char* s) { (void)call(sys_write0, s); }

/// Decimal, or hexadecimal with `digits` digits when digits > 0.
inline void print_number(std::uint64_t v, int digits = 0) {
  char buf[24];
  char* p = buf + sizeof buf;
  *--p = '\0';
  if (digits > 0) {
    for (int i = 0; i < digits; ++i, v >>= 4) *--p = "0123456789abcdef"[v & 0xf];
  } else {
    do {
      *--p = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0);
  }
  print(p);
}

[[noreturn]] inline void exit(bool success) {
  const std::uint32_t reason = success ? adp_stopped_application_exit : adp_stopped_run_time_error;
  (void)call(sys_exit, reinterpret_cast<const void*>(reason));
  for (;;) {
  }
}

}  // namespace semihost
