#include <fmt/format.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "harness/cli/exit_codes.h"
#include "harness/model_tools/model_commands.h"
#include "reference/fusion/load_fusions.h"
#include "reference/gguf/gguf_writer.h"

namespace fb {

namespace {

struct FuseArgs {
  std::string input;
  std::string out;
  bool verbose = false;
};

// Writes `file` with each fused group replaced by its row-concatenated tensor, at the position of
// the group's first part. fusebench.fusions records how to split each fused tensor again.
void write_fused(const GgufFile& file, const FusionPlan& plan, const std::string& out) {
  std::map<std::string, const FusionDecision*> first_part;
  std::set<std::string> absorbed;
  GgufArray recipe{GgufValueType::STRING, std::vector<std::string>{}};
  // Keep how earlier passes fused: a fused tensor in the input still needs its split recipe.
  if (const GgufValue* old = file.find("fusebench.fusions");
      old && old->as_array() && old->as_array()->elem_type == GgufValueType::STRING) {
    std::get<std::vector<std::string>>(recipe.values) =
        std::get<std::vector<std::string>>(old->as_array()->values);
  }
  for (const FusionDecision& d : plan.decisions) {
    if (!d.fused) continue;
    first_part[d.group.parts.front()] = &d;
    std::string entry = d.group.fused_name + "=";
    for (size_t i = 0; i < d.group.parts.size(); ++i) {
      absorbed.insert(d.group.parts[i]);
      entry += fmt::format("{}{}:{}", i ? "," : "", d.group.parts[i], d.part_rows[i]);
    }
    std::get<std::vector<std::string>>(recipe.values).push_back(std::move(entry));
  }
  GgufWriter w(out);
  for (const GgufKv& kv : file.metadata()) {
    if (kv.key != "fusebench.fusions") w.add_kv(kv.key, kv.value);
  }
  w.add_kv("fusebench.fusions", GgufValue{recipe});
  std::vector<std::function<void()>> writers;
  for (const GgufTensorInfo& t : file.tensors()) {
    if (auto it = first_part.find(t.name); it != first_part.end()) {
      const FusionDecision& d = *it->second;
      w.add_tensor_raw(d.group.fused_name, static_cast<uint32_t>(d.type), {d.cols, d.rows});
      writers.push_back([&w, &file, &d] { w.append(fuse_rows(file, d)); });
    } else if (!absorbed.count(t.name)) {
      w.add_tensor_raw(t.name, t.type, t.ne);
      writers.push_back([&w, &file, &t] { w.append(file.tensor_data(t)); });
    }
  }
  w.begin_data();
  for (auto& write : writers) write();
  w.finish();
}

void run_fuse(const FuseArgs& a) {
  std::optional<GgufFile> file;
  try {
    file.emplace(GgufFile::open(a.input));
  } catch (const GgufError& e) {
    throw CliError(e.code() == GgufErrc::io ? kExitIo : kExitBadInput, e.what());
  }
  const FusionPlan plan = plan_load_fusions(*file);
  if (plan.decisions.empty()) {
    fmt::print(
        "{}: no fusion candidates (no blk.N.ffn_gate/ffn_up, attn_q/k/v, GDN in_proj or shared-expert "
        "gate/up tensors)\n",
        a.input);
  }
  for (const FusionDecision& d : plan.decisions) {
    if (a.verbose || !d.fused) fmt::print("{}\n", d.describe());
  }
  for (const std::string& line : plan.summary()) fmt::print("{}\n", line);
  if (!a.out.empty()) {
    try {
      write_fused(*file, plan, a.out);
    } catch (const std::system_error& e) {
      throw CliError(kExitIo, fmt::format("writing {}: {}", a.out, e.what()));
    } catch (const std::runtime_error& e) {
      throw CliError(kExitIo, fmt::format("writing {}: {}", a.out, e.what()));
    }
    fmt::print("wrote {}\n", a.out);
  }
}

}  // namespace

void add_fuse_command(CLI::App& app) {
  auto args = std::make_shared<FuseArgs>();
  CLI::App* cmd = app.add_subcommand(
      "fuse",
      "Plan the load-time fusions of a GGUF file on its raw blocks (gate+up, q+k+v, GDN in_proj,\n"
      "shared-expert gate+up): print what fuses, why the rest does not, and a summary per kind.\n"
      "With -o, write a GGUF in which each fused group is one row-concatenated tensor.");
  cmd->add_option("file", args->input, "input .gguf")->required()->check(CLI::ExistingFile);
  cmd->add_option("-o,--output", args->out, "write the fused model here");
  cmd->add_flag("-v,--verbose", args->verbose, "also list the groups that fused");
  cmd->footer("Example: fusebench fuse model.gguf -v");
  cmd->callback([args] { run_fuse(*args); });
}

}  // namespace fb
