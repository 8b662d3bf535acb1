#pragma once
// Dense weights of a whole step on the device, uploaded from a GGUF in one or both layouts: the raw
// ggml blocks (prefill: dequantize + cuBLAS reads them) and the matvec's repacked decode layouts
// (Q4_K -> CoalescedInt4 code8 = MatvecFormat::int4_u8, Q6_K -> PlanarInt6 code8 = int6_i8; both
// lossless, so a step may keep only the layout its phase reads). The tensors of one load-time fusion
// group are stored back to back in each layout (rows of part 0, then part 1, ...), so the group is
// also one fused matrix and its parts are views into it: fused and unfused variants share one copy.
// Used by the gemma4 and qwen3.5 steps. The copies and the repacking are queued as jobs and run on a
// thread pool (host memory stays at a chunk of rows per thread).
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "kernels/common/cuda_check.h"
#include "kernels/gemv/w4a8_matvec.cuh"
#include "reference/formats/ggml_type.h"
#include "reference/gguf/gguf_file.h"

namespace fb {

// One weight matrix: its repacked decode view and its raw ggml blocks (either may be absent).
struct DevMat {
  GgmlType type = GgmlType::F32;
  int64_t n = 0, k = 0;
  cuda::MatvecWeights mv;
  const void* raw = nullptr;
  uint64_t packed_bytes = 0, raw_bytes = 0;
};

// Device allocations of one weights object; alloc may be called from any thread.
class DeviceArena {
 public:
  uint8_t* alloc(uint64_t bytes);

 private:
  std::mutex m_mutex;
  std::vector<DeviceBuffer<uint8_t>> m_buffers;
};

struct WeightLayouts {
  bool packed = false;  // the repacked decode views (DevMat::mv)
  bool raw = false;     // the ggml blocks (DevMat::raw)
};

using UploadJob = std::function<void()>;

// Runs the jobs on up to 16 host threads, each on the caller's CUDA device; rethrows the first error.
void run_upload_jobs(std::vector<UploadJob>& jobs);

// Queues the upload of tensors `names` (one type and K; packed: Q4_K or Q6_K, else
// std::invalid_argument) back to back in the layouts asked for. Returns the parts; `fused`, when
// given and there is more than one part, receives the view of the whole group. The views are valid
// at once, their content once run_upload_jobs(jobs) returns.
std::vector<DevMat> upload_group(DeviceArena& arena, const GgufFile& f, const std::vector<std::string>& names,
                                 WeightLayouts layouts, std::vector<UploadJob>& jobs,
                                 std::optional<DevMat>* fused);

// Weights cached across the cases of one process, where decode reads the packed layout and prefill
// the raw one: unless `device` already holds this phase's layout, reloads it (the old copy freed
// first) with the union of what it held and what the phase needs, load(layouts) making the new one.
template <class Weights, class Load>
void load_layouts_for_phase(std::shared_ptr<Weights>& device, WeightLayouts& held, bool prefill,
                            Load&& load) {
  if (device && (prefill ? held.raw : held.packed)) return;
  const WeightLayouts want{held.packed || !prefill, held.raw || prefill};
  device.reset();
  device = load(want);
  held = want;
}

}  // namespace fb
