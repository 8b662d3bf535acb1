// The test-only injected slowdown is recorded in the results env and such results are refused by
// the gate: an injected run can never pass for a real one.
#include <gtest/gtest.h>
#include <stdlib.h>

#include "harness/gate/compare.h"
#include "harness/results/results.h"
#include "harness/timing/inject_slowdown.h"

namespace fb::gate {
namespace {

struct EnvVar {
  explicit EnvVar(const char* value) { setenv(kInjectSlowdownEnv, value, 1); }
  ~EnvVar() { unsetenv(kInjectSlowdownEnv); }
};

TEST(InjectedSlowdown, RecordedInEnvAndRefused) {
  nlohmann::json env_off = to_json(capture_env(0, nullptr, 0));
  EXPECT_FALSE(env_off.contains("injected_slowdown"));
  EnvVar on("0.03");
  nlohmann::json env_on = to_json(capture_env(0, nullptr, 0));
  ASSERT_TRUE(env_on.contains("injected_slowdown"));
  EXPECT_DOUBLE_EQ(env_on["injected_slowdown"].get<double>(), 0.03);
  EXPECT_NE(results_schema_text().find("injected_slowdown"), std::string::npos);

  const nlohmann::json base = {{"kind", "bench"}, {"env", env_off}, {"cases", nlohmann::json::array()}};
  const nlohmann::json next = {{"kind", "bench"}, {"env", env_on}, {"cases", nlohmann::json::array()}};
  CompareOptions o;
  o.force = true;  // not even --force accepts it
  EXPECT_FALSE(refusal_reasons(base, next, o).empty());
}

TEST(InjectedSlowdown, MalformedValueFailsEarly) {
  EnvVar bad("3%");
  EXPECT_THROW(injected_slowdown_fraction(), std::invalid_argument);
}

TEST(InjectedSlowdown, ZeroIsOff) {
  EnvVar zero("0");
  EXPECT_FALSE(injected_slowdown_fraction().has_value());
}

}  // namespace
}  // namespace fb::gate
