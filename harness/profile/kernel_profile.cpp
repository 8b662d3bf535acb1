#include "harness/profile/kernel_profile.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <unordered_map>

namespace fb::profile {

std::string short_kernel_name(const std::string& demangled) {
  std::string s = demangled;
  // Kernels in an unnamed namespace demangle as "ns::(anonymous namespace)::k(...)": that '(' is not
  // the argument list, and the qualifier says nothing in a table.
  static const std::string kAnon = "(anonymous namespace)::";
  for (size_t at; (at = s.find(kAnon)) != std::string::npos;) s.erase(at, kAnon.size());
  // Drop the argument list: the last top-level '(' (templates may hold parentheses too).
  int depth = 0, parens = 0;
  size_t args = std::string::npos;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '<') ++depth;
    if (s[i] == '>') --depth;
    if (s[i] == '(') {
      if (depth == 0 && parens == 0 && i > 0) args = i;
      ++parens;
    }
    if (s[i] == ')') --parens;
  }
  if (args != std::string::npos) s.resize(args);
  if (s.rfind("void ", 0) == 0) s = s.substr(5);
  return s;
}

nlohmann::json aggregate(const ActivityLog& log, const std::vector<Group>& groups,
                         const std::string& domain) {
  std::unordered_map<uint32_t, uint64_t> group_of;  // correlation -> external id
  for (const auto& e : log.externals) group_of[e.correlation] = e.external_id;
  std::unordered_map<uint32_t, const ApiRecord*> api_of;
  for (const auto& a : log.apis) api_of[a.correlation] = &a;
  // Ranges per thread, sorted by start, for the innermost-range lookup.
  std::map<uint32_t, std::vector<const RangeRecord*>> ranges;
  size_t domain_ranges = 0;
  for (const auto& r : log.ranges) {
    if (r.domain != domain) continue;
    ranges[r.thread].push_back(&r);
    ++domain_ranges;
  }
  for (auto& [t, v] : ranges)
    std::sort(v.begin(), v.end(),
              [](const RangeRecord* a, const RangeRecord* b) { return a->start_ns < b->start_ns; });
  const bool have_nvtx = domain_ranges > 0;

  // Should the launch records name threads differently from the range records, fall back to the
  // ranges of every thread (the runner launches from one thread).
  std::vector<const RangeRecord*> all_ranges;
  for (const auto& [t, v] : ranges) all_ranges.insert(all_ranges.end(), v.begin(), v.end());
  std::sort(all_ranges.begin(), all_ranges.end(),
            [](const RangeRecord* a, const RangeRecord* b) { return a->start_ns < b->start_ns; });
  auto innermost = [&](const ApiRecord& a) -> const RangeRecord* {
    auto it = ranges.find(a.thread);
    const auto& candidates = it == ranges.end() ? all_ranges : it->second;
    const RangeRecord* best = nullptr;  // latest-starting range that contains the call
    for (const RangeRecord* r : candidates) {
      if (r->start_ns > a.start_ns) break;
      if (a.start_ns <= r->end_ns) best = r;
    }
    return best;
  };

  struct Acc {
    uint64_t calls = 0, ns = 0;
  };
  std::map<uint64_t, std::map<std::pair<std::string, std::string>, Acc>> per_group;
  std::map<uint64_t, uint64_t> outside;
  uint64_t ungrouped_ns = 0;
  for (const auto& k : log.kernels) {
    const uint64_t ns = k.end_ns > k.start_ns ? k.end_ns - k.start_ns : 0;
    auto g = group_of.find(k.correlation);
    if (g == group_of.end()) {
      ungrouped_ns += ns;
      continue;
    }
    std::string range = "(no NVTX)";
    if (have_nvtx) {
      auto a = api_of.find(k.correlation);
      const RangeRecord* r = a == api_of.end() ? nullptr : innermost(*a->second);
      if (r == nullptr) {
        outside[g->second] += ns;
        continue;
      }
      range = r->name;
    }
    Acc& acc = per_group[g->second][{range, k.name}];
    acc.calls += 1;
    acc.ns += ns;
  }

  nlohmann::json out = {{"method", "cupti-activity"},
                        {"nvtx_ranges", have_nvtx},
                        {"dropped_records", log.dropped},
                        {"ungrouped_ns", ungrouped_ns},
                        {"groups", nlohmann::json::array()}};
  for (const Group& grp : groups) {
    auto it = per_group.find(grp.id);
    uint64_t total = 0;
    std::vector<std::pair<std::pair<std::string, std::string>, Acc>> rows;
    if (it != per_group.end()) {
      for (const auto& [key, acc] : it->second) {
        total += acc.ns;
        rows.emplace_back(key, acc);
      }
    }
    std::sort(rows.begin(), rows.end(),
              [](const auto& a, const auto& b) { return a.second.ns > b.second.ns; });
    nlohmann::json g = {{"name", grp.name},
                        {"gpu_ns", total},
                        {"outside_ranges_ns", outside.count(grp.id) ? outside[grp.id] : 0},
                        {"kernels", nlohmann::json::array()}};
    for (const auto& [key, acc] : rows) {
      g["kernels"].push_back(
          {{"range", key.first},
           {"kernel", key.second},
           {"calls", acc.calls},
           {"gpu_ns", acc.ns},
           {"share_pct", total ? 100.0 * static_cast<double>(acc.ns) / static_cast<double>(total) : 0.0}});
    }
    out["groups"].push_back(std::move(g));
  }
  return out;
}

std::string render_table(const nlohmann::json& profile) {
  std::string s;
  for (const auto& g : profile.at("groups")) {
    s += fmt::format("{}  ({:.1f} us of kernel time in ranges{})\n", g.at("name").get<std::string>(),
                     g.at("gpu_ns").get<double>() / 1e3,
                     g.at("outside_ranges_ns").get<uint64_t>()
                         ? fmt::format(", {:.1f} us outside", g.at("outside_ranges_ns").get<double>() / 1e3)
                         : "");
    for (const auto& k : g.at("kernels")) {
      const uint64_t calls = k.at("calls").get<uint64_t>();
      s += fmt::format("  {:6.1f}%  {:>9.2f} us/call  x{:<6} {:<24} {}\n", k.at("share_pct").get<double>(),
                       calls ? k.at("gpu_ns").get<double>() / 1e3 / static_cast<double>(calls) : 0.0, calls,
                       k.at("range").get<std::string>(), k.at("kernel").get<std::string>());
    }
  }
  if (!profile.at("nvtx_ranges").get<bool>())
    s += "note: no NVTX range records arrived; kernels are attributed to their case only\n";
  if (profile.at("dropped_records").get<uint64_t>())
    s += fmt::format("warning: CUPTI dropped {} records\n", profile.at("dropped_records").get<uint64_t>());
  return s;
}

}  // namespace fb::profile
