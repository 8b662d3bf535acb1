#pragma once
// Output buffers of the runner's kernel cases (CUDA builds only): `words` 16-bit words poisoned with
// 0xFF bytes — a NaN in bf16 and in fp32 — followed by guard words, so an element the kernel fails to
// write, or a write past the end, cannot pass.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/common/cuda_check.h"

namespace fb {

// Allocates and poisons the output and writes the guard words (asynchronously, on `stream`).
DeviceBuffer<uint16_t> make_guarded_output(size_t words, cudaStream_t stream);

// Copies the output back, synchronizing `stream`, and throws std::runtime_error naming `what` when a
// guard word was overwritten. Returns the `words` output words (without the guard).
std::vector<uint16_t> download_guarded_output(const DeviceBuffer<uint16_t>& buffer, size_t words,
                                              cudaStream_t stream, const std::string& what);

}  // namespace fb
