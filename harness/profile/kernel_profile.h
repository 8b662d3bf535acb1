#pragma once
// `fusebench profile`: per-kernel time share from CUPTI activity records (DESIGN §5), without nsys.
// Capture (cupti_capture.h) collects raw records; aggregate() here maps each GPU kernel to the
// profiled group it was launched in (external correlation id: one group per case or step) and to
// the innermost NVTX range of the `fusebench` domain open on the launching thread when the launch
// API was called, then sums GPU time per (range, kernel). Pure C++ so it is tested without a GPU.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace fb::profile {

struct KernelRecord {
  uint32_t correlation = 0;
  uint64_t start_ns = 0, end_ns = 0;
  std::string name;  // demangled, argument list dropped
};
struct ApiRecord {  // the runtime/driver call that launched work
  uint32_t correlation = 0;
  uint32_t thread = 0;
  uint64_t start_ns = 0;
};
struct RangeRecord {  // one NVTX push/pop range
  uint32_t thread = 0;
  uint64_t start_ns = 0, end_ns = 0;
  std::string name, domain;
};
struct ExternalRecord {
  uint32_t correlation = 0;
  uint64_t external_id = 0;
};

struct ActivityLog {
  std::vector<KernelRecord> kernels;
  std::vector<ApiRecord> apis;
  std::vector<RangeRecord> ranges;
  std::vector<ExternalRecord> externals;
  uint64_t dropped = 0;  // records CUPTI reported dropped (buffers full)
};

// Group id -> name (the case or step it profiled); ids are what the capture pushed.
struct Group {
  uint64_t id = 0;
  std::string name;
};

// The "profile" section of a results document (schema $defs/profile): per group, kernels sorted by
// GPU time with calls, time and share of the group's in-range kernel time. Kernels outside every
// fusebench range (setup uploads, poisoning) are counted apart, not in the shares; when no NVTX
// records arrived at all (no injection), every kernel counts and its range is "(no NVTX)".
nlohmann::json aggregate(const ActivityLog& log, const std::vector<Group>& groups,
                         const std::string& domain = "fusebench");

// Plain-text table of a profile section.
std::string render_table(const nlohmann::json& profile);

// "void ns::kern<4>(float const*, int)" -> "ns::kern<4>".
std::string short_kernel_name(const std::string& demangled);

}  // namespace fb::profile
