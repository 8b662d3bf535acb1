#include "harness/gguf_tools/gguf_command.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>
#include <stdexcept>
#include <vector>

#include "harness/cli/exit_codes.h"
#include "reference/formats/dequantize.h"
#include "reference/formats/ggml_type.h"
#include "reference/formats/quantize.h"
#include "reference/gguf/gguf_file.h"
#include "reference/gguf/gguf_writer.h"
#include "reference/npy/npy.h"

namespace fb {
namespace {

using nlohmann::json;

constexpr size_t kShownItems = 8;   // array items shown without --full
constexpr size_t kShownChars = 60;  // string characters shown without --full
constexpr size_t kCloseNames = 5;   // suggestions for an unknown tensor name

const char* short_type(GgufValueType t) {
  switch (t) {
    case GgufValueType::UINT8:
      return "u8";
    case GgufValueType::INT8:
      return "i8";
    case GgufValueType::UINT16:
      return "u16";
    case GgufValueType::INT16:
      return "i16";
    case GgufValueType::UINT32:
      return "u32";
    case GgufValueType::INT32:
      return "i32";
    case GgufValueType::FLOAT32:
      return "f32";
    case GgufValueType::BOOL:
      return "bool";
    case GgufValueType::STRING:
      return "string";
    case GgufValueType::ARRAY:
      return "array";
    case GgufValueType::UINT64:
      return "u64";
    case GgufValueType::INT64:
      return "i64";
    case GgufValueType::FLOAT64:
      return "f64";
  }
  return "?";
}

std::string quote(std::string_view s, bool full) { return gguf_quote(s, full ? SIZE_MAX : kShownChars); }

std::string scalar_text(const GgufValueStorage& v, bool full) {
  return std::visit(
      [&](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>)
          return quote(x, full);
        else if constexpr (std::is_same_v<T, GgufBool>)
          return x.value ? "true" : "false";
        else if constexpr (std::is_same_v<T, GgufArray>)
          return "<array>";
        else if constexpr (std::is_same_v<T, uint8_t> || std::is_same_v<T, int8_t>)
          return fmt::format("{}", int{x});
        else
          return fmt::format("{}", x);
      },
      v);
}

std::string array_text(const GgufArray& a, bool full) {
  const size_t n = a.size();
  const size_t shown = full ? n : std::min(n, kShownItems);
  std::vector<std::string> items;
  items.reserve(shown);
  std::visit(
      [&](const auto& vec) {
        using E = typename std::decay_t<decltype(vec)>::value_type;
        for (size_t i = 0; i < shown; ++i) {
          if constexpr (std::is_same_v<E, std::string>)
            items.push_back(quote(vec[i], full));
          else if constexpr (std::is_same_v<E, uint8_t> || std::is_same_v<E, int8_t>) {
            if (a.elem_type == GgufValueType::BOOL)
              items.push_back(vec[i] ? "true" : "false");
            else
              items.push_back(fmt::format("{}", int{vec[i]}));
          } else
            items.push_back(fmt::format("{}", vec[i]));
        }
      },
      a.values);
  std::string out = fmt::format("[{}", fmt::join(items, ", "));
  if (shown < n) out += fmt::format(", ... {} more", n - shown);
  return out + "]";
}

json scalar_json(const GgufValueStorage& v) {
  return std::visit(
      [](const auto& x) -> json {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, GgufBool>)
          return x.value;
        else if constexpr (std::is_same_v<T, GgufArray>)
          return nullptr;
        else
          return x;
      },
      v);
}

json array_json(const GgufArray& a, bool full) {
  const size_t shown = full ? a.size() : std::min(a.size(), kShownItems);
  json out = json::array();
  std::visit(
      [&](const auto& vec) {
        for (size_t i = 0; i < shown; ++i) {
          using E = typename std::decay_t<decltype(vec)>::value_type;
          if constexpr (std::is_same_v<E, uint8_t>) {
            if (a.elem_type == GgufValueType::BOOL) {
              out.push_back(vec[i] != 0);
              continue;
            }
          }
          out.push_back(vec[i]);
        }
      },
      a.values);
  return out;
}

// Rows in numpy order: ne = [cols, d1, d2, d3] reads as numpy shape (d3, d2, d1, cols).
std::vector<int64_t> numpy_shape(const std::vector<int64_t>& ne) { return {ne.rbegin(), ne.rend()}; }

std::string shape_text(const std::vector<int64_t>& s, const char* sep) {
  return s.empty() ? "()" : fmt::format("{}", fmt::join(s, sep));
}

