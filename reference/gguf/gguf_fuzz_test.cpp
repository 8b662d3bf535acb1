// Bounded random mutation of a valid file: every parse either succeeds or throws GgufError.
#include <gtest/gtest.h>

#include <random>

#include "reference/gguf/gguf_file.h"
#include "reference/gguf/gguf_test_util.h"
#include "reference/gguf/gguf_writer.h"

namespace fb {
namespace {

std::vector<uint8_t> seed_file() {
  test::TempDir dir;
  GgufWriter w(dir / "seed.gguf");
  GgufArray strs;
  strs.elem_type = GgufValueType::STRING;
  strs.values = std::vector<std::string>{"<s>", "\xC3\xA9t\xC3\xA9", ""};
  GgufArray f32s;
  f32s.elem_type = GgufValueType::FLOAT32;
  f32s.values = std::vector<float>{1, 2, 3};
  w.add_kv("general.architecture", {std::string("llama")});
  w.add_kv("general.alignment", {uint32_t{16}});
  w.add_kv("tok", {strs});
  w.add_kv("scores", {f32s});
  w.add_kv("b", {GgufBool{true}});
  w.add_kv("n", {uint64_t{7}});
  w.add_tensor("a", GgmlType::F32, {4, 2});
  w.add_tensor("q", GgmlType::Q8_0, {32});
  w.add_tensor("e", GgmlType::F16, {0});
  const auto d0 = test::random_bytes(32, 1), d1 = test::random_bytes(34, 2);
  w.write_all({d0, d1, {}});
  return test::read_bytes(dir / "seed.gguf");
}

TEST(GgufFuzz, RandomMutationsNeverEscapeAsAnythingButGgufError) {
  const std::vector<uint8_t> seed = seed_file();
  std::mt19937_64 rng(0x5eed);
  const auto below = [&](uint64_t n) { return n == 0 ? 0 : rng() % n; };
  static constexpr uint64_t kInteresting[] = {0,
                                              1,
                                              3,
                                              4,
                                              31,
                                              32,
                                              33,
                                              64,
                                              255,
                                              256,
                                              0x7FFFFFFF,
                                              0x80000000,
                                              0xFFFFFFFF,
                                              uint64_t{1} << 32,
                                              uint64_t{1} << 62,
                                              uint64_t{1} << 63,
                                              ~uint64_t{0}};
  size_t ok = 0, failed = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::vector<uint8_t> b = seed;
    const int n_mut = 1 + static_cast<int>(below(4));
    for (int m = 0; m < n_mut; ++m) {
      switch (below(6)) {
        case 0:  // flip bits in one byte
          if (!b.empty()) b[below(b.size())] ^= static_cast<uint8_t>(1 + below(255));
          break;
        case 1:  // random byte
          if (!b.empty()) b[below(b.size())] = static_cast<uint8_t>(rng());
          break;
        case 2: {  // insert a few bytes
          const size_t at = below(b.size() + 1), n = 1 + below(8);
          for (size_t i = 0; i < n; ++i)
            b.insert(b.begin() + static_cast<ptrdiff_t>(at), static_cast<uint8_t>(rng()));
          break;
        }
        case 3: {  // delete a range
          if (b.empty()) break;
          const size_t at = below(b.size()), n = std::min<size_t>(1 + below(16), b.size() - at);
          b.erase(b.begin() + static_cast<ptrdiff_t>(at), b.begin() + static_cast<ptrdiff_t>(at + n));
          break;
        }
        case 4: {  // an interesting 8- or 4-byte value, where counts and lengths live
          const uint64_t v = kInteresting[below(std::size(kInteresting))];
          const size_t w = below(2) ? 8 : 4;
          if (b.size() >= w) std::memcpy(b.data() + below(b.size() - w + 1), &v, w);
          break;
        }
        case 5:  // truncate
          b.resize(below(b.size() + 1));
          break;
      }
    }
    try {
      const GgufFile f = GgufFile::parse(b, "fuzz");
      for (const auto& kv : f.metadata()) (void)kv.value.to_display();
      uint64_t sum = 0;
      for (const auto& t : f.tensors()) {
        for (uint8_t c : f.tensor_data(t)) sum += c;
      }
      (void)sum;
      ++ok;
    } catch (const GgufError&) {
      ++failed;
    }
  }
  RecordProperty("parsed", static_cast<int>(ok));
  RecordProperty("rejected", static_cast<int>(failed));
  std::printf("fuzz: %zu parsed, %zu rejected\n", ok, failed);
  EXPECT_GT(failed, 1000u);
  EXPECT_GT(ok, 100u);  // flips in tensor data and string bytes keep many files valid
}

}  // namespace
}  // namespace fb
