#pragma once
// The check sections of `fusebench check`. Each returns one CheckCase per case it ran or skipped.
#include <cstdint>
#include <filesystem>
#include <vector>

#include "harness/check/check_case.h"

namespace fb {

// CPU reference: quantize -> dequantize round trip of every convertible type, within the
// tolerance table.
std::vector<CheckCase> run_format_checks(uint64_t seed);

// Load-time fusions on tiny models of both families (written to `work_dir` with make-model) under
// both recipes, plus `extra_models`: fused dequant == stacked dequant, bit-exact.
std::vector<CheckCase> run_fusion_checks(uint64_t seed, const std::filesystem::path& work_dir,
                                         const std::vector<std::filesystem::path>& extra_models);

// CUDA dequant == CPU dequant, bit-exact, for every type the kernels support. Skips with the
// reason when built without CUDA or without a usable device.
std::vector<CheckCase> run_gpu_checks(uint64_t seed);

}  // namespace fb
