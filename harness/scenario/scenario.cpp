#include "harness/scenario/scenario.h"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <system_error>
#include <utility>

#include "reference/model/model_config.h"

#ifndef FUSEBENCH_SOURCE_SCENARIOS
#define FUSEBENCH_SOURCE_SCENARIOS ""
#endif

namespace fb {

const char* to_string(Phase p) { return p == Phase::decode ? "decode" : "prefill"; }

const char* to_string(RunUnit r) {
  switch (r) {
    case RunUnit::kernel:
      return "kernel";
    case RunUnit::layer:
      return "layer";
    case RunUnit::step:
      return "step";
  }
  return "?";
}

namespace {

std::string format_what(const std::filesystem::path& file, int64_t line, int64_t column,
                        const std::string& field, const std::string& message) {
  std::string out = file.string();
  if (line > 0) out += fmt::format(":{}", line);
  if (line > 0 && column > 0) out += fmt::format(":{}", column);
  out += ": ";
  if (!field.empty()) out += field + ": ";
  out += message;
  return out;
}

}  // namespace

ScenarioError::ScenarioError(std::filesystem::path file, int64_t line, int64_t column, std::string field,
                             std::string message)
    : std::runtime_error(format_what(file, line, column, field, message)),
      m_file(std::move(file)),
      m_line(line),
      m_column(column),
      m_field(std::move(field)) {}

namespace {

// Decode covers the M = 1..4 matvec kernels (notes/models.md §3); prefill starts where the runtime
// switches to the dequant/GEMM path (get_min_prefill_chunk = 5), so the two ranges never overlap and a
// scenario's phase always agrees with the kernel path its T would take.
constexpr int64_t kMaxDecodeTokens = 4;
constexpr int64_t kMinPrefillTokens = 5;

const std::vector<std::string> kTopKeys = {"name",    "description", "model", "scale",    "phase",
                                           "tokens",  "contexts",    "run",   "kernels",  "variants",
                                           "layouts", "seeds",       "tags",  "tolerance"};
const std::vector<std::string> kToleranceKeys = {"kernel",     "max_abs",  "max_rel",
                                                 "min_cosine", "max_nmse", "reason"};

const char* type_name(toml::node_type t) {
  switch (t) {
    case toml::node_type::none:
      return "nothing";
    case toml::node_type::table:
      return "table";
    case toml::node_type::array:
      return "array";
    case toml::node_type::string:
      return "string";
    case toml::node_type::integer:
      return "integer";
    case toml::node_type::floating_point:
      return "float";
    case toml::node_type::boolean:
      return "boolean";
    case toml::node_type::date:
      return "date";
    case toml::node_type::time:
      return "time";
    case toml::node_type::date_time:
      return "date-time";
  }
  return "value";
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

// A name that can be used as a CLI filter and a results key without quoting.
bool is_plain_name(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
  });
}

struct Parsed {
  Scenario scenario;
  int64_t name_line = 0, name_column = 0;  // 0 when the name came from the file stem
};

class Parser {
 public:
  Parser(const std::filesystem::path& file) : m_file(file) {}

  [[noreturn]] void fail(const toml::source_region& where, const std::string& field,
                         const std::string& msg) const {
    throw ScenarioError(m_file, where.begin.line, where.begin.column, field, msg);
  }
  [[noreturn]] void fail(const toml::node& where, const std::string& field, const std::string& msg) const {
    fail(where.source(), field, msg);
  }

  void check_keys(const toml::table& table, const std::vector<std::string>& valid,
                  const std::string& prefix) const {
    for (auto&& [key, value] : table) {
      std::string k(key.str());
      if (std::find(valid.begin(), valid.end(), k) != valid.end()) continue;
      std::string hint;
      for (const auto& v : valid)
        if (edit_distance(k, v) <= 2) {
          hint = fmt::format(" (did you mean '{}'?)", v);
          break;
        }
      fail(key.source(), prefix + k, fmt::format("unknown key '{}'{}; valid keys: {}", k, hint, join(valid)));
    }
  }

  std::string get_string(const toml::node& node, const std::string& field) const {
    if (!node.is_string())
      fail(node, field, fmt::format("expected a string, found {}", type_name(node.type())));
    return node.as_string()->get();
  }

  std::string get_nonempty_string(const toml::node& node, const std::string& field) const {
    std::string s = get_string(node, field);
    if (s.empty()) fail(node, field, "must not be empty");
    return s;
  }

  double get_number(const toml::node& node, const std::string& field) const {
    double v = 0;
    if (node.is_integer())
      v = static_cast<double>(node.as_integer()->get());
    else if (node.is_floating_point())
      v = node.as_floating_point()->get();
    else
      fail(node, field, fmt::format("expected a number, found {}", type_name(node.type())));
    if (!std::isfinite(v)) fail(node, field, fmt::format("must be finite, found {}", v));
    return v;
  }

