#include "harness/step/qwen35_sublayer_check.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace fb {

std::string Qwen35SublayerDiff::line() const {
  return fmt::format(
      "sublayer {:3} layer {:2} {:<9} residual cos {:.8f} | contribution cos {:.8f} nmse {:.3g} max_abs "
      "{:.3g}, {} of {} differ",
      sublayer, layer, kind, residual.cosine, contribution.cosine, contribution.nmse, contribution.max_abs,
      contribution.mismatches, contribution.n);
}

int64_t Qwen35SublayerCheck::bit_exact_count() const {
  return std::count_if(sublayers.begin(), sublayers.end(),
                       [](const Qwen35SublayerDiff& d) { return d.contribution.bit_exact; });
}

std::string Qwen35SublayerCheck::name(const Qwen35SublayerDiff& d) {
  return fmt::format("sublayer {} (layer {} {})", d.sublayer, d.layer, d.kind);
}

double qwen35_tolerance_used(const Metrics& m, const Tolerance& t) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  if (m.nonfinite || std::isnan(m.cosine) || std::isnan(m.nmse)) return kInf;
  if (t.bit_exact) return m.bit_exact ? 0.0 : kInf;
  double used = 0.0;
  auto part = [&](double value, double bound) {
    if (!std::isfinite(bound)) return;
    used = std::max(used, bound > 0 ? value / bound : (value > 0 ? kInf : 0.0));
  };
  part(m.max_abs, t.max_abs);
  part(m.max_rel, t.max_rel);
  if (t.min_cosine > -1.0) part(1.0 - m.cosine, 1.0 - t.min_cosine);
  part(m.nmse, t.max_nmse);
  return used;
}

Qwen35SublayerCheck check_qwen35_sublayers(const std::shared_ptr<const Qwen35DeviceWeights>& weights,
                                           const ModelConfig& c, const std::vector<int32_t>& tokens,
                                           int64_t context, uint64_t state_seed, const Tolerance& tolerance,
                                           cudaStream_t s) {
  const int64_t T = static_cast<int64_t>(tokens.size()), n_sub = 2 * c.n_layers;
  auto make = [&](Qwen35Variant v) {
    auto step = std::make_unique<Qwen35GpuStep>(weights, T, context, v);
    step->fill_state_random(state_seed);
    step->set_tokens(tokens);
    return step;
  };
  const auto u = make(Qwen35Variant::unfused), f = make(Qwen35Variant::fused);
  u->set_record_routing(true);
  Qwen35SublayerCheck out;
  out.routing_ids.resize(static_cast<size_t>(c.n_layers));
  out.routing_weights.resize(static_cast<size_t>(c.n_layers));
  std::vector<float> x;  // the twin's residual before sublayer j (j > 0)
  double most = -1.0;
  for (int64_t j = 0; j < n_sub; ++j) {
    const int64_t layer = j / 2;
    const bool moe = j % 2 == 1;
    // Sublayer 0 starts from the embedding of the tokens; later ones from the twin's residual.
    for (Qwen35GpuStep* step : {u.get(), f.get()}) {
      step->set_sublayer_range(j, j + 1);
      if (j > 0) step->set_residual(x);
    }
    u->enqueue(s);
    std::vector<float> xu = u->residual(s);
    if (moe) {
      const size_t l = static_cast<size_t>(layer);
      out.routing_ids[l] = u->recorded_routing_ids(s)[l];
      out.routing_weights[l] = u->recorded_routing_weights(s)[l];
      // Only this layer's entry: the step forces each layer given a non-empty one.
      std::vector<std::vector<int32_t>> ids(l + 1);
      std::vector<std::vector<float>> wts(l + 1);
      ids[l] = out.routing_ids[l];
      wts[l] = out.routing_weights[l];
      f->force_routing(ids, wts);
    }
    f->enqueue(s);
    const std::vector<float> xf = f->residual(s);
    Qwen35SublayerDiff d;
    d.sublayer = j;
    d.layer = layer;
    d.kind = moe ? "MoE" : (c.is_full_attention(layer) ? "attention" : "GDN");
    d.residual = compare(xu, xf);
    if (j > 0) {
      std::vector<float> du(xu), df(xf);
      for (size_t i = 0; i < du.size(); ++i) du[i] -= x[i], df[i] -= x[i];
      d.contribution = compare(du, df);
    } else {
      d.contribution = d.residual;  // no input to subtract: both start from the same embedding
    }
    d.tolerance_used = qwen35_tolerance_used(d.contribution, tolerance);
    if (d.tolerance_used > most) {
      most = d.tolerance_used;
      out.worst = out.sublayers.size();
    }
    out.sublayers.push_back(std::move(d));
    x = std::move(xu);
    if (j == 0) out.twin_after_first = x;
  }
  return out;
}

}  // namespace fb
