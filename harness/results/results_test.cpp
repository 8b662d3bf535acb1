#include "harness/results/results.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "reference/util/scoped_env.h"

namespace fb {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kExamples = fs::path(FUSEBENCH_SOURCE_DIR) / "results/schema/examples";

json load(const fs::path& p) {
  std::ifstream in(p);
  if (!in) throw std::runtime_error("cannot open " + p.string());
  return json::parse(in);
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += "  " + x + "\n";
  return s;
}

// A fresh directory under the system temp dir, removed afterwards.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "fb_results_test.XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(path_)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  fs::path path_;
};

// ---- capture_env ------------------------------------------------------------------------------

TEST(CaptureEnv, RecordsHostBuildArgvSeedAndTime) {
  ScopedEnv sha("FUSEBENCH_GIT_SHA", nullptr), dirty("FUSEBENCH_GIT_DIRTY", nullptr);
  const char* argv[] = {"fusebench", "check", "--seed", "7"};
  const RunEnv env = capture_env(4, argv, 7);
  EXPECT_FALSE(env.host.empty());
  EXPECT_FALSE(env.os.empty());
  EXPECT_FALSE(env.compiler.empty());
  EXPECT_FALSE(env.git_sha.empty());
  EXPECT_EQ(env.argv, (std::vector<std::string>{"fusebench", "check", "--seed", "7"}));
  EXPECT_EQ(env.seed, 7u);
  EXPECT_TRUE(
      std::regex_match(env.started_utc, std::regex(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z)")))
      << env.started_utc;
  if (env.git_sha == "unknown") {
    EXPECT_TRUE(env.git_dirty) << "an unvouched tree must count as dirty";
  }

  const json j = to_json(env);
  for (const char* key : {"host", "os", "git_sha", "git_dirty", "build_type", "compiler", "cuda_compiler",
                          "argv", "seed", "started_utc", "device"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_EQ(j.at("seed"), 7);
}

// The env this binary writes must pass the schema: a document around the real capture_env/to_json
// (including fb_device's to_json(DeviceInfo)) is validated, so a drifted key is caught here.
TEST(CaptureEnv, RealEnvPassesTheSchema) {
  ScopedEnv sha("FUSEBENCH_GIT_SHA", nullptr), dirty("FUSEBENCH_GIT_DIRTY", nullptr);
  const char* argv[] = {"fusebench"};
  json doc = load(kExamples / "example-check.json");
  doc["env"] = to_json(capture_env(1, argv, 0));
  const auto problems = validate_results(doc);
  EXPECT_TRUE(problems.empty()) << joined(problems) << doc["env"].dump(2);
}

TEST(CaptureEnv, GitShaOverrideFromEnvironment) {
  const char* argv[] = {"fusebench"};
  {
    ScopedEnv sha("FUSEBENCH_GIT_SHA", "ABCDEF0123456789abcdef0123456789abcdef01"),
        dirty("FUSEBENCH_GIT_DIRTY", "no");
    const RunEnv env = capture_env(1, argv, 0);
    EXPECT_EQ(env.git_sha, "abcdef0123456789abcdef0123456789abcdef01");  // normalized to lower case
    EXPECT_FALSE(env.git_dirty);
  }
  {
    ScopedEnv sha("FUSEBENCH_GIT_SHA", "abcdef0"), dirty("FUSEBENCH_GIT_DIRTY", "yes");
    EXPECT_TRUE(capture_env(1, argv, 0).git_dirty);
  }
  {
    // A sha from elsewhere without a dirty flag: nothing vouches for the tree.
    ScopedEnv sha("FUSEBENCH_GIT_SHA", "0123456789abcdef0123456789abcdef01234567"),
        dirty("FUSEBENCH_GIT_DIRTY", nullptr);
    EXPECT_TRUE(capture_env(1, argv, 0).git_dirty);
  }
  {
    // An abbreviation of the configured commit is that commit: its full sha and dirty flag stay.
    ScopedEnv unset("FUSEBENCH_GIT_SHA", nullptr), dirty("FUSEBENCH_GIT_DIRTY", nullptr);
    const RunEnv configured = capture_env(1, argv, 0);
    if (configured.git_sha != "unknown") {
      ScopedEnv sha("FUSEBENCH_GIT_SHA", configured.git_sha.substr(0, 7).c_str());
      const RunEnv env = capture_env(1, argv, 0);
      EXPECT_EQ(env.git_sha, configured.git_sha);
      EXPECT_EQ(env.git_dirty, configured.git_dirty);
    }
  }
  {
    ScopedEnv sha("FUSEBENCH_GIT_SHA", "not-a-sha"), dirty("FUSEBENCH_GIT_DIRTY", nullptr);
    EXPECT_THROW(capture_env(1, argv, 0), std::invalid_argument);
  }
  {
    ScopedEnv sha("FUSEBENCH_GIT_SHA", "abcdef0"), dirty("FUSEBENCH_GIT_DIRTY", "maybe");
    EXPECT_THROW(capture_env(1, argv, 0), std::invalid_argument);
  }
}

// ---- write_json_atomically --------------------------------------------------------------------

TEST(WriteJsonAtomically, CreatesAndReplaces) {
  TempDir dir;
  const fs::path target = dir.path() / "results.json";
  write_json_atomically(target, json{{"v", 1}});
  EXPECT_EQ(load(target), (json{{"v", 1}}));
  write_json_atomically(target, json{{"v", 2}, {"inf", INFINITY}});
  EXPECT_EQ(load(target), (json{{"v", 2}, {"inf", nullptr}}));  // JSON has no Inf: null
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"results.json"}) << "no temp file may remain";
}

TEST(WriteJsonAtomically, TargetIsADirectoryLeavesNoTempFile) {
  TempDir dir;
  const fs::path target = dir.path() / "results.json";
  fs::create_directory(target);
  write_json_atomically(dir.path() / "other.json", json{{"keep", true}});
  try {
    write_json_atomically(target, json{{"v", 1}});
    FAIL() << "writing over a directory must throw";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(target.string()), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::is_directory(target));
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"other.json", "results.json"}));
  EXPECT_EQ(load(dir.path() / "other.json"), (json{{"keep", true}}));
}

