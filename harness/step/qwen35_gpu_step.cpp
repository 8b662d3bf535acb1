#include "harness/step/qwen35_gpu_step.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <optional>
#include <stdexcept>

#include "harness/step/repacked_weights.h"
#include "harness/timing/nvtx.h"
#include "kernels/attention/qwen_attn.cuh"
#include "kernels/common/cuda_check.h"
#include "kernels/dequant/dequantize.cuh"
#include "kernels/gdn/gdn.cuh"
#include "kernels/gemv/w4a8_matvec.cuh"
#include "kernels/moe/moe.cuh"
#include "kernels/ops/ops.cuh"
#include "kernels/prefill/prefill.cuh"
#include "reference/formats/dequantize.h"
#include "reference/formats/ggml_type.h"
#include "reference/formats/half.h"
#include "reference/fusion/load_fusions.h"
#include "reference/util/splitmix.h"

namespace fb {

namespace {

using bf16 = __nv_bfloat16;

const GgufTensorInfo& tensor(const GgufFile& f, const std::string& name) {
  const GgufTensorInfo* t = f.find_tensor(name);
  if (!t) throw std::invalid_argument(fmt::format("{}: tensor {} missing", f.name(), name));
  return *t;
}

// The decode matvec takes Q4_K and Q6_K (repacked); checked for every dense weight whatever the
// layouts loaded, so a Q4_K_M file is refused the same way for decode and prefill.
void require_matvec_type(const GgufFile& f, const std::string& name) {
  const GgufTensorInfo& t = tensor(f, name);
  if (t.ggml_type() == GgmlType::Q4_K || t.ggml_type() == GgmlType::Q6_K) return;
  throw std::invalid_argument(
      fmt::format("{}: qwen3.5 step: {} is {}; the step needs Q4_K or Q6_K weights "
                  "(make-model --recipe q4_k)",
                  f.name(), t.name, ggml_type_name(t.ggml_type())));
}

}  // namespace

struct Qwen35DeviceWeights {
  ModelConfig config;
  WeightLayouts layouts;  // of the dense projections
  DeviceArena arena;
  struct Layer {
    bool full = false;
    // Full attention: q (interleaved q|gate), k, v and their fused view; o.
    // GDN: in_proj parts qkv, z, beta, alpha and the fused view; out.
    std::vector<DevMat> parts;
    std::optional<DevMat> fused;  // where the load-time fusion guards pass (views of the parts' memory)
    DevMat out;
    const float *attn_norm = nullptr, *post_norm = nullptr, *q_norm = nullptr, *k_norm = nullptr;
    const float *conv = nullptr, *ssm_a = nullptr, *dt_bias = nullptr, *ssm_norm = nullptr;
    const float *router = nullptr, *shexp_gate = nullptr;
    cuda::ExpertWeights w13, w_gate, w_up, w2;  // experts + the shared one as id E
  };
  std::vector<Layer> layers;
  DevMat lm_head;  // packed only: decode and prefill both run the matvec on one token
  const void* embd = nullptr;
  GgmlType embd_type = GgmlType::F32;
  const float* output_norm = nullptr;
  std::vector<std::string> summary;
  uint64_t expert_bytes_per_layer = 0;  // one expert's gate+up+down

