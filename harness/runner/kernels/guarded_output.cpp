#include "harness/runner/kernels/guarded_output.h"

#include <fmt/format.h>

#include <array>
#include <stdexcept>

#include <cuda_runtime_api.h>

namespace fb {

namespace {

constexpr size_t kGuardElems = 64;
constexpr uint16_t kGuardWord = 0xA5A5;

// Static storage: the asynchronous copy may still read it after make_guarded_output returns.
const std::array<uint16_t, kGuardElems>& guard_words() {
  static const auto words = [] {
    std::array<uint16_t, kGuardElems> w;
    w.fill(kGuardWord);
    return w;
  }();
  return words;
}

}  // namespace

DeviceBuffer<uint16_t> make_guarded_output(size_t words, cudaStream_t stream) {
  DeviceBuffer<uint16_t> buffer(words + kGuardElems);
  FB_CUDA_CHECK(cudaMemsetAsync(buffer.get(), 0xFF, words * 2, stream));
  FB_CUDA_CHECK(cudaMemcpyAsync(buffer.get() + words, guard_words().data(), kGuardElems * 2,
                                cudaMemcpyHostToDevice, stream));
  return buffer;
}

std::vector<uint16_t> download_guarded_output(const DeviceBuffer<uint16_t>& buffer, size_t words,
                                              cudaStream_t stream, const std::string& what) {
  std::vector<uint16_t> raw(words + kGuardElems);
  FB_CUDA_CHECK(cudaMemcpyAsync(raw.data(), buffer.get(), raw.size() * 2, cudaMemcpyDeviceToHost, stream));
  FB_CUDA_CHECK(cudaStreamSynchronize(stream));
  for (size_t i = words; i < raw.size(); ++i) {
    if (raw[i] != kGuardWord) {
      throw std::runtime_error(fmt::format("{}: guard word {} after the output was overwritten (0x{:04x})",
                                           what, i - words, raw[i]));
    }
  }
  raw.resize(words);
  return raw;
}

}  // namespace fb