TEST(WriteJsonAtomically, FailedWriteKeepsTheOldFile) {
  TempDir dir;
  const fs::path target = dir.path() / "results.json";
  write_json_atomically(target, json{{"v", "old"}});
  const std::string before = read_text(target);
  // Invalid UTF-8 makes the serializer throw; it must throw before any file is touched.
  EXPECT_ANY_THROW(write_json_atomically(target, json{{"v", std::string("\xff\xfe")}}));
  EXPECT_EQ(read_text(target), before);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"results.json"});
}

TEST(WriteJsonAtomically, UnwritableDirectoryThrowsNamingPathAndReason) {
  TempDir dir;
  const fs::path target = dir.path() / "results.json";
  write_json_atomically(target, json{{"v", "old"}});
  const std::string before = read_text(target);
  fs::permissions(dir.path(), fs::perms::owner_read | fs::perms::owner_exec);
  if (access(dir.path().c_str(), W_OK) == 0) {  // root ignores permission bits
    fs::permissions(dir.path(), fs::perms::owner_all);
    GTEST_SKIP() << "running as a user that can write to a read-only directory (root)";
  }
  try {
    write_json_atomically(target, json{{"v", "new"}});
    ADD_FAILURE() << "writing into a read-only directory must throw";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(target.string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("Permission denied"), std::string::npos) << e.what();
  }
  fs::permissions(dir.path(), fs::perms::owner_all);
  EXPECT_EQ(read_text(target), before);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"results.json"});
}

TEST(WriteJsonAtomically, MissingDirectoryThrows) {
  TempDir dir;
  EXPECT_THROW(write_json_atomically(dir.path() / "no/such/dir/results.json", json::object()),
               std::runtime_error);
  EXPECT_TRUE(dir.entries().empty());
}

