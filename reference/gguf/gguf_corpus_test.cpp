// The committed malformed-GGUF corpus (testdata/malformed, written by testdata/make_malformed.py):
// every file must fail to open with exactly the error MANIFEST.tsv records for it: code, byte
// offset, message and expectation, and what() must name the file. A manifest row without a file,
// a file without a row, or a file that opens are failures too, so the corpus cannot rot silently.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "reference/gguf/gguf_file.h"

namespace fb {
namespace {

namespace fs = std::filesystem;
const fs::path kDir = fs::path(FUSEBENCH_SOURCE_DIR) / "reference/gguf/testdata/malformed";

struct Row {
  std::string code, offset, message, expected;
};

std::map<std::string, Row> read_manifest() {
  std::map<std::string, Row> rows;
  std::ifstream in(kDir / "MANIFEST.tsv");
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string x; std::getline(ss, x, '\t');) f.push_back(x);
    EXPECT_EQ(f.size(), 5u) << "MANIFEST.tsv row needs 5 tab-separated fields: " << line;
    if (f.size() == 5) rows[f[0]] = Row{f[1], f[2], f[3], f[4]};
  }
  return rows;
}

TEST(GgufCorpus, EveryMalformedFileFailsWithItsManifestError) {
  const auto rows = read_manifest();
  std::set<std::string> files;
  for (const auto& e : fs::directory_iterator(kDir)) {
    if (e.path().extension() == ".gguf") files.insert(e.path().filename().string());
  }
  ASSERT_GE(files.size(), 30u) << "the issue asks for at least 30 malformed files";
  for (const auto& [name, row] : rows)
    EXPECT_TRUE(files.count(name)) << "manifest row without a file: " << name;
  for (const auto& name : files) {
    SCOPED_TRACE(name);
    const auto it = rows.find(name);
    if (it == rows.end()) {
      ADD_FAILURE() << "file without a manifest row: " << name;
      continue;
    }
    const Row& want = it->second;
    try {
      (void)GgufFile::open(kDir / name);
      ADD_FAILURE() << name << " opened, but the manifest says " << want.code;
    } catch (const GgufError& e) {
      const Row got{to_string(e.code()), std::to_string(e.offset()), e.message(), e.expected()};
      EXPECT_EQ(got.code, want.code);
      EXPECT_EQ(got.offset, want.offset);
      EXPECT_EQ(got.message, want.message);
      EXPECT_EQ(got.expected, want.expected);
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos)
          << "what() must name the file: " << e.what();
      if (got.code != want.code || got.offset != want.offset || got.message != want.message ||
          got.expected != want.expected) {
        // The row to paste into MANIFEST.tsv once the new behaviour is confirmed to be intended.
        std::printf("actual row: %s\t%s\t%s\t%s\t%s\n", name.c_str(), got.code.c_str(), got.offset.c_str(),
                    got.message.c_str(), got.expected.c_str());
      }
    }
  }
}

}  // namespace
}  // namespace fb
