#include "harness/gguf_tools/gguf_command.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "harness/cli/exit_codes.h"
#include "reference/formats/dequantize.h"
#include "reference/formats/quantize.h"
#include "reference/gguf/gguf_file.h"
#include "reference/gguf/gguf_writer.h"
#include "reference/npy/npy.h"

namespace fb {
namespace {

namespace fs = std::filesystem;

class GgufCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    m_dir = fs::temp_directory_path() / ("gguf_command_test_" + std::to_string(::getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(m_dir);
    fs::create_directories(m_dir);
  }
  void TearDown() override { fs::remove_all(m_dir); }
  fs::path at(const std::string& name) const { return m_dir / name; }

  // Random normal matrix with a few large outliers, the shape quantizers find hardest.
  static std::vector<float> matrix(int64_t rows, int64_t cols, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> v(static_cast<size_t>(rows * cols));
    for (auto& x : v) x = nd(rng);
    for (size_t i = 0; i < v.size(); i += 97) v[i] *= 40.0f;
    return v;
  }
  fs::path save(const std::string& name, const std::vector<float>& v, std::vector<int64_t> shape) const {
    write_npy(at(name), v, shape);
    return at(name);
  }

  fs::path m_dir;
};

// Runs `fn` expecting a CliError; returns it for inspection.
template <class F>
CliError expect_cli_error(F&& fn, ExitCode code) {
  try {
    fn();
  } catch (const CliError& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    return e;
  }
  ADD_FAILURE() << "no CliError thrown";
  return CliError(kExitOk, "");
}

TEST_F(GgufCommand, QuantizeDequantRoundTripEveryType) {
  const int64_t rows = 3, cols = 512;
  const auto v = matrix(rows, cols, 7);
  const fs::path in = save("w.npy", v, {rows, cols});
  for (GgmlType type : kConvertibleTypes) {
    const std::string tn(ggml_type_name(type));
    SCOPED_TRACE(tn);
    const fs::path out = at("w_" + tn + ".gguf");
    std::ostringstream err;
    gguf_quantize({in, tn, "blk.0.ffn_up.weight", out}, err);
    EXPECT_NE(err.str().find("wrote"), std::string::npos);

    const GgufFile f = GgufFile::open(out);
    EXPECT_EQ(f.get_string("general.architecture"), "fusebench");
    EXPECT_EQ(f.get_string("general.name"), "w");
    const GgufValue* qv = f.find("general.quantization_version");
    const bool quantized = type != GgmlType::F32 && type != GgmlType::F16 && type != GgmlType::BF16;
    ASSERT_EQ(qv != nullptr, quantized);
    if (qv) {
      EXPECT_EQ(qv->type(), GgufValueType::UINT32);
      EXPECT_EQ(qv->as_uint(), 2u);
    }
    EXPECT_EQ(f.find("general.alignment"), nullptr);
    ASSERT_EQ(f.tensors().size(), 1u);
    const GgufTensorInfo& t = f.tensors()[0];
    EXPECT_EQ(t.name, "blk.0.ffn_up.weight");
    EXPECT_EQ(t.ggml_type(), type);
    EXPECT_EQ(t.ne, (std::vector<int64_t>{cols, rows}));

    // Expected bytes and floats straight from the reference library, row by row.
    const size_t rb = ggml_row_bytes(type, cols);
    std::vector<uint8_t> q(rb * rows);
    std::vector<float> want(v.size());
    for (int64_t r = 0; r < rows; ++r) {
      quantize(type, v.data() + r * cols, q.data() + r * rb, cols);
      dequantize(type, q.data() + r * rb, want.data() + r * cols, cols);
    }
    const auto data = f.tensor_data(t);
    ASSERT_EQ(data.size(), q.size());
    EXPECT_EQ(std::memcmp(data.data(), q.data(), q.size()), 0);

    const fs::path npy = at("d_" + tn + ".npy");
    gguf_dequant({out, "blk.0.ffn_up.weight", npy}, err);
    const NpyArray got = read_npy(npy);
    EXPECT_EQ(got.shape, (std::vector<int64_t>{rows, cols}));
    ASSERT_EQ(got.data.size(), want.size());
    EXPECT_EQ(std::memcmp(got.data.data(), want.data(), want.size() * 4), 0);
    if (type == GgmlType::F32) {
      EXPECT_EQ(got.data, v);
    }
  }
}

TEST_F(GgufCommand, QuantizeErrors) {
  std::ostringstream err;
  const fs::path ok = save("ok.npy", matrix(2, 256, 1), {2, 256});

  auto e = expect_cli_error([&] { gguf_quantize({ok, "q4_0", "t", at("o.gguf")}, err); }, kExitUsage);
  EXPECT_NE(std::string(e.what()).find("q4_K"), std::string::npos) << e.what();
  expect_cli_error([&] { gguf_quantize({ok, "nonsense", "t", at("o.gguf")}, err); }, kExitUsage);
  expect_cli_error([&] { gguf_quantize({ok, "q8_0", std::string(64, 'x'), at("o.gguf")}, err); }, kExitUsage);
  expect_cli_error([&] { gguf_quantize({ok, "q8_0", "", at("o.gguf")}, err); }, kExitUsage);
  // Types are matched case-insensitively.
  gguf_quantize({ok, "Q4_k", "t", at("case.gguf")}, err);
  EXPECT_EQ(GgufFile::open(at("case.gguf")).tensors()[0].ggml_type(), GgmlType::Q4_K);

  const fs::path narrow = save("narrow.npy", matrix(2, 96, 2), {2, 96});
  e = expect_cli_error([&] { gguf_quantize({narrow, "q4_K", "t", at("o.gguf")}, err); }, kExitBadInput);
  EXPECT_NE(std::string(e.what()).find("96 columns is not a multiple of q4_K's block size 256"),
            std::string::npos)
      << e.what();
  gguf_quantize({narrow, "q8_0", "t", at("narrow.gguf")}, err);  // 96 = 3 blocks of 32

  const fs::path three = save("three.npy", matrix(2, 64, 3), {2, 1, 64});
  e = expect_cli_error([&] { gguf_quantize({three, "f32", "t", at("o.gguf")}, err); }, kExitBadInput);
  EXPECT_NE(std::string(e.what()).find("expected a 2-D array (rows, cols), found shape (2, 1, 64)"),
            std::string::npos)
      << e.what();
  const fs::path empty = save("empty.npy", {}, {0, 32});
  expect_cli_error([&] { gguf_quantize({empty, "f32", "t", at("o.gguf")}, err); }, kExitBadInput);

  auto v = matrix(1, 256, 4);
  v[77] = std::numeric_limits<float>::infinity();
  const fs::path inf = save("inf.npy", v, {1, 256});
  e = expect_cli_error([&] { gguf_quantize({inf, "q6_K", "t", at("o.gguf")}, err); }, kExitBadInput);
  EXPECT_NE(std::string(e.what()).find("element (0, 77) is inf"), std::string::npos) << e.what();
  gguf_quantize({inf, "f16", "t", at("inf.gguf")}, err);  // plain floats carry inf

  // float64 input: the npy reader's advice reaches the user.
  {
    std::string h = "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 32), }";
    h.append(127 - 10 - h.size(), ' ');
    h += '\n';
    std::ofstream f(at("f64.npy"), std::ios::binary);
    f.write("\x93NUMPY\x01\x00v\x00", 10);
    f << h << std::string(32 * 8, '\0');
  }
  e = expect_cli_error(
      [&] {
        gguf_quantize({at("f64.npy"), "q8_0", "t", at("o.gguf")}, err);
      },
      kExitBadInput);
  EXPECT_NE(std::string(e.what()).find("astype(np.float32)"), std::string::npos) << e.what();

  expect_cli_error([&] { gguf_quantize({at("missing.npy"), "q8_0", "t", at("o.gguf")}, err); }, kExitIo);
  expect_cli_error([&] { gguf_quantize({ok, "q8_0", "t", at("no/such/dir/o.gguf")}, err); }, kExitIo);
  EXPECT_FALSE(fs::exists(at("o.gguf")));
}

// A file with every kind of metadata value and tensors of several types and ranks.
fs::path write_mixed(const fs::path& path) {
  GgufWriter w(path);
  w.add_kv("general.architecture", GgufValue{std::string("llama")});
  w.add_kv("general.name", GgufValue{std::string("a \"quoted\"\nname")});
  w.add_kv("test.u8", GgufValue{uint8_t{200}});
  w.add_kv("test.i8", GgufValue{int8_t{-5}});
  w.add_kv("test.u32", GgufValue{uint32_t{4096}});
  w.add_kv("test.i64", GgufValue{int64_t{-1234567890123}});
  w.add_kv("test.f32", GgufValue{0.5f});
  w.add_kv("test.f64", GgufValue{2.25});
  w.add_kv("test.bool", GgufValue{GgufBool{true}});
  w.add_kv("test.long_string", GgufValue{std::string(200, 'z')});
  GgufArray tokens;
  tokens.elem_type = GgufValueType::STRING;
  std::vector<std::string> toks;
  for (int i = 0; i < 20; ++i) toks.push_back("tok" + std::to_string(i));
  tokens.values = toks;
  w.add_kv("tokenizer.ggml.tokens", GgufValue{tokens});
  GgufArray bools;
  bools.elem_type = GgufValueType::BOOL;
  bools.values = std::vector<uint8_t>{1, 0, 1};
  w.add_kv("test.bools", GgufValue{bools});
  GgufArray ints;
  ints.elem_type = GgufValueType::INT32;
  ints.values = std::vector<int32_t>{-1, 2, -3};
  w.add_kv("test.ints", GgufValue{ints});

  std::vector<std::vector<uint8_t>> data;
  auto add = [&](const std::string& name, GgmlType type, std::vector<int64_t> ne, uint32_t seed) {
    int64_t rows = 1;
    for (size_t i = 1; i < ne.size(); ++i) rows *= ne[i];
    const auto v = [&] {
      std::mt19937 rng(seed);
      std::normal_distribution<float> nd;
      std::vector<float> x(static_cast<size_t>(rows * ne[0]));
      for (auto& f : x) f = nd(rng);
      return x;
    }();
    const size_t rb = ggml_row_bytes(type, ne[0]);
    std::vector<uint8_t> q(rb * rows);
    for (int64_t r = 0; r < rows; ++r) quantize(type, v.data() + r * ne[0], q.data() + r * rb, ne[0]);
    w.add_tensor(name, type, std::move(ne));
    data.push_back(std::move(q));
  };
  add("token_embd.weight", GgmlType::Q4_K, {256, 6}, 1);
  add("blk.0.attn_norm.weight", GgmlType::F32, {256}, 2);
  add("blk.0.attn_q.weight", GgmlType::Q8_0, {64, 3}, 3);
  add("blk.0.ffn_gate_exps.weight", GgmlType::Q6_K, {256, 2, 3}, 4);
  add("blk.0.ffn_up_exps.weight", GgmlType::BF16, {8, 2, 2, 2}, 5);
  // Q4_0 (id 2) is a valid ggml type fusebench does not convert: 2 blocks of 18 bytes.
  w.add_tensor_raw("blk.0.legacy.weight", 2, {64});
  data.push_back(std::vector<uint8_t>(36, 0));
  std::vector<std::span<const uint8_t>> spans(data.begin(), data.end());
  w.write_all(spans);
  return path;
}

TEST_F(GgufCommand, InspectText) {
  const fs::path f = write_mixed(at("mixed.gguf"));
  std::ostringstream out;
  gguf_inspect({f, false, false}, out);
  const std::string s = out.str();
  for (const char* want : {"GGUF v3, alignment 32",
                           "metadata: 13 keys",
                           "tensors: 6",
                           "general.architecture",
                           "\"llama\"",
                           "\"a \\\"quoted\\\"\\nname\"",
                           "test.u8",
                           "200",
                           "-1234567890123",
                           "0.5",
                           "2.25",
                           "true",
                           "string[20]",
                           "\"tok0\", \"tok1\"",
                           "... 12 more",
                           "bool[3]",
                           "[true, false, true]",
                           "i32[3]",
                           "[-1, 2, -3]",
                           "(200 bytes)",
                           "token_embd.weight",
                           "6 x 256",
                           "[256, 6]",
                           "3 x 2 x 256",
                           "[256, 2, 3]",
                           "2 x 2 x 2 x 8",
                           "q4_0",
                           "totals: 6 tensors",
                           "bf16"}) {
    EXPECT_NE(s.find(want), std::string::npos) << "missing '" << want << "' in:\n" << s;
  }
  EXPECT_EQ(s.find("tok19"), std::string::npos);

  std::ostringstream full;
  gguf_inspect({f, false, true}, full);
  EXPECT_NE(full.str().find("\"tok19\""), std::string::npos);
  EXPECT_NE(full.str().find(std::string(200, 'z')), std::string::npos);
}

TEST_F(GgufCommand, InspectJson) {
  const fs::path f = write_mixed(at("mixed.gguf"));
  std::ostringstream out;
  gguf_inspect({f, true, false}, out);
  const auto j = nlohmann::json::parse(out.str());
  const GgufFile g = GgufFile::open(f);
  EXPECT_EQ(j["version"], 3);
  EXPECT_EQ(j["alignment"], 32);
  EXPECT_EQ(j["data_offset"], g.data_offset());
  EXPECT_EQ(j["file_size"], fs::file_size(f));
  ASSERT_EQ(j["metadata"].size(), 13u);
  EXPECT_EQ(j["metadata"][0]["key"], "general.architecture");
  EXPECT_EQ(j["metadata"][0]["value"], "llama");
  EXPECT_EQ(j["metadata"][4]["type"], "u32");
  EXPECT_EQ(j["metadata"][4]["value"], 4096);
  EXPECT_EQ(j["metadata"][5]["value"], -1234567890123);
  EXPECT_EQ(j["metadata"][8]["value"], true);
  const auto& tok = j["metadata"][10];
  EXPECT_EQ(tok["type"], "array");
  EXPECT_EQ(tok["elem_type"], "string");
  EXPECT_EQ(tok["count"], 20);
  EXPECT_EQ(tok["value"].size(), 8u);
  EXPECT_EQ(tok["truncated"], true);
  EXPECT_EQ(j["metadata"][11]["value"], nlohmann::json::parse("[true, false, true]"));

  ASSERT_EQ(j["tensors"].size(), 6u);
  const auto& t3 = j["tensors"][3];
  EXPECT_EQ(t3["name"], "blk.0.ffn_gate_exps.weight");
  EXPECT_EQ(t3["type"], "q6_K");
  EXPECT_EQ(t3["shape"], nlohmann::json::parse("[3, 2, 256]"));
  EXPECT_EQ(t3["ne"], nlohmann::json::parse("[256, 2, 3]"));
  EXPECT_EQ(t3["rows"], 6);
  EXPECT_EQ(t3["bytes"], 6 * 210);
  EXPECT_EQ(t3["file_offset"], g.data_offset() + g.tensors()[3].offset);
  uint64_t bytes = 0, params = 0;
  for (const auto& t : g.tensors()) {
    bytes += t.nbytes;
    params += static_cast<uint64_t>(t.n_elements());
  }
  EXPECT_EQ(j["totals"]["tensors"], 6);
  EXPECT_EQ(j["totals"]["bytes"], bytes);
  EXPECT_EQ(j["totals"]["parameters"], params);
  EXPECT_EQ(j["totals"]["by_type"]["q8_0"]["bytes"], 3 * 2 * 34);

  std::ostringstream full;
  gguf_inspect({f, true, true}, full);
  const auto jf = nlohmann::json::parse(full.str());
  EXPECT_EQ(jf["metadata"][10]["value"].size(), 20u);
  EXPECT_EQ(jf["metadata"][10]["truncated"], false);
}

TEST_F(GgufCommand, DequantFlattensAndReportsErrors) {
  const fs::path f = write_mixed(at("mixed.gguf"));
  std::ostringstream err;
  gguf_dequant({f, "blk.0.ffn_gate_exps.weight", at("e.npy")}, err);
  EXPECT_NE(err.str().find("has shape (3, 2, 256); writing it flattened to (6, 256)"), std::string::npos)
      << err.str();
  EXPECT_EQ(read_npy(at("e.npy")).shape, (std::vector<int64_t>{6, 256}));
  gguf_dequant({f, "blk.0.ffn_up_exps.weight", at("b.npy")}, err);
  EXPECT_EQ(read_npy(at("b.npy")).shape, (std::vector<int64_t>{8, 8}));
  gguf_dequant({f, "blk.0.attn_norm.weight", at("n.npy")}, err);
  EXPECT_EQ(read_npy(at("n.npy")).shape, (std::vector<int64_t>{1, 256}));

  auto e = expect_cli_error([&] { gguf_dequant({f, "blk.0.attn_q", at("x.npy")}, err); }, kExitBadInput);
  EXPECT_NE(std::string(e.what()).find("close names: blk.0.attn_q.weight"), std::string::npos) << e.what();
  e = expect_cli_error(
      [&] {
        gguf_dequant({f, "completely_unrelated_name_xyz", at("x.npy")}, err);
      },
      kExitBadInput);
  EXPECT_NE(std::string(e.what()).find("gguf inspect"), std::string::npos) << e.what();
  e = expect_cli_error([&] { gguf_dequant({f, "blk.0.legacy.weight", at("x.npy")}, err); }, kExitBadInput);
  EXPECT_NE(std::string(e.what()).find(
                "has type q4_0, which fusebench cannot dequantize (supported: f32, f16, bf16, "
                "q8_0, q4_K, q5_K, q6_K)"),
            std::string::npos)
      << e.what();
  EXPECT_FALSE(fs::exists(at("x.npy")));

  expect_cli_error([&] { gguf_dequant({at("missing.gguf"), "t", at("x.npy")}, err); }, kExitIo);
  { std::ofstream(at("junk.gguf")) << "this is not a gguf file at all"; }
  expect_cli_error([&] { gguf_dequant({at("junk.gguf"), "t", at("x.npy")}, err); }, kExitBadInput);
  expect_cli_error([&] { gguf_dequant({f, "blk.0.attn_q.weight", at("no/dir/x.npy")}, err); }, kExitIo);
  expect_cli_error([&] { gguf_inspect({at("junk.gguf"), false, false}, err); }, kExitBadInput);
}

TEST_F(GgufCommand, CliWiring) {
  const fs::path in = save("w.npy", matrix(4, 256, 9), {4, 256});
  const auto run = [](const std::string& line) {
    CLI::App app("fusebench");
    add_gguf_command(app);
    app.parse(line, false);
  };
  run(fmt::format("gguf quantize {} --type q5_K --name blk.3.w -o {}", in.string(), at("c.gguf").string()));
  const GgufFile g = GgufFile::open(at("c.gguf"));
  EXPECT_EQ(g.tensors()[0].name, "blk.3.w");
  EXPECT_EQ(g.tensors()[0].ggml_type(), GgmlType::Q5_K);
  run(fmt::format("gguf quantize {} -t q8_0 -o {}", in.string(), at("d.gguf").string()));
  EXPECT_EQ(GgufFile::open(at("d.gguf")).tensors()[0].name, "tensor");
  run(fmt::format("gguf dequant {} blk.3.w -o {}", at("c.gguf").string(), at("c.npy").string()));
  EXPECT_EQ(read_npy(at("c.npy")).shape, (std::vector<int64_t>{4, 256}));

  // Errors from the commands pass through parse() untouched, for main() to print.
  EXPECT_THROW(run(fmt::format("gguf quantize {} --type q4_0 -o {}", in.string(), at("e.gguf").string())),
               CliError);
  EXPECT_THROW(run("gguf"), CLI::RequiredError);
  EXPECT_THROW(run("gguf quantize w.npy -o x.gguf"), CLI::RequiredError);
  EXPECT_THROW(run("gguf dequant a.gguf"), CLI::RequiredError);

  for (const char* sub : {"inspect", "dequant", "quantize"}) {
    CLI::App app("fusebench");
    add_gguf_command(app);
    try {
      app.parse(std::string("gguf ") + sub + " --help", false);
      ADD_FAILURE() << sub << ": --help did not stop parsing";
    } catch (const CLI::CallForHelp&) {
      const std::string help = app.get_subcommand("gguf")->get_subcommand(sub)->help();
      EXPECT_NE(help.find("Examples:"), std::string::npos) << help;
      EXPECT_NE(help.find(std::string("fusebench gguf ") + sub), std::string::npos) << help;
    }
  }
}

}  // namespace
}  // namespace fb