// ---- validate_results -------------------------------------------------------------------------

TEST(ValidateResults, AcceptsTheExampleFiles) {
  for (const char* name : {"example-check.json", "example-bench.json"}) {
    const auto problems = validate_results(load(kExamples / name));
    EXPECT_TRUE(problems.empty()) << name << ":\n" << joined(problems);
  }
}

TEST(ValidateResults, EmbeddedSchemaIsTheCheckedInFile) {
  const fs::path schema = fs::path(FUSEBENCH_SOURCE_DIR) / "results/schema/fusebench-results.schema.json";
  EXPECT_EQ(json::parse(results_schema_text()), load(schema))
      << "reconfigure: the build embeds a stale schema";
}

// Visits every value in `doc` with its JSON pointer, skipping the inside of the open "shape" objects.
void visit(const json& v, const json::json_pointer& at,
           const std::function<void(const json::json_pointer&)>& fn) {
  fn(at);
  if (!at.empty() && at.back() == "shape") return;
  if (v.is_object())
    for (const auto& [k, sub] : v.items()) visit(sub, at / k, fn);
  else if (v.is_array())
    for (size_t i = 0; i < v.size(); ++i) visit(v[i], at / i, fn);
}

// A value of a type the schema never allows where `v` is allowed (every field has one fixed type,
// possibly also null).
json mistyped(const json& v) {
  if (v.is_string()) return 12345;
  if (v.is_object() || v.is_null()) return "x";
  return json::object();  // numbers, booleans, arrays
}

// Keys added by a schema_minor bump: optional, so files written before them still validate and load.
bool added_by_a_minor(const std::string& key) {
  return key == "schema_minor" || key == "launches_per_sample" || key == "b2b";
}

// Every key of every object (closed objects: all of them are required, except those a minor version
// added) removed in turn must be rejected; so must every value replaced by a wrongly-typed one.
TEST(ValidateResults, RejectsEachRemovedOrMistypedField) {
  for (const char* name : {"example-check.json", "example-bench.json"}) {
    const json good = load(kExamples / name);
    size_t removals = 0, mistypes = 0;
    visit(good, json::json_pointer(), [&](const json::json_pointer& at) {
      if (at.empty()) return;
      json bad = good;
      const json::json_pointer parent = at.parent_pointer();
      if (bad.at(parent).is_object() && !added_by_a_minor(at.back())) {
        bad.at(parent).erase(at.back());
        EXPECT_FALSE(validate_results(bad).empty())
            << name << ": removing " << at.to_string() << " was accepted";
        ++removals;
      }
      bad = good;
      bad.at(at) = mistyped(good.at(at));
      EXPECT_FALSE(validate_results(bad).empty())
          << name << ": mistyped " << at.to_string() << " was accepted";
      ++mistypes;
    });
    EXPECT_GT(removals, 100u);
    EXPECT_GT(mistypes, 100u);
  }
}

// A file from before schema_minor 1 (no schema_minor, no launches_per_sample, no b2b) still
// validates; the examples carry all three, so each is found and removed.
TEST(ValidateResults, AcceptsFilesFromBeforeTheMinorBump) {
  json doc = load(kExamples / "example-bench.json");
  size_t removed = 0;
  visit(json(doc), json::json_pointer(), [&](const json::json_pointer& at) {
    // A b2b timing's own launches_per_sample is gone with the b2b removed before it.
    if (at.empty() || !added_by_a_minor(at.back()) || !doc.contains(at)) return;
    doc.at(at.parent_pointer()).erase(at.back());
    ++removed;
  });
  EXPECT_GT(removed, 5u);
  EXPECT_FALSE(doc.contains("schema_minor"));
  EXPECT_FALSE(doc["cases"][0].contains("b2b"));
  EXPECT_FALSE(doc["cases"][0]["hot"].contains("launches_per_sample"));
  const auto problems = validate_results(doc);
  EXPECT_TRUE(problems.empty()) << joined(problems);
}

