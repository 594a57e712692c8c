// SPDX-License-Identifier: MIT
// Fuzz target, differential: one input for any surface, fed whole and cut at positions the
// fuzzer chooses, must give the same events, output and end state.
// Input: surface[1] cut count[1] cuts[count × 2] then that surface's input (surfaces.hpp).
// Count bit 0: the split run drains through pending_pieces(); bit 1: a server's split run
// sends at most a few bytes each time (drain_limit, driver.hpp): count bits 2-3 pick how many.
#include "surfaces.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace nbdwire_fuzz;
  const std::unique_ptr<std::byte[]> copy(new std::byte[size]);
  if (size != 0) std::memcpy(copy.get(), data, size);
  reader rd({copy.get(), size});
  const auto s = static_cast<surface>(rd.u8() % surface_count);
  const std::size_t count = rd.u8();
  cuts at;
  for (std::size_t i = 0; i < count; ++i) at.push_back(rd.u16());
  const bytes_view input = rd.rest();
  const std::size_t stream = input.size() - header_size(s, input);
  const run_log whole = run_surface(s, input, {});
  // An odd cut count drains the split run through pending_pieces(), which must send the same.
  const scoped_mode<bool> pieces(drain_through_pieces, (count & 1) != 0);
  const scoped_mode<std::size_t> limit(server_limit,
                                        (count & 2) != 0 ? drain_limits[(count >> 2) % drain_limits.size()] : 0);
  check_same(whole, run_surface(s, input, normalise(at, stream)));
  return 0;
}
