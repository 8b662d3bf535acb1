#include "harness/step/gemma4_gpu_step.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>

#include "harness/step/repacked_weights.h"
#include "harness/timing/nvtx.h"
#include "kernels/attention/sliding_window.cuh"
#include "kernels/attention/tq4_sdpa.cuh"
#include "kernels/common/cuda_check.h"
#include "kernels/dequant/dequantize.cuh"
#include "kernels/gemv/w4a8_matvec.cuh"
#include "kernels/ops/ops.cuh"
#include "kernels/prefill/prefill.cuh"
#include "reference/formats/ggml_type.h"
#include "reference/formats/half.h"
#include "reference/fusion/load_fusions.h"
#include "reference/util/splitmix.h"

namespace fb {

namespace {
using cuda::MatvecFormat;
using cuda::MatvecWeights;
}  // namespace

struct Gemma4DeviceWeights {
  ModelConfig config;
  bool packed = false, raw = false;
  DeviceArena arena;
  struct Layer {
    bool full = false;
    int64_t n_kv = 0, head_dim = 0;
    DevMat q, k, v, o, gate, up, down;
    std::optional<DevMat> qkv, gate_up;  // fused views (same memory as the parts)
    const float *attn_norm = nullptr, *q_norm = nullptr, *k_norm = nullptr, *post_attn = nullptr,
                *ffn_norm = nullptr, *post_ffw = nullptr, *scalar = nullptr;
  };
  std::vector<Layer> layers;
  DevMat embd, lm_head;  // embd: raw Q6_K (gather); lm_head: packed view of the same tensor
  const float* output_norm = nullptr;
  std::vector<std::string> summary;
  // TurboQuant tables for the full-layer head_dim.
  const float* centroids = nullptr;
  const uint16_t* boundaries = nullptr;
  const float* rotation = nullptr;
  const uint16_t* rotation_t = nullptr;
};

namespace {

const float* upload_f32(Gemma4DeviceWeights& w, const GgufFile& f, const std::string& name) {
  const GgufTensorInfo* t = f.find_tensor(name);
  if (!t || t->ggml_type() != GgmlType::F32)
    throw std::invalid_argument(fmt::format("{}: F32 tensor {} missing", f.name(), name));
  uint8_t* d = w.arena.alloc(t->nbytes);
  FB_CUDA_CHECK(cudaMemcpy(d, f.tensor_data(*t).data(), t->nbytes, cudaMemcpyHostToDevice));
  return reinterpret_cast<const float*>(d);
}

template <class T>
const T* upload_vec(Gemma4DeviceWeights& w, const std::vector<T>& v) {
  uint8_t* d = w.arena.alloc(v.size() * sizeof(T));
  FB_CUDA_CHECK(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return reinterpret_cast<const T*>(d);
}

}  // namespace

std::shared_ptr<Gemma4DeviceWeights> load_gemma4_device_weights(const GgufFile& f, const ModelConfig& c,
                                                                bool packed, bool raw) {
  auto w = std::make_shared<Gemma4DeviceWeights>();
  w->config = c;
  w->packed = packed;
  w->raw = raw;
  const WeightLayouts layouts{packed, raw};
  std::vector<UploadJob> jobs;
  // Which groups fuse: the load-time fusion guards (same type, row bytes, K), with their log line.
  std::map<std::string, FusionDecision> decisions;
  FusionPlan plan;
  for (const FusionGroup& g : find_fusion_groups(f)) {
    FusionDecision d = decide_fusion(f, g);
    decisions[g.fused_name] = d;
    plan.decisions.push_back(d);
  }
  w->summary = plan.summary();
  for (const auto& line : plan.diagnostics()) w->summary.push_back(line);
  const Gemma4Dims& g = c.gemma;
  w->layers.resize(static_cast<size_t>(c.n_layers));
  for (int64_t i = 0; i < c.n_layers; ++i) {
    auto& L = w->layers[i];
    const std::string p = fmt::format("blk.{}.", i);
    L.full = c.is_full_attention(i);
    L.n_kv = L.full ? g.n_kv_heads_full : g.n_kv_heads_sliding;
    L.head_dim = L.full ? g.head_dim_full : g.head_dim_sliding;
    auto fused_group = [&](FusionKind kind) -> const FusionDecision* {
      for (const auto& [name, d] : decisions)
        if (d.group.kind == kind && d.group.layer == i && d.fused) return &d;
      return nullptr;
    };
    std::vector<std::string> qkv_names = {p + "attn_q.weight", p + "attn_k.weight"};
    if (!L.full) qkv_names.push_back(p + "attn_v.weight");
    std::vector<DevMat> qkv;
    if (const FusionDecision* d = fused_group(FusionKind::qkv); d && d->group.parts == qkv_names) {
      qkv = upload_group(w->arena, f, qkv_names, layouts, jobs, &L.qkv);
    } else {
      for (const auto& nm : qkv_names)
        qkv.push_back(upload_group(w->arena, f, {nm}, layouts, jobs, nullptr)[0]);
    }
    L.q = qkv[0];
    L.k = qkv[1];
    if (!L.full) L.v = qkv[2];
    const std::vector<std::string> gu_names = {p + "ffn_gate.weight", p + "ffn_up.weight"};
    std::vector<DevMat> gu;
    if (const FusionDecision* d = fused_group(FusionKind::gate_up); d && d->group.parts == gu_names) {
      gu = upload_group(w->arena, f, gu_names, layouts, jobs, &L.gate_up);
    } else {
      for (const auto& nm : gu_names)
        gu.push_back(upload_group(w->arena, f, {nm}, layouts, jobs, nullptr)[0]);
    }
    L.gate = gu[0];
    L.up = gu[1];
    L.o = upload_group(w->arena, f, {p + "attn_output.weight"}, layouts, jobs, nullptr)[0];
    L.down = upload_group(w->arena, f, {p + "ffn_down.weight"}, layouts, jobs, nullptr)[0];
    L.attn_norm = upload_f32(*w, f, p + "attn_norm.weight");
    L.q_norm = upload_f32(*w, f, p + "attn_q_norm.weight");
    L.k_norm = upload_f32(*w, f, p + "attn_k_norm.weight");
    L.post_attn = upload_f32(*w, f, p + "post_attention_norm.weight");
    L.ffn_norm = upload_f32(*w, f, p + "ffn_norm.weight");
    L.post_ffw = upload_f32(*w, f, p + "post_ffw_norm.weight");
    L.scalar = upload_f32(*w, f, p + "layer_output_scale.weight");
  }
  // Tied embedding: raw blocks for the gather (and the prefill lm_head), packed for the decode lm_head.
  w->embd = upload_group(w->arena, f, {"token_embd.weight"}, {packed, true}, jobs, nullptr)[0];
  w->lm_head = w->embd;
  w->output_norm = upload_f32(*w, f, "output_norm.weight");
  run_upload_jobs(jobs);
  const tq4::Codebook cb = tq4::lloyd_max_codebook(static_cast<int>(g.head_dim_full));
  const tq4::Rotation rot = tq4::haar_rotation(static_cast<int>(g.head_dim_full), ref::kTq4RotationSeed);
  w->centroids = upload_vec(*w, cb.centroids);
  w->boundaries = upload_vec(*w, cb.boundaries);
  w->rotation = upload_vec(*w, rot.rotation);
  w->rotation_t = upload_vec(*w, rot.rotation_t);
  return w;
}

std::vector<std::string> gemma4_fusion_summary(const Gemma4DeviceWeights& w) { return w.summary; }

struct Gemma4GpuStep::Impl {
  std::shared_ptr<const Gemma4DeviceWeights> w;
  bool prefill = false;
  int64_t T = 0, context = 0, capacity = 0;
  StepVariant variant = StepVariant::fused;
  int64_t qmax = 0, kvmax = 0;
  DeviceBuffer<int32_t> tokens, positions, kv_len;
  DeviceBuffer<__nv_bfloat16> x, xn, h, h2, qkv, qr, kr, vn, attn, gu, act, scratch, logits_bf16;
  DeviceBuffer<float> logits;
  DeviceBuffer<Q8Block> q8;
  DeviceBuffer<uint8_t> tq4_ws;
  size_t tq4_ws_bytes = 0;
  struct Cache {
    DeviceBuffer<uint16_t> ring_k, ring_v;
    DeviceBuffer<uint8_t> k_packed, v_packed;
    DeviceBuffer<uint16_t> k_norms, v_norms;
  };
  std::vector<Cache> caches;
  std::unique_ptr<cuda::CublasHandle> cublas;
  cuda::RopeParams rope_sliding, rope_full;
};

Gemma4GpuStep::Gemma4GpuStep(std::shared_ptr<const Gemma4DeviceWeights> w, bool prefill, int64_t T,
                             int64_t context, StepVariant variant)
    : m(std::make_unique<Impl>()) {
  const ModelConfig& c = w->config;
  const Gemma4Dims& g = c.gemma;
  if (prefill ? !w->raw : !w->packed)
    throw std::invalid_argument("gemma4 step: the weights were loaded without the layout this phase needs");
  if (!prefill && T != 1) throw std::invalid_argument("gemma4 step: decode is built for T = 1");
  if (T < 1 || context < 0) throw std::invalid_argument("gemma4 step: T >= 1 and context >= 0");
  m->w = w;
  m->prefill = prefill;
  m->T = T;
  m->context = context;
  // Rounded up to 256 positions so every kv head's slice of the TQ4 cache (codes and bf16 norms)
  // starts 16-byte aligned; the kernels read only positions below kv_len.
  m->capacity = (context + T + 255) / 256 * 256;
  m->variant = variant;
  const int64_t H = c.hidden, I = g.intermediate, nh = g.n_heads;
  m->qmax = nh * std::max(g.head_dim_full, g.head_dim_sliding);
  m->kvmax = std::max(g.n_kv_heads_full * g.head_dim_full, g.n_kv_heads_sliding * g.head_dim_sliding);
  m->tokens = DeviceBuffer<int32_t>(T);
  m->positions = DeviceBuffer<int32_t>(T);
  m->kv_len = DeviceBuffer<int32_t>(1);
  std::vector<int32_t> pos(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) pos[t] = static_cast<int32_t>(context + t);
  const int32_t kvl = static_cast<int32_t>(context + T);
  FB_CUDA_CHECK(cudaMemcpy(m->positions.get(), pos.data(), T * 4, cudaMemcpyHostToDevice));
  FB_CUDA_CHECK(cudaMemcpy(m->kv_len.get(), &kvl, 4, cudaMemcpyHostToDevice));
  set_tokens(std::vector<int32_t>(static_cast<size_t>(T), 0));
  m->x = DeviceBuffer<__nv_bfloat16>(T * H);
  m->xn = DeviceBuffer<__nv_bfloat16>(T * H);
  m->h = DeviceBuffer<__nv_bfloat16>(T * H);
  m->h2 = DeviceBuffer<__nv_bfloat16>(T * H);
  m->qkv = DeviceBuffer<__nv_bfloat16>(T * (m->qmax + 2 * m->kvmax));
  m->qr = DeviceBuffer<__nv_bfloat16>(T * m->qmax);
  m->kr = DeviceBuffer<__nv_bfloat16>(T * m->kvmax);
  m->vn = DeviceBuffer<__nv_bfloat16>(T * m->kvmax);
  m->attn = DeviceBuffer<__nv_bfloat16>(T * m->qmax);
  m->gu = DeviceBuffer<__nv_bfloat16>(T * 2 * I);
  m->act = DeviceBuffer<__nv_bfloat16>(T * I);
  m->logits_bf16 = DeviceBuffer<__nv_bfloat16>(c.vocab);
  m->logits = DeviceBuffer<float>(c.vocab);
  const int64_t kmax = std::max({H, I, m->qmax});
  m->q8 = DeviceBuffer<Q8Block>(T * kmax / 32);
  if (prefill) {
    int64_t most = 0;
    for (const auto& L : w->layers) {
      most = std::max({most, L.q.n * L.q.k, L.k.n * L.k.k, L.v.n * L.v.k, L.o.n * L.o.k, L.gate.n * L.gate.k,
                       L.up.n * L.up.k, L.down.n * L.down.k});
      if (L.qkv) most = std::max(most, L.qkv->n * L.qkv->k);
      if (L.gate_up) most = std::max(most, L.gate_up->n * L.gate_up->k);
    }
    m->scratch = DeviceBuffer<__nv_bfloat16>(most);
    m->cublas = std::make_unique<cuda::CublasHandle>();
  }
  m->rope_sliding = cuda::make_rope_params(
      static_cast<int>(g.head_dim_sliding), static_cast<int>(g.head_dim_sliding),
      static_cast<int>(g.head_dim_sliding / 2), static_cast<int>(g.head_dim_sliding), g.rope_theta_sliding);
  m->rope_full = cuda::make_rope_params(static_cast<int>(g.head_dim_full), static_cast<int>(g.head_dim_full),
                                        static_cast<int>(g.rotary_pairs_full),
                                        static_cast<int>(g.head_dim_full), g.rope_theta_full);
  m->caches.resize(w->layers.size());
  for (size_t i = 0; i < w->layers.size(); ++i) {
    const auto& L = w->layers[i];
    auto& C = m->caches[i];
    if (L.full) {
      C.k_packed = DeviceBuffer<uint8_t>(L.n_kv * m->capacity * L.head_dim / 2);
      C.v_packed = DeviceBuffer<uint8_t>(L.n_kv * m->capacity * L.head_dim / 2);
      C.k_norms = DeviceBuffer<uint16_t>(L.n_kv * m->capacity);
      C.v_norms = DeviceBuffer<uint16_t>(L.n_kv * m->capacity);
      if (!m->tq4_ws_bytes) {
        cuda::Tq4Cache cache{C.k_packed.get(),
                             C.k_norms.get(),
                             C.v_packed.get(),
                             C.v_norms.get(),
                             static_cast<int>(L.n_kv),
                             m->capacity,
                             static_cast<int>(L.head_dim)};
        m->tq4_ws_bytes = cuda::tq4_sdpa_workspace_bytes(T, static_cast<int>(nh), cache);
        m->tq4_ws = DeviceBuffer<uint8_t>(m->tq4_ws_bytes);
      }
    } else {
      C.ring_k = DeviceBuffer<uint16_t>(L.n_kv * 2 * g.sliding_window * L.head_dim);
      C.ring_v = DeviceBuffer<uint16_t>(L.n_kv * 2 * g.sliding_window * L.head_dim);
    }
  }
}

Gemma4GpuStep::~Gemma4GpuStep() = default;

int64_t Gemma4GpuStep::capacity() const { return m->capacity; }

void Gemma4GpuStep::upload_kv(const ref::Gemma4KvState& kv) {
  if (kv.capacity != m->capacity || kv.layers.size() != m->caches.size())
    throw std::invalid_argument("gemma4 step: KV state shape differs from the step's caches");
  for (size_t i = 0; i < m->caches.size(); ++i) {
    auto& C = m->caches[i];
    const auto& S = kv.layers[i];
    auto put = [](auto& dst, const auto& src) {
      FB_CUDA_CHECK(cudaMemcpy(dst.get(), src.data(), dst.bytes(), cudaMemcpyHostToDevice));
    };
    if (m->w->layers[i].full) {
      put(C.k_packed, S.k_packed);
      put(C.v_packed, S.v_packed);
      put(C.k_norms, S.k_norms);
      put(C.v_norms, S.v_norms);
    } else {
      put(C.ring_k, S.ring_k);
      put(C.ring_v, S.ring_v);
    }
  }
}

void Gemma4GpuStep::fill_kv_random(uint64_t seed) {
  // A 16 MiB random pattern of each kind, tiled: valid codes, bf16 N(0,1) ring values and bf16
  // norms near sqrt(head_dim). The content only has to be valid; its variety does not change timing.
  constexpr size_t kPattern = size_t{16} << 20;
  const CounterRng rng(seed, 0x6b7666ull);
  std::vector<uint8_t> bytes(kPattern);
  std::vector<uint16_t> ring(kPattern / 2), norms(kPattern / 2);
  const double root = std::sqrt(static_cast<double>(m->w->config.gemma.head_dim_full));
  for (size_t i = 0; i < kPattern; ++i) bytes[i] = static_cast<uint8_t>(rng.bits(i));
  for (size_t i = 0; i < ring.size(); ++i) {
    ring[i] = fp32_to_bf16(rng.normal(kPattern + i));
    norms[i] = fp32_to_bf16(static_cast<float>(root * (0.8 + 0.4 * rng.uniform(2 * kPattern + i))));
  }
  auto tile = [](void* dst, size_t dst_bytes, const void* src, size_t src_bytes) {
    for (size_t off = 0; off < dst_bytes; off += src_bytes)
      FB_CUDA_CHECK(cudaMemcpy(static_cast<uint8_t*>(dst) + off, src, std::min(src_bytes, dst_bytes - off),
                               cudaMemcpyHostToDevice));
  };
  for (auto& C : m->caches) {
    if (C.k_packed.get()) {
      tile(C.k_packed.get(), C.k_packed.bytes(), bytes.data(), kPattern);
      tile(C.v_packed.get(), C.v_packed.bytes(), bytes.data() + 1, kPattern - 1);
      tile(C.k_norms.get(), C.k_norms.bytes(), norms.data(), kPattern);
      tile(C.v_norms.get(), C.v_norms.bytes(), norms.data(), kPattern);
    } else {
      tile(C.ring_k.get(), C.ring_k.bytes(), ring.data(), kPattern);
      tile(C.ring_v.get(), C.ring_v.bytes(), ring.data() + 1, kPattern - 2);
    }
  }
}

void Gemma4GpuStep::set_tokens(const std::vector<int32_t>& tokens) {
  if (static_cast<int64_t>(tokens.size()) != m->T) throw std::invalid_argument("gemma4 step: need T tokens");
  FB_CUDA_CHECK(cudaMemcpy(m->tokens.get(), tokens.data(), tokens.size() * 4, cudaMemcpyHostToDevice));
}

void Gemma4GpuStep::enqueue(cudaStream_t s) {
  Impl& M = *m;
  const Gemma4DeviceWeights& W = *M.w;
  const ModelConfig& c = W.config;
  const Gemma4Dims& g = c.gemma;
  const int64_t T = M.T, H = c.hidden, I = g.intermediate, nh = g.n_heads;
  const float eps = static_cast<float>(c.rms_eps);
  const bool fused = M.variant == StepVariant::fused;
  int64_t launches = 0;
  // One NVTX range per launch (host side; a captured graph keeps the launches, the ranges go with
  // the eager run that precedes capture).
  auto L_ = [&](const char* name, auto&& fn) {
    nvtx_range r(name);
    fn();
    ++launches;
  };
  nvtx_range step_range(M.prefill ? "gemma4_prefill_step" : "gemma4_decode_step");
  // y[T, n] = x[T, k] W^T: decode on the packed view, prefill dequant + cuBLAS.
  // Decode: w4a8_matvec_bf16 quantizes `in` into M.q8 and launches the matvec with programmatic
  // dependent launch (its weight loads start while the quantize runs); the same two kernels and bits
  // as quantize + w4a8_matvec. Both sit in the matvec's NVTX range (two launches counted).
  auto linear = [&](const char* name, const DevMat& wm, const __nv_bfloat16* in, __nv_bfloat16* out,
                    cuda::MatvecEpilogue ep = cuda::MatvecEpilogue::none) {
    if (M.prefill) {
      L_(name, [&] {
        cuda::linear_dequant_gemm(M.cublas->get(), wm.type, wm.raw, wm.n, wm.k, in, T, out, M.scratch.get(),
                                  s);
      });
    } else {
      L_(name, [&] { cuda::w4a8_matvec_bf16(wm.mv, in, T, M.q8.get(), out, ep, s); });
    }
    ++launches;
  };
  // Decode, fused variant: another matvec on the input of the linear() just before, reusing its
  // quantized activations in M.q8 (quantization is deterministic: same bits as quantizing again).
  auto linear_same_input = [&](const char* name, const DevMat& wm, __nv_bfloat16* out) {
    L_(name, [&] { cuda::w4a8_matvec(wm.mv, M.q8.get(), T, out, cuda::MatvecEpilogue::none, s); });
  };
  L_("embed", [&] {
    cuda::embed(W.embd.type, W.embd.raw, c.vocab, H, M.tokens.get(), T,
                static_cast<float>(std::sqrt(double(H))), M.x.get(), s);
  });
  for (size_t li = 0; li < W.layers.size(); ++li) {
    const auto& L = W.layers[li];
    auto& C = M.caches[li];
    const int64_t hd = L.head_dim, nkv = L.n_kv, nq = nh * hd;
    const cuda::RopeParams& rope = L.full ? M.rope_full : M.rope_sliding;
    L_("attn_norm", [&] {
      cuda::rms_norm(M.x.get(), L.attn_norm, cuda::NormWeight::direct, eps, M.xn.get(), T, int(H), s);
    });
    __nv_bfloat16* q = M.qkv.get();
    __nv_bfloat16* k = q + T * nq;
    __nv_bfloat16* v = L.full ? k : k + T * nkv * hd;  // K = V on full layers (before the norms)
    if (fused && L.qkv && !M.prefill) {
      linear("qkv_matvec", *L.qkv, M.xn.get(), q);  // T = 1: [q | k | v] is exactly this layout
    } else if (fused && L.qkv && M.prefill) {
      // One dequant of the row-concatenated weight, then a GEMM per part into its own buffer.
      L_("qkv_dequant", [&] { cuda::dequantize(L.qkv->type, L.qkv->raw, M.scratch.get(), L.qkv->n, H, s); });
      int64_t row0 = 0;
      for (const DevMat* part : {&L.q, &L.k, L.full ? nullptr : &L.v}) {
        if (!part) continue;
        __nv_bfloat16* out = part == &L.q ? q : part == &L.k ? k : v;
        L_("qkv_gemm", [&] {
          cuda::gemm_bf16(M.cublas->get(), M.xn.get(), M.scratch.get() + row0 * H, out, T, part->n, H,
                          part->n, s);
        });
        row0 += part->n;
      }
    } else if (fused && !M.prefill) {
      // q, k, v not row-concatenated (e.g. attn_v Q6_K next to Q4_K q/k): one quantize of xn serves all.
      linear("q_proj", L.q, M.xn.get(), q);
      linear_same_input("k_proj", L.k, k);
      if (!L.full) linear_same_input("v_proj", L.v, v);
    } else {
      linear("q_proj", L.q, M.xn.get(), q);
      linear("k_proj", L.k, M.xn.get(), k);
      if (!L.full) linear("v_proj", L.v, M.xn.get(), v);
    }
    if (fused) {
      L_("q_norm_rope", [&] {
        cuda::head_norm_rope(q, L.q_norm, cuda::NormWeight::direct, eps, M.positions.get(), rope, M.qr.get(),
                             T, int(nh), s);
      });
      L_("k_norm_rope", [&] {
        cuda::head_norm_rope(k, L.k_norm, cuda::NormWeight::direct, eps, M.positions.get(), rope, M.kr.get(),
                             T, int(nkv), s);
      });
    } else {
      L_("q_norm",
         [&] { cuda::rms_norm(q, L.q_norm, cuda::NormWeight::direct, eps, M.qr.get(), T * nh, int(hd), s); });
      L_("q_rope", [&] { cuda::rope(M.qr.get(), M.positions.get(), rope, M.qr.get(), T, int(nh), s); });
      L_("k_norm", [&] {
        cuda::rms_norm(k, L.k_norm, cuda::NormWeight::direct, eps, M.kr.get(), T * nkv, int(hd), s);
      });
      L_("k_rope", [&] { cuda::rope(M.kr.get(), M.positions.get(), rope, M.kr.get(), T, int(nkv), s); });
    }
    L_("v_norm",
       [&] { cuda::rms_norm(v, nullptr, cuda::NormWeight::none, eps, M.vn.get(), T * nkv, int(hd), s); });
    if (L.full) {
      const cuda::Tq4Tables tables{W.centroids, W.boundaries, W.rotation, W.rotation_t, int(hd)};
      const cuda::Tq4Cache cache{C.k_packed.get(), C.k_norms.get(), C.v_packed.get(), C.v_norms.get(),
                                 int(nkv),         M.capacity,      int(hd)};
      L_("tq4_append",
         [&] { cuda::tq4_compress_append(M.kr.get(), M.vn.get(), T, M.positions.get(), tables, cache, s); });
      L_("tq4_sdpa", [&] {
        cuda::tq4_sdpa(M.qr.get(), T, int(nh), M.kv_len.get(), 1.0f, cache, tables, M.tq4_ws.get(),
                       M.tq4_ws_bytes, M.attn.get(), s);
      });
      launches += 3;  // tq4_sdpa is four launches
    } else {
      const cuda::SlidingWindowDims dims{int(nh), int(nkv), int(hd), int(g.sliding_window)};
      auto* rk = reinterpret_cast<__nv_bfloat16*>(C.ring_k.get());
      auto* rv = reinterpret_cast<__nv_bfloat16*>(C.ring_v.get());
      if (M.prefill) {
        // T may exceed the window: attend first, then append (the append overwrites slots that the
        // earliest queries still read).
        L_("swa_prefill", [&] {
          cuda::sliding_window_prefill(dims, M.qr.get(), rk, rv, M.kr.get(), M.vn.get(), int(T),
                                       M.positions.get(), 1.0f, M.attn.get(), s);
        });
        L_("swa_append", [&] {
          cuda::sliding_window_append(dims, M.kr.get(), M.vn.get(), int(T), M.positions.get(), rk, rv, s);
        });
      } else {
        L_("swa_append", [&] {
          cuda::sliding_window_append(dims, M.kr.get(), M.vn.get(), int(T), M.positions.get(), rk, rv, s);
        });
        L_("swa_decode", [&] {
          cuda::sliding_window_decode(dims, M.qr.get(), rk, rv, M.kr.get(), M.vn.get(), int(T),
                                      M.positions.get(), 1.0f, M.attn.get(), s);
        });
      }
    }
    linear("o_proj", L.o, M.attn.get(), M.h.get());
    if (fused) {
      L_("post_attn_residual", [&] {
        cuda::residual_norm_scale(M.x.get(), M.h.get(), L.post_attn, eps, nullptr, M.x.get(), T, int(H), s);
      });
    } else {
      L_("post_attn_norm", [&] {
        cuda::rms_norm(M.h.get(), L.post_attn, cuda::NormWeight::direct, eps, M.h2.get(), T, int(H), s);
      });
      L_("residual_add", [&] { cuda::add(M.x.get(), M.h2.get(), M.x.get(), T * H, s); });
    }
    L_("ffn_norm", [&] {
      cuda::rms_norm(M.x.get(), L.ffn_norm, cuda::NormWeight::direct, eps, M.xn.get(), T, int(H), s);
    });
    if (fused && L.gate_up) {
      if (M.prefill) {
        linear("gate_up_gemm", *L.gate_up, M.xn.get(), M.gu.get());
        L_("gelu_tanh_mul", [&] { cuda::gelu_tanh_mul(M.gu.get(), M.act.get(), T, I, s); });
      } else {
        linear("gate_up_gelu_matvec", *L.gate_up, M.xn.get(), M.act.get(),
               cuda::MatvecEpilogue::glu_gelu_tanh);
      }
    } else if (M.prefill) {
      __nv_bfloat16* gate = M.gu.get();
      __nv_bfloat16* up = gate + T * I;
      linear("gate_proj", L.gate, M.xn.get(), gate);
      linear("up_proj", L.up, M.xn.get(), up);
      L_("gelu_tanh", [&] { cuda::gelu_tanh(gate, I, gate, I, T, I, s); });
      L_("mul", [&] { cuda::mul(gate, I, up, I, M.act.get(), I, T, I, s); });
    } else {
      linear("gate_proj", L.gate, M.xn.get(), M.gu.get());
      linear("up_proj", L.up, M.xn.get(), M.gu.get() + I);
      L_("glu_gelu",
         [&] { cuda::glu_bf16(M.gu.get(), 1, I, cuda::MatvecEpilogue::glu_gelu_tanh, M.act.get(), s); });
    }
    linear("down_proj", L.down, M.act.get(), M.h.get());
    if (fused) {
      L_("post_ffw_residual_scale", [&] {
        cuda::residual_norm_scale(M.x.get(), M.h.get(), L.post_ffw, eps, L.scalar, M.x.get(), T, int(H), s);
      });
    } else {
      L_("post_ffw_norm", [&] {
        cuda::rms_norm(M.h.get(), L.post_ffw, cuda::NormWeight::direct, eps, M.h2.get(), T, int(H), s);
      });
      L_("residual_add", [&] { cuda::add(M.x.get(), M.h2.get(), M.x.get(), T * H, s); });
      L_("layer_scale", [&] { cuda::scale(M.x.get(), L.scalar, M.x.get(), T * H, s); });
    }
  }
  // Final norm and lm_head on the last token only.
  L_("output_norm", [&] {
    cuda::rms_norm(M.x.get() + (T - 1) * H, W.output_norm, cuda::NormWeight::direct, eps, M.xn.get(), 1,
                   int(H), s);
  });
  MatvecWeights head = W.lm_head.mv;
  if (M.prefill) {  // no repacked copy in the prefill load: the matvec reads the ggml blocks
    head = MatvecWeights{};
    head.format = W.embd.type == GgmlType::Q6_K ? MatvecFormat::q6_k : MatvecFormat::q4_k;
    head.n = c.vocab;
    head.k = H;
    head.qdata = W.embd.raw;
  }
  L_("lm_head", [&] {
    cuda::w4a8_matvec_bf16(head, M.xn.get(), 1, M.q8.get(), M.logits_bf16.get(), cuda::MatvecEpilogue::none,
                           s);
  });
  ++launches;  // quantize + matvec
  L_("softcap", [&] {
    cuda::softcap(M.logits_bf16.get(), M.logits.get(), c.vocab, static_cast<float>(g.final_softcap), s);
  });
  m_launches = launches;
}

std::vector<float> Gemma4GpuStep::logits(cudaStream_t s) const {
  std::vector<float> out(m->logits.size());
  FB_CUDA_CHECK(cudaMemcpyAsync(out.data(), m->logits.get(), m->logits.bytes(), cudaMemcpyDeviceToHost, s));
  FB_CUDA_CHECK(cudaStreamSynchronize(s));
  return out;
}

uint64_t Gemma4GpuStep::bytes() const {
  const Gemma4DeviceWeights& W = *m->w;
  const Gemma4Dims& g = W.config.gemma;
  uint64_t b = 0;
  const bool pre = m->prefill;
  auto wb = [&](const DevMat& d) { return pre ? d.raw_bytes : d.packed_bytes; };
  for (size_t i = 0; i < W.layers.size(); ++i) {
    const auto& L = W.layers[i];
    b += wb(L.q) + wb(L.k) + wb(L.v) + wb(L.o) + wb(L.gate) + wb(L.up) + wb(L.down);
    const uint64_t kv_len = static_cast<uint64_t>(m->context + m->T);
    if (L.full) {  // K and V: packed codes + a bf16 norm per position and head
      b += 2 * kv_len * L.n_kv * (L.head_dim / 2 + 2);
    } else {
      const uint64_t span = std::min<uint64_t>(kv_len, static_cast<uint64_t>(g.sliding_window + m->T - 1));
      b += 2 * span * L.n_kv * L.head_dim * 2;
    }
  }
  b += pre ? W.embd.raw_bytes : W.lm_head.packed_bytes;
  return b;
}

uint64_t Gemma4GpuStep::flops() const {
  const Gemma4DeviceWeights& W = *m->w;
  uint64_t f = 0;
  for (const auto& L : W.layers)
    f += 2ull * m->T *
         (L.q.n * L.q.k + L.k.n * L.k.k + L.v.n * L.v.k + L.o.n * L.o.k + L.gate.n * L.gate.k +
          L.up.n * L.up.k + L.down.n * L.down.k);
  f += 2ull * W.config.vocab * W.config.hidden;
  return f;
}

}  // namespace fb
