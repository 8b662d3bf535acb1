#include <fmt/format.h>

#include <bit>
#include <cstring>
#include <vector>

#include "harness/check/checks.h"
#include "reference/formats/dequantize.h"
#include "reference/fusion/load_fusions.h"
#include "reference/model/make_model.h"

namespace fb {

namespace {

// Bits of dequantizing a fused tensor vs dequantizing its parts and stacking them. Types fusebench
// cannot dequantize are compared as raw bytes, which is the stronger statement anyway.
Metrics fused_vs_stacked(const GgufFile& f, const FusionDecision& d) {
  const std::vector<uint8_t> fused = fuse_rows(f, d);
  if (!ggml_type_info(d.type).convertible) {
    std::vector<uint8_t> stacked;
    for (const std::string& part : d.group.parts) {
      const auto bytes = f.tensor_data(*f.find_tensor(part));
      stacked.insert(stacked.end(), bytes.begin(), bytes.end());
    }
    Metrics m;
    m.n = fused.size();
    m.bit_exact = fused == stacked;
    m.mismatches = m.bit_exact ? 0 : 1;
    return m;
  }
  std::vector<float> a(static_cast<size_t>(d.rows * d.cols)), b(a.size());
  for (int64_t r = 0; r < d.rows; ++r)
    dequantize(d.type, fused.data() + r * d.row_bytes, a.data() + r * d.cols, d.cols);
  size_t at = 0;
  for (const std::string& part : d.group.parts) {
    const GgufTensorInfo& t = *f.find_tensor(part);
    const auto bytes = f.tensor_data(t);
    for (int64_t r = 0; r < t.n_rows(); ++r, at += static_cast<size_t>(d.cols)) {
      dequantize(t.ggml_type(), bytes.data() + r * d.row_bytes, b.data() + at, d.cols);
    }
  }
  return compare(b, a);
}

CheckCase check_file(const std::filesystem::path& path, const std::string& label, const std::string& repro) {
  CheckCase c;
  c.section = "fusion";
  c.name = label;
  c.criterion = "fused dequant == stacked dequant, bit-exact";
  c.repro = repro;
  const GgufFile f = GgufFile::open(path);
  const FusionPlan plan = plan_load_fusions(f);
  std::vector<std::string> bad;
  nlohmann::json groups = nlohmann::json::array();
  for (const FusionDecision& d : plan.decisions) {
    nlohmann::json g = {{"fused_name", d.group.fused_name}, {"fused", d.fused}, {"reason", d.reason}};
    if (d.fused) {
      const Metrics m = fused_vs_stacked(f, d);
      g["metrics"] = to_json(m);
      if (!m.bit_exact) bad.push_back(fmt::format("{}: {}", d.group.fused_name, m.summary()));
    }
    groups.push_back(std::move(g));
  }
  const auto summary = plan.summary();
  c.status = bad.empty() ? CheckStatus::pass : CheckStatus::fail;
  c.detail =
      bad.empty() ? fmt::format("{}", fmt::join(summary, "; ")) : fmt::format("{}", fmt::join(bad, "; "));
  if (summary.empty()) c.detail = "no fusion candidates";
  c.data = {
      {"file", path.string()}, {"summary", summary}, {"unfused", plan.diagnostics()}, {"groups", groups}};
  return c;
}

}  // namespace

std::vector<CheckCase> run_fusion_checks(uint64_t seed, const std::filesystem::path& work_dir,
                                         const std::vector<std::filesystem::path>& extra_models) {
  std::vector<CheckCase> out;
  for (auto family : {ModelFamily::gemma4, ModelFamily::qwen35moe}) {
    for (auto recipe : {QuantRecipe::q4_k, QuantRecipe::q4_k_m}) {
      const ModelConfig config = model_config(family, ModelScale::tiny);
      const auto path =
          work_dir / fmt::format("{}-tiny-{}-seed{}.gguf", config.name, to_string(recipe), seed);
      MakeModelOptions opt;
      opt.seed = seed;
      opt.recipe = recipe;
      make_model(config, path, opt);
      const std::string repro = fmt::format(
          "fusebench make-model --model {} --scale tiny --recipe {} --seed {} -o m.gguf && fusebench fuse "
          "m.gguf -v",
          config.name, to_string(recipe), seed);
      out.push_back(check_file(path, fmt::format("{} tiny {}", config.name, to_string(recipe)), repro));
    }
  }
  for (const auto& path : extra_models) {
    try {
      out.push_back(
          check_file(path, path.filename().string(), fmt::format("fusebench fuse {} -v", path.string())));
    } catch (const std::exception& e) {
      CheckCase c;
      c.section = "fusion";
      c.name = path.filename().string();
      c.status = CheckStatus::fail;
      c.detail = e.what();
      out.push_back(std::move(c));
    }
  }
  return out;
}

}  // namespace fb
