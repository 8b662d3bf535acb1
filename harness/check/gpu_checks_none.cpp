// Built when FUSEBENCH_CUDA is OFF or no CUDA compiler was found: the GPU section reports itself
// skipped, with the reason, instead of silently disappearing from the verdict table.
#include "harness/check/checks.h"

namespace fb {

std::vector<CheckCase> run_gpu_checks(uint64_t) {
  CheckCase c;
  c.section = "gpu";
  c.name = "CUDA dequant vs CPU (q4_K q5_K q6_K q8_0 f16 bf16 f32)";
  c.status = CheckStatus::skip;
  c.criterion = "bit-exact";
  c.detail = "built without CUDA (FUSEBENCH_CUDA=OFF or no nvcc at configure time)";
  return {c};
}

}  // namespace fb
