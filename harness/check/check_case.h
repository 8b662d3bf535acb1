#pragma once
// One row of `fusebench check`'s verdict table.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "harness/check/metrics.h"

namespace fb {

enum class CheckStatus { pass, fail, skip };
const char* to_string(CheckStatus s);

struct CheckCase {
  std::string section;  // formats | fusion | gpu
  std::string name;     // e.g. "q4_K round trip", "gemma4-31b tiny q4_k"
  CheckStatus status = CheckStatus::pass;
  std::string criterion;  // what had to hold, e.g. "nmse <= 5e-3" or "bit-exact"
  std::string detail;     // metrics summary, or why skipped
  std::string repro;      // command line that reproduces this case
  nlohmann::json data = nlohmann::json::object();
};

nlohmann::json to_json(const CheckCase& c);
nlohmann::json to_json(const Metrics& m);

}  // namespace fb
