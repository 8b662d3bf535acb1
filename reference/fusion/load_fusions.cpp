#include "reference/fusion/load_fusions.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <map>
#include <stdexcept>

#include "reference/formats/dequantize.h"

namespace fb {

const char* fusion_label(FusionKind k) {
  switch (k) {
    case FusionKind::gate_up:
      return "gate+up";
    case FusionKind::qkv:
      return "q+k+v";
    case FusionKind::gdn_in_proj:
      return "GDN in_proj qkv+z+b+a";
    case FusionKind::shared_gate_up:
      return "shared-expert gate+up";
  }
  return "?";
}

const char* fusion_scope(FusionKind k) {
  switch (k) {
    case FusionKind::gate_up:
      return "MLP layers";
    case FusionKind::qkv:
      return "attention layers";
    case FusionKind::gdn_in_proj:
      return "GatedDeltaNet layers";
    case FusionKind::shared_gate_up:
      return "shared-expert layers";
  }
  return "?";
}

std::string FusionDecision::describe() const {
  if (fused) {
    return fmt::format("blk.{}: fused {} -> {} ({}, {} x {}){}", group.layer, fusion_label(group.kind),
                       group.fused_name, ggml_type_name(type), rows, cols,
                       group.note.empty() ? "" : " (" + group.note + ")");
  }
  return fmt::format("blk.{}: {} not fused: {}", group.layer, fusion_label(group.kind), reason);
}

namespace {

// "blk.12.ffn_gate.weight" -> (12, "ffn_gate.weight"); nullopt for global tensors.
std::optional<std::pair<int64_t, std::string>> split_layer_name(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return std::nullopt;
  const size_t dot = name.find('.', 4);
  if (dot == std::string::npos) return std::nullopt;
  int64_t layer = 0;
  const auto [p, ec] = std::from_chars(name.data() + 4, name.data() + dot, layer);
  if (ec != std::errc() || p != name.data() + dot) return std::nullopt;
  return std::make_pair(layer, name.substr(dot + 1));
}

}  // namespace

const std::vector<FusionRule>& fusion_rules() {
  static const std::vector<FusionRule> rules = {
      {FusionKind::gate_up, {"ffn_gate", "ffn_up"}, "ffn_gate_up", ""},
      {FusionKind::qkv, {"attn_q", "attn_k", "attn_v"}, "attn_qkv_fused", "attn_v"},
      {FusionKind::gdn_in_proj, {"attn_qkv", "attn_gate", "ssm_beta", "ssm_alpha"}, "gdn_in_proj", ""},
      {FusionKind::shared_gate_up, {"ffn_gate_shexp", "ffn_up_shexp"}, "ffn_gate_up_shexp", ""},
  };
  return rules;
}

std::vector<FusionGroup> find_fusion_groups(const GgufFile& file) {
  std::map<int64_t, std::vector<std::string>> by_layer;
  for (const GgufTensorInfo& t : file.tensors()) {
    if (auto split = split_layer_name(t.name)) by_layer[split->first].push_back(split->second);
  }
  std::vector<FusionGroup> groups;
  for (const auto& [layer, names] : by_layer) {
    auto has = [&](const std::string& kind) {
      return std::find(names.begin(), names.end(), kind + ".weight") != names.end();
    };
    for (const FusionRule& rule : fusion_rules()) {
      // A group exists when any of its parts exists; missing partners are reported by decide.
      // For q+k+v the anchor is attn_q alone, so a GDN layer's attn_gate etc. don't spawn one.
      const bool present = rule.kind == FusionKind::qkv
                               ? has("attn_q")
                               : std::any_of(rule.parts.begin(), rule.parts.end(), has);
      if (!present) continue;
      FusionGroup g;
      g.kind = rule.kind;
      g.layer = layer;
      g.fused_name = fmt::format("blk.{}.{}.weight", layer, rule.fused);
      for (const std::string& part : rule.parts) {
        if (part == rule.optional_part && !has(part)) {
          g.note = "no " + part + ": V = K";
          continue;
        }
        g.parts.push_back(fmt::format("blk.{}.{}.weight", layer, part));
      }
      groups.push_back(std::move(g));
    }
  }
  return groups;
}

FusionDecision decide_fusion(const GgufFile& file, const FusionGroup& group) {
  FusionDecision d;
  d.group = group;
  std::vector<const GgufTensorInfo*> infos;
  for (const std::string& name : group.parts) {
    const GgufTensorInfo* t = file.find_tensor(name);
    if (!t) {
      d.reason = fmt::format("{} missing", name);
      return d;
    }
    infos.push_back(t);
  }
  const GgufTensorInfo& first = *infos.front();
  for (const GgufTensorInfo* t : infos) {
    if (t->ne.size() != 2) {
      d.reason = fmt::format("{} is {}-D, row-concat needs 2-D weights", t->name, t->ne.size());
      return d;
    }
  }
  for (const GgufTensorInfo* t : infos) {
    if (t->ne[0] != first.ne[0]) {
      d.reason =
          fmt::format("K differs: {} has K={}, {} has K={}", first.name, first.ne[0], t->name, t->ne[0]);
      return d;
    }
  }
  for (const GgufTensorInfo* t : infos) {
    if (t->n_rows() == 0 || t->ne[0] == 0) {
      d.reason = fmt::format("{} is empty ({} x {})", t->name, t->n_rows(), t->ne[0]);
      return d;
    }
  }
  // From the type and K, not nbytes / rows: the reader accepts zero extents, and this must never
  // divide by zero on a stranger's file.
  auto row_bytes = [](const GgufTensorInfo& t) { return ggml_row_bytes(t.ggml_type(), t.ne[0]); };
  for (const GgufTensorInfo* t : infos) {
    if (row_bytes(*t) != row_bytes(first)) {
      d.reason = fmt::format("row bytes differ: {} ({}) has {} B/row, {} ({}) has {} B/row", first.name,
                             ggml_type_info(first.type)->name, row_bytes(first), t->name,
                             ggml_type_info(t->type)->name, row_bytes(*t));
      return d;
    }
  }
  for (const GgufTensorInfo* t : infos) {
    if (t->type != first.type) {
      d.reason = fmt::format("type differs: {} is {}, {} is {}", first.name, ggml_type_info(first.type)->name,
                             t->name, ggml_type_info(t->type)->name);
      return d;
    }
  }
  d.fused = true;
  d.type = first.ggml_type();
  d.cols = first.ne[0];
  d.row_bytes = row_bytes(first);
  for (const GgufTensorInfo* t : infos) {
    d.part_rows.push_back(t->n_rows());
    d.rows += t->n_rows();
  }
  return d;
}

void fuse_rows(const GgufFile& file, const FusionDecision& decision, std::span<uint8_t> out) {
  if (!decision.fused) throw std::invalid_argument("fuse_rows: " + decision.describe());
  if (out.size() != static_cast<uint64_t>(decision.rows) * decision.row_bytes) {
    throw std::invalid_argument(fmt::format("fuse_rows: output holds {} bytes, {} needs {}", out.size(),
                                            decision.group.fused_name, decision.rows * decision.row_bytes));
  }
  size_t at = 0;
  for (const std::string& name : decision.group.parts) {
    const auto bytes = file.tensor_data(*file.find_tensor(name));
    std::memcpy(out.data() + at, bytes.data(), bytes.size());
    at += bytes.size();
  }
}

std::vector<uint8_t> fuse_rows(const GgufFile& file, const FusionDecision& decision) {
  std::vector<uint8_t> out(static_cast<size_t>(decision.rows) * decision.row_bytes);
  fuse_rows(file, decision, out);
  return out;
}

size_t FusionPlan::fused_count(FusionKind k) const {
  return std::count_if(decisions.begin(), decisions.end(),
                       [k](const FusionDecision& d) { return d.group.kind == k && d.fused; });
}

size_t FusionPlan::candidate_count(FusionKind k) const {
  return std::count_if(decisions.begin(), decisions.end(),
                       [k](const FusionDecision& d) { return d.group.kind == k; });
}

std::vector<std::string> FusionPlan::summary() const {
  std::vector<std::string> lines;
  for (FusionKind k : kFusionKinds) {
    if (candidate_count(k) == 0) continue;
    lines.push_back(fmt::format("fused {} on {} of {} {}", fusion_label(k), fused_count(k),
                                candidate_count(k), fusion_scope(k)));
  }
  return lines;
}

std::vector<std::string> FusionPlan::diagnostics() const {
  std::vector<std::string> lines;
  for (const FusionDecision& d : decisions) {
    if (!d.fused) lines.push_back(d.describe());
  }
  return lines;
}

FusionPlan plan_load_fusions(const GgufFile& file) {
  FusionPlan plan;
  for (const FusionGroup& g : find_fusion_groups(file)) plan.decisions.push_back(decide_fusion(file, g));
  return plan;
}

std::map<std::string, std::vector<float>> dequantize_fused_parts(const GgufFile& file,
                                                                 std::vector<std::string>* log) {
  std::map<std::string, std::vector<float>> parts;
  for (const FusionGroup& g : find_fusion_groups(file)) {
    const FusionDecision d = decide_fusion(file, g);
    if (log) log->push_back(d.describe());
    if (!d.fused) continue;
    const std::vector<uint8_t> raw = fuse_rows(file, d);
    std::vector<float> all(static_cast<size_t>(d.rows * d.cols));
    dequantize(d.type, raw.data(), all.data(), d.rows * d.cols);
    int64_t row0 = 0;
    for (size_t p = 0; p < g.parts.size(); ++p) {
      parts[g.parts[p]] =
          std::vector<float>(all.begin() + row0 * d.cols, all.begin() + (row0 + d.part_rows[p]) * d.cols);
      row0 += d.part_rows[p];
    }
  }
  return parts;
}

}  // namespace fb
