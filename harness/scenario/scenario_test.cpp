#include "harness/scenario/scenario.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace fb {
namespace {

namespace fs = std::filesystem;

const fs::path kScenarioDir = fs::path(FUSEBENCH_SOURCE_DIR) / "scenarios";

// A per-test temp dir, so the GGUF-path and directory cases touch real files without clashing when
// ctest runs tests in parallel.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    m_path = fs::temp_directory_path() / (std::string("fb_scenario_test_") + info->test_suite_name() + "_" +
                                          info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(m_path);
    fs::create_directories(m_path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(m_path, ec);
  }
  const fs::path& path() const { return m_path; }
  fs::path write(const std::string& name, const std::string& text) const {
    fs::path p = m_path / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }

 private:
  fs::path m_path;
};

constexpr const char* kMinimal = R"(model = "gemma4-31b"
phase = "decode"
tokens = [1]
contexts = [512]
)";

TEST(Scenario, EveryShippedFileLoads) {
  ASSERT_TRUE(fs::is_directory(kScenarioDir)) << kScenarioDir;
  std::vector<Scenario> all;
  ASSERT_NO_THROW(all = load_scenarios(kScenarioDir));
  size_t toml_files = 0;
  for (const auto& e : fs::recursive_directory_iterator(kScenarioDir))
    if (e.path().extension() == ".toml") ++toml_files;
  EXPECT_EQ(all.size(), toml_files);
  EXPECT_GE(all.size(), 8u);
  for (const auto& s : all) {
    SCOPED_TRACE(s.file.string());
    EXPECT_EQ(s.name, s.file.stem().string()) << "keep file stem and name in step so files are easy to find";
    EXPECT_FALSE(s.description.empty());
    EXPECT_FALSE(s.tokens.empty());
    EXPECT_FALSE(s.contexts.empty());
  }
  // The CI set exists for both models and both phases and stays tiny.
  int ci = 0;
  for (const auto& s : all) {
    if (std::find(s.tags.begin(), s.tags.end(), "ci") == s.tags.end()) continue;
    ++ci;
    EXPECT_EQ(s.scale, "tiny") << s.name;
  }
  EXPECT_GE(ci, 4);  // both models x both phases, plus the tiny whole-step scenarios
  // Sorted by name.
  for (size_t i = 1; i < all.size(); ++i) EXPECT_LT(all[i - 1].name, all[i].name);
}

TEST(Scenario, FullScenariosCoverThePublishedContexts) {
  const std::vector<int64_t> contexts = {512, 2048, 8192, 32768, 131072};
  for (const char* name :
       {"gemma4-31b-decode", "gemma4-31b-prefill", "qwen3.5-moe-decode", "qwen3.5-moe-prefill"}) {
    Scenario s = load_scenario(kScenarioDir / (std::string(name) + ".toml"));
    EXPECT_EQ(s.contexts, contexts) << name;
    EXPECT_EQ(s.scale, "full") << name;
    EXPECT_EQ(s.run, RunUnit::kernel) << name;
    EXPECT_EQ(s.variants, (std::vector<std::string>{"fused", "unfused"})) << name;
  }
}

