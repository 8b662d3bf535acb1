// Streaming writes, misuse, and the temp-file + rename contract.
#include "reference/gguf/gguf_writer.h"

#include <gtest/gtest.h>

#include "reference/gguf/gguf_file.h"
#include "reference/gguf/gguf_test_util.h"
#include "reference/gguf/mapped_file.h"

namespace fb {
namespace {

using test::TempDir;
namespace fs = std::filesystem;

void declare(GgufWriter& w) {
  w.add_kv("general.architecture", {std::string("test")});
  w.add_tensor("a", GgmlType::F32, {5});           // 20 bytes
  w.add_tensor("empty", GgmlType::F16, {0});       // 0 bytes
  w.add_tensor("b", GgmlType::Q4_K, {256, 3});     // 432 bytes
  w.add_tensor("c", GgmlType::F16, {3, 1, 1, 7});  // 42 bytes
}

// Temp files a writer leaves in `dir` (hidden ".<name>.tmp.*", or the old fixed "<name>.tmp").
int temps_in(const fs::path& dir) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir))
    n += e.path().filename().string().find(".tmp") != std::string::npos;
  return n;
}

std::vector<std::vector<uint8_t>> payload() {
  return {test::random_bytes(20, 1), {}, test::random_bytes(432, 2), test::random_bytes(42, 3)};
}

TEST(GgufWriter, StreamingInChunksEqualsWriteAll) {
  TempDir dir;
  const auto data = payload();
  {
    GgufWriter w(dir / "all.gguf");
    declare(w);
    std::vector<std::span<const uint8_t>> spans(data.begin(), data.end());
    w.write_all(spans);
  }
  std::vector<uint8_t> concat;
  for (const auto& d : data) concat.insert(concat.end(), d.begin(), d.end());
  for (size_t chunk : {size_t{1}, size_t{3}, size_t{7}, size_t{19}, size_t{21}, size_t{100}, concat.size()}) {
    SCOPED_TRACE(chunk);
    const auto path = dir / ("chunk" + std::to_string(chunk) + ".gguf");
    GgufWriter w(path);
    declare(w);
    w.begin_data();
    for (size_t i = 0; i < concat.size(); i += chunk) {
      w.append(std::span<const uint8_t>(concat).subspan(i, std::min(chunk, concat.size() - i)));
    }
    w.append({});  // empty appends are harmless
    w.finish();
    EXPECT_EQ(test::read_bytes(path), test::read_bytes(dir / "all.gguf"));
    EXPECT_EQ(temps_in(dir.path()), 0);
  }
  const GgufFile f = GgufFile::open(dir / "all.gguf");
  for (size_t i = 0; i < data.size(); ++i) {
    const auto got = f.tensor_data(f.tensors()[i]);
    EXPECT_TRUE(std::equal(got.begin(), got.end(), data[i].begin(), data[i].end()));
  }
}

TEST(GgufWriter, TooManyBytesIsALogicError) {
  TempDir dir;
  const auto data = payload();
  GgufWriter w(dir / "x.gguf");
  declare(w);
  w.begin_data();
  const auto big = test::random_bytes(20 + 432 + 42 + 1, 9);
  EXPECT_THROW(w.append(big), std::logic_error);
  for (const auto& d : data) w.append(d);
  const uint8_t one = 0;
  EXPECT_THROW(w.append({&one, 1}), std::logic_error);
  w.finish();  // the refused appends wrote nothing
  EXPECT_NO_THROW((void)GgufFile::open(dir / "x.gguf"));
}

TEST(GgufWriter, FinishWithMissingBytesLeavesNoFile) {
  TempDir dir;
  GgufWriter w(dir / "x.gguf");
  declare(w);
  w.begin_data();
  w.append(test::random_bytes(30, 1));
  EXPECT_EQ(temps_in(dir.path()), 1);
  EXPECT_THROW(w.finish(), std::logic_error);
  EXPECT_FALSE(fs::exists(dir / "x.gguf"));
  EXPECT_EQ(temps_in(dir.path()), 0);
}

TEST(GgufWriter, AbandonedWriterLeavesNoFileAndKeepsTheOldOne) {
  TempDir dir;
  {
    GgufWriter w(dir / "x.gguf");
    declare(w);
    w.begin_data();
    w.append(test::random_bytes(100, 1));
  }  // as if the run were killed before finish()
  EXPECT_FALSE(fs::exists(dir / "x.gguf"));
  EXPECT_EQ(temps_in(dir.path()), 0);

  test::write_bytes(dir / "old.gguf", {'o', 'l', 'd'});
  {
    GgufWriter w(dir / "old.gguf");
    declare(w);
    w.begin_data();
  }
  EXPECT_EQ(test::read_bytes(dir / "old.gguf"), (std::vector<uint8_t>{'o', 'l', 'd'}));
  { GgufWriter never_started(dir / "n.gguf"); }
  EXPECT_FALSE(fs::exists(dir / "n.gguf"));
}