TEST(ValidateResults, RejectsWrongValuesAndExtraKeys) {
  const json good = load(kExamples / "example-bench.json");
  auto rejected = [&](const std::function<void(json&)>& mutate, const std::string& expect) {
    json bad = good;
    mutate(bad);
    const auto problems = validate_results(bad);
    const std::string all = joined(problems);
    EXPECT_NE(all.find(expect), std::string::npos)
        << "expected a problem containing '" << expect << "', got:\n"
        << all;
  };
  rejected([](json& d) { d["schema_version"] = 2; }, "/schema_version: must be 1");
  rejected([](json& d) { d["schema"] = "other"; }, "/schema:");
  rejected([](json& d) { d["kind"] = "micro"; }, "/kind:");
  rejected([](json& d) { d["extra"] = 1; }, "unexpected key 'extra'");
  rejected([](json& d) { d["cases"][0]["hot"]["summary"]["p50_ms"] = 1.0; },
           "/cases/0/hot/summary: unexpected key");
  rejected([](json& d) { d["cases"][0]["verdict"] = "passed"; }, "/cases/0/verdict:");
  rejected([](json& d) { d["cases"][0]["bytes"] = -1; }, "/cases/0/bytes: -1 is less than the minimum 0");
  rejected([](json& d) { d["cases"][0]["tokens"] = 1.5; }, "/cases/0/tokens: expected integer, got number");
  rejected([](json& d) { d["env"]["git_sha"] = "main"; }, "/env/git_sha:");
  rejected([](json& d) { d["env"]["started_utc"] = "yesterday"; }, "/env/started_utc:");
  rejected([](json& d) { d["cases"][0]["hot"]["method"] = "wall-clock"; }, "/cases/0/hot/method:");
  rejected([](json& d) { d["baselines"] = 3; }, "/baselines: expected object or null, got integer");
  rejected([](json& d) { d["env"]["device"]["available"] = false; }, "/env/device");
  rejected([](json& d) { d["summary"]["passed"] = 2; }, "/summary/passed: 2 but the cases have 3");
  rejected([](json& d) { d["cases"][1]["cold"]["samples"]["ms"].erase(0); },
           "/cases/1/cold/samples: columns differ");
  rejected([](json& d) { d["cases"][0]["b2b"]["samples"]["ms"].erase(0); },
           "/cases/0/b2b/samples: columns differ");
  rejected([](json& d) { d["cases"][0]["b2b"]["launches_per_sample"] = 0; },
           "/cases/0/b2b/launches_per_sample: 0 is less than the minimum 1");
  rejected([](json& d) { d["schema_minor"] = -1; }, "/schema_minor: -1 is less than the minimum 0");
}

TEST(ValidateResults, AcceptsNullsWhereTheSchemaAllowsThem) {
  json doc = load(kExamples / "example-bench.json");
  doc["baselines"] = nullptr;
  doc["cases"][0]["hot"] = nullptr;
  doc["cases"][0]["cold"] = nullptr;
  doc["cases"][0]["b2b"] = nullptr;
  doc["cases"][0]["tok_s"] = nullptr;
  doc["cases"][0]["copy_roofline_pct"] = nullptr;
  doc["cases"][0]["gemm_roofline_pct"] = nullptr;
  doc["env"]["device"] = {{"available", false}, {"unavailable_reason", "built without CUDA"}};
  doc["cases"][0]["shape"] = {{"anything", {1, 2, 3}}};  // shape is open by design
  json check = load(kExamples / "example-check.json");
  auto& tol = check["cases"][1]["comparisons"][0]["tolerance"];
  tol["max_abs"] = nullptr;                                            // an infinite bound
  check["cases"][2]["comparisons"][0]["metrics"]["cosine"] = nullptr;  // a non-finite metric
  for (const json& d : {doc, check}) {
    const auto problems = validate_results(d);
    EXPECT_TRUE(problems.empty()) << joined(problems);
  }
}

}  // namespace
}  // namespace fb