  const toml::array& get_array(const toml::node& node, const std::string& field, const char* of_what,
                               bool allow_empty) const {
    if (!node.is_array())
      fail(node, field, fmt::format("expected an array of {}, found {}", of_what, type_name(node.type())));
    const toml::array& arr = *node.as_array();
    if (!allow_empty && arr.empty())
      fail(node, field, fmt::format("must not be empty (need at least one of {})", of_what));
    return arr;
  }

  // Integers in [lo, hi], no duplicates: a repeated token count or context would only repeat a case.
  std::vector<int64_t> get_int_array(const toml::node& node, const std::string& field, int64_t lo, int64_t hi,
                                     bool allow_empty, std::string_view why = {}) const {
    const toml::array& arr = get_array(node, field, "integers", allow_empty);
    std::vector<int64_t> out;
    for (size_t i = 0; i < arr.size(); ++i) {
      const toml::node& el = arr[i];
      std::string path = fmt::format("{}[{}]", field, i);
      if (!el.is_integer())
        fail(el, path, fmt::format("expected an integer, found {}", type_name(el.type())));
      int64_t v = el.as_integer()->get();
      if (v < lo || v > hi) fail(el, path, fmt::format("{} is out of range [{}, {}]{}", v, lo, hi, why));
      if (std::find(out.begin(), out.end(), v) != out.end())
        fail(el, path, fmt::format("duplicate value {}", v));
      out.push_back(v);
    }
    return out;
  }

  std::vector<std::string> get_name_array(const toml::node& node, const std::string& field) const {
    const toml::array& arr = get_array(node, field, "strings", true);
    std::vector<std::string> out;
    for (size_t i = 0; i < arr.size(); ++i) {
      std::string path = fmt::format("{}[{}]", field, i);
      std::string v = get_nonempty_string(arr[i], path);
      if (std::find(out.begin(), out.end(), v) != out.end())
        fail(arr[i], path, fmt::format("duplicate value '{}'", v));
      out.push_back(std::move(v));
    }
    return out;
  }

  ToleranceOverride get_tolerance(const toml::node& node, const std::string& field) const {
    if (!node.is_table())
      fail(node, field, fmt::format("expected a table ([[tolerance]]), found {}", type_name(node.type())));
    const toml::table& t = *node.as_table();
    check_keys(t, kToleranceKeys, field + ".");
    ToleranceOverride o;
    const toml::node* kernel = t.get("kernel");
    if (!kernel) fail(node, field + ".kernel", "missing required key");
    o.kernel = get_nonempty_string(*kernel, field + ".kernel");
    // Every threshold is a bound on a non-negative metric, except cosine which lives in [-1, 1].
    auto bound = [&](const char* key, std::optional<double>& dst, double lo, double hi) {
      if (const toml::node* n = t.get(key)) {
        std::string path = field + "." + key;
        double v = get_number(*n, path);
        if (v < lo || v > hi) fail(*n, path, fmt::format("{} is out of range [{}, {}]", v, lo, hi));
        dst = v;
      }
    };
    constexpr double inf = std::numeric_limits<double>::infinity();
    bound("max_abs", o.max_abs, 0, inf);
    bound("max_rel", o.max_rel, 0, inf);
    bound("min_cosine", o.min_cosine, -1, 1);
    bound("max_nmse", o.max_nmse, 0, inf);
    if (!o.max_abs && !o.max_rel && !o.min_cosine && !o.max_nmse)
      fail(node, field, "overrides nothing: give at least one of max_abs, max_rel, min_cosine, max_nmse");
    // The reason is the point of the override: the central table is the default, a deviation must
    // say why so a reviewer can tell a justified loosening from papering over a bug.
    const toml::node* reason = t.get("reason");
    if (!reason)
      fail(node, field + ".reason", "missing required key: say why the central tolerance is not right here");
    o.reason = get_string(*reason, field + ".reason");
    if (o.reason.find_first_not_of(" \t\r\n") == std::string::npos)
      fail(*reason, field + ".reason", "must not be empty: say why the central tolerance is not right here");
    return o;
  }