  uint8_t* alloc(uint64_t bytes) { return arena.alloc(bytes); }
  const uint8_t* upload(const GgufFile& f, const GgufTensorInfo& t) {
    uint8_t* d = alloc(t.nbytes);
    FB_CUDA_CHECK(cudaMemcpy(d, f.tensor_data(t).data(), t.nbytes, cudaMemcpyHostToDevice));
    return d;
  }
  const float* f32(const GgufFile& f, const std::string& name) {
    const GgufTensorInfo& t = tensor(f, name);
    if (t.ggml_type() != GgmlType::F32)
      throw std::invalid_argument(fmt::format("{}: {} must be F32", f.name(), name));
    return reinterpret_cast<const float*>(upload(f, t));
  }
  // Experts [E][N][K] blocks of each source tensor, interleaved per expert (rows of src 0, src 1, ...
  // of expert e), then the shared expert's rows (the *_shexp tensors) as expert E.
  cuda::ExpertWeights experts(const GgufFile& f, const std::vector<std::string>& routed,
                              const std::vector<std::string>& shared, int64_t E) {
    uint64_t row_bytes = 0;
    int64_t k = 0, n_total = 0;
    std::vector<const GgufTensorInfo*> rt, st;
    for (size_t i = 0; i < routed.size(); ++i) {
      rt.push_back(&tensor(f, routed[i]));
      st.push_back(&tensor(f, shared[i]));
      for (const GgufTensorInfo* t : {rt.back(), st.back()})
        if (t->ggml_type() != GgmlType::Q4_K)
          throw std::invalid_argument(
              fmt::format("{}: qwen3.5 step: {} is {}; the MoE kernels need Q4_K experts "
                          "(make-model --recipe q4_k)",
                          f.name(), t->name, ggml_type_name(t->ggml_type())));
      const int64_t n = rt.back()->ne.at(1);
      if (rt.back()->ne.size() != 3 || rt.back()->ne[2] != E || st.back()->n_rows() != n ||
          st.back()->n_cols() != rt.back()->n_cols())
        throw std::invalid_argument(
            fmt::format("{}: {} / {} shapes do not match the config (shared expert rows must equal the "
                        "routed expert's to ride along as expert id E)",
                        f.name(), routed[i], shared[i]));
      k = rt.back()->n_cols();
      row_bytes = ggml_row_bytes(GgmlType::Q4_K, k);
      n_total += n;
    }
    const uint64_t per_expert = row_bytes * static_cast<uint64_t>(n_total);
    uint8_t* base = alloc(per_expert * static_cast<uint64_t>(E + 1));
    std::vector<uint8_t> host(per_expert);
    for (int64_t e = 0; e <= E; ++e) {
      uint64_t off = 0;
      for (size_t i = 0; i < rt.size(); ++i) {
        const GgufTensorInfo* t = e < E ? rt[i] : st[i];
        const uint64_t part = row_bytes * static_cast<uint64_t>(t->ne.at(1));
        std::memcpy(host.data() + off, f.tensor_data(*t).data() + (e < E ? part * e : 0), part);
        off += part;
      }
      FB_CUDA_CHECK(cudaMemcpy(base + per_expert * e, host.data(), per_expert, cudaMemcpyHostToDevice));
    }
    cuda::ExpertWeights w;
    w.format = cuda::ExpertFormat::q4_k;
    w.experts = E + 1;
    w.n = n_total;
    w.k = k;
    w.qdata = base;
    return w;
  }
};

std::shared_ptr<Qwen35DeviceWeights> load_qwen35_device_weights(const GgufFile& f, const ModelConfig& c,
                                                                bool packed, bool raw) {
  if (c.family != ModelFamily::qwen35moe)
    throw std::invalid_argument("qwen3.5 step: not a qwen3.5-moe config");
  auto w = std::make_shared<Qwen35DeviceWeights>();
  w->config = c;
  w->layouts = {packed, raw};
  std::vector<UploadJob> jobs;
  // One dense weight or fusion group (names checked first: the Q4_K_M diagnostic names the tensor).
  auto dense = [&](const std::vector<std::string>& names, std::optional<DevMat>* fused) {
    for (const auto& nm : names) require_matvec_type(f, nm);
    return upload_group(w->arena, f, names, w->layouts, jobs, fused);
  };
  const Qwen35MoeDims& q = c.qwen;
  FusionPlan plan;
  for (const FusionGroup& g : find_fusion_groups(f)) plan.decisions.push_back(decide_fusion(f, g));
  w->summary = plan.summary();
  for (const auto& line : plan.diagnostics()) w->summary.push_back(line);
  auto fused_ok = [&](FusionKind kind, int64_t layer, const std::vector<std::string>& names) {
    for (const auto& d : plan.decisions)
      if (d.group.kind == kind && d.group.layer == layer && d.fused && d.group.parts == names) return true;
    return false;
  };
  const int64_t E = q.n_experts;
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = fmt::format("blk.{}.", i);
    Qwen35DeviceWeights::Layer L;
    L.full = c.is_full_attention(i);
    L.attn_norm = w->f32(f, p + "attn_norm.weight");
    L.post_norm = w->f32(f, p + "post_attention_norm.weight");
    std::vector<std::string> names;
    FusionKind kind;
    if (L.full) {
      names = {p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"};
      kind = FusionKind::qkv;
      L.out = dense({p + "attn_output.weight"}, nullptr)[0];
      L.q_norm = w->f32(f, p + "attn_q_norm.weight");
      L.k_norm = w->f32(f, p + "attn_k_norm.weight");
    } else {
      names = {p + "attn_qkv.weight", p + "attn_gate.weight", p + "ssm_beta.weight", p + "ssm_alpha.weight"};
      kind = FusionKind::gdn_in_proj;
      L.out = dense({p + "ssm_out.weight"}, nullptr)[0];
      L.conv = w->f32(f, p + "ssm_conv1d.weight");
      L.ssm_a = w->f32(f, p + "ssm_a");
      L.dt_bias = w->f32(f, p + "ssm_dt.bias");
      L.ssm_norm = w->f32(f, p + "ssm_norm.weight");
    }
    // A group the fusion guards pass sits back to back, the parts views into the fused weight (the
    // unfused variant reads those); otherwise each part is its own weight.
    if (fused_ok(kind, i, names)) {
      L.parts = dense(names, &L.fused);
    } else {
      for (const auto& nm : names) L.parts.push_back(dense({nm}, nullptr)[0]);
    }
    L.router = w->f32(f, p + "ffn_gate_inp.weight");
    L.shexp_gate = w->f32(f, p + "ffn_gate_inp_shexp.weight");
    L.w13 = w->experts(f, {p + "ffn_gate_exps.weight", p + "ffn_up_exps.weight"},
                       {p + "ffn_gate_shexp.weight", p + "ffn_up_shexp.weight"}, E);
    L.w_gate = w->experts(f, {p + "ffn_gate_exps.weight"}, {p + "ffn_gate_shexp.weight"}, E);
    L.w_up = w->experts(f, {p + "ffn_up_exps.weight"}, {p + "ffn_up_shexp.weight"}, E);
    L.w2 = w->experts(f, {p + "ffn_down_exps.weight"}, {p + "ffn_down_shexp.weight"}, E);
    w->layers.push_back(L);
  }
  w->expert_bytes_per_layer = ggml_row_bytes(GgmlType::Q4_K, c.hidden) * 2 * q.expert_intermediate +
                              ggml_row_bytes(GgmlType::Q4_K, q.expert_intermediate) * c.hidden;
  // The gather kernel reads Q6_K or BF16 rows; other tables (Q4_K under the q4_k recipe) are
  // dequantized on the host once and stored BF16, which is exactly what the model gathers (bf16 rows
  // of the dequantized table: fb::ref::embed_bf16).
  const GgufTensorInfo& embd = tensor(f, "token_embd.weight");
  if (cuda::embed_supported(embd.ggml_type())) {
    w->embd = w->upload(f, embd);
    w->embd_type = embd.ggml_type();
  } else {
    const int64_t rows = embd.n_rows(), cols = embd.n_cols();
    const uint64_t rb = ggml_row_bytes(embd.ggml_type(), cols);
    uint8_t* d = w->alloc(static_cast<uint64_t>(rows * cols) * 2);
    constexpr int64_t kChunk = 4096;
    std::vector<float> tmp(static_cast<size_t>(kChunk * cols));
    std::vector<uint16_t> bits(tmp.size());
    for (int64_t r = 0; r < rows; r += kChunk) {
      const int64_t n = std::min(kChunk, rows - r);
      dequantize(embd.ggml_type(), f.tensor_data(embd).data() + rb * static_cast<uint64_t>(r), tmp.data(),
                 n * cols);
      for (int64_t i = 0; i < n * cols; ++i) bits[i] = fp32_to_bf16(tmp[i]);
      FB_CUDA_CHECK(cudaMemcpy(d + static_cast<uint64_t>(r * cols) * 2, bits.data(),
                               static_cast<size_t>(n * cols) * 2, cudaMemcpyHostToDevice));
    }
    w->embd = d;
    w->embd_type = GgmlType::BF16;
  }
  require_matvec_type(f, "output.weight");
  w->lm_head = upload_group(w->arena, f, {"output.weight"}, {true, false}, jobs, nullptr)[0];
  w->output_norm = w->f32(f, "output_norm.weight");
  run_upload_jobs(jobs);
  FB_CUDA_CHECK(cudaDeviceSynchronize());
  return w;
}

std::vector<std::string> qwen35_fusion_summary(const Qwen35DeviceWeights& w) { return w.summary; }

struct Qwen35GpuStep::Impl {
  std::shared_ptr<const Qwen35DeviceWeights> w;
  int64_t T = 1, context = 0, capacity = 0;
  bool prefill = false;
  Qwen35Variant variant = Qwen35Variant::fused;
  cuda::QwenAttnDims ad;
  cuda::GdnDims gd;
  int64_t ld_attn = 0, ld_gdn = 0;  // projection row widths
  DeviceBuffer<int32_t> tokens, pos;
  DeviceBuffer<bf16> x, xn, h, proj, q, gate, k, v, kn, attn, y, conv, o, gnorm, moe_h, moe_act, moe_y,
      logits;
  DeviceBuffer<bf16> scratch;  // prefill: one dequantized weight
  DeviceBuffer<float> sdpa_ws, conv_ws, qk, gates, router_logits, moe_weights, moe_acc;
  DeviceBuffer<int32_t> moe_ids;
  DeviceBuffer<Q8Block> q8, q8_moe;
  std::unique_ptr<cuda::CublasHandle> cublas;
  struct LayerState {
    DeviceBuffer<bf16> k, v, conv;
    DeviceBuffer<float> ssm;
  };
  std::vector<LayerState> states;
  cuda::RopeParams rope;
  int slots = 0;
  int64_t sub_begin = 0, sub_end = -1;  // diagnosis: sublayers enqueued (-1 = to the end)
  bool record_routing = false;
  DeviceBuffer<int32_t> rec_ids, forced_ids;  // [layers][T * slots]
  DeviceBuffer<float> rec_weights, forced_weights;
  std::vector<bool> forced;  // [layers]
};

Qwen35GpuStep::Qwen35GpuStep(std::shared_ptr<const Qwen35DeviceWeights> w, int64_t T, int64_t context,
                             Qwen35Variant variant)
    : m(std::make_unique<Impl>()) {
  const ModelConfig& c = w->config;
  const Qwen35MoeDims& q = c.qwen;
  if (T < 1 || context < 0) throw std::invalid_argument("qwen3.5 step: T >= 1 and context >= 0");
  if (T > 1 ? !w->layouts.raw : !w->layouts.packed)
    throw std::invalid_argument("qwen3.5 step: the weights were loaded without the layout this phase needs");
  m->w = w;
  m->T = T;
  m->prefill = T > 1;
  m->context = context;
  m->capacity = context + T;
  m->variant = variant;
  m->ad = {static_cast<int>(q.n_heads), static_cast<int>(q.n_kv_heads), static_cast<int>(q.head_dim)};
  m->gd = {static_cast<int>(q.gdn_k_heads), static_cast<int>(q.gdn_v_heads),
           static_cast<int>(q.gdn_head_k_dim), static_cast<int>(q.gdn_head_v_dim),
           static_cast<int>(q.conv_kernel)};
  m->ld_attn = m->ad.proj_cols();
  m->ld_gdn = q.conv_dim() + q.value_dim() + 2 * q.gdn_v_heads;
  const int64_t H = c.hidden, nq = q.n_heads * q.head_dim, kvc = q.n_kv_heads * q.head_dim;
  const int64_t I = q.expert_intermediate;
  m->slots = static_cast<int>(q.top_k + 1);
  m->tokens = DeviceBuffer<int32_t>(T);
  m->pos = DeviceBuffer<int32_t>(T);
  std::vector<int32_t> pos(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) pos[t] = static_cast<int32_t>(context + t);
  FB_CUDA_CHECK(cudaMemcpy(m->pos.get(), pos.data(), T * 4, cudaMemcpyHostToDevice));
  set_tokens(std::vector<int32_t>(static_cast<size_t>(T), 0));
  auto bf = [](int64_t n) { return DeviceBuffer<bf16>(static_cast<size_t>(n)); };
  m->x = bf(T * H), m->xn = bf(T * H), m->h = bf(T * H);
  // 16 spare columns per row: each part's output starts at its column offset in the row.
  m->proj = bf(T * std::max(m->ld_attn, m->ld_gdn) + 16);
  m->q = bf(T * nq), m->gate = bf(T * nq), m->k = bf(T * kvc), m->v = bf(T * kvc), m->kn = bf(T * kvc);
  m->attn = bf(T * nq), m->y = bf(T * nq);
  m->conv = bf(T * q.conv_dim()), m->o = bf(T * q.value_dim()), m->gnorm = bf(T * q.value_dim());
  const int64_t P = T * m->slots;
  m->moe_h = bf(P * 2 * I), m->moe_act = bf(P * I), m->moe_y = bf(T * H);
  m->logits = bf(c.vocab);
  m->sdpa_ws = DeviceBuffer<float>(cuda::qwen_sdpa_workspace_floats(m->ad, T, m->capacity));
  m->conv_ws = DeviceBuffer<float>(
      cuda::conv_naive_workspace_floats(T, q.conv_dim(), static_cast<int>(q.conv_kernel)));
  m->qk = DeviceBuffer<float>(T * 2 * q.key_dim());
  m->gates = DeviceBuffer<float>(T * 2 * q.gdn_v_heads);
  m->router_logits = DeviceBuffer<float>(T * (q.n_experts + 1));
  m->moe_weights = DeviceBuffer<float>(P);
  m->moe_ids = DeviceBuffer<int32_t>(P);
  m->moe_acc = DeviceBuffer<float>(P * H);
  const int64_t kmax = std::max({H, nq, q.value_dim(), I});
  m->q8 = DeviceBuffer<Q8Block>(kmax / 32);
  m->q8_moe = DeviceBuffer<Q8Block>(P * std::max(H, I) / 32);
  if (m->prefill) {
    int64_t most = 0;
    for (const auto& L : w->layers) {
      for (const DevMat& p : L.parts) most = std::max(most, p.n * p.k);
      most = std::max(most, L.out.n * L.out.k);
      if (L.fused) most = std::max(most, L.fused->n * L.fused->k);
    }
    m->scratch = bf(most);
    m->cublas = std::make_unique<cuda::CublasHandle>();
  }
  m->rope = cuda::make_rope_params(static_cast<int>(q.head_dim), static_cast<int>(q.rotary_dim),
                                   static_cast<int>(q.rotary_dim / 2), static_cast<int>(q.rotary_dim),
                                   q.rope_theta);
  for (const auto& L : w->layers) {
    Impl::LayerState S;
    if (L.full) {
      S.k = bf(kvc * m->capacity);
      S.v = bf(kvc * m->capacity);
    } else {
      S.conv = bf(q.conv_dim() * q.conv_kernel);
      S.ssm = DeviceBuffer<float>(q.gdn_v_heads * q.gdn_head_k_dim * q.gdn_head_v_dim);
    }
    m->states.push_back(std::move(S));
  }
}

Qwen35GpuStep::~Qwen35GpuStep() = default;

int64_t Qwen35GpuStep::capacity() const { return m->capacity; }

void Qwen35GpuStep::upload_state(const ref::Qwen35State& s) {
  if (s.capacity != m->capacity || s.layers.size() != m->states.size())
    throw std::invalid_argument("qwen3.5 step: state shape differs from the step's caches");
  auto bits = [](const std::vector<float>& v) {
    std::vector<uint16_t> b(v.size());
    for (size_t i = 0; i < v.size(); ++i) b[i] = fp32_to_bf16(v[i]);
    return b;
  };
  for (size_t i = 0; i < m->states.size(); ++i) {
    auto& S = m->states[i];
    const auto& R = s.layers[i];
    auto put = [](void* dst, const void* src, size_t bytes, size_t want) {
      if (bytes != want) throw std::invalid_argument("qwen3.5 step: state tensor size differs");
      FB_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
    };
    if (m->w->layers[i].full) {
      const auto kb = bits(R.k), vb = bits(R.v);
      put(S.k.get(), kb.data(), kb.size() * 2, S.k.bytes());
      put(S.v.get(), vb.data(), vb.size() * 2, S.v.bytes());
    } else {
      const auto cb = bits(R.conv);
      const std::vector<float> ssm(R.ssm.begin(), R.ssm.end());  // fp32 values held in double
      put(S.conv.get(), cb.data(), cb.size() * 2, S.conv.bytes());
      put(S.ssm.get(), ssm.data(), ssm.size() * 4, S.ssm.bytes());
    }
  }
  FB_CUDA_CHECK(cudaDeviceSynchronize());
}

void Qwen35GpuStep::fill_state_random(uint64_t seed) {
  constexpr size_t kPattern = size_t{8} << 20;  // elements
  const CounterRng rng(seed, 0x71776eull);
  std::vector<uint16_t> kv(kPattern);
  std::vector<float> ssm(kPattern);
  for (size_t i = 0; i < kPattern; ++i) {
    kv[i] = fp32_to_bf16(rng.normal(i));
    ssm[i] = static_cast<float>(ref::kSsmScale * rng.normal(kPattern + i));
  }
  auto tile = [](void* dst, size_t dst_bytes, const void* src, size_t src_bytes) {
    for (size_t off = 0; off < dst_bytes; off += src_bytes)
      FB_CUDA_CHECK(cudaMemcpy(static_cast<uint8_t*>(dst) + off, src, std::min(src_bytes, dst_bytes - off),
                               cudaMemcpyHostToDevice));
  };
  for (auto& S : m->states) {
    if (S.k.get()) {
      tile(S.k.get(), S.k.bytes(), kv.data(), kPattern * 2);
      tile(S.v.get(), S.v.bytes(), kv.data() + 1, (kPattern - 1) * 2);
    } else {
      tile(S.conv.get(), S.conv.bytes(), kv.data(), kPattern * 2);
      tile(S.ssm.get(), S.ssm.bytes(), ssm.data(), kPattern * 4);
    }
  }
  FB_CUDA_CHECK(cudaDeviceSynchronize());
}

void Qwen35GpuStep::set_tokens(const std::vector<int32_t>& tokens) {
  if (static_cast<int64_t>(tokens.size()) != m->T) throw std::invalid_argument("qwen3.5 step: need T tokens");
  FB_CUDA_CHECK(cudaMemcpy(m->tokens.get(), tokens.data(), tokens.size() * 4, cudaMemcpyHostToDevice));
  // A pageable H2D cudaMemcpy may return before its DMA lands, and the steps run on non-blocking
  // streams that do not order behind the legacy stream: finish every upload before returning.
  FB_CUDA_CHECK(cudaDeviceSynchronize());
}

void Qwen35GpuStep::enqueue(cudaStream_t s) {
  Impl& M = *m;
  const Qwen35DeviceWeights& W = *M.w;
  const ModelConfig& c = W.config;
  const Qwen35MoeDims& q = c.qwen;
  const int64_t T = M.T, H = c.hidden, nq = q.n_heads * q.head_dim, I = q.expert_intermediate;
  const int nh = static_cast<int>(q.n_heads), nkv = static_cast<int>(q.n_kv_heads),
            hd = static_cast<int>(q.head_dim);
  const float eps = static_cast<float>(c.rms_eps);
  const bool fused = M.variant == Qwen35Variant::fused;
  int64_t launches = 0;
  auto L_ = [&](const char* name, auto&& fn) {
    nvtx_range r(name);
    fn();
    ++launches;
  };
  nvtx_range step_range(M.prefill ? "qwen35_prefill_step" : "qwen35_decode_step");
  // y[T][n] (row stride ldy) = x[T][k] W^T: decode W4A8 matvec on the repacked view (q8 of x given),
  // prefill dequant + cuBLAS GEMM on the ggml blocks.
  auto linear_q8 = [&](const char* name, const DevMat& wm, const bf16* in, bf16* out, int64_t ldy) {
    if (M.prefill) {
      L_("dequant_bf16", [&] { cuda::dequantize(wm.type, wm.raw, M.scratch.get(), wm.n, wm.k, s); });
      L_(name, [&] { cuda::gemm_bf16(M.cublas->get(), in, M.scratch.get(), out, T, wm.n, wm.k, ldy, s); });
    } else {
      L_(name, [&] { cuda::w4a8_matvec(wm.mv, M.q8.get(), 1, out, cuda::MatvecEpilogue::none, s); });
    }
  };
  auto quantize = [&](const bf16* in, int64_t k) {
    if (!M.prefill) L_("quantize_q8", [&] { cuda::quantize_activations_q8(in, 1, k, M.q8.get(), s); });
  };
  // Fused variant, layer seams: a sublayer's residual add waits (pending) and runs inside the next
  // norm, which also quantizes its output for the decode matvec (add_rms_norm_q8: the same bits as
  // add -> rms_norm -> quantize). A range of sublayers always ends with x complete (flush_pending),
  // so the sublayer diagnosis sees the residual it expects.
  const bf16* pending = nullptr;
  // Which norms quantize for their consumer: decode's attn_norm writes M.q8 for the projection;
  // prefill's post-attention norm writes the MoE's activation quantization (moe_quantize_q8 has the
  // same contract and bits), while decode's GEMM1 quantizes the token itself.
  const bool norm_quantizes_xn = fused && !M.prefill, norm_quantizes_moe = fused && M.prefill;
  auto residual = [&](const bf16* h) {
    if (fused) {
      pending = h;
      return;
    }
    L_("residual_add", [&] { cuda::add(M.x.get(), h, M.x.get(), T * H, s); });
  };
  auto flush_pending = [&] {
    if (pending == nullptr) return;
    L_("residual_add", [&] { cuda::add(M.x.get(), pending, M.x.get(), T * H, s); });
    pending = nullptr;
  };
  // xn = norm(x) (+ q8 = quantize(xn) when given), taking a pending residual add along.
  auto norm = [&](const char* name, const float* w, Q8Block* q8) {
    if (!fused) {
      L_(name,
         [&] { cuda::rms_norm(M.x.get(), w, cuda::NormWeight::one_plus, eps, M.xn.get(), T, int(H), s); });
      return;
    }
    const std::string fused_name = pending ? std::string("residual_add+") + name : std::string(name);
    L_(fused_name.c_str(), [&] {
      cuda::add_rms_norm_q8(M.x.get(), pending, w, cuda::NormWeight::one_plus, eps, M.xn.get(), q8, T, int(H),
                            s);
    });
    pending = nullptr;
  };
  auto linear = [&](const char* name, const DevMat& wm, const bf16* in, bf16* out) {
    quantize(in, wm.k);
    linear_q8(name, wm, in, out, wm.n);
  };
  // The projection rows [T][ld]: fused one weight over all parts; unfused one per part into its
  // columns (decode: the same activation quantization, so the same bits; rows are independent).
  auto projection = [&](const char* fused_name, const char* part_name, const Qwen35DeviceWeights::Layer& L,
                        int64_t ld) {
    if (!norm_quantizes_xn) quantize(M.xn.get(), H);
    if (fused && L.fused) {
      linear_q8(fused_name, *L.fused, M.xn.get(), M.proj.get(), ld);
      return;
    }
    int64_t col = 0;
    for (const DevMat& p : L.parts) {
      linear_q8(part_name, p, M.xn.get(), M.proj.get() + col, ld);
      col += p.n;
    }
  };
  const int64_t n_sub = 2 * static_cast<int64_t>(W.layers.size());
  const int64_t sub_end = M.sub_end < 0 ? n_sub : std::min(n_sub, M.sub_end);
  if (M.sub_begin == 0)
    L_("embed", [&] { cuda::embed(W.embd_type, W.embd, c.vocab, H, M.tokens.get(), T, 1.0f, M.x.get(), s); });
  const int64_t P = T * M.slots;
  for (size_t li = static_cast<size_t>(M.sub_begin / 2); static_cast<int64_t>(2 * li) < sub_end; ++li) {
    const auto& L = W.layers[li];
    auto& S = M.states[li];
    const bool run_mixer = static_cast<int64_t>(2 * li) >= M.sub_begin;
    const bool run_moe = static_cast<int64_t>(2 * li + 1) < sub_end;
    if (run_mixer) {
      // Decode, fused: the norm quantizes xn for the projection, which then runs w4a8_matvec from q8
      // (auto: the legacy kernel for int4 at K 2048). The alternative, w4a8_matvec_bf16 quantizing
      // inside its r6u2 kernel, launches as many kernels; on the in_proj shape the matvec's H200
      // figures (kernels/gemv/w4a8_matvec.cu: 8.2 us, vs 9.4 for a quantize kernel + legacy, the
      // quantize kernel ~1.3 us in the gemma step's profile) suggest legacy alone is no slower (not
      // measured inside this step). Same bits either way.
      norm("attn_norm", L.attn_norm, norm_quantizes_xn ? M.q8.get() : nullptr);
      if (L.full) {
        projection("qkv_proj", "q_k_v_proj", L, M.ld_attn);
        if (fused) {
          L_("qwen_attn_prep", [&] {
            cuda::qwen_attn_prep(M.ad, M.proj.get(), M.ld_attn, T, L.q_norm, L.k_norm, eps, M.pos.get(),
                                 M.rope, M.q.get(), S.k.get(), S.v.get(), M.capacity, s);
          });
          L_("qwen_sdpa_gated", [&] {
            cuda::qwen_sdpa(M.ad, M.q.get(), S.k.get(), S.v.get(), M.capacity, T, M.pos.get(),
                            M.proj.get() + hd, M.ld_attn, 2 * hd, M.sdpa_ws.get(), M.y.get(), s);
          });
        } else {
          L_("qwen_split_qkv", [&] {
            cuda::qwen_split_qkv(M.ad, M.proj.get(), M.ld_attn, T, M.attn.get(), M.gate.get(), M.k.get(),
                                 M.v.get(), s);
          });
          L_("q_norm", [&] {
            cuda::rms_norm(M.attn.get(), L.q_norm, cuda::NormWeight::one_plus, eps, M.q.get(), T * nh, hd, s);
          });
          L_("q_rope", [&] { cuda::rope(M.q.get(), M.pos.get(), M.rope, M.q.get(), T, nh, s); });
          L_("k_norm", [&] {
            cuda::rms_norm(M.k.get(), L.k_norm, cuda::NormWeight::one_plus, eps, M.kn.get(), T * nkv, hd, s);
          });
          L_("k_rope", [&] { cuda::rope(M.kn.get(), M.pos.get(), M.rope, M.kn.get(), T, nkv, s); });
          L_("kv_append", [&] {
            cuda::qwen_kv_append(M.ad, M.kn.get(), M.v.get(), T, M.pos.get(), S.k.get(), S.v.get(),
                                 M.capacity, s);
          });
          L_("qwen_sdpa", [&] {
            cuda::qwen_sdpa(M.ad, M.q.get(), S.k.get(), S.v.get(), M.capacity, T, M.pos.get(), nullptr, 0, 0,
                            M.sdpa_ws.get(), M.attn.get(), s);
          });
          L_("sigmoid_gate_mul", [&] {
            cuda::qwen_sigmoid_gate_mul(M.attn.get(), M.gate.get(), nq, hd, T, nh, hd, M.y.get(), s);
          });
        }
        linear("o_proj", L.out, M.y.get(), M.h.get());
      } else {
        projection("gdn_in_proj", "gdn_in_proj_part", L, M.ld_gdn);
        const int64_t C = q.conv_dim();
        const bf16* z = M.proj.get() + C;
        const bf16* ba = z + q.value_dim();
        const int K = static_cast<int>(q.conv_kernel);
        if (fused) {
          L_("causal_conv_silu", [&] {
            cuda::causal_conv_silu(M.proj.get(), M.ld_gdn, T, C, S.conv.get(), L.conv, K, M.conv.get(), s);
          });
          L_("gated_delta_rule", [&] {
            cuda::gated_delta_rule(M.gd, M.conv.get(), T, ba, M.ld_gdn, L.ssm_a, L.dt_bias, S.ssm.get(),
                                   M.o.get(), s);
          });
        } else {
          L_("causal_conv_silu_naive", [&] {
            cuda::causal_conv_silu_naive(M.proj.get(), M.ld_gdn, T, C, S.conv.get(), L.conv, K, M.conv.get(),
                                         M.conv_ws.get(), s);
          });
          L_("gdn_qk_l2norm", [&] { cuda::gdn_qk_l2norm(M.gd, M.conv.get(), T, M.qk.get(), s); });
          L_("gdn_gates",
             [&] { cuda::gdn_gates(M.gd, ba, M.ld_gdn, T, L.ssm_a, L.dt_bias, M.gates.get(), s); });
          L_("gated_delta_rule_prenormed", [&] {
            cuda::gated_delta_rule_prenormed(M.gd, M.qk.get(), M.conv.get(), M.gates.get(), T, S.ssm.get(),
                                             M.o.get(), s);
          });
        }
        L_("gated_rms_norm", [&] {
          cuda::gated_rms_norm(M.o.get(), z, M.ld_gdn, L.ssm_norm, T, int(q.gdn_v_heads),
                               int(q.gdn_head_v_dim), eps, M.gnorm.get(), s);
        });
        linear("ssm_out", L.out, M.gnorm.get(), M.h.get());
      }
      residual(M.h.get());
    }
    if (!run_moe) {
      flush_pending();
      continue;
    }
    norm("post_attention_norm", L.post_norm, norm_quantizes_moe ? M.q8_moe.get() : nullptr);
    // Sparse MoE with the shared expert as slot top_k (expert id E, weight sigmoid(w_sh . x)).
    L_("moe_router", [&] {
      cuda::moe_router(M.xn.get(), L.router, L.shexp_gate, T, H, int(q.n_experts), int(q.top_k),
                       M.router_logits.get(), M.moe_ids.get(), M.moe_weights.get(), s);
    });
    if (M.record_routing) {
      L_("routing_record", [&] {
        FB_CUDA_CHECK(cudaMemcpyAsync(M.rec_ids.get() + static_cast<int64_t>(li) * P, M.moe_ids.get(), P * 4,
                                      cudaMemcpyDeviceToDevice, s));
        FB_CUDA_CHECK(cudaMemcpyAsync(M.rec_weights.get() + static_cast<int64_t>(li) * P, M.moe_weights.get(),
                                      P * 4, cudaMemcpyDeviceToDevice, s));
      });
    }
    if (!M.forced.empty() && M.forced[li]) {
      L_("routing_forced", [&] {
        FB_CUDA_CHECK(cudaMemcpyAsync(M.moe_ids.get(), M.forced_ids.get() + static_cast<int64_t>(li) * P,
                                      P * 4, cudaMemcpyDeviceToDevice, s));
        FB_CUDA_CHECK(cudaMemcpyAsync(M.moe_weights.get(),
                                      M.forced_weights.get() + static_cast<int64_t>(li) * P, P * 4,
                                      cudaMemcpyDeviceToDevice, s));
      });
    }
    // Decode, fused: GEMM1 quantizes the token itself (moe_gemm1_quant, same bits as quantize +
    // moe_gemm1, one launch fewer per layer). Prefill keeps the separate quantize: the tokens one
    // GEMM1 block spans would not fit its shared memory.
    auto quantize_x = [&] {
      L_("moe_quantize_q8", [&] { cuda::moe_quantize_q8(M.xn.get(), T, H, M.q8_moe.get(), s); });
    };
    if (fused && !M.prefill) {
      L_("moe_gemm1_quant", [&] {
        cuda::moe_gemm1_quant(L.w13, M.xn.get(), M.moe_ids.get(), T, M.slots, M.moe_h.get(), 2 * I, 0, s);
      });
    } else if (fused) {
      if (!norm_quantizes_moe) quantize_x();
      L_("moe_gemm1", [&] {
        cuda::moe_gemm1(L.w13, M.q8_moe.get(), M.moe_ids.get(), T, M.slots, M.moe_h.get(), 2 * I, 0, s);
      });
    } else {
      quantize_x();
    }
    if (fused) {
      // One launch for all T tokens: GEMM2's shared-memory bound is per token (slots * k), each
      // block holding only its own token's activations.
      L_("moe_gemm2_silu", [&] {
        cuda::moe_gemm2_silu(L.w2, M.moe_h.get(), M.moe_ids.get(), M.moe_weights.get(), T, M.slots,
                             M.moe_y.get(), s);
      });
    } else {
      L_("moe_gemm1_gate", [&] {
        cuda::moe_gemm1(L.w_gate, M.q8_moe.get(), M.moe_ids.get(), T, M.slots, M.moe_h.get(), 2 * I, 0, s);
      });
      L_("moe_gemm1_up", [&] {
        cuda::moe_gemm1(L.w_up, M.q8_moe.get(), M.moe_ids.get(), T, M.slots, M.moe_h.get(), 2 * I, I, s);
      });
      L_("moe_silu_mul", [&] { cuda::moe_silu_mul(M.moe_h.get(), P, I, M.moe_act.get(), s); });
      L_("moe_quantize_act", [&] { cuda::moe_quantize_q8(M.moe_act.get(), P, I, M.q8_moe.get(), s); });
      L_("moe_down", [&] { cuda::moe_down(L.w2, M.q8_moe.get(), M.moe_ids.get(), P, M.moe_acc.get(), s); });
      L_("moe_weighted_sum", [&] {
        cuda::moe_weighted_sum(M.moe_acc.get(), M.moe_weights.get(), T, M.slots, H, M.moe_y.get(), s);
      });
    }
    residual(M.moe_y.get());
  }
  // x is whole after every enqueue (residual() reads it), so the last add is never folded away.
  flush_pending();
  if (sub_end < n_sub) {
    m_launches = launches;
    return;
  }
  // Final norm and lm_head on the last token only (W4A8 matvec at decode and prefill alike); fused,
  // the norm quantizes for the lm_head itself.
  if (fused) {
    L_("output_norm", [&] {
      cuda::add_rms_norm_q8(M.x.get() + (T - 1) * H, nullptr, W.output_norm, cuda::NormWeight::one_plus, eps,
                            M.xn.get(), M.q8.get(), 1, int(H), s);
    });
  } else {
    L_("output_norm", [&] {
      cuda::rms_norm(M.x.get() + (T - 1) * H, W.output_norm, cuda::NormWeight::one_plus, eps, M.xn.get(), 1,
                     int(H), s);
    });
    L_("quantize_q8", [&] { cuda::quantize_activations_q8(M.xn.get(), 1, H, M.q8.get(), s); });
  }
  L_("lm_head",
     [&] { cuda::w4a8_matvec(W.lm_head.mv, M.q8.get(), 1, M.logits.get(), cuda::MatvecEpilogue::none, s); });
  m_launches = launches;
}

std::vector<float> Qwen35GpuStep::logits(cudaStream_t s) const {
  std::vector<uint16_t> b(m->logits.size());
  FB_CUDA_CHECK(cudaMemcpyAsync(b.data(), m->logits.get(), b.size() * 2, cudaMemcpyDeviceToHost, s));
  FB_CUDA_CHECK(cudaStreamSynchronize(s));
  std::vector<float> out(b.size());
  for (size_t i = 0; i < b.size(); ++i) out[i] = bf16_to_fp32(b[i]);
  return out;
}

void Qwen35GpuStep::set_layer_limit(int64_t n) { set_sublayer_range(0, n < 0 ? -1 : 2 * n); }

void Qwen35GpuStep::set_sublayer_range(int64_t begin, int64_t end) {
  const int64_t n_sub = 2 * static_cast<int64_t>(m->w->layers.size());
  if (begin < 0 || begin >= n_sub || (end >= 0 && end <= begin))
    throw std::invalid_argument("qwen3.5 step: sublayer range must be non-empty within the layers");
  m->sub_begin = begin;
  m->sub_end = end;
}

void Qwen35GpuStep::set_residual(const std::vector<float>& x) {
  if (x.size() != m->x.size()) throw std::invalid_argument("qwen3.5 step: residual must be [T][hidden]");
  std::vector<uint16_t> b(x.size());
  for (size_t i = 0; i < x.size(); ++i) b[i] = fp32_to_bf16(x[i]);
  FB_CUDA_CHECK(cudaMemcpy(m->x.get(), b.data(), b.size() * 2, cudaMemcpyHostToDevice));
  FB_CUDA_CHECK(cudaDeviceSynchronize());
}

void Qwen35GpuStep::set_record_routing(bool on) {
  const size_t n = m->w->layers.size() * static_cast<size_t>(m->T * m->slots);
  if (on && m->rec_ids.size() != n) {
    m->rec_ids = DeviceBuffer<int32_t>(n);
    m->rec_weights = DeviceBuffer<float>(n);
  }
  m->record_routing = on;
}

namespace {
// [layers][T * slots] device tape -> host vectors per layer.
template <class V>
std::vector<std::vector<V>> read_tape(const DeviceBuffer<V>& tape, size_t layers, cudaStream_t s) {
  std::vector<V> all(tape.size());
  FB_CUDA_CHECK(cudaMemcpyAsync(all.data(), tape.get(), all.size() * sizeof(V), cudaMemcpyDeviceToHost, s));
  FB_CUDA_CHECK(cudaStreamSynchronize(s));
  const size_t per = all.size() / layers;
  std::vector<std::vector<V>> out;
  for (size_t l = 0; l < layers; ++l)
    out.emplace_back(all.begin() + static_cast<int64_t>(l * per),
                     all.begin() + static_cast<int64_t>((l + 1) * per));
  return out;
}
}  // namespace

std::vector<std::vector<int32_t>> Qwen35GpuStep::recorded_routing_ids(cudaStream_t s) const {
  if (!m->record_routing) throw std::logic_error("qwen3.5 step: routing recording is off");
  return read_tape(m->rec_ids, m->w->layers.size(), s);
}

std::vector<std::vector<float>> Qwen35GpuStep::recorded_routing_weights(cudaStream_t s) const {
  if (!m->record_routing) throw std::logic_error("qwen3.5 step: routing recording is off");
  return read_tape(m->rec_weights, m->w->layers.size(), s);
}

void Qwen35GpuStep::force_routing(const std::vector<std::vector<int32_t>>& ids,
                                  const std::vector<std::vector<float>>& weights) {
  const size_t layers = m->w->layers.size(), P = static_cast<size_t>(m->T * m->slots);
  if (ids.size() > layers || weights.size() != ids.size())
    throw std::invalid_argument("qwen3.5 step: forced routing: ids and weights per layer");
  if (ids.empty()) {  // off: the router's own output again
    m->forced.clear();
    return;
  }
  if (m->forced_ids.size() != layers * P) {
    m->forced_ids = DeviceBuffer<int32_t>(layers * P);
    m->forced_weights = DeviceBuffer<float>(layers * P);
  }
  m->forced.assign(layers, false);
  for (size_t l = 0; l < ids.size(); ++l) {
    if (ids[l].empty()) continue;
    if (ids[l].size() != P || weights[l].size() != P)
      throw std::invalid_argument("qwen3.5 step: forced routing: [T][top_k + 1] per layer");
    FB_CUDA_CHECK(cudaMemcpy(m->forced_ids.get() + l * P, ids[l].data(), P * 4, cudaMemcpyHostToDevice));
    FB_CUDA_CHECK(
        cudaMemcpy(m->forced_weights.get() + l * P, weights[l].data(), P * 4, cudaMemcpyHostToDevice));
    m->forced[l] = true;
  }
  FB_CUDA_CHECK(cudaDeviceSynchronize());
}

std::vector<float> Qwen35GpuStep::residual(cudaStream_t s) const {
  std::vector<uint16_t> b(m->x.size());
  FB_CUDA_CHECK(cudaMemcpyAsync(b.data(), m->x.get(), b.size() * 2, cudaMemcpyDeviceToHost, s));
  FB_CUDA_CHECK(cudaStreamSynchronize(s));
  std::vector<float> out(b.size());
  for (size_t i = 0; i < b.size(); ++i) out[i] = bf16_to_fp32(b[i]);
  return out;
}

uint64_t Qwen35GpuStep::bytes() const {
  const Qwen35DeviceWeights& W = *m->w;
  const Qwen35MoeDims& q = W.config.qwen;
  const uint64_t T = static_cast<uint64_t>(m->T), H = static_cast<uint64_t>(W.config.hidden);
  uint64_t b = W.lm_head.packed_bytes + T * H * 2;  // lm_head + the embedding rows (as bf16)
  // The layout this phase reads: decode the repacked views, prefill the ggml blocks.
  auto wb = [&](const DevMat& d) { return m->prefill ? d.raw_bytes : d.packed_bytes; };
  // Experts touched: each token's slots, at most every expert once.
  const uint64_t experts = std::min<uint64_t>(T * static_cast<uint64_t>(q.top_k), q.n_experts) + 1;
  for (size_t i = 0; i < W.layers.size(); ++i) {
    const auto& L = W.layers[i];
    for (const DevMat& p : L.parts) b += wb(p);
    b += wb(L.out) + experts * W.expert_bytes_per_layer;
    b += static_cast<uint64_t>(q.n_experts + 1) * H * 4;  // router + shared gate (F32)
    if (L.full) {  // K/V read up to the last position, new rows written
      b += 2 * static_cast<uint64_t>(m->context + m->T) * q.n_kv_heads * q.head_dim * 2;
    } else {  // conv state bf16 and the fp32 recurrent state, read and written
      b += 2 * (static_cast<uint64_t>(q.conv_dim() * q.conv_kernel) * 2 +
                static_cast<uint64_t>(q.gdn_v_heads * q.gdn_head_k_dim * q.gdn_head_v_dim) * 4);
    }
  }
  return b;
}

uint64_t Qwen35GpuStep::flops() const {
  const Qwen35DeviceWeights& W = *m->w;
  const Qwen35MoeDims& q = W.config.qwen;
  const uint64_t H = static_cast<uint64_t>(W.config.hidden), T = static_cast<uint64_t>(m->T);
  uint64_t f = 2ull * W.config.vocab * H;
  for (const auto& L : W.layers) {
    for (const DevMat& p : L.parts) f += 2ull * T * p.n * p.k;
    f += 2ull * T * L.out.n * L.out.k;
    f += 2ull * T * ((q.top_k + 1) * 3 * q.expert_intermediate * H + (q.n_experts + 1) * H);
    if (L.full) f += 4ull * T * (m->context + m->T) * q.n_heads * q.head_dim;  // causal: an upper bound
  }
  return f;
}

}  // namespace fb
