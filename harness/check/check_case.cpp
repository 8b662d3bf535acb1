#include "harness/check/check_case.h"

namespace fb {

const char* to_string(CheckStatus s) {
  switch (s) {
    case CheckStatus::pass:
      return "PASS";
    case CheckStatus::fail:
      return "FAIL";
    case CheckStatus::skip:
      return "SKIP";
  }
  return "?";
}

nlohmann::json to_json(const Metrics& m) {
  nlohmann::json ulps = nlohmann::json::object();
  for (const auto& [bucket, count] : m.ulp_histogram) ulps[std::to_string(bucket)] = count;
  return {{"n", m.n},
          {"bit_exact", m.bit_exact},
          {"mismatches", m.mismatches},
          {"nonfinite", m.nonfinite},
          {"max_abs", m.max_abs},
          {"max_abs_index", m.max_abs_index},
          {"max_rel", m.max_rel},
          {"cosine", m.cosine},
          {"nmse", m.nmse},
          {"ulp_histogram", ulps}};
}

nlohmann::json to_json(const CheckCase& c) {
  return {{"section", c.section},
          {"name", c.name},
          {"status", to_string(c.status)},
          {"criterion", c.criterion},
          {"detail", c.detail},
          {"repro", c.repro},
          {"data", c.data}};
}

}  // namespace fb