TEST(Scenario, ParsesEveryField) {
  Scenario s = parse_scenario(R"(
name = "x-1"
description = "d"
model = "qwen3.5-moe"
scale = "tiny"
phase = "prefill"
tokens = [5, 64]
contexts = [1, 100]
run = "layer"
kernels = ["a", "b"]
variants = ["fused"]
layouts = ["ggml"]
seeds = [0, 7]
tags = ["ci"]
[[tolerance]]
kernel = "a"
max_abs = 1
max_rel = 0.5
min_cosine = 0.999
max_nmse = 1e-6
reason = "because"
)",
                              "dir/x.toml");
  EXPECT_EQ(s.name, "x-1");
  EXPECT_EQ(s.file, fs::path("dir/x.toml"));
  EXPECT_EQ(s.description, "d");
  EXPECT_EQ(s.model, "qwen3.5-moe");
  EXPECT_EQ(s.scale, "tiny");
  EXPECT_EQ(s.phase, Phase::prefill);
  EXPECT_EQ(s.tokens, (std::vector<int64_t>{5, 64}));
  EXPECT_EQ(s.contexts, (std::vector<int64_t>{1, 100}));
  EXPECT_EQ(s.run, RunUnit::layer);
  EXPECT_EQ(s.kernels, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(s.variants, (std::vector<std::string>{"fused"}));
  EXPECT_EQ(s.layouts, (std::vector<std::string>{"ggml"}));
  EXPECT_EQ(s.seeds, (std::vector<uint64_t>{0, 7}));
  EXPECT_EQ(s.tags, (std::vector<std::string>{"ci"}));
  ASSERT_EQ(s.tolerances.size(), 1u);
  EXPECT_EQ(s.tolerances[0].kernel, "a");
  EXPECT_EQ(s.tolerances[0].max_abs, 1.0);
  EXPECT_EQ(s.tolerances[0].max_rel, 0.5);
  EXPECT_EQ(s.tolerances[0].min_cosine, 0.999);
  EXPECT_EQ(s.tolerances[0].max_nmse, 1e-6);
  EXPECT_EQ(s.tolerances[0].reason, "because");
  EXPECT_STREQ(to_string(Phase::prefill), "prefill");
  EXPECT_STREQ(to_string(RunUnit::layer), "layer");
}

TEST(Scenario, Defaults) {
  Scenario s = parse_scenario(kMinimal, "some/dir/my-scenario.toml");
  EXPECT_EQ(s.name, "my-scenario");
  EXPECT_EQ(s.scale, "full");
  EXPECT_EQ(s.run, RunUnit::kernel);
  EXPECT_EQ(s.seeds, (std::vector<uint64_t>{1}));
  EXPECT_TRUE(s.kernels.empty());
  EXPECT_TRUE(s.variants.empty());
  EXPECT_TRUE(s.layouts.empty());
  EXPECT_TRUE(s.tolerances.empty());
  EXPECT_TRUE(s.tags.empty());
}

struct BadCase {
  const char* label;
  std::string text;
  std::string field;   // exact ScenarioError::field()
  int64_t line;        // exact line
  std::string needle;  // substring of what()
};

std::string with(const std::string& extra) { return std::string(kMinimal) + extra; }