  Parsed parse(std::string_view text) const {
    toml::table root;
    try {
      root = toml::parse(text, m_file.string());
    } catch (const toml::parse_error& e) {
      throw ScenarioError(m_file, e.source().begin.line, e.source().begin.column, "",
                          fmt::format("TOML syntax error: {}", e.description()));
    }
    check_keys(root, kTopKeys, "");

    Parsed out;
    Scenario& s = out.scenario;
    s.file = m_file;
    const toml::source_region doc_start{{1, 1}, {1, 1}, nullptr};
    auto required = [&](const char* key) -> const toml::node& {
      const toml::node* n = root.get(key);
      if (!n) fail(doc_start, key, "missing required key");
      return *n;
    };

    if (const toml::node* n = root.get("name")) {
      s.name = get_nonempty_string(*n, "name");
      out.name_line = n->source().begin.line;
      out.name_column = n->source().begin.column;
      if (!is_plain_name(s.name))
        fail(*n, "name", fmt::format("'{}' may only contain letters, digits, '-', '_' and '.'", s.name));
    } else {
      s.name = m_file.stem().string();
      if (!is_plain_name(s.name))
        fail(doc_start, "name",
             fmt::format("the file stem '{}' is not a usable scenario name (letters, digits, '-', '_', '.'); "
                         "set name explicitly",
                         s.name));
    }
    if (const toml::node* n = root.get("description")) s.description = get_string(*n, "description");

    // Model: a built-in name, else a .gguf path relative to the scenario file so that scenario
    // directories can be moved together with their models.
    const toml::node& model_node = required("model");
    s.model = get_nonempty_string(model_node, "model");
    const auto names = model_names();
    const bool builtin = std::find(names.begin(), names.end(), s.model) != names.end();
    if (!builtin) {
      std::filesystem::path p(s.model);
      if (p.extension() != ".gguf")
        fail(model_node, "model",
             fmt::format("unknown model '{}' (expected one of {}, or a path to a .gguf file)", s.model,
                         join(names)));
      if (p.is_relative()) p = m_file.parent_path() / p;
      p = p.lexically_normal();
      std::error_code ec;
      if (!std::filesystem::is_regular_file(p, ec))
        fail(model_node, "model",
             fmt::format("GGUF file '{}' does not exist or is not a regular file", p.string()));
      s.model = p.string();
    }

    if (const toml::node* n = root.get("scale")) {
      if (!builtin)
        fail(*n, "scale", "only applies to built-in models; a .gguf file already fixes its dimensions");
      s.scale = get_string(*n, "scale");
      if (s.scale != "full" && s.scale != "tiny")
        fail(*n, "scale", fmt::format("unknown scale '{}' (expected full or tiny)", s.scale));
    }
    int64_t max_context = std::numeric_limits<int64_t>::max();
    if (builtin) max_context = model_config(s.model, s.scale).context_length;

    const toml::node& phase_node = required("phase");
    std::string phase = get_string(phase_node, "phase");
    if (phase == "decode")
      s.phase = Phase::decode;
    else if (phase == "prefill")
      s.phase = Phase::prefill;
    else
      fail(phase_node, "phase", fmt::format("unknown phase '{}' (expected decode or prefill)", phase));

    const toml::node& tokens_node = required("tokens");
    if (s.phase == Phase::decode)
      s.tokens = get_int_array(tokens_node, "tokens", 1, kMaxDecodeTokens, false,
                               " (decode covers T = 1..4; use phase = \"prefill\" for T >= 5)");
    else
      s.tokens = get_int_array(tokens_node, "tokens", kMinPrefillTokens, max_context, false,
                               " (prefill starts at T = 5; use phase = \"decode\" for T = 1..4)");

    const toml::node& contexts_node = required("contexts");
    s.contexts = get_int_array(
        contexts_node, "contexts", 1, max_context, false,
        builtin ? fmt::format(" (the {} {} context_length is {})", s.model, s.scale, max_context)
                : std::string());
    // A step at context c with T new tokens writes positions up to c + T - 1, so c + T must fit in the
    // model's context; otherwise the KV cache (and RoPE tables) sized from the config would overflow.
    const int64_t max_tokens = *std::max_element(s.tokens.begin(), s.tokens.end());
    for (size_t i = 0; i < s.contexts.size(); ++i)
      if (s.contexts[i] > max_context - max_tokens)
        fail((*contexts_node.as_array())[i], fmt::format("contexts[{}]", i),
             fmt::format("{} + tokens {} exceeds the model's context_length {}", s.contexts[i], max_tokens,
                         max_context));

    const toml::node* run_node = root.get("run");
    if (run_node) {
      std::string run = get_string(*run_node, "run");
      if (run == "kernel")
        s.run = RunUnit::kernel;
      else if (run == "layer")
        s.run = RunUnit::layer;
      else if (run == "step")
        s.run = RunUnit::step;
      else
        fail(*run_node, "run", fmt::format("unknown run unit '{}' (expected kernel, layer or step)", run));
    }
    if (const toml::node* n = root.get("kernels")) {
      s.kernels = get_name_array(*n, "kernels");
      // A whole step always runs every kernel of the model; a list there would be silently ignored.
      if (s.run == RunUnit::step && !s.kernels.empty())
        fail(*n, "kernels", "must be empty with run = \"step\" (a step runs every kernel of the model)");
    }
    if (const toml::node* n = root.get("variants")) s.variants = get_name_array(*n, "variants");
    if (const toml::node* n = root.get("layouts")) s.layouts = get_name_array(*n, "layouts");
    if (const toml::node* n = root.get("tags")) s.tags = get_name_array(*n, "tags");
    if (const toml::node* n = root.get("seeds")) {
      s.seeds.clear();
      for (int64_t v : get_int_array(*n, "seeds", 0, std::numeric_limits<int64_t>::max(), false))
        s.seeds.push_back(static_cast<uint64_t>(v));
    }

    if (const toml::node* n = root.get("tolerance")) {
      if (!n->is_array())
        fail(*n, "tolerance",
             fmt::format("expected an array of tables (write [[tolerance]], not [tolerance]), found {}",
                         type_name(n->type())));
      const toml::array& arr = *n->as_array();
      std::map<std::string, size_t> seen;
      for (size_t i = 0; i < arr.size(); ++i) {
        std::string path = fmt::format("tolerance[{}]", i);
        ToleranceOverride o = get_tolerance(arr[i], path);
        // Two overrides for one kernel would leave the effective threshold depending on order.
        if (auto it = seen.find(o.kernel); it != seen.end())
          fail(*arr[i].as_table()->get("kernel"), path + ".kernel",
               fmt::format("kernel '{}' already has an override in tolerance[{}]", o.kernel, it->second));
        seen.emplace(o.kernel, i);
        s.tolerances.push_back(std::move(o));
      }
    }
    return out;
  }

