#include "harness/step/repacked_weights.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <stdexcept>
#include <thread>

#include "reference/formats/blocks.h"
#include "reference/layouts/layouts.h"

namespace fb {

namespace {

using cuda::MatvecFormat;
using cuda::MatvecWeights;

// Bytes per row of each packed field (Q4_K -> int4 u8 codes, Q6_K -> int6 i8 codes).
struct FieldRowBytes {
  int64_t q = 0, qh = 0, sc = 0, zc = 0, ss = 0, zs = 0;
  int64_t total() const { return q + qh + sc + zc + ss + zs; }
};
FieldRowBytes field_row_bytes(GgmlType t, int64_t k, const std::string& name) {
  if (t == GgmlType::Q4_K) return {k / 2, 0, k / 32, k / 32, k / 256 * 2, k / 256 * 2};
  if (t == GgmlType::Q6_K) return {k / 2, k / 4, k / 16, 0, k / 256 * 2, 0};
  throw std::invalid_argument(
      fmt::format("{}: no repacked decode layout for {} weights (Q4_K or Q6_K)", name, ggml_type_name(t)));
}

uint64_t align256(uint64_t v) { return (v + 255) / 256 * 256; }

}  // namespace

uint8_t* DeviceArena::alloc(uint64_t bytes) {
  std::lock_guard<std::mutex> lock(m_mutex);
  m_buffers.emplace_back(bytes);
  return m_buffers.back().get();
}

void run_upload_jobs(std::vector<UploadJob>& jobs) {
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex err_mutex;
  // The CUDA current device is per host thread: workers must upload to the caller's device.
  int device = 0;
  FB_CUDA_CHECK(cudaGetDevice(&device));
  auto worker = [&] {
    if (const cudaError_t e = cudaSetDevice(device); e != cudaSuccess) {
      std::lock_guard<std::mutex> lock(err_mutex);
      if (!error)
        error = std::make_exception_ptr(
            std::runtime_error(std::string("cudaSetDevice: ") + cudaGetErrorString(e)));
      return;
    }
    for (size_t i; (i = next++) < jobs.size();) {
      try {
        jobs[i]();
      } catch (...) {
        std::lock_guard<std::mutex> lock(err_mutex);
        if (!error) error = std::current_exception();
      }
    }
  };
  const unsigned n = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (unsigned i = 0; i < n; ++i) pool.emplace_back(worker);
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

std::vector<DevMat> upload_group(DeviceArena& arena, const GgufFile& f, const std::vector<std::string>& names,
                                 WeightLayouts layouts, std::vector<UploadJob>& jobs,
                                 std::optional<DevMat>* fused) {
  std::vector<const GgufTensorInfo*> ts;
  int64_t rows = 0;
  for (const auto& nm : names) {
    const GgufTensorInfo* t = f.find_tensor(nm);
    if (!t) throw std::invalid_argument(fmt::format("{}: tensor {} missing", f.name(), nm));
    // One type and K per group: the packed fields have one row size, the fused view one format.
    if (!ts.empty() && (t->ggml_type() != ts[0]->ggml_type() || t->n_cols() != ts[0]->n_cols()))
      throw std::invalid_argument(
          fmt::format("{}: {} and {} differ in type or columns; they cannot share one allocation", f.name(),
                      names[0], nm));
    ts.push_back(t);
    rows += t->n_rows();
  }
  const GgmlType type = ts[0]->ggml_type();
  const int64_t k = ts[0]->n_cols();
  std::vector<DevMat> parts(ts.size());
  DevMat all;
  all.type = type;
  all.n = rows;
  all.k = k;
  if (layouts.raw) {
    uint64_t bytes = 0;
    for (auto* t : ts) bytes += t->nbytes;
    uint8_t* base = arena.alloc(bytes);
    all.raw = base;
    all.raw_bytes = bytes;
    uint64_t off = 0;
    for (size_t p = 0; p < ts.size(); ++p) {
      parts[p].raw = base + off;
      parts[p].raw_bytes = ts[p]->nbytes;
      const uint8_t* src = f.tensor_data(*ts[p]).data();
      for (uint64_t c = 0; c < ts[p]->nbytes; c += (uint64_t{256} << 20)) {
        const uint64_t len = std::min<uint64_t>(uint64_t{256} << 20, ts[p]->nbytes - c);
        uint8_t* dst = base + off + c;
        jobs.push_back([=] { FB_CUDA_CHECK(cudaMemcpy(dst, src + c, len, cudaMemcpyHostToDevice)); });
      }
      off += ts[p]->nbytes;
    }
  }
  if (layouts.packed) {
    const FieldRowBytes fr = field_row_bytes(type, k, fmt::format("{}: {}", f.name(), names[0]));
    const uint64_t sizes[6] = {static_cast<uint64_t>(fr.q * rows),  static_cast<uint64_t>(fr.qh * rows),
                               static_cast<uint64_t>(fr.sc * rows), static_cast<uint64_t>(fr.zc * rows),
                               static_cast<uint64_t>(fr.ss * rows), static_cast<uint64_t>(fr.zs * rows)};
    uint64_t total = 0;
    for (uint64_t s : sizes) total += align256(s);
    uint8_t* base = arena.alloc(total);
    uint8_t* region[6];
    uint64_t off = 0;
    for (int i = 0; i < 6; ++i) {
      region[i] = sizes[i] ? base + off : nullptr;
      off += align256(sizes[i]);
    }
    auto view = [&](int64_t row0, int64_t n) {
      MatvecWeights mv;
      mv.format = type == GgmlType::Q4_K ? MatvecFormat::int4_u8 : MatvecFormat::int6_i8;
      mv.n = n;
      mv.k = k;
      mv.qdata = region[0] + row0 * fr.q;
      mv.qhigh = region[1] ? region[1] + row0 * fr.qh : nullptr;
      mv.scale = region[2] + row0 * fr.sc;
      mv.zero = region[3] ? region[3] + row0 * fr.zc : nullptr;
      mv.scale_step = reinterpret_cast<const uint16_t*>(region[4] + row0 * fr.ss);
      mv.zero_step = region[5] ? reinterpret_cast<const uint16_t*>(region[5] + row0 * fr.zs) : nullptr;
      return mv;
    };
    all.mv = view(0, rows);
    all.packed_bytes = static_cast<uint64_t>(fr.total() * rows);
    int64_t row0 = 0;
    for (size_t p = 0; p < ts.size(); ++p) {
      const int64_t n = ts[p]->n_rows();
      parts[p].mv = view(row0, n);
      parts[p].packed_bytes = static_cast<uint64_t>(fr.total() * n);
      const uint8_t* src = f.tensor_data(*ts[p]).data();
      const uint64_t row_bytes = ts[p]->nbytes / static_cast<uint64_t>(n);
      constexpr int64_t kChunk = 4096;
      for (int64_t r = 0; r < n; r += kChunk) {
        const int64_t nr = std::min(kChunk, n - r);
        const int64_t dst_row = row0 + r;
        const uint8_t* blocks = src + static_cast<uint64_t>(r) * row_bytes;
        jobs.push_back([=] {
          // One packed field's rows of this chunk (a host vector) to its region.
          auto put = [&](int field, const auto& v) {
            const uint64_t bytes = v.size() * sizeof(v[0]);
            if (bytes)
              FB_CUDA_CHECK(cudaMemcpy(region[field] + dst_row * (&fr.q)[field], v.data(), bytes,
                                       cudaMemcpyHostToDevice));
          };
          if (type == GgmlType::Q4_K) {
            const CoalescedInt4 c =
                pack_q4k_coalesced(reinterpret_cast<const BlockQ4K*>(blocks), nr, k, ScaleEncoding::code8);
            put(0, c.qdata), put(2, c.scale_code), put(3, c.zero_code);
            put(4, c.scale_step), put(5, c.zero_step);
          } else {
            const PlanarInt6 c =
                pack_q6k_planar(reinterpret_cast<const BlockQ6K*>(blocks), nr, k, ScaleEncoding::code8);
            put(0, c.ql), put(1, c.qh), put(2, c.scale_code), put(4, c.scale_step);
          }
        });
      }
      row0 += n;
    }
  }
  for (size_t p = 0; p < ts.size(); ++p) {
    parts[p].type = type;
    parts[p].n = ts[p]->n_rows();
    parts[p].k = k;
  }
  if (fused && ts.size() > 1) *fused = all;
  return parts;
}

}  // namespace fb
