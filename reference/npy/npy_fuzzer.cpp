// libFuzzer target for the .npy reader (built with -DFUSEBENCH_FUZZ=ON, clang only; see
// scripts/fuzz). Property: any byte string either parses into a shape whose element count matches
// the data, or throws NpyError.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "reference/npy/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const fb::NpyArray a = fb::parse_npy(std::span<const uint8_t>(data, size), "fuzz");
    size_t n = 1;
    for (int64_t d : a.shape) {
      if (d < 0) std::abort();
      n *= static_cast<size_t>(d);
    }
    if (n != a.data.size()) std::abort();
    (void)fb::format_npy_shape(a.shape);
  } catch (const fb::NpyError&) {
  }
  return 0;
}