 private:
  std::filesystem::path m_file;
};

std::string read_file(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec))
    throw ScenarioError(file, 0, 0, "", "no such scenario file (or not a regular file)");
  std::ifstream in(file, std::ios::binary);
  if (!in) throw ScenarioError(file, 0, 0, "", "cannot open for reading");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw ScenarioError(file, 0, 0, "", "read error");
  return ss.str();
}

Parsed load_parsed(const std::filesystem::path& file) { return Parser(file).parse(read_file(file)); }

}  // namespace

Scenario parse_scenario(std::string_view toml_text, const std::filesystem::path& file_name) {
  return Parser(file_name).parse(toml_text).scenario;
}

Scenario load_scenario(const std::filesystem::path& file) { return load_parsed(file).scenario; }

std::vector<Scenario> load_scenarios(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) throw ScenarioError(dir, 0, 0, "", "not a scenario directory");
  std::vector<std::filesystem::path> files;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file(ec) && it->path().extension() == ".toml") files.push_back(it->path());
  }
  if (ec) throw ScenarioError(dir, 0, 0, "", fmt::format("cannot list directory: {}", ec.message()));
  // Sorting the files first makes "which of two duplicates is reported" independent of readdir order.
  std::sort(files.begin(), files.end());

  std::vector<Scenario> out;
  std::map<std::string, std::pair<std::filesystem::path, int64_t>> first_by_name;
  for (const auto& f : files) {
    Parsed p = load_parsed(f);
    const std::string& name = p.scenario.name;
    if (auto it = first_by_name.find(name); it != first_by_name.end()) {
      const auto& [other, other_line] = it->second;
      std::string where = other_line > 0 ? fmt::format("{}:{}", other.string(), other_line) : other.string();
      throw ScenarioError(f, p.name_line, p.name_column, "name",
                          fmt::format("duplicate scenario name '{}' (already defined by {})", name, where));
    }
    first_by_name.emplace(name, std::make_pair(f, p.name_line));
    out.push_back(std::move(p.scenario));
  }
  std::sort(out.begin(), out.end(), [](const Scenario& a, const Scenario& b) { return a.name < b.name; });
  return out;
}

std::filesystem::path default_scenario_dir() {
  if (const char* env = std::getenv("FUSEBENCH_SCENARIOS"); env && *env) return env;
  std::error_code ec;
  std::filesystem::path source = FUSEBENCH_SOURCE_SCENARIOS;
  if (!source.empty() && std::filesystem::is_directory(source, ec)) return source;
  // Installed layout: <prefix>/bin/fusebench and <prefix>/share/fusebench/scenarios.
  std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    std::filesystem::path installed = exe.parent_path() / ".." / "share" / "fusebench" / "scenarios";
    if (std::filesystem::is_directory(installed, ec)) return installed.lexically_normal();
  }
  // Nothing found: still name the source tree's directory so the caller's error points somewhere real.
  return source.empty() ? std::filesystem::path("scenarios") : source;
}

}  // namespace fb
