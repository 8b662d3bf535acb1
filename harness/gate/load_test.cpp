// load_results rejects what the schema rejects, naming the file and the JSON pointer: unknown keys
// are errors, not ignored, and so are wrong types (issue 7).
#include "harness/gate/load.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "harness/cli/exit_codes.h"
#include "harness/gate/compare_command.h"

namespace fb::gate {
namespace {

namespace fs = std::filesystem;
const fs::path kExample = fs::path(FUSEBENCH_SOURCE_DIR) / "results/schema/examples/example-bench.json";

nlohmann::json example() {
  std::ifstream in(kExample);
  return nlohmann::json::parse(in);
}

// The CliError message for `doc` written to a file, or "" when it loads.
std::string load_error(const nlohmann::json& doc, fs::path* where = nullptr) {
  const fs::path p = fs::temp_directory_path() / ("fb_gate_load_" + std::to_string(::getpid()) + ".json");
  if (where) *where = p;
  std::ofstream(p) << doc.dump();
  std::string msg;
  try {
    (void)load_results(p);
  } catch (const CliError& e) {
    EXPECT_EQ(e.code(), kExitBadInput) << e.what();
    msg = e.what();
  }
  fs::remove(p);
  return msg;
}

TEST(GateLoad, TheExampleLoads) { EXPECT_EQ(load_error(example()), ""); }

TEST(GateLoad, UnknownTopLevelKeyIsRejectedWithFileAndPointer) {
  auto doc = example();
  doc["sumary"] = doc["summary"];
  fs::path p;
  const std::string msg = load_error(doc, &p);
  EXPECT_NE(msg.find(p.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("sumary"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected a document matching"), std::string::npos) << msg;
}

TEST(GateLoad, UnknownKeyInACaseIsRejected) {
  auto doc = example();
  doc["cases"][0]["median_ms_typo"] = 1.0;
  const std::string msg = load_error(doc);
  EXPECT_NE(msg.find("/cases/0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("median_ms_typo"), std::string::npos) << msg;
}

TEST(GateLoad, WrongTypeNamesThePointer) {
  auto doc = example();
  doc["cases"][0]["bytes"] = "many";
  const std::string msg = load_error(doc);
  EXPECT_NE(msg.find("/cases/0/bytes"), std::string::npos) << msg;
}

// Inputs the results fuzzer found: each once escaped as something other than a bad-input CliError
// (json out_of_range on a number overflow, type_error from value<T>() on a mistyped header).
TEST(GateLoad, FuzzRegressionsAreBadInputNamingTheFile) {
  const fs::path dir = fs::path(FUSEBENCH_SOURCE_DIR) / "harness/gate/testdata/fuzz-regressions";
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    SCOPED_TRACE(e.path().string());
    ++n;
    try {
      (void)load_results(e.path());
      ADD_FAILURE() << "loaded";
    } catch (const CliError& err) {
      EXPECT_EQ(err.code(), kExitBadInput) << err.what();
      EXPECT_NE(std::string(err.what()).find(e.path().filename().string()), std::string::npos) << err.what();
    }
  }
  EXPECT_GE(n, 3);
}

TEST(GateCompareCommand, DisjointDocumentsAreRefusedNotPassed) {
  const fs::path dir = fs::temp_directory_path() / ("fb_gate_disjoint_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  nlohmann::json other = example();
  for (auto& c : other["cases"]) c["scenario"] = "another-scenario";
  std::ofstream(dir / "base.json") << example().dump();
  std::ofstream(dir / "other.json") << other.dump();
  const CompareOptions o;
  EXPECT_EQ(run_compare((dir / "base.json").string(), dir / "base.json", o, ""), kExitOk);
  try {
    (void)run_compare((dir / "base.json").string(), dir / "other.json", o, "");
    ADD_FAILURE() << "a comparison with no case in common passed";
  } catch (const CliError& e) {
    EXPECT_EQ(e.code(), kExitUsage);
    EXPECT_NE(std::string(e.what()).find("nothing to compare"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace fb::gate