TEST(GgufWriter, TwoWritersOfOneTargetNeverShareATempFile) {
  TempDir dir;
  // A stale fixed-name temp (an older build, another tool) is neither reused nor removed.
  test::write_bytes(dir / "x.gguf.tmp", {'s', 't', 'a', 'l', 'e'});
  const auto data = payload();
  GgufWriter a(dir / "x.gguf"), b(dir / "x.gguf");
  declare(a);
  declare(b);
  b.add_kv("writer", {std::string("b")});
  a.begin_data();
  b.begin_data();
  EXPECT_EQ(temps_in(dir.path()), 3);
  for (const auto& d : data) {
    a.append(d);
    b.append(d);
  }
  a.finish();
  EXPECT_FALSE(GgufFile::open(dir / "x.gguf").find("writer"));
  b.finish();  // last rename wins, and it is a whole file, never an interleaving of the two
  EXPECT_TRUE(GgufFile::open(dir / "x.gguf").find("writer"));
  EXPECT_EQ(test::read_bytes(dir / "x.gguf.tmp"), (std::vector<uint8_t>{'s', 't', 'a', 'l', 'e'}));
  EXPECT_EQ(temps_in(dir.path()), 1);
}

TEST(GgufWriter, RejectsWhatTheReaderWouldReject) {
  TempDir dir;
  GgufWriter w(dir / "x.gguf");
  w.add_kv("k", {uint32_t{1}});
  EXPECT_THROW(w.add_kv("k", {uint32_t{2}}), std::invalid_argument);
  EXPECT_THROW(w.add_kv("", {uint32_t{2}}), std::invalid_argument);
  EXPECT_THROW(w.add_kv("bad\xC0\x80", {uint32_t{2}}), std::invalid_argument);
  EXPECT_THROW(w.add_kv("s", {std::string("\xED\xA0\x80")}), std::invalid_argument);
  GgufArray nested;
  nested.elem_type = GgufValueType::ARRAY;
  EXPECT_THROW(w.add_kv("n", {nested}), std::invalid_argument);
  GgufArray mismatched;
  mismatched.elem_type = GgufValueType::INT32;
  mismatched.values = std::vector<float>{1.0f};
  EXPECT_THROW(w.add_kv("m", {mismatched}), std::invalid_argument);
  EXPECT_THROW(w.add_kv("general.alignment", {uint32_t{3}}), std::invalid_argument);
  EXPECT_THROW(w.add_kv("general.alignment", {uint64_t{32}}), std::invalid_argument);
  EXPECT_THROW(w.add_tensor(std::string(64, 'x'), GgmlType::F32, {1}), std::invalid_argument);
  EXPECT_THROW(w.add_tensor("", GgmlType::F32, {1}), std::invalid_argument);
  EXPECT_THROW(w.add_tensor("q", GgmlType::Q4_K, {100}), std::invalid_argument);
  EXPECT_THROW(w.add_tensor("d", GgmlType::F32, {1, 1, 1, 1, 1}), std::invalid_argument);
  EXPECT_THROW(w.add_tensor("n", GgmlType::F32, {-1}), std::invalid_argument);
  EXPECT_THROW(w.add_tensor("o", GgmlType::F32, {int64_t{1} << 40, int64_t{1} << 40}), std::invalid_argument);
  EXPECT_THROW(w.add_tensor_raw("u", 4, {1}), std::invalid_argument);
  w.add_tensor("t", GgmlType::F32, {1});
  EXPECT_THROW(w.add_tensor("t", GgmlType::F32, {1}), std::invalid_argument);
  const std::vector<uint8_t> three(3);
  EXPECT_THROW(w.write_all({three}), std::invalid_argument);  // 3 bytes for a 4-byte tensor
  EXPECT_THROW(w.write_all({}), std::invalid_argument);
  w.begin_data();
  EXPECT_THROW(w.add_kv("late", {uint32_t{1}}), std::logic_error);
  EXPECT_THROW(w.add_tensor("late", GgmlType::F32, {1}), std::logic_error);
  EXPECT_THROW(w.begin_data(), std::logic_error);
}

TEST(GgufWriter, AlignmentSetAfterTensorsRecomputesOffsets) {
  TempDir dir;
  GgufWriter w(dir / "x.gguf");
  w.add_tensor("a", GgmlType::F32, {3});
  w.add_tensor("b", GgmlType::F32, {3});
  EXPECT_EQ(w.tensors()[1].offset, 32u);
  w.add_kv("general.alignment", {uint32_t{128}});
  EXPECT_EQ(w.tensors()[1].offset, 128u);
  const auto d = test::random_bytes(12, 5);
  w.write_all({d, d});
  const GgufFile f = GgufFile::open(dir / "x.gguf");
  EXPECT_EQ(f.alignment(), 128u);
  EXPECT_EQ(f.tensors()[1].offset, 128u);
  EXPECT_EQ(f.data_offset() % 128, 0u);
}

TEST(MappedFile, MapsAndMoves) {
  TempDir dir;
  test::write_bytes(dir / "f", {1, 2, 3});
  MappedFile m(dir / "f");
  ASSERT_EQ(m.bytes().size(), 3u);
  EXPECT_EQ(m.bytes()[2], 3);
  MappedFile n(std::move(m));
  EXPECT_EQ(n.bytes().size(), 3u);
  EXPECT_TRUE(m.bytes().empty());  // NOLINT(bugprone-use-after-move): moved-from state is specified
  test::write_bytes(dir / "e", {});
  EXPECT_TRUE(MappedFile(dir / "e").bytes().empty());
  EXPECT_THROW(MappedFile(dir / "none"), GgufError);
}

}  // namespace
}  // namespace fb