std::string type_name(uint32_t id) {
  const GgmlTypeInfo* info = ggml_type_info(id);
  return info ? std::string(info->name) : fmt::format("type{}", id);
}

std::string supported_types() {
  std::vector<std::string_view> names;
  for (GgmlType t : kConvertibleTypes) names.push_back(ggml_type_name(t));
  return fmt::format("{}", fmt::join(names, ", "));
}

GgufFile open_gguf(const std::filesystem::path& path) {
  try {
    return GgufFile::open(path);
  } catch (const GgufError& e) {
    throw CliError(e.code() == GgufErrc::io ? kExitIo : kExitBadInput, e.what());
  }
}

std::string human_bytes(uint64_t b) {
  if (b < 1024) return fmt::format("{} B", b);
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = -1;
  while (v >= 1024 && u < 3) {
    v /= 1024;
    ++u;
  }
  return fmt::format("{:.2f} {}", v, units[u]);
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// Names worth suggesting: those containing the query (people often drop ".weight"), then the
// nearest by edit distance, as long as they are not entirely different strings.
std::vector<std::string> close_names(const GgufFile& f, std::string_view query) {
  std::vector<std::pair<size_t, std::string>> scored;
  for (const auto& t : f.tensors()) {
    const bool contains = t.name.find(query) != std::string::npos || query.find(t.name) != std::string::npos;
    const size_t d = contains ? 0 : edit_distance(query, t.name);
    if (contains || d <= std::max<size_t>(3, query.size() / 3)) scored.emplace_back(d, t.name);
  }
  std::stable_sort(scored.begin(), scored.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> out;
  for (size_t i = 0; i < scored.size() && i < kCloseNames; ++i) out.push_back(scored[i].second);
  return out;
}

struct TypeTotals {
  uint64_t tensors = 0;
  uint64_t params = 0;
  uint64_t bytes = 0;
};

struct Totals {
  TypeTotals all;
  std::map<std::string, TypeTotals> by_type;  // keyed by ggml type name, so sorted by name
};

Totals totals_of(const GgufFile& f) {
  Totals out;
  for (const auto& t : f.tensors()) {
    for (TypeTotals* tt : {&out.by_type[type_name(t.type)], &out.all}) {
      tt->tensors += 1;
      tt->params += static_cast<uint64_t>(t.n_elements());
      tt->bytes += t.nbytes;
    }
  }
  return out;
}

void inspect_json(const GgufFile& f, const GgufInspectOptions& opts, std::ostream& out) {
  json j;
  j["file"] = opts.file.string();
  j["version"] = f.version();
  j["alignment"] = f.alignment();
  j["data_offset"] = f.data_offset();
  j["file_size"] = f.file_size();
  json meta = json::array();
  for (const auto& kv : f.metadata()) {
    json m;
    m["key"] = kv.key;
    m["type"] = short_type(kv.value.type());
    if (const GgufArray* a = kv.value.as_array()) {
      m["elem_type"] = short_type(a->elem_type);
      m["count"] = a->size();
      m["value"] = array_json(*a, opts.full);
      m["truncated"] = !opts.full && a->size() > kShownItems;
    } else {
      m["value"] = scalar_json(kv.value.v);
    }
    meta.push_back(std::move(m));
  }
  j["metadata"] = std::move(meta);
  json tensors = json::array();
  for (const auto& t : f.tensors()) {
    tensors.push_back({{"name", t.name},
                       {"type", type_name(t.type)},
                       {"type_id", t.type},
                       {"shape", numpy_shape(t.ne)},
                       {"ne", t.ne},
                       {"rows", t.n_rows()},
                       {"cols", t.n_cols()},
                       {"n_elements", t.n_elements()},
                       {"bytes", t.nbytes},
                       {"offset", t.offset},
                       {"file_offset", f.data_offset() + t.offset}});
  }
  j["tensors"] = std::move(tensors);
  const Totals totals = totals_of(f);
  const TypeTotals& total = totals.all;
  json bt = json::object();
  for (const auto& [name, tt] : totals.by_type)
    bt[name] = {{"tensors", tt.tensors}, {"parameters", tt.params}, {"bytes", tt.bytes}};
  j["totals"] = {
      {"tensors", total.tensors}, {"parameters", total.params}, {"bytes", total.bytes}, {"by_type", bt}};
  // GGUF strings were validated as UTF-8 on open; `replace` only guards against a parser bug
  // turning into an exception halfway through the output.
  out << j.dump(2, ' ', false, json::error_handler_t::replace) << '\n';
}

void print_table(std::ostream& out, const std::vector<std::vector<std::string>>& rows,
                 const std::vector<bool>& right) {
  std::vector<size_t> w(rows.front().size(), 0);
  for (const auto& r : rows)
    for (size_t c = 0; c < r.size(); ++c) w[c] = std::max(w[c], r[c].size());
  for (const auto& r : rows) {
    std::string line = " ";
    for (size_t c = 0; c < r.size(); ++c) {
      const bool last = c + 1 == r.size();
      line += ' ';
      if (right[c])
        line += fmt::format("{:>{}}", r[c], w[c]);
      else
        line += last ? r[c] : fmt::format("{:<{}}", r[c], w[c]);
    }
    out << line << '\n';
  }
}

void inspect_text(const GgufFile& f, const GgufInspectOptions& opts, std::ostream& out) {
  out << fmt::format("{}: GGUF v{}, alignment {}, data section at offset {}, file size {} ({})\n",
                     opts.file.string(), f.version(), f.alignment(), f.data_offset(), f.file_size(),
                     human_bytes(f.file_size()));

  out << fmt::format("\nmetadata: {} keys\n", f.metadata().size());
  if (!f.metadata().empty()) {
    std::vector<std::vector<std::string>> rows = {{"KEY", "TYPE", "VALUE"}};
    for (const auto& kv : f.metadata()) {
      if (const GgufArray* a = kv.value.as_array())
        rows.push_back(
            {kv.key, fmt::format("{}[{}]", short_type(a->elem_type), a->size()), array_text(*a, opts.full)});
      else
        rows.push_back({kv.key, short_type(kv.value.type()), scalar_text(kv.value.v, opts.full)});
    }
    print_table(out, rows, {false, false, false});
  }

  out << fmt::format("\ntensors: {} (shape in numpy order rows x cols; ne in ggml order; offset absolute)\n",
                     f.tensors().size());
  if (!f.tensors().empty()) {
    std::vector<std::vector<std::string>> rows = {{"NAME", "TYPE", "SHAPE", "NE", "BYTES", "OFFSET"}};
    for (const auto& t : f.tensors()) {
      rows.push_back({t.name, type_name(t.type), shape_text(numpy_shape(t.ne), " x "),
                      fmt::format("[{}]", fmt::join(t.ne, ", ")), fmt::format("{}", t.nbytes),
                      fmt::format("{}", f.data_offset() + t.offset)});
    }
    print_table(out, rows, {false, false, false, false, true, true});
  }

  const Totals totals = totals_of(f);
  const TypeTotals& total = totals.all;
  out << fmt::format("\ntotals: {} tensors, {} parameters, {} bytes ({})\n", total.tensors, total.params,
                     total.bytes, human_bytes(total.bytes));
  if (!totals.by_type.empty()) {
    std::vector<std::vector<std::string>> rows = {{"TYPE", "TENSORS", "PARAMETERS", "BYTES"}};
    for (const auto& [name, tt] : totals.by_type)
      rows.push_back(
          {name, fmt::format("{}", tt.tensors), fmt::format("{}", tt.params), fmt::format("{}", tt.bytes)});
    print_table(out, rows, {false, true, true, true});
  }
}

// The 7 types `quantize` writes; any spelling case is accepted because users type "q4_k".
GgmlType parse_target_type(const std::string& spelled) {
  const auto t = parse_ggml_type(spelled);
  if (t) {
    for (GgmlType c : kConvertibleTypes)
      if (c == *t) return c;
  }
  throw CliError(kExitUsage,
                 fmt::format("--type {}: not a type fusebench can quantize to (expected one of {})", spelled,
                             supported_types()));
}

bool is_quantized(GgmlType t) { return t != GgmlType::F32 && t != GgmlType::F16 && t != GgmlType::BF16; }

}  // namespace

void gguf_inspect(const GgufInspectOptions& opts, std::ostream& out) {
  const GgufFile f = open_gguf(opts.file);
  if (opts.json)
    inspect_json(f, opts, out);
  else
    inspect_text(f, opts, out);
}

void gguf_dequant(const GgufDequantOptions& opts, std::ostream& err) {
  if (opts.output.empty()) throw CliError(kExitUsage, "gguf dequant: -o OUT.npy is required");
  const GgufFile f = open_gguf(opts.file);
  const GgufTensorInfo* t = f.find_tensor(opts.tensor);
  if (!t) {
    const auto close = close_names(f, opts.tensor);
    std::string msg = fmt::format("{}: no tensor named '{}' ({} tensors in the file)", opts.file.string(),
                                  opts.tensor, f.tensors().size());
    if (!close.empty())
      msg += fmt::format("; close names: {}", fmt::join(close, ", "));
    else
      msg += "; list them with `fusebench gguf inspect FILE`";
    throw CliError(kExitBadInput, msg);
  }
  const GgmlTypeInfo* info = ggml_type_info(t->type);
  if (!info || !info->convertible)
    throw CliError(kExitBadInput,
                   fmt::format("{}: tensor '{}' has type {}, which fusebench cannot dequantize "
                               "(supported: {})",
                               opts.file.string(), t->name, type_name(t->type), supported_types()));
  const auto type = static_cast<GgmlType>(t->type);
  const int64_t rows = t->n_rows(), cols = t->n_cols();
  if (t->ne.size() > 2)
    err << fmt::format("note: tensor '{}' has shape {}; writing it flattened to ({}, {})\n", t->name,
                       format_npy_shape(numpy_shape(t->ne)), rows, cols);

  const std::span<const uint8_t> src = f.tensor_data(*t);
  const size_t row_bytes = ggml_row_bytes(type, cols);
  std::vector<float> out(static_cast<size_t>(rows) * static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r)
    dequantize(type, src.data() + static_cast<size_t>(r) * row_bytes,
               out.data() + static_cast<size_t>(r * cols), cols);

  const std::vector<int64_t> shape = {rows, cols};
  try {
    write_npy(opts.output, out, shape);
  } catch (const NpyError& e) {
    throw CliError(kExitIo, e.what());
  }
  err << fmt::format("wrote {}: '{}' {} -> float32 ({}, {})\n", opts.output.string(), t->name, info->name,
                     rows, cols);
}

void gguf_quantize(const GgufQuantizeOptions& opts, std::ostream& err) {
  if (opts.output.empty()) throw CliError(kExitUsage, "gguf quantize: -o OUT.gguf is required");
  const GgmlType type = parse_target_type(opts.type);
  if (opts.name.empty() || opts.name.size() > kGgufMaxTensorName)
    throw CliError(kExitUsage, fmt::format("--name '{}': tensor names must be 1..{} bytes", opts.name,
                                           kGgufMaxTensorName));

  NpyArray a;
  try {
    a = read_npy(opts.input);
  } catch (const NpyIoError& e) {
    throw CliError(kExitIo, e.what());
  } catch (const NpyError& e) {
    throw CliError(kExitBadInput, e.what());
  }
  const std::string in = opts.input.string();
  if (a.shape.size() != 2)
    throw CliError(kExitBadInput,
                   fmt::format("{}: expected a 2-D array (rows, cols), found shape {} — reshape with "
                               "arr.reshape(-1, cols)",
                               in, format_npy_shape(a.shape)));
  const int64_t rows = a.shape[0], cols = a.shape[1];
  if (rows == 0 || cols == 0)
    throw CliError(kExitBadInput,
                   fmt::format("{}: array of shape {} is empty", in, format_npy_shape(a.shape)));
  const GgmlTypeInfo& info = ggml_type_info(type);
  if (cols % info.block_elems != 0)
    throw CliError(
        kExitBadInput,
        fmt::format("{}: {} columns is not a multiple of {}'s block size {} (ggml quantizes along rows; "
                    "pad the columns or pick a type with a smaller block: q8_0 needs 32, f16/bf16/f32 any)",
                    in, cols, info.name, info.block_elems));
  // ggml's reference quantizers turn inf/NaN into scales that llama.cpp rejects on load; the plain
  // float types can carry them, so only the quantized ones refuse.
  if (is_quantized(type)) {
    for (size_t i = 0; i < a.data.size(); ++i) {
      if (!std::isfinite(a.data[i]))
        throw CliError(kExitBadInput, fmt::format("{}: element ({}, {}) is {}; {} needs finite values", in,
                                                  static_cast<int64_t>(i) / cols,
                                                  static_cast<int64_t>(i) % cols, a.data[i], info.name));
    }
  }

  const size_t row_bytes = ggml_row_bytes(type, cols);
  std::vector<uint8_t> q(row_bytes * static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r)
    quantize(type, a.data.data() + static_cast<size_t>(r * cols),
             q.data() + static_cast<size_t>(r) * row_bytes, cols);

  try {
    GgufWriter w(opts.output);
    w.add_kv("general.architecture", GgufValue{std::string("fusebench")});
    w.add_kv("general.name", GgufValue{opts.input.stem().string()});
    if (is_quantized(type)) w.add_kv("general.quantization_version", GgufValue{uint32_t{2}});
    w.add_tensor(opts.name, type, {cols, rows});
    w.write_all({std::span<const uint8_t>(q)});
  } catch (const GgufError& e) {
    throw CliError(e.code() == GgufErrc::io ? kExitIo : kExitUsage, e.what());
  } catch (const std::invalid_argument& e) {
    throw CliError(kExitUsage, fmt::format("{}: {}", opts.output.string(), e.what()));
  } catch (const std::logic_error&) {
    throw;  // a writer bug, not the user's doing: main() reports it as internal
  } catch (const std::exception& e) {
    throw CliError(kExitIo, fmt::format("{}: cannot write: {}", opts.output.string(), e.what()));
  }
  err << fmt::format("wrote {}: tensor '{}' {} ({}, {}), {} bytes of tensor data\n", opts.output.string(),
                     opts.name, info.name, rows, cols, q.size());
}

void add_gguf_command(CLI::App& app) {
  CLI::App* gguf =
      app.add_subcommand("gguf", "Inspect GGUF files; move single tensors between GGUF and .npy");
  gguf->require_subcommand(1);
  gguf->footer(
      "Arrays are float32 .npy of shape (rows, cols); numpy (rows, cols) is ggml ne = [cols, rows].\n"
      "Exit codes: 0 ok, 2 bad command line, 3 malformed or unsuitable input file, 4 cannot read/write a "
      "file.");

  {
    auto opts = std::make_shared<GgufInspectOptions>();
    CLI::App* sub =
        gguf->add_subcommand("inspect", "Print a GGUF file's header, metadata, tensor table and totals");
    sub->add_option("FILE", opts->file, "GGUF file")->required();
    sub->add_flag("--json", opts->json, "Machine-readable JSON on stdout instead of tables");
    sub->add_flag(
        "--full", opts->full,
        fmt::format("Show every array item and whole strings (default: first {} items, {} characters)",
                    kShownItems, kShownChars));
    sub->footer(
        "Examples:\n"
        "  fusebench gguf inspect model.gguf\n"
        "  fusebench gguf inspect --full model.gguf | less\n"
        "  fusebench gguf inspect --json model.gguf | jq '.tensors[] | select(.type==\"q4_K\") | .name'");
    sub->callback([opts] { gguf_inspect(*opts, std::cout); });
  }
  {
    auto opts = std::make_shared<GgufDequantOptions>();
    CLI::App* sub =
        gguf->add_subcommand("dequant", "Dequantize one tensor to a float32 .npy of shape (rows, cols)");
    sub->add_option("FILE", opts->file, "GGUF file")->required();
    sub->add_option("TENSOR", opts->tensor, "Tensor name, as `gguf inspect` lists it")->required();
    sub->add_option("-o,--output", opts->output, "Output .npy (written atomically)")->required();
    sub->footer(
        fmt::format("Supported types: {}. A 1-D tensor becomes (1, n); 3-D and 4-D tensors are flattened to\n"
                    "(product of the leading dims, cols), noted on stderr.\n"
                    "Examples:\n"
                    "  fusebench gguf dequant model.gguf blk.0.attn_q.weight -o attn_q.npy\n"
                    "  python3 -c \"import numpy as np; print(np.load('attn_q.npy').shape)\"",
                    supported_types()));
    sub->callback([opts] { gguf_dequant(*opts, std::cerr); });
  }
  {
    auto opts = std::make_shared<GgufQuantizeOptions>();
    CLI::App* sub =
        gguf->add_subcommand("quantize", "Quantize a 2-D float32 .npy into a one-tensor GGUF file");
    sub->add_option("IN", opts->input, "Input .npy: float32 ('<f4'), shape (rows, cols), C order")
        ->required();
    sub->add_option("-t,--type", opts->type, fmt::format("Target type: {}", supported_types()))->required();
    sub->add_option("-n,--name", opts->name, "Tensor name in the output")->capture_default_str();
    sub->add_option("-o,--output", opts->output, "Output .gguf (written atomically)")->required();
    sub->footer(
        "cols must be a multiple of the type's block size (256 for q4_K/q5_K/q6_K, 32 for q8_0).\n"
        "Quantization is ggml's reference (quantize_row_*_ref, no imatrix), bit-exact. The file gets\n"
        "general.architecture=\"fusebench\", general.name=<IN's stem> and, for quantized types,\n"
        "general.quantization_version=2.\n"
        "Examples:\n"
        "  python3 -c \"import numpy as np; np.save('w.npy', np.random.randn(4, 512).astype(np.float32))\"\n"
        "  fusebench gguf quantize w.npy --type q4_K -o w_q4k.gguf\n"
        "  fusebench gguf quantize w.npy --type q8_0 --name blk.0.ffn_up.weight -o w_q8.gguf");
    sub->callback([opts] { gguf_quantize(*opts, std::cerr); });
  }
}

}  // namespace fb
