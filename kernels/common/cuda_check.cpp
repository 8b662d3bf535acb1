#include "kernels/common/cuda_check.h"

#include <cstdio>
#include <sstream>
#include <string_view>
#include <vector>

#ifndef FB_CUDA_ARCHITECTURES
#error "FB_CUDA_ARCHITECTURES must name the CMAKE_CUDA_ARCHITECTURES this library was built with"
#endif

namespace fb {

namespace {

std::string describe(cudaError_t code, const char* expr, const char* file, int line) {
  std::ostringstream os;
  os << file << ':' << line << ": " << expr << " failed: " << cudaGetErrorName(code) << " ("
     << cudaGetErrorString(code) << ')';
  return os.str();
}

struct Arch {
  int cc;              // 10 * major + minor
  bool arch_specific;  // "90a": runs on exactly that compute capability
};

// CMAKE_CUDA_ARCHITECTURES entries: "90a", "90", "90-real", "90-virtual", separated by ';'.
std::vector<Arch> built_archs() {
  std::vector<Arch> out;
  std::string_view list = FB_CUDA_ARCHITECTURES;
  while (!list.empty()) {
    const size_t sep = list.find(';');
    std::string_view item = list.substr(0, sep);
    list = sep == std::string_view::npos ? std::string_view{} : list.substr(sep + 1);
    int cc = 0;
    size_t i = 0;
    while (i < item.size() && item[i] >= '0' && item[i] <= '9') cc = cc * 10 + (item[i++] - '0');
    if (cc == 0) continue;
    out.push_back({cc, i < item.size() && item[i] == 'a'});
  }
  return out;
}

// SASS for sm_XY runs on X.Y..X.9; arch-specific ("a") SASS only on X.Y. PTX-only entries would
// also JIT for newer majors, but fusebench never ships PTX-only builds, so that is not modelled.
bool can_run(const std::vector<Arch>& archs, int major, int minor) {
  const int cc = 10 * major + minor;
  for (const Arch& a : archs) {
    if (a.arch_specific ? cc == a.cc : (major == a.cc / 10 && minor >= a.cc % 10)) return true;
  }
  return false;
}

std::string needs_text(const std::vector<Arch>& archs) {
  std::ostringstream os;
  os << "needs compute capability ";
  for (size_t i = 0; i < archs.size(); ++i) {
    os << (i ? " or " : "") << archs[i].cc / 10 << '.' << archs[i].cc % 10
       << (archs[i].arch_specific ? "" : "+");
  }
  os << " (built for";
  for (const Arch& a : archs) os << " sm_" << a.cc << (a.arch_specific ? "a" : "");
  os << ')';
  return os.str();
}

std::optional<std::string> compute_reason() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear it so later, unrelated checks do not report this failure
    std::string why = err == cudaErrorNoDevice             ? "no CUDA device is present"
                      : err == cudaErrorInsufficientDriver ? "no CUDA driver, or one older than the runtime"
                                                           : "the CUDA runtime could not start";
    return why + " (cudaGetDeviceCount: " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err) + ")";
  }
  if (count == 0) return std::string("no CUDA device is present (cudaGetDeviceCount returned 0)");

  int device = 0;
  cudaDeviceProp prop{};
  if (cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) {
    cudaGetLastError();
    return std::string("cudaGetDevice failed: ") + cudaGetErrorString(e);
  }
  if (cudaError_t e = cudaGetDeviceProperties(&prop, device); e != cudaSuccess) {
    cudaGetLastError();
    return std::string("cudaGetDeviceProperties failed: ") + cudaGetErrorString(e);
  }
  const std::vector<Arch> archs = built_archs();
  if (!can_run(archs, prop.major, prop.minor)) {
    std::ostringstream os;
    os << needs_text(archs) << ", found " << prop.major << '.' << prop.minor << " on " << prop.name
       << " (device " << device << ')';
    return os.str();
  }
  return std::nullopt;
}

}  // namespace

CudaError::CudaError(cudaError_t code, const char* expr, const char* file, int line)
    : std::runtime_error(describe(code, expr, file, line)), m_code(code) {}

namespace detail {

void throw_cuda_error(cudaError_t code, const char* expr, const char* file, int line) {
  throw CudaError(code, expr, file, line);
}

void report_cuda_error(cudaError_t code, const char* expr, const char* file, int line) noexcept {
  std::fprintf(stderr, "fusebench: %s\n", describe(code, expr, file, line).c_str());
}

}  // namespace detail

std::optional<std::string> cuda_device_unavailable_reason() {
  static const std::optional<std::string> reason = compute_reason();
  return reason;
}

}  // namespace fb
