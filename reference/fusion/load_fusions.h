#pragma once
// Load-time fusions on raw GGUF blocks: projections that read the same activation are row-
// concatenated into one weight so one matvec/GEMM replaces several. No dequantization happens:
// a row of ggml blocks is self-contained, so concatenating rows is exact, and the fused
// tensor's dequantization equals the stacked dequantization of its parts bit for bit.
//
// Guards, in order (the first that fails is the reason reported): every part present; every part
// 2-D; the same K (ne[0]); the same bytes per row; the same ggml type. A group that fails stays
// unfused with a diagnostic — never an abort.
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "reference/formats/ggml_type.h"
#include "reference/gguf/gguf_file.h"

namespace fb {

enum class FusionKind {
  gate_up,         // blk.N.ffn_gate + ffn_up                 -> blk.N.ffn_gate_up.weight
  qkv,             // blk.N.attn_q + attn_k (+ attn_v)        -> blk.N.attn_qkv_fused.weight
  gdn_in_proj,     // blk.N.attn_qkv + attn_gate + ssm_beta + ssm_alpha -> blk.N.gdn_in_proj.weight
  shared_gate_up,  // blk.N.ffn_gate_shexp + ffn_up_shexp     -> blk.N.ffn_gate_up_shexp.weight
};
inline constexpr FusionKind kFusionKinds[] = {FusionKind::gate_up, FusionKind::qkv, FusionKind::gdn_in_proj,
                                              FusionKind::shared_gate_up};

const char* fusion_label(FusionKind k);  // "gate+up", "q+k+v", ...
const char* fusion_scope(FusionKind k);  // "MLP layers", "attention layers", ...

struct FusionGroup {
  FusionKind kind = FusionKind::gate_up;
  int64_t layer = -1;
  std::string fused_name;
  std::vector<std::string> parts;  // in output row order
  std::string note;                // e.g. "no attn_v: V = K" for gemma4's full layers
};

struct FusionDecision {
  FusionGroup group;
  bool fused = false;
  std::string reason;              // why not fused (empty when fused)
  GgmlType type = GgmlType::F32;   // valid when fused
  int64_t cols = 0;                // K
  std::vector<int64_t> part_rows;  // rows contributed by each part
  int64_t rows = 0;                // sum of part_rows
  uint64_t row_bytes = 0;

  std::string describe() const;  // one line for logs
};

// The grouping rules by tensor kind ("ffn_gate", ...; the part of a name after "blk.N." without
// ".weight"), shared with every consumer that needs the same groups (e.g. the runner's dequant
// cases), so there is one definition of what fuses.
struct FusionRule {
  FusionKind kind;
  std::vector<std::string> parts;  // kinds in output row order
  std::string fused;               // fused kind
  std::string optional_part;       // may be absent (attn_v: gemma4's full layers have V = K)
};
const std::vector<FusionRule>& fusion_rules();

// Candidate groups found by tensor name, in layer order then kind order.
std::vector<FusionGroup> find_fusion_groups(const GgufFile& file);
FusionDecision decide_fusion(const GgufFile& file, const FusionGroup& group);

// Writes the fused tensor's raw bytes (rows of the parts, in order) into `out`, whose size must be
// rows * row_bytes. Throws std::invalid_argument for an unfused decision or a wrong size.
void fuse_rows(const GgufFile& file, const FusionDecision& decision, std::span<uint8_t> out);
std::vector<uint8_t> fuse_rows(const GgufFile& file, const FusionDecision& decision);

// The fused load path in f32: every group that passes the guards is fused, dequantized once as one
// tensor and split back into its parts' rows, keyed by part name (so a reference model loaded this
// way sees exactly the weights a fused kernel reads). Groups left unfused are absent; every
// decision's describe() line is appended to `log` when given.
std::map<std::string, std::vector<float>> dequantize_fused_parts(const GgufFile& file,
                                                                 std::vector<std::string>* log = nullptr);

struct FusionPlan {
  std::vector<FusionDecision> decisions;
  // "fused gate+up on 60 of 60 MLP layers", one line per kind that has candidates.
  std::vector<std::string> summary() const;
  // One line per group left unfused, with its reason.
  std::vector<std::string> diagnostics() const;
  size_t fused_count(FusionKind k) const;
  size_t candidate_count(FusionKind k) const;
};

FusionPlan plan_load_fusions(const GgufFile& file);

}  // namespace fb
