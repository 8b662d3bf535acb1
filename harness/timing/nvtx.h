#pragma once
// NVTX ranges in fusebench's one domain (DESIGN §5): one around each kernel launch and each scenario
// step, so nsys shows them and `fusebench profile` can turn them into a per-kernel time share.
//
//   FB_NVTX_RANGE("rms_norm_q8");          // a static registered string: no copy per event
//   fb::nvtx_range step{step_name};         // any std::string/const char*: copied per event
//
// Enabled only where the target links fb_nvtx and that library found nvtx3 with FUSEBENCH_NVTX=ON
// (it then defines FUSEBENCH_NVTX_ENABLED=1). Otherwise every type here is an empty no-op, so
// harness code needs no #ifdefs and CPU-only builds without CUDA headers compile it unchanged.
// The two variants live in different inline namespaces: a binary that mixes translation units
// built each way gets two distinct types instead of an ODR violation.
#include <string>

#if defined(FUSEBENCH_NVTX_ENABLED) && FUSEBENCH_NVTX_ENABLED
#include <nvtx3/nvtx3.hpp>
#define FB_NVTX_ACTIVE 1
#else
#define FB_NVTX_ACTIVE 0
#endif

namespace fb {

// nvtx3's domain tag: a type with a static name (nvtx3.hpp, "Domains").
struct nvtx_domain {
  static constexpr char const* name{"fusebench"};
};

#if FB_NVTX_ACTIVE
inline namespace nvtx_on {

// Registered once with the tool, then referred to by handle; for names that do not change.
using nvtx_string = nvtx3::registered_string_in<nvtx_domain>;

// Scoped push/pop on the calling thread; ranges must end in reverse order (nvtx3::scoped_range).
class nvtx_range {
 public:
  explicit nvtx_range(const nvtx_string& name) : m_range{name} {}
  explicit nvtx_range(const char* name) : m_range{name} {}
  explicit nvtx_range(const std::string& name) : m_range{name} {}
  nvtx_range(const nvtx_range&) = delete;
  nvtx_range& operator=(const nvtx_range&) = delete;

 private:
  nvtx3::scoped_range_in<nvtx_domain> m_range;
};

}  // namespace nvtx_on
#else
inline namespace nvtx_off {

class nvtx_string {
 public:
  explicit constexpr nvtx_string(const char*) noexcept {}
};

class nvtx_range {
 public:
  explicit constexpr nvtx_range(const nvtx_string&) noexcept {}
  explicit constexpr nvtx_range(const char*) noexcept {}
  explicit nvtx_range(const std::string&) noexcept {}
  nvtx_range(const nvtx_range&) = delete;
  nvtx_range& operator=(const nvtx_range&) = delete;
};

}  // namespace nvtx_off
#endif

}  // namespace fb

#define FB_NVTX_CONCAT_IMPL(a, b) a##b
#define FB_NVTX_CONCAT(a, b) FB_NVTX_CONCAT_IMPL(a, b)
// A range from here to the end of the enclosing scope, named by a string literal (or any string
// that outlives the program's first pass here): the name is registered once, on first use.
#define FB_NVTX_RANGE(literal)                                                     \
  static const ::fb::nvtx_string FB_NVTX_CONCAT(fb_nvtx_name_, __LINE__){literal}; \
  const ::fb::nvtx_range FB_NVTX_CONCAT(fb_nvtx_range_, __LINE__) { FB_NVTX_CONCAT(fb_nvtx_name_, __LINE__) }