// Lines: kMinimal occupies lines 1-4, so anything appended starts on line 5.
const std::vector<BadCase> kBad = {
    {"unknown top-level key", with("contextz = [1]\n"), "contextz", 5,
     "unknown key 'contextz' (did you mean 'contexts'?); valid keys: name, description, model"},
    {"unknown key in tolerance",
     with("[[tolerance]]\nkernel = \"k\"\nmax_nmse = 1e-6\nmax_ulp = 2\nreason = \"r\"\n"),
     "tolerance[0].max_ulp", 8, "valid keys: kernel, max_abs, max_rel, min_cosine, max_nmse, reason"},
    {"unknown key in second tolerance",
     with("[[tolerance]]\nkernel = \"a\"\nmax_abs = 1\nreason = \"r\"\n[[tolerance]]\nkernel = "
          "\"b\"\nmax_nmse = 1\n"
          "reasons = \"r\"\n"),
     "tolerance[1].reasons", 12, "unknown key 'reasons'"},
    {"tokens wrong type", "model = \"gemma4-31b\"\nphase = \"decode\"\ntokens = \"1\"\ncontexts = [512]\n",
     "tokens", 3, "expected an array of integers, found string"},
    {"tokens element wrong type",
     "model = \"gemma4-31b\"\nphase = \"decode\"\ntokens = [1, 2.0]\ncontexts = [512]\n", "tokens[1]", 3,
     "expected an integer, found float"},
    {"tokens empty", "model = \"gemma4-31b\"\nphase = \"decode\"\ntokens = []\ncontexts = [512]\n", "tokens",
     3, "must not be empty"},
    {"tokens zero", "model = \"gemma4-31b\"\nphase = \"decode\"\ntokens = [0]\ncontexts = [512]\n",
     "tokens[0]", 3, "0 is out of range [1, 4]"},
    {"decode tokens above 4",
     "model = \"gemma4-31b\"\nphase = \"decode\"\ntokens = [1, 8]\ncontexts = [512]\n", "tokens[1]", 3,
     "8 is out of range [1, 4]"},
    {"prefill tokens below 5",
     "model = \"gemma4-31b\"\nphase = \"prefill\"\ntokens = [512, 4]\ncontexts = [512]\n", "tokens[1]", 3,
     "4 is out of range [5, 262144]"},
    {"duplicate tokens", "model = \"gemma4-31b\"\nphase = \"decode\"\ntokens = [1, 1]\ncontexts = [512]\n",
     "tokens[1]", 3, "duplicate value 1"},
    {"duplicate contexts",
     "model = \"gemma4-31b\"\nphase = \"decode\"\ntokens = [1]\ncontexts = [512, 2048, 512]\n", "contexts[2]",
     4, "duplicate value 512"},
    {"context beyond tiny context_length",
     "model = \"gemma4-31b\"\nscale = \"tiny\"\nphase = \"decode\"\ntokens = [1]\ncontexts = [8192]\n",
     "contexts[0]", 5, "8192 is out of range [1, 4096]"},
    {"context plus tokens beyond context_length",
     "model = \"gemma4-31b\"\nscale = \"tiny\"\nphase = \"prefill\"\ntokens = [64]\ncontexts = [16, 4090]\n",
     "contexts[1]", 5, "4090 + tokens 64 exceeds the model's context_length 4096"},
    {"unknown phase", "model = \"gemma4-31b\"\nphase = \"generate\"\ntokens = [1]\ncontexts = [512]\n",
     "phase", 2, "unknown phase 'generate' (expected decode or prefill)"},
    {"unknown model", "model = \"gemma4-27b\"\nphase = \"decode\"\ntokens = [1]\ncontexts = [512]\n", "model",
     1, "unknown model 'gemma4-27b' (expected one of gemma4-31b, qwen3.5-moe, or a path to a .gguf file)"},
    {"unknown scale", with("scale = \"small\"\n"), "scale", 5,
     "unknown scale 'small' (expected full or tiny)"},
    {"missing gguf file",
     "model = \"models/nope.gguf\"\nphase = \"decode\"\ntokens = [1]\ncontexts = [512]\n", "model", 1,
     "does not exist"},
    {"unknown run", with("run = \"model\"\n"), "run", 5, "unknown run unit 'model'"},
    {"kernels with run = step", with("run = \"step\"\nkernels = [\"rmsnorm\"]\n"), "kernels", 6,
     "must be empty"},
    {"empty kernel name", with("kernels = [\"a\", \"\"]\n"), "kernels[1]", 5, "must not be empty"},
    {"duplicate variant", with("variants = [\"fused\", \"fused\"]\n"), "variants[1]", 5,
     "duplicate value 'fused'"},
    {"layouts wrong type", with("layouts = \"ggml\"\n"), "layouts", 5,
     "expected an array of strings, found string"},
    {"seeds empty", with("seeds = []\n"), "seeds", 5, "must not be empty"},
    {"negative seed", with("seeds = [-1]\n"), "seeds[0]", 5, "out of range"},
    {"bad name", with("name = \"has space\"\n"), "name", 5, "may only contain"},
    {"description wrong type", with("description = 3\n"), "description", 5,
     "expected a string, found integer"},
    {"missing model", "phase = \"decode\"\ntokens = [1]\ncontexts = [512]\n", "model", 1,
     "missing required key"},
    {"missing phase", "model = \"gemma4-31b\"\ntokens = [1]\ncontexts = [512]\n", "phase", 1,
     "missing required key"},
    {"missing tokens", "model = \"gemma4-31b\"\nphase = \"decode\"\ncontexts = [512]\n", "tokens", 1,
     "missing required key"},
    {"missing contexts", "model = \"gemma4-31b\"\nphase = \"decode\"\ntokens = [1]\n", "contexts", 1,
     "missing required key"},
    {"tolerance without reason", with("[[tolerance]]\nkernel = \"k\"\nmax_nmse = 1e-6\n"),
     "tolerance[0].reason", 5, "missing required key"},
    {"tolerance with blank reason", with("[[tolerance]]\nkernel = \"k\"\nmax_nmse = 1e-6\nreason = \"  \"\n"),
     "tolerance[0].reason", 8, "must not be empty"},
    {"tolerance without kernel", with("[[tolerance]]\nmax_nmse = 1e-6\nreason = \"r\"\n"),
     "tolerance[0].kernel", 5, "missing required key"},
    {"tolerance wrong type", with("[[tolerance]]\nkernel = \"k\"\nmax_nmse = \"small\"\nreason = \"r\"\n"),
     "tolerance[0].max_nmse", 7, "expected a number, found string"},
    {"tolerance negative", with("[[tolerance]]\nkernel = \"k\"\nmax_abs = -1\nreason = \"r\"\n"),
     "tolerance[0].max_abs", 7, "out of range"},
    {"tolerance cosine above 1", with("[[tolerance]]\nkernel = \"k\"\nmin_cosine = 1.5\nreason = \"r\"\n"),
     "tolerance[0].min_cosine", 7, "out of range [-1, 1]"},
    {"tolerance nan", with("[[tolerance]]\nkernel = \"k\"\nmax_rel = nan\nreason = \"r\"\n"),
     "tolerance[0].max_rel", 7, "must be finite"},
    {"tolerance with no threshold", with("[[tolerance]]\nkernel = \"k\"\nreason = \"r\"\n"), "tolerance[0]",
     5, "overrides nothing"},
    {"tolerance as a plain table", with("[tolerance]\nkernel = \"k\"\n"), "tolerance", 5,
     "write [[tolerance]], not [tolerance]"},
    {"duplicate tolerance kernel",
     with("[[tolerance]]\nkernel = \"k\"\nmax_abs = 1\nreason = \"r\"\n[[tolerance]]\nkernel = "
          "\"k\"\nmax_abs = 2\n"
          "reason = \"r\"\n"),
     "tolerance[1].kernel", 10, "already has an override in tolerance[0]"},
    {"toml syntax error", "model = \"gemma4-31b\"\nphase = \"decode\"\ntokens = [1,\ncontexts = [512]\n", "",
     4, "TOML syntax error"},
    {"toml duplicate key", with("phase = \"prefill\"\n"), "", 5, "TOML syntax error"},
};

