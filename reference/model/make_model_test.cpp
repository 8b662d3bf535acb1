#include "reference/model/make_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "reference/formats/dequantize.h"
#include "reference/formats/ggml_type.h"
#include "reference/formats/quantize.h"
#include "reference/gguf/gguf_file.h"

namespace fb {
namespace {

namespace fs = std::filesystem;

class MakeModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    m_dir = fs::temp_directory_path() /
            ("fusebench_make_model_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
             "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(m_dir);
  }
  void TearDown() override { fs::remove_all(m_dir); }
  fs::path m_dir;
};

std::vector<char> slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

TEST_F(MakeModelTest, TinyModelsMatchTheirSpecsAndQuantizedValues) {
  for (auto family : {ModelFamily::gemma4, ModelFamily::qwen35moe}) {
    const ModelConfig c = model_config(family, ModelScale::tiny);
    MakeModelOptions opt;
    opt.seed = 1234;
    const fs::path out = m_dir / (c.name + ".gguf");
    const MakeModelResult r = make_model(c, out, opt);
    const GgufFile f = GgufFile::open(out);
    const auto specs = model_tensors(c, opt.recipe);
    ASSERT_EQ(f.tensors().size(), specs.size());
    EXPECT_EQ(r.n_bytes, f.file_size());
    EXPECT_EQ(f.get_string("general.architecture"), c.gguf_arch);
    EXPECT_EQ(f.get_uint("fusebench.seed"), 1234u);
    for (size_t i = 0; i < specs.size(); ++i) {
      const GgufTensorInfo& t = f.tensors()[i];
      const TensorSpec& s = specs[i];
      ASSERT_EQ(t.name, s.name);
      ASSERT_EQ(t.ne, s.ne) << s.name;
      ASSERT_EQ(t.type, static_cast<uint32_t>(s.type)) << s.name;
      // The last row in the file must be quantize(generate(last row)): proves the streamed row
      // order and that each tensor's bytes went where its info says.
      const int64_t last = s.n_rows() - 1;
      std::vector<float> values(static_cast<size_t>(s.ne[0]));
      generate_tensor_rows(s, opt.seed, last, 1, values.data());
      for (float v : values) ASSERT_TRUE(std::isfinite(v)) << s.name;
      const size_t row_bytes = ggml_row_bytes(s.type, s.ne[0]);
      std::vector<uint8_t> expected(row_bytes);
      quantize(s.type, values.data(), expected.data(), s.ne[0]);
      const auto data = f.tensor_data(t);
      ASSERT_EQ(data.size(), row_bytes * static_cast<size_t>(s.n_rows())) << s.name;
      ASSERT_EQ(0,
                std::memcmp(data.data() + static_cast<size_t>(last) * row_bytes, expected.data(), row_bytes))
          << s.name << ": last row differs from quantize(generate_tensor_rows(seed=1234))";
    }
  }
}

TEST_F(MakeModelTest, DeterministicForASeedWhateverTheThreadsAndChunks) {
  const ModelConfig c = model_config(ModelFamily::qwen35moe, ModelScale::tiny);
  MakeModelOptions a;
  a.seed = 99;
  a.threads = 1;
  MakeModelOptions b = a;
  b.threads = 3;
  b.chunk_bytes = 1000;  // forces many partial batches per tensor
  make_model(c, m_dir / "a.gguf", a);
  make_model(c, m_dir / "b.gguf", b);
  EXPECT_TRUE(slurp(m_dir / "a.gguf") == slurp(m_dir / "b.gguf"))
      << "same seed, different threads/chunking must give identical bytes";
  MakeModelOptions d = a;
  d.seed = 100;
  make_model(c, m_dir / "d.gguf", d);
  EXPECT_FALSE(slurp(m_dir / "a.gguf") == slurp(m_dir / "d.gguf"))
      << "a different seed must change the weights";
}

// Block-sampled fill: the pool rows are the quantized model's, every later block is the same
// column's block of some pool row, the file says how it was made, and threads do not change it.
TEST_F(MakeModelTest, BlockSampledRowsAreBlocksOfTheQuantizedPoolRows) {
  const ModelConfig c = model_config(ModelFamily::qwen35moe, ModelScale::tiny);
  MakeModelOptions q;
  q.seed = 7;
  MakeModelOptions sa = q;
  sa.fill = WeightFill::block_sampled;
  sa.threads = 1;
  MakeModelOptions sb = sa;
  sb.threads = 3;
  sb.chunk_bytes = 5000;
  make_model(c, m_dir / "q.gguf", q);
  make_model(c, m_dir / "sa.gguf", sa);
  make_model(c, m_dir / "sb.gguf", sb);
  EXPECT_TRUE(slurp(m_dir / "sa.gguf") == slurp(m_dir / "sb.gguf")) << "threads/chunking changed the bytes";
  const GgufFile fq = GgufFile::open(m_dir / "q.gguf");
  const GgufFile fs_ = GgufFile::open(m_dir / "sa.gguf");
  EXPECT_EQ(fq.get_string("fusebench.weights"), "quantized");
  EXPECT_EQ(fs_.get_string("fusebench.weights"), "block-sampled");
  int sampled_tensors = 0;
  for (size_t i = 0; i < fq.tensors().size(); ++i) {
    const GgufTensorInfo& t = fq.tensors()[i];
    const auto& info = ggml_type_info(static_cast<GgmlType>(t.type));
    const auto a = fq.tensor_data(t);
    const auto b = fs_.tensor_data(fs_.tensors()[i]);
    ASSERT_EQ(a.size(), b.size()) << t.name;
    int64_t rows = 1;
    for (size_t d = 1; d < t.ne.size(); ++d) rows *= t.ne[d];
    if (info.block_elems == 1 || rows <= kSampledPoolRows) {
      EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size())) << t.name << ": not sampled, must be quantized";
      continue;
    }
    ++sampled_tensors;
    const size_t row_bytes = a.size() / static_cast<size_t>(rows);
    const size_t pool_bytes = kSampledPoolRows * row_bytes;
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), pool_bytes)) << t.name << ": pool rows differ";
    EXPECT_NE(0, std::memcmp(a.data() + pool_bytes, b.data() + pool_bytes, a.size() - pool_bytes))
        << t.name << ": sampled rows equal the quantized ones";
    const size_t bb = info.block_bytes;
    const size_t blocks = row_bytes / bb;
    for (int64_t r = kSampledPoolRows; r < rows; r += 37) {
      for (size_t k = 0; k < blocks; ++k) {
        const uint8_t* blk = b.data() + static_cast<size_t>(r) * row_bytes + k * bb;
        bool found = false;
        for (int64_t p = 0; p < kSampledPoolRows && !found; ++p)
          found = std::memcmp(blk, a.data() + static_cast<size_t>(p) * row_bytes + k * bb, bb) == 0;
        ASSERT_TRUE(found) << t.name << " row " << r << " block " << k << ": not a pool block of its column";
      }
    }
  }
  EXPECT_GT(sampled_tensors, 0)
      << "the tiny model has no tensor larger than the pool: the test checks nothing";
}

TEST_F(MakeModelTest, GeneratedWeightsHaveRealisticScales) {
  const ModelConfig c = model_config(ModelFamily::gemma4, ModelScale::tiny);
  for (const TensorSpec& s : model_tensors(c, QuantRecipe::q4_k_m)) {
    std::vector<float> v(static_cast<size_t>(s.n_elements()));
    generate_tensor_rows(s, 5, 0, s.n_rows(), v.data());
    if (s.init != TensorInit::linear) continue;
    double sum2 = 0;
    size_t zeros = 0;
    for (float x : v) {
      sum2 += double(x) * x;
      zeros += x == 0.0f;
    }
    const double rms = std::sqrt(sum2 / v.size());
    EXPECT_NEAR(rms, 0.02, 0.004) << s.name;
    EXPECT_LT(zeros, v.size() / 1000 + 1) << s.name << ": weights must not be zeros";
  }
}

}  // namespace
}  // namespace fb
