// validate_results: a small interpreter for the subset of JSON Schema 2020-12 that
// results/schema/fusebench-results.schema.json uses, run on the schema itself (compiled in). Reading
// the schema rather than restating it in C++ is what keeps this validator and
// scripts/validate_results.py in agreement. A keyword outside the subset is reported as a problem,
// never ignored, so extending the schema without extending this file fails the tests.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "harness/results/results.h"

namespace fb {

namespace {

using nlohmann::json;

// Keywords that only annotate; they never make a document invalid.
bool is_annotation(const std::string& k) {
  return k == "$schema" || k == "$id" || k == "title" || k == "description" || k == "$defs";
}

std::string escape_pointer_token(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '~')
      out += "~0";
    else if (c == '/')
      out += "~1";
    else
      out += c;
  }
  return out;
}

std::string type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "integer";
    case json::value_t::number_float:
      return "number";
    case json::value_t::string:
      return "string";
    case json::value_t::array:
      return "array";
    case json::value_t::object:
      return "object";
    default:
      return "other";
  }
}

bool has_type(const json& v, const std::string& t) {
  if (t == "null") return v.is_null();
  if (t == "boolean") return v.is_boolean();
  if (t == "string") return v.is_string();
  if (t == "array") return v.is_array();
  if (t == "object") return v.is_object();
  if (t == "number") return v.is_number();
  // JSON Schema counts 3.0 as an integer, as Python's jsonschema does.
  if (t == "integer")
    return v.is_number_integer() || (v.is_number_float() && std::isfinite(v.get<double>()) &&
                                     std::trunc(v.get<double>()) == v.get<double>());
  return false;
}

class Checker {
 public:
  Checker(const json& root, std::vector<std::string>& out) : root_(root), out_(out) {}

  void check(const json& schema, const json& v, const std::string& ptr) {
    if (schema.is_boolean()) {
      if (!schema.get<bool>()) report(ptr, "no value is allowed here");
      return;
    }
    if (!schema.is_object()) return report(ptr, "schema error: a subschema is not an object");
    for (const auto& [key, arg] : schema.items()) {
      if (is_annotation(key)) continue;
      if (key == "$ref") {
        ref(arg, v, ptr);
      } else if (key == "type") {
        type(arg, v, ptr);
      } else if (key == "const") {
        if (v != arg) report(ptr, fmt::format("must be {}", arg.dump()));
      } else if (key == "enum") {
        if (std::find(arg.begin(), arg.end(), v) == arg.end())
          report(ptr, fmt::format("{} is not one of {}", v.dump(), arg.dump()));
      } else if (key == "required") {
        if (v.is_object())
          for (const auto& k : arg)
            if (!v.contains(k.get<std::string>()))
              report(ptr, fmt::format("required key '{}' is missing", k.get<std::string>()));
      } else if (key == "properties") {
        if (v.is_object())
          for (const auto& [k, sub] : arg.items())
            if (v.contains(k)) check(sub, v.at(k), ptr + "/" + escape_pointer_token(k));
      } else if (key == "additionalProperties") {
        if (v.is_object()) additional(schema, arg, v, ptr);
      } else if (key == "items") {
        if (v.is_array())
          for (size_t i = 0; i < v.size(); ++i) check(arg, v[i], fmt::format("{}/{}", ptr, i));
      } else if (key == "minimum") {
        if (v.is_number() && v.get<double>() < arg.get<double>())
          report(ptr, fmt::format("{} is less than the minimum {}", v.dump(), arg.dump()));
      } else if (key == "pattern") {
        if (v.is_string() && !std::regex_search(v.get<std::string>(), std::regex(arg.get<std::string>())))
          report(ptr, fmt::format("{} does not match {}", v.dump(), arg.get<std::string>()));
      } else if (key == "anyOf") {
        any_of(arg, v, ptr);
      } else {
        report(ptr, fmt::format("schema error: keyword '{}' is not supported by the C++ validator", key));
      }
    }
  }

 private:
  void report(const std::string& ptr, const std::string& what) {
    out_.push_back(fmt::format("{}: {}", ptr.empty() ? "/" : ptr, what));
  }

  void ref(const json& arg, const json& v, const std::string& ptr) {
    // Only local references ("#/$defs/name") are used; anything else is a schema the C++ side
    // cannot follow.
    const std::string r = arg.get<std::string>();
    if (r.rfind("#/", 0) != 0) return report(ptr, fmt::format("schema error: unsupported $ref '{}'", r));
    const json::json_pointer target(r.substr(1));
    if (!root_.contains(target)) return report(ptr, fmt::format("schema error: $ref '{}' not found", r));
    check(root_.at(target), v, ptr);
  }