class BadScenario : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadScenario, ErrorNamesFieldAndLine) {
  const BadCase& c = GetParam();
  try {
    parse_scenario(c.text, "bad.toml");
    FAIL() << "accepted:\n" << c.text;
  } catch (const ScenarioError& e) {
    EXPECT_EQ(e.field(), c.field) << e.what();
    EXPECT_EQ(e.line(), c.line) << e.what();
    EXPECT_GE(e.column(), 1) << e.what();
    EXPECT_EQ(e.file(), fs::path("bad.toml"));
    const std::string what = e.what();
    EXPECT_NE(what.find(c.needle), std::string::npos) << what;
    // what() leads with file:line:col so editors and terminals can jump to it.
    const std::string prefix = "bad.toml:" + std::to_string(c.line) + ":" + std::to_string(e.column()) + ": ";
    EXPECT_EQ(what.rfind(prefix, 0), 0u) << what;
    if (!c.field.empty()) {
      EXPECT_NE(what.find(": " + c.field + ": "), std::string::npos) << what;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Table, BadScenario, ::testing::ValuesIn(kBad),
                         [](const ::testing::TestParamInfo<BadCase>& info) {
                           std::string n = info.param.label;
                           for (char& ch : n)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

TEST(Scenario, GgufPathResolvesRelativeToTheFile) {
  TempDir tmp;
  tmp.write("models/m.gguf", "GGUF");
  fs::path f = tmp.write(
      "sub/../s.toml", "model = \"models/m.gguf\"\nphase = \"decode\"\ntokens = [1]\ncontexts = [999999]\n");
  Scenario s = load_scenario(f);
  EXPECT_EQ(fs::path(s.model), (tmp.path() / "models/m.gguf").lexically_normal());
  EXPECT_TRUE(fs::is_regular_file(s.model));
}

TEST(Scenario, ScaleWithGgufPathIsAnError) {
  TempDir tmp;
  tmp.write("m.gguf", "GGUF");
  fs::path f = tmp.write(
      "s.toml", "model = \"m.gguf\"\nphase = \"decode\"\ntokens = [1]\ncontexts = [512]\nscale = \"tiny\"\n");
  try {
    load_scenario(f);
    FAIL();
  } catch (const ScenarioError& e) {
    EXPECT_EQ(e.field(), "scale");
    EXPECT_EQ(e.line(), 5);
    EXPECT_NE(std::string(e.what()).find("only applies to built-in models"), std::string::npos) << e.what();
  }
}

TEST(Scenario, MissingFileIsAnError) {
  try {
    load_scenario("/nonexistent/fusebench/x.toml");
    FAIL();
  } catch (const ScenarioError& e) {
    EXPECT_EQ(e.line(), 0);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/fusebench/x.toml: no such scenario file"),
              std::string::npos)
        << e.what();
  }
}

TEST(Scenario, ErrorsInADirectoryNameTheFile) {
  TempDir tmp;
  tmp.write("a.toml", kMinimal);
  fs::path bad = tmp.write("b.toml", with("bogus = 1\n"));
  try {
    load_scenarios(tmp.path());
    FAIL();
  } catch (const ScenarioError& e) {
    EXPECT_EQ(e.file(), bad);
    EXPECT_EQ(e.line(), 5);
  }
}

TEST(Scenario, DuplicateNamesAcrossFilesNameBoth) {
  TempDir tmp;
  fs::path first = tmp.write("a.toml", "name = \"same\"\n" + std::string(kMinimal));
  fs::path second = tmp.write("nested/b.toml", std::string(kMinimal) + "name = \"same\"\n");
  try {
    load_scenarios(tmp.path());
    FAIL();
  } catch (const ScenarioError& e) {
    EXPECT_EQ(e.file(), second);
    EXPECT_EQ(e.field(), "name");
    EXPECT_EQ(e.line(), 5);
    const std::string what = e.what();
    EXPECT_NE(what.find("duplicate scenario name 'same'"), std::string::npos) << what;
    EXPECT_NE(what.find(first.string() + ":1"), std::string::npos) << what;
  }
}

TEST(Scenario, DuplicateDefaultedNameIsCaught) {
  TempDir tmp;
  tmp.write("x.toml", kMinimal);
  tmp.write("y.toml", "name = \"x\"\n" + std::string(kMinimal));
  EXPECT_THROW(load_scenarios(tmp.path()), ScenarioError);
}

TEST(Scenario, LoadScenariosIgnoresOtherFilesAndSorts) {
  TempDir tmp;
  tmp.write("README.md", "not toml");
  tmp.write("z.toml", "name = \"a-first\"\n" + std::string(kMinimal));
  tmp.write("a.toml", "name = \"b-second\"\n" + std::string(kMinimal));
  auto all = load_scenarios(tmp.path());
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].name, "a-first");
  EXPECT_EQ(all[1].name, "b-second");
}

TEST(Scenario, LoadScenariosOnMissingDirIsAnError) {
  EXPECT_THROW(load_scenarios("/nonexistent/fusebench"), ScenarioError);
}

TEST(Scenario, DefaultDirHonoursEnvironment) {
  ::setenv("FUSEBENCH_SCENARIOS", "/tmp/elsewhere", 1);
  EXPECT_EQ(default_scenario_dir(), fs::path("/tmp/elsewhere"));
  ::unsetenv("FUSEBENCH_SCENARIOS");
  EXPECT_EQ(fs::canonical(default_scenario_dir()), fs::canonical(kScenarioDir));
}

}  // namespace
}  // namespace fb
