// The whole gemma4 step on the GPU at tiny scale (full layers at the real TQ4 shape) against the
// fp64 CPU step from the same GGUF and the same KV state; fused vs unfused; graph replay vs eager.
#include "harness/step/gemma4_gpu_step.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "harness/check/metrics.h"
#include "harness/runner/tolerances.h"
#include "kernels/common/cuda_check.h"
#include "reference/model/make_model.h"

namespace fb {
namespace {

namespace fs = std::filesystem;

class Gemma4GpuStepTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (cuda_device_unavailable_reason()) return;
    s_path = fs::temp_directory_path() / "fusebench_gpu_step_tiny.gguf";
    MakeModelOptions o;
    o.seed = 5;
    make_model(ref::gemma4_step_tiny_config(), s_path, o);
    s_file = std::make_unique<GgufFile>(GgufFile::open(s_path));
    s_weights = load_gemma4_device_weights(*s_file, ref::gemma4_step_tiny_config(), true, true);
    s_ref = std::make_unique<ref::Gemma4RefWeights>(
        ref::load_gemma4_ref_weights(*s_file, ref::gemma4_step_tiny_config(), false));
  }
  static void TearDownTestSuite() {
    s_weights.reset();
    s_ref.reset();
    s_file.reset();
    if (!s_path.empty()) fs::remove(s_path);
  }
  void SetUp() override {
    if (auto why = cuda_device_unavailable_reason()) GTEST_SKIP() << *why;
  }

  // GPU and CPU steps from the same cache state; returns {gpu logits, cpu logits}.
  std::pair<std::vector<float>, std::vector<float>> run(bool prefill, int64_t T, int64_t ctx, StepVariant v,
                                                        bool graph) {
    const ModelConfig c = ref::gemma4_step_tiny_config();
    const std::vector<int32_t> toks = ref::step_tokens(c.vocab, T, 9);
    Gemma4GpuStep step(s_weights, prefill, T, ctx, v);
    ref::Gemma4KvState kv = ref::make_kv_state(c, step.capacity(), ctx, 21);
    step.upload_kv(kv);
    step.set_tokens(toks);
    Stream stream;
    step.enqueue(stream.get());  // eager first (sets kernel attributes outside capture)
    FB_CUDA_CHECK(cudaGetLastError());
    if (graph) {
      cudaGraph_t g;
      cudaGraphExec_t ge;
      FB_CUDA_CHECK(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeThreadLocal));
      step.enqueue(stream.get());
      FB_CUDA_CHECK(cudaStreamEndCapture(stream.get(), &g));
      FB_CUDA_CHECK(cudaGraphInstantiate(&ge, g, 0));
      for (int i = 0; i < 3; ++i) FB_CUDA_CHECK(cudaGraphLaunch(ge, stream.get()));
      FB_CUDA_CHECK(cudaGraphExecDestroy(ge));
      FB_CUDA_CHECK(cudaGraphDestroy(g));
    }
    std::vector<float> gpu = step.logits(stream.get());
    std::vector<float> cpu = ref::gemma4_ref_step(*s_ref, kv, toks, ctx);
    return {gpu, cpu};
  }

  void expect_close(const std::vector<float>& cpu, const std::vector<float>& gpu, const char* kernel) {
    const Metrics m = compare(cpu, gpu);
    const Tolerance t = kernel_tolerance(kernel, "reference");
    std::printf("%s vs CPU reference: %s\n", kernel, m.summary().c_str());
    EXPECT_EQ(m.nonfinite, 0u);
    EXPECT_GE(m.cosine, t.min_cosine) << m.summary();
    EXPECT_LE(m.nmse, t.max_nmse) << m.summary();
  }

  static inline fs::path s_path;
  static inline std::unique_ptr<GgufFile> s_file;
  static inline std::shared_ptr<Gemma4DeviceWeights> s_weights;
  static inline std::unique_ptr<ref::Gemma4RefWeights> s_ref;
};

TEST_F(Gemma4GpuStepTest, DecodeMatchesReferenceAndUnfused) {
  // ctx 48: inside the 64-token window; 300: the 128-slot ring wrapped twice. (The one H200 run of an
  // earlier version, with ctx 5 and unrounded cache capacities, stalled in this test: not yet rerun.)
  for (int64_t ctx : {48, 300}) {
    SCOPED_TRACE("ctx " + std::to_string(ctx));
    auto [fused, cpu] = run(false, 1, ctx, StepVariant::fused, false);
    auto [unfused, cpu2] = run(false, 1, ctx, StepVariant::unfused, false);
    expect_close(cpu, fused, "gemma4_decode_step");
    const Metrics m = compare(unfused, fused);
    EXPECT_TRUE(m.bit_exact) << "fused vs unfused decode: " << m.summary();
  }
}

TEST_F(Gemma4GpuStepTest, GraphReplayEqualsEager) {
  auto [eager, cpu] = run(false, 1, 90, StepVariant::fused, false);
  auto [graph, cpu2] = run(false, 1, 90, StepVariant::fused, true);
  EXPECT_TRUE(compare(eager, graph).bit_exact) << "graph replays of the same step must repeat it exactly";
}

TEST_F(Gemma4GpuStepTest, PrefillMatchesReference) {
  for (int64_t T : {20, 100}) {
    SCOPED_TRACE("T " + std::to_string(T));
    auto [fused, cpu] = run(true, T, 90, StepVariant::fused, false);
    auto [unfused, cpu2] = run(true, T, 90, StepVariant::unfused, false);
    expect_close(cpu, fused, "gemma4_prefill_step");
    const Metrics m = compare(unfused, fused);
    const Tolerance t = kernel_tolerance("gemma4_prefill_step", "unfused");
    std::printf("prefill fused vs unfused: %s\n", m.summary().c_str());
    EXPECT_GE(m.cosine, t.min_cosine);
    EXPECT_LE(m.nmse, t.max_nmse);
  }
}

}  // namespace
}  // namespace fb
