#include "harness/gate/compare.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <regex>

namespace fb::gate {

namespace {

using nlohmann::json;

std::string str(const json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
}

std::string env_label(const json& doc) {
  const json& env = doc.value("env", json::object());
  const std::string gpu = env.contains("device") ? str(env["device"], "name") : "";
  const std::string sha = str(env, "git_sha");
  return fmt::format("{} {}{}", gpu.empty() ? "no GPU" : gpu, sha.substr(0, 10),
                     env.value("git_dirty", false) ? "+dirty" : "");
}

bool injected(const json& doc) {
  const json& env = doc.value("env", json::object());
  return env.contains("injected_slowdown") && !env["injected_slowdown"].is_null();
}

double nmse_of(const json& cmp) {
  const json& m = cmp.value("metrics", json::object());
  return m.contains("nmse") && m["nmse"].is_number() ? m["nmse"].get<double>() : INFINITY;
}

void compare_numerics(const std::string& key, const json& b, const json& n, const CompareOptions& o,
                      std::vector<NumericsRow>& out) {
  if (b.value("verdict", "") == "pass" && n.value("verdict", "") == "fail") {
    out.push_back({key, "case", fmt::format("verdict pass -> fail: {}", str(n, "error"))});
  }
  // A case that stopped running is a lost check, not a neutral outcome: a skipped case has no
  // timing row either, so without this it would leave the gate without a trace.
  if (b.value("verdict", "") == "pass" && n.value("verdict", "") == "skip") {
    out.push_back({key, "case", fmt::format("verdict pass -> skip: {}", str(n, "skip_reason"))});
  }
  if (!b.contains("comparisons") || !n.contains("comparisons")) return;
  for (const json& cb : b["comparisons"]) {
    for (const json& cn : n["comparisons"]) {
      if (str(cb, "against") != str(cn, "against")) continue;
      const std::string against = str(cb, "against");
      const json& mb = cb.value("metrics", json::object());
      const json& mn = cn.value("metrics", json::object());
      if (cb.value("verdict", "") == "pass" && cn.value("verdict", "") != "pass") {
        out.push_back({key, against, fmt::format("verdict pass -> fail: {}", str(cn, "why"))});
      } else if (mb.value("bit_exact", false) && !mn.value("bit_exact", false)) {
        out.push_back({key, against, "was bit-exact, no longer"});
      } else if (mn.value("nonfinite", 0) > mb.value("nonfinite", 0)) {
        out.push_back(
            {key, against,
             fmt::format("non-finite outputs {} -> {}", mb.value("nonfinite", 0), mn.value("nonfinite", 0))});
      } else {
        const double nb = nmse_of(cb), nn = nmse_of(cn);
        if (nn > o.nmse_floor && nn > o.numerics_factor * std::max(nb, o.nmse_floor)) {
          out.push_back({key, against, fmt::format("nmse {:.3g} -> {:.3g}", nb, nn)});
        }
      }
    }
  }
}

// group -> kernel label -> share %, from a document's optional "profile" section.
std::map<std::string, std::map<std::string, double>> shares_of(const json& doc) {
  std::map<std::string, std::map<std::string, double>> out;
  if (!doc.contains("profile") || !doc["profile"].is_object()) return out;
  for (const json& g : doc["profile"].value("groups", json::array())) {
    for (const json& k : g.value("kernels", json::array())) {
      out[str(g, "name")][str(k, "range") + " / " + str(k, "kernel")] += k.value("share_pct", 0.0);
    }
  }
  return out;
}

}  // namespace

size_t Comparison::count(Change c) const {
  return static_cast<size_t>(
      std::count_if(rows.begin(), rows.end(), [&](const Row& r) { return r.decision.change == c; }));
}

bool Comparison::regressed(const CompareOptions& o) const {
  return count(Change::slower) > 0 || !numerics.empty() || (o.fail_on_unsure && count(Change::unsure) > 0);
}

std::string case_key(const json& c) {
  // The reproducer names the instance exactly (`--instance 'id'`); older files fall back to the shape.
  std::string instance;
  static const std::regex inst_re(R"(--instance '([^']*)')");
  std::smatch m;
  const std::string repro = str(c, "repro");
  if (std::regex_search(repro, m, inst_re)) {
    instance = m[1];
  } else if (c.contains("shape")) {
    for (const char* k : {"tensor", "instance", "check"}) {
      if (!str(c["shape"], k).empty()) {
        instance = str(c["shape"], k);
        break;
      }
    }
    if (instance.empty()) instance = "-";
  }
  return fmt::format("{} {} {} {} {} T{} ctx{} seed{}", str(c, "scenario"), str(c, "kernel"), instance,
                     str(c, "variant"), str(c, "layout"), c.value("tokens", 0), c.value("context", 0),
                     c.value("seed", 0));
}

std::vector<double> kept_samples(const json& timing) {
  std::vector<double> all, kept;
  if (!timing.is_object() || !timing.contains("samples")) return kept;
  const json& s = timing["samples"];
  const json& ms = s.value("ms", json::array());
  const json& thr = s.value("throttled", json::array());
  for (size_t i = 0; i < ms.size(); ++i) {
    all.push_back(ms[i].get<double>());
    if (i >= thr.size() || !thr[i].get<bool>()) kept.push_back(ms[i].get<double>());
  }
  return kept.empty() ? all : kept;  // same rule as the summary (harness/timing/timing.cpp)
}

std::vector<double> kept_cycles(const json& timing) {
  std::vector<double> all, kept;
  if (!timing.is_object() || !timing.contains("samples")) return kept;
  const json& s = timing["samples"];
  const json& ms = s.value("ms", json::array());
  const json& mhz = s.value("sm_clock_mhz", json::array());
  const json& thr = s.value("throttled", json::array());
  if (mhz.size() != ms.size()) return kept;
  for (size_t i = 0; i < ms.size(); ++i) {
    const double clock = mhz[i].get<double>();
    if (clock <= 0) return {};                           // unknown clock (CPU timing, no NVML): no cycle view
    const double kcycles = ms[i].get<double>() * clock;  // ms x MHz = thousands of cycles
    all.push_back(kcycles);
    if (i >= thr.size() || !thr[i].get<bool>()) kept.push_back(kcycles);
  }
  return kept.empty() ? all : kept;
}

std::vector<std::string> refusal_reasons(const json& base, const json& next, const CompareOptions& o) {
  std::vector<std::string> why;
  if ((injected(base) || injected(next)) && !o.allow_injected) {
    why.push_back(
        "a document was timed with an injected slowdown (test-only FUSEBENCH_INJECT_SLOWDOWN): "
        "not a real result");
  }
  if (o.force) return why;
  const json& eb = base.value("env", json::object());
  const json& en = next.value("env", json::object());
  const json& db = eb.value("device", json::object());
  const json& dn = en.value("device", json::object());
  for (const char* k : {"name", "sm_count", "compute_capability", "memory_bus_width_bits"}) {
    if (db.value(k, json()) != dn.value(k, json()))
      why.push_back(
          fmt::format("GPU {}: {} vs {}", k, db.value(k, json()).dump(), dn.value(k, json()).dump()));
  }
  for (const char* k : {"build_type", "compiler", "cuda_compiler"}) {
    if (eb.value(k, json()) != en.value(k, json()))
      why.push_back(
          fmt::format("build {}: {} vs {}", k, eb.value(k, json()).dump(), en.value(k, json()).dump()));
  }
  if (base.value("kind", "") != next.value("kind", ""))
    why.push_back(fmt::format("kind {} vs {}", base.value("kind", ""), next.value("kind", "")));
  return why;
}

Comparison compare_results(const json& base, const json& next, const CompareOptions& o) {
  Comparison out;
  out.base_label = env_label(base);
  out.next_label = env_label(next);
  const json& eb = base.value("env", json::object());
  const json& en = next.value("env", json::object());
  if (eb.value("device", json::object()).value("driver_string", "") !=
      en.value("device", json::object()).value("driver_string", "")) {
    out.env_notes.push_back("driver differs");
  }
  if (o.force) {
    CompareOptions strict = o;
    strict.force = false;
    for (auto& r : refusal_reasons(base, next, strict)) out.env_notes.push_back("forced: " + r);
  }
  // References into the documents themselves: by_key keeps pointers to next's cases.
  static const json kNoCases = json::array();
  const json& base_cases = base.contains("cases") ? base["cases"] : kNoCases;
  const json& next_cases = next.contains("cases") ? next["cases"] : kNoCases;
  // Two cases with the same key in one document (older files named instances without their
  // dimensions) are told apart by their order: "#2", "#3", ...
  auto keyed = [](const json& cases) {
    std::vector<std::pair<std::string, const json*>> out;
    std::map<std::string, int> seen;
    for (const json& c : cases) {
      std::string key = case_key(c);
      if (const int n = ++seen[key]; n > 1) key += fmt::format(" #{}", n);
      out.emplace_back(std::move(key), &c);
    }
    return out;
  };
  std::map<std::string, const json*> by_key;
  for (const auto& [key, c] : keyed(next_cases)) by_key[key] = c;
  std::map<std::string, bool> matched;
  size_t index = 0;
  for (const auto& [key, bp] : keyed(base_cases)) {
    const json& b = *bp;
    auto it = by_key.find(key);
    if (it == by_key.end()) {
      out.only_base.push_back(key);
      continue;
    }
    matched[key] = true;
    ++out.matched;
    const json& n = *it->second;
    compare_numerics(key, b, n, o, out.numerics);
    if (str(b, "backend") != str(n, "backend")) {
      out.env_notes.push_back(fmt::format("{}: backend {} vs {}, timing not compared", key, str(b, "backend"),
                                          str(n, "backend")));
      continue;
    }
    for (const char* m : {"hot", "cold"}) {
      if (!b.contains(m) || !n.contains(m) || b[m].is_null() || n[m].is_null()) continue;
      Row r;
      r.key = key;
      r.measurement = m;
      const auto sb = kept_samples(b[m]), sn = kept_samples(n[m]);
      r.base_ms = median(sb);
      r.next_ms = median(sn);
      r.base_n = sb.size();
      r.next_n = sn.size();
      GateOptions g = o.gate;
      g.seed = o.gate.seed + index++;  // independent resampling per row, reproducible
      r.decision = decide(sb, sn, g);
      // A change in time that vanishes in SM cycles (time x per-sample clock) is the GPU's clock
      // moving (power or thermal limits on compute-bound kernels), not the code: nvbench's robust
      // comparer likewise confirms a gap in cycle space. Such rows become UNSURE.
      if (r.decision.change == Change::slower || r.decision.change == Change::faster) {
        const auto cb = kept_cycles(b[m]), cn = kept_cycles(n[m]);
        if (!cb.empty() && !cn.empty()) {
          // The timer floor in the cycle unit: kcycles per ms is the base's median clock in MHz.
          GateOptions gc = g;
          if (r.base_ms > 0) gc.resolution_ms = g.resolution_ms * median(cb) / r.base_ms;
          const Decision in_cycles = decide(cb, cn, gc);
          if (in_cycles.change != r.decision.change) {
            r.decision.why =
                fmt::format("{} in time ({:+.2f}%) but {} in SM cycles ({:+.2f}%): the clock moved",
                            to_string(r.decision.change), 100 * r.decision.change_interval.estimate,
                            to_string(in_cycles.change), 100 * in_cycles.change_interval.estimate);
            r.decision.change = Change::unsure;
          }
        }
      }
      out.rows.push_back(std::move(r));
    }
  }
  for (const auto& [key, c] : by_key)
    if (!matched.count(key)) out.only_next.push_back(key);

  const auto sb = shares_of(base), sn = shares_of(next);
  for (const auto& [group, kernels] : sn) {
    auto g = sb.find(group);
    if (g == sb.end()) continue;
    std::map<std::string, std::pair<double, double>> both;
    for (const auto& [k, v] : g->second) both[k].first = v;
    for (const auto& [k, v] : kernels) both[k].second = v;
    for (const auto& [k, v] : both) out.shares.push_back({group, k, v.first, v.second});
  }
  return out;
}

namespace {

std::string fmt_ms(double ms) {
  return ms < 1.0 ? fmt::format("{:.2f} us", ms * 1e3) : fmt::format("{:.3f} ms", ms);
}

std::vector<const Row*> sorted_rows(const Comparison& c) {
  std::vector<const Row*> rows;
  for (const auto& r : c.rows) rows.push_back(&r);
  auto rank = [](Change ch) {
    return ch == Change::slower ? 0 : ch == Change::faster ? 1 : ch == Change::unsure ? 2 : 3;
  };
  std::stable_sort(rows.begin(), rows.end(), [&](const Row* a, const Row* b) {
    return rank(a->decision.change) < rank(b->decision.change);
  });
  return rows;
}

std::vector<const ShareRow*> moved_shares(const Comparison& c, double min_pp) {
  std::vector<const ShareRow*> out;
  for (const auto& s : c.shares)
    if (std::abs(s.next_pct - s.base_pct) >= min_pp) out.push_back(&s);
  std::sort(out.begin(), out.end(), [](const ShareRow* a, const ShareRow* b) {
    return std::abs(a->next_pct - a->base_pct) > std::abs(b->next_pct - b->base_pct);
  });
  return out;
}

std::string counts_line(const Comparison& c) {
  return fmt::format(
      "{} slower, {} faster, {} same, {} unsure; {} numerics worse; {} only in base, {} only in new",
      c.count(Change::slower), c.count(Change::faster), c.count(Change::same), c.count(Change::unsure),
      c.numerics.size(), c.only_base.size(), c.only_next.size());
}

}  // namespace

std::string render_text(const Comparison& c, const CompareOptions& o) {
  std::string s = fmt::format("compare: base {} -> new {}\n", c.base_label, c.next_label);
  s += fmt::format("{:<7} {:<4} {:>11} {:>11} {:>8}  {:<22} {}\n", "verdict", "meas", "base", "new", "change",
                   "interval", "case");
  for (const Row* r : sorted_rows(c)) {
    s += fmt::format("{:<7} {:<4} {:>11} {:>11} {:>+7.2f}%  [{:+6.2f}%,{:+6.2f}%]  {}\n",
                     to_string(r->decision.change), r->measurement, fmt_ms(r->base_ms), fmt_ms(r->next_ms),
                     100 * r->decision.change_interval.estimate, 100 * r->decision.lo, 100 * r->decision.hi,
                     r->key);
  }
  for (const auto& n : c.numerics)
    s += fmt::format("NUMERICS-WORSE {} vs {}: {}\n", n.key, n.against, n.what);
  for (const ShareRow* r : moved_shares(c, 1.0))
    s += fmt::format("share moved: {} {}: {:.1f}% -> {:.1f}%\n", r->group, r->kernel, r->base_pct,
                     r->next_pct);
  for (const auto& k : c.only_base) s += fmt::format("only in base: {}\n", k);
  for (const auto& k : c.only_next) s += fmt::format("only in new: {}\n", k);
  for (const auto& n : c.env_notes) s += fmt::format("note: {}\n", n);
  s += counts_line(c) + "\n";
  s += fmt::format(
      "gate: Mann-Whitney p < {:g}, min effect {:.1f}%, noise floor {:.1f}%, timer resolution {:g} us -> "
      "{}\n",
      o.gate.alpha, 100 * o.gate.min_effect, 100 * o.gate.noise_floor, 1e3 * o.gate.resolution_ms,
      c.regressed(o) ? "REGRESSION" : "ok");
  return s;
}

std::string render_markdown(const Comparison& c, const CompareOptions& o) {
  std::string s =
      fmt::format("## fusebench compare: {}\n\nbase `{}` → new `{}`\n\n",
                  c.regressed(o) ? "❌ regression" : "✅ no regression", c.base_label, c.next_label);
  s += fmt::format("**{}**\n\n", counts_line(c));
  s += fmt::format(
      "Gate: Mann-Whitney U p < {:g} on the kept samples and a {:.0f}% bootstrap interval of the median "
      "change widened to ±{:.1f}% (run-to-run noise floor); SLOWER when significant, a {:.1f}% "
      "slowdown is inside the interval and the medians differ by at least {:g} µs (CUDA event timer "
      "resolution; a smaller change is SAME or UNSURE, never SLOWER/FASTER).\n\n",
      o.gate.alpha, 100 * o.gate.confidence, 100 * o.gate.noise_floor, 100 * o.gate.min_effect,
      1e3 * o.gate.resolution_ms);
  auto table_head = [] {
    return std::string(
        "| verdict | meas | case | base | new | change | interval | p "
        "|\n|---|---|---|---:|---:|---:|---|---:|\n");
  };
  auto row = [](const Row& r) {
    return fmt::format("| {} | {} | `{}` | {} | {} | {:+.2f}% | [{:+.2f}%, {:+.2f}%] | {:.2g} |\n",
                       to_string(r.decision.change), r.measurement, r.key, fmt_ms(r.base_ms),
                       fmt_ms(r.next_ms), 100 * r.decision.change_interval.estimate, 100 * r.decision.lo,
                       100 * r.decision.hi, r.decision.test.p);
  };
  const auto rows = sorted_rows(c);
  std::string flagged;
  for (const Row* r : rows)
    if (r->decision.change == Change::slower || r->decision.change == Change::faster) flagged += row(*r);
  if (!flagged.empty()) s += "### Changed\n\n" + table_head() + flagged + "\n";
  if (!c.numerics.empty()) {
    s += "### Numerics worse\n\n| case | against | what |\n|---|---|---|\n";
    for (const auto& n : c.numerics) s += fmt::format("| `{}` | {} | {} |\n", n.key, n.against, n.what);
    s += "\n";
  }
  if (const auto moved = moved_shares(c, 1.0); !moved.empty()) {
    s += "### Kernel share moved (≥ 1 pp)\n\n| group | range / kernel | base | new |\n|---|---|---:|---:|\n";
    for (const ShareRow* r : moved)
      s += fmt::format("| {} | `{}` | {:.1f}% | {:.1f}% |\n", r->group, r->kernel, r->base_pct, r->next_pct);
    s += "\n";
  }
  if (!c.only_base.empty() || !c.only_next.empty()) {
    s += "### Unmatched cases\n\n";
    for (const auto& k : c.only_base) s += fmt::format("- only in base: `{}`\n", k);
    for (const auto& k : c.only_next) s += fmt::format("- only in new: `{}`\n", k);
    s += "\n";
  }
  for (const auto& n : c.env_notes) s += fmt::format("> note: {}\n", n);
  s += "\n<details><summary>All timings</summary>\n\n" + table_head();
  for (const Row* r : rows) s += row(*r);
  s += "\n</details>\n";
  return s;
}

nlohmann::json to_json(const Comparison& c, const CompareOptions& o) {
  json rows = json::array();
  for (const Row& r : c.rows) {
    rows.push_back({{"case", r.key},
                    {"measurement", r.measurement},
                    {"change", to_string(r.decision.change)},
                    {"base_median_ms", r.base_ms},
                    {"new_median_ms", r.next_ms},
                    {"base_n", r.base_n},
                    {"new_n", r.next_n},
                    {"estimate", r.decision.change_interval.estimate},
                    {"bootstrap_lo", r.decision.change_interval.lo},
                    {"bootstrap_hi", r.decision.change_interval.hi},
                    {"lo", r.decision.lo},
                    {"hi", r.decision.hi},
                    {"p", r.decision.test.p},
                    {"below_resolution", r.decision.below_resolution},
                    {"why", r.decision.why}});
  }
  json numerics = json::array();
  for (const auto& n : c.numerics)
    numerics.push_back({{"case", n.key}, {"against", n.against}, {"what", n.what}});
  return {{"base", c.base_label},
          {"new", c.next_label},
          {"options",
           {{"alpha", o.gate.alpha},
            {"min_effect", o.gate.min_effect},
            {"noise_floor", o.gate.noise_floor},
            {"resolution_ms", o.gate.resolution_ms},
            {"confidence", o.gate.confidence},
            {"resamples", o.gate.resamples}}},
          {"regressed", c.regressed(o)},
          {"rows", rows},
          {"numerics", numerics},
          {"only_base", c.only_base},
          {"only_new", c.only_next}};
}

}  // namespace fb::gate