  void type(const json& arg, const json& v, const std::string& ptr) {
    std::vector<std::string> types;
    if (arg.is_string())
      types.push_back(arg.get<std::string>());
    else
      for (const auto& t : arg) types.push_back(t.get<std::string>());
    for (const auto& t : types)
      if (has_type(v, t)) return;
    report(ptr, fmt::format("expected {}, got {}", fmt::join(types, " or "), type_name(v)));
  }

  void additional(const json& schema, const json& arg, const json& v, const std::string& ptr) {
    const json* props = schema.contains("properties") ? &schema.at("properties") : nullptr;
    for (const auto& [k, sub] : v.items()) {
      if (props && props->contains(k)) continue;
      if (arg.is_boolean() && !arg.get<bool>())
        report(ptr, fmt::format("unexpected key '{}'", k));
      else
        check(arg, sub, ptr + "/" + escape_pointer_token(k));
    }
  }

  void any_of(const json& branches, const json& v, const std::string& ptr) {
    std::vector<std::vector<std::string>> errors;
    for (const auto& b : branches) {
      std::vector<std::string> e;
      Checker(root_, e).check(b, v, ptr);
      if (e.empty()) return;
      errors.push_back(std::move(e));
    }
    // Report the branch that came closest (fewest problems): for "timing or null" given a broken
    // timing object, its own problems say more than "matches no alternative".
    const auto best = std::min_element(errors.begin(), errors.end(),
                                       [](const auto& a, const auto& b) { return a.size() < b.size(); });
    // When every branch failed on the value's type alone, one line naming all types reads better.
    const bool all_type = std::all_of(errors.begin(), errors.end(), [&](const auto& e) {
      return e.size() == 1 && e[0].find(": expected ") != std::string::npos &&
             e[0].rfind((ptr.empty() ? "/" : ptr) + ": ", 0) == 0;
    });
    if (all_type && errors.size() > 1) {
      std::vector<std::string> wants;
      for (const auto& e : errors) {
        const auto at = e[0].find(": expected ") + 11;
        wants.push_back(e[0].substr(at, e[0].find(", got ") - at));
      }
      return report(ptr, fmt::format("expected {}, got {}", fmt::join(wants, " or "), type_name(v)));
    }
    out_.insert(out_.end(), best->begin(), best->end());
  }

  const json& root_;
  std::vector<std::string>& out_;
};

const json& schema() {
  // Parsed once; a parse failure is a build defect (the schema is checked in and tested), so let the
  // exception escape to the first caller rather than validating against nothing.
  static const json s = json::parse(results_schema_text());
  return s;
}

// What JSON Schema cannot express; run only on a document that already passed the schema, so the
// shapes it walks are known to be right.
void cross_field_checks(const json& doc, std::vector<std::string>& out) {
  auto timing = [&](const json& t, const std::string& ptr) {
    if (t.is_null()) return;
    const json& s = t.at("samples");
    const size_t n = s.at("ms").size();
    if (s.at("sm_clock_mhz").size() != n || s.at("throttled").size() != n)
      out.push_back(fmt::format("{}/samples: columns differ in length: ms {}, sm_clock_mhz {}, throttled {}",
                                ptr, n, s.at("sm_clock_mhz").size(), s.at("throttled").size()));
  };
  if (!doc.at("baselines").is_null()) {
    timing(doc.at("baselines").at("copy"), "/baselines/copy");
    timing(doc.at("baselines").at("gemm"), "/baselines/gemm");
  }
  uint64_t passed = 0, failed = 0, skipped = 0;
  const json& cases = doc.at("cases");
  for (size_t i = 0; i < cases.size(); ++i) {
    timing(cases[i].at("hot"), fmt::format("/cases/{}/hot", i));
    timing(cases[i].at("cold"), fmt::format("/cases/{}/cold", i));
    // Optional: absent in files written before schema_minor 1.
    if (cases[i].contains("b2b")) timing(cases[i].at("b2b"), fmt::format("/cases/{}/b2b", i));
    const std::string v = cases[i].at("verdict").get<std::string>();
    (v == "pass" ? passed : v == "fail" ? failed : skipped) += 1;
  }
  const json& summary = doc.at("summary");
  const std::pair<const char*, uint64_t> counts[] = {
      {"passed", passed}, {"failed", failed}, {"skipped", skipped}};
  for (const auto& [key, count] : counts)
    if (summary.at(key).get<double>() != static_cast<double>(count))
      out.push_back(fmt::format("/summary/{}: {} but the cases have {}", key, summary.at(key).dump(), count));
}

}  // namespace

std::vector<std::string> validate_results(const nlohmann::json& doc) {
  std::vector<std::string> problems;
  Checker(schema(), problems).check(schema(), doc, "");
  if (problems.empty()) cross_field_checks(doc, problems);
  return problems;
}

}  // namespace fb
