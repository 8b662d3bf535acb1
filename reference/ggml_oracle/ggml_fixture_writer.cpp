// Writes the oracle fixture with REAL ggml: ggml_quantize_chunk for the blocks, the type traits'
// to_float for their dequantization, and ggml's own gguf writer for the file. Nothing from
// fusebench is linked in, so the fixture is an independent statement of what ggml does.
//
//   ggml_fixture_writer OUT.gguf [--seed S]
//
// Writes OUT.gguf (default alignment) and OUT_align64.gguf (general.alignment = 64), same content.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ggml.h"
#include "gguf.h"
#include "reference/ggml_oracle/oracle_fixture.h"
#include "reference/util/splitmix.h"

namespace {

using namespace fb::oracle;

[[noreturn]] void fail(const std::string& msg) {
  std::fprintf(stderr, "ggml_fixture_writer: %s\n", msg.c_str());
  std::exit(1);
}

// Source values are produced here only once and then stored in the fixture; the test reads them
// back from the file, so libm differences between machines cannot make the two sides disagree.
std::vector<float> make_source(const Case& c, uint64_t seed) {
  const fb::CounterRng rng(seed, fb::fnv1a64(c.name.data(), c.name.size()));
  std::vector<float> v(static_cast<size_t>(c.rows * c.cols));
  const std::string_view n = c.name;
  for (int64_t r = 0; r < c.rows; ++r) {
    float* row = v.data() + r * c.cols;
    for (int64_t i = 0; i < c.cols; ++i) {
      const uint64_t idx = static_cast<uint64_t>(r * c.cols + i);
      const uint64_t bits = rng.bits(idx);
      float x = 0.0f;
      if (n == "gaussian") {
        x = rng.normal(idx);
      } else if (n == "uniform") {
        x = 2.0f * rng.uniform(idx) - 1.0f;
      } else if (n == "constant") {
        static constexpr float kRowValue[] = {1.0f, -1.0f, 0.5f, -3.75f, 1.0e3f, -1.0e-3f, 0.0f, 1.0e-20f};
        x = kRowValue[r % 8];
      } else if (n == "outlier") {
        x = rng.normal(idx);
      } else if (n == "tiny") {
        const float mag = (r % 4 == 3) ? 1.0e-40f : 1.0e-30f;  // row 3, 7: float subnormals
        const uint64_t kind = bits % 3;
        x = kind == 0 ? 0.0f : (kind == 1 ? 1.0f : -1.0f) * mag * (1.0f + rng.uniform(idx));
      } else if (n == "mixed") {
        const uint64_t sub = static_cast<uint64_t>(r * c.cols + i / 16);
        const int decade = static_cast<int>(fb::splitmix64(seed ^ (sub * 0x9E37ull)) % 11) - 6;
        x = rng.normal(idx) * std::pow(10.0f, static_cast<float>(decade));
      } else if (n == "zero") {
        x = r < 2 ? 0.0f : -0.0f;
      } else if (n == "positive") {
        const float u = 0.5f + 1.5f * rng.uniform(idx);
        x = (r % 2 == 0) ? u : -u;
        if (r == 1) x = 1.0e-3f + rng.uniform(idx);  // positive with a minimum close to zero
      } else if (n == "ties") {
        const float sign = (bits >> 63) ? -1.0f : 1.0f;
        const int64_t k = i % 256;
        if (r == 0) {
          x = sign * (1.0f + static_cast<float>(2 * k + 1) * 0x1p-11f);  // fp16 halfway points
        } else if (r == 1) {
          x = sign * (1.0f + static_cast<float>(2 * (k % 64) + 1) * 0x1p-8f) *
              std::ldexp(1.0f, static_cast<int>(k % 7) - 3);  // bf16
        } else if (r == 2) {
          // amax = 127 * 2^e makes q8_0's id exactly 2^-e, so x*id lands on k + 0.5 exactly.
          const int e = static_cast<int>(i / 32) % 5 - 2;
          const int64_t j = i % 32;
          const float q = j == 0 ? 127.0f : static_cast<float>(static_cast<int64_t>(bits % 253) - 126) + 0.5f;
          x = sign * q * std::ldexp(1.0f, e);
        } else {
          x = sign * static_cast<float>(2 * k + 1) * 0x1p-25f;  // fp16 subnormal halfway points
        }
      } else if (n == "large") {
        if (r == 0) {
          x = (2.0f * rng.uniform(idx) - 1.0f) * 65504.0f;
        } else if (r == 1) {
          x = ((bits >> 63) ? -1.0f : 1.0f) *
              (65504.0f + static_cast<float>(bits % 33));  // fp16 overflow edge
        } else if (r == 2) {
          x = rng.normal(idx) * 4.0e6f;  // q8_0 scale amax/127 exceeds fp16 range
        } else {
          x = rng.normal(idx) * 1.0e15f;
        }
      } else {
        fail("unknown case " + std::string(n));
      }
      row[i] = x;
    }
    if (n == "outlier") {
      const int64_t pos = static_cast<int64_t>(fb::splitmix64(seed + static_cast<uint64_t>(r)) % c.cols);
      row[pos] = ((r % 2) ? -1.0f : 1.0f) * std::pow(10.0f, 4.0f + static_cast<float>(r % 3));
    }
  }
  return v;
}

ggml_type type_of(size_t t) { return static_cast<ggml_type>(kTypeIds[t]); }

struct Fixture {
  ggml_context* ctx = nullptr;
  std::vector<ggml_tensor*> tensors;  // in file order
};

ggml_tensor* new_tensor(Fixture& f, ggml_type type, const Case& c, const std::string& name) {
  if (name.size() >= GGML_MAX_NAME) fail("tensor name too long: " + name);
  ggml_tensor* t = ggml_new_tensor_2d(f.ctx, type, c.cols, c.rows);
  if (t == nullptr) fail("ggml_new_tensor_2d failed for " + name);
  ggml_set_name(t, name.c_str());
  f.tensors.push_back(t);
  return t;
}

Fixture build_tensors(uint64_t seed) {
  size_t mem = 0;
  for (const Case& c : kCases) {
    mem += ggml_tensor_overhead() + ggml_row_size(GGML_TYPE_F32, c.cols) * c.rows + GGML_MEM_ALIGN;
    for (size_t t = 0; t < std::size(kTypes); ++t) {
      mem += ggml_tensor_overhead() + ggml_row_size(type_of(t), c.cols) * c.rows + GGML_MEM_ALIGN;
      mem += ggml_tensor_overhead() + ggml_row_size(GGML_TYPE_F32, c.cols) * c.rows + GGML_MEM_ALIGN;
    }
  }
  Fixture f;
  f.ctx = ggml_init({/*mem_size=*/mem, /*mem_buffer=*/nullptr, /*no_alloc=*/false});
  if (f.ctx == nullptr) fail("ggml_init failed");

  for (const Case& c : kCases) {
    const std::vector<float> src = make_source(c, seed);
    ggml_tensor* s = new_tensor(f, GGML_TYPE_F32, c, src_name(c.name));
    std::memcpy(s->data, src.data(), ggml_nbytes(s));

    for (size_t t = 0; t < std::size(kTypes); ++t) {
      const ggml_type type = type_of(t);
      if (std::string_view(ggml_type_name(type)) != kTypes[t]) fail("type table out of sync with ggml");
      ggml_tensor* q = new_tensor(f, type, c, q_name(kTypes[t], c.name));
      // imatrix = NULL: the path llama-quantize takes without an importance matrix, i.e. the
      // quantize_row_*_ref reference quantizers that fusebench re-implements.
      const size_t written = ggml_quantize_chunk(type, src.data(), q->data, 0, c.rows, c.cols, nullptr);
      if (written != ggml_nbytes(q))
        fail("ggml_quantize_chunk wrote an unexpected size for " + q_name(kTypes[t], c.name));

      ggml_tensor* d = new_tensor(f, GGML_TYPE_F32, c, deq_name(kTypes[t], c.name));
      const ggml_type_traits* traits = ggml_get_type_traits(type);
      if (type == GGML_TYPE_F32) {
        std::memcpy(d->data, q->data, ggml_nbytes(q));  // f32 has no to_float: it is the identity
      } else {
        if (traits->to_float == nullptr) fail(std::string("no to_float for ") + ggml_type_name(type));
        traits->to_float(q->data, static_cast<float*>(d->data), c.rows * c.cols);
      }
    }
  }
  return f;
}

void set_metadata(gguf_context* g, bool align64, uint64_t seed) {
  gguf_set_val_str(g, "general.architecture", std::string(kArchitecture).c_str());
  // ggml fixes each tensor's offset when it is added, so the alignment must precede the tensors.
  if (align64) gguf_set_val_u32(g, "general.alignment", kAlignment64);
  gguf_set_val_u8(g, "oracle.u8", kU8);
  gguf_set_val_i8(g, "oracle.i8", kI8);
  gguf_set_val_u16(g, "oracle.u16", kU16);
  gguf_set_val_i16(g, "oracle.i16", kI16);
  gguf_set_val_u32(g, "oracle.u32", kU32);
  gguf_set_val_i32(g, "oracle.i32", kI32);
  gguf_set_val_f32(g, "oracle.f32", kF32);
  gguf_set_val_f32(g, "oracle.f32_denormal", kF32Denormal);
  gguf_set_val_f32(g, "oracle.f32_neg_zero", kF32NegZero);
  gguf_set_val_bool(g, "oracle.bool_true", true);
  gguf_set_val_bool(g, "oracle.bool_false", false);
  gguf_set_val_str(g, "oracle.str_ascii", std::string(kAscii).c_str());
  gguf_set_val_str(g, "oracle.str_utf8", std::string(kUtf8).c_str());
  gguf_set_val_str(g, "oracle.str_empty", "");
  gguf_set_val_u64(g, "oracle.u64", kU64);
  gguf_set_val_i64(g, "oracle.i64", kI64);
  gguf_set_val_f64(g, "oracle.f64", kF64);
  gguf_set_arr_data(g, "oracle.arr_u8", GGUF_TYPE_UINT8, kArrU8, std::size(kArrU8));
  gguf_set_arr_data(g, "oracle.arr_i8", GGUF_TYPE_INT8, kArrI8, std::size(kArrI8));
  gguf_set_arr_data(g, "oracle.arr_u16", GGUF_TYPE_UINT16, kArrU16, std::size(kArrU16));
  gguf_set_arr_data(g, "oracle.arr_i16", GGUF_TYPE_INT16, kArrI16, std::size(kArrI16));
  gguf_set_arr_data(g, "oracle.arr_u32", GGUF_TYPE_UINT32, kArrU32, std::size(kArrU32));
  gguf_set_arr_data(g, "oracle.arr_i32", GGUF_TYPE_INT32, kArrI32, std::size(kArrI32));
  gguf_set_arr_data(g, "oracle.arr_u64", GGUF_TYPE_UINT64, kArrU64, std::size(kArrU64));
  gguf_set_arr_data(g, "oracle.arr_i64", GGUF_TYPE_INT64, kArrI64, std::size(kArrI64));
  gguf_set_arr_data(g, "oracle.arr_f32", GGUF_TYPE_FLOAT32, kArrF32, std::size(kArrF32));
  gguf_set_arr_data(g, "oracle.arr_f64", GGUF_TYPE_FLOAT64, kArrF64, std::size(kArrF64));
  static_assert(sizeof(bool) == 1, "gguf stores bools as one byte");
  gguf_set_arr_data(g, "oracle.arr_bool", GGUF_TYPE_BOOL, kArrBool, std::size(kArrBool));
  gguf_set_arr_data(g, "oracle.arr_empty_i32", GGUF_TYPE_INT32, kArrI32, 0);
  std::vector<std::string> strs(std::begin(kArrStr), std::end(kArrStr));
  std::vector<const char*> ptrs;
  for (const std::string& s : strs) ptrs.push_back(s.c_str());
  gguf_set_arr_str(g, "oracle.arr_str", ptrs.data(), ptrs.size());
  gguf_set_val_u64(g, "oracle.seed", seed);
}

// ggml's writer keeps the alignment of the context, and gguf_set_val_u32("general.alignment")
// on a context from gguf_init_empty does not change it: offsets and padding stay at 32 while the
// header says 64, and ggml's own reader then rejects the file. Only its reader sets the alignment
// from the key, so the metadata goes through a tensor-less serialise/parse round trip first.
gguf_context* metadata_context(bool align64, uint64_t seed) {
  gguf_context* g = gguf_init_empty();
  if (g == nullptr) fail("gguf_init_empty failed");
  set_metadata(g, align64, seed);
  if (!align64) return g;
  std::vector<uint8_t> meta(gguf_get_meta_size(g));
  gguf_get_meta_data(g, meta.data());
  gguf_free(g);
  g = gguf_init_from_buffer(meta.data(), meta.size(), {/*no_alloc=*/true, /*ctx=*/nullptr});
  if (g == nullptr || gguf_get_alignment(g) != kAlignment64) fail("cannot re-parse the align64 metadata");
  return g;
}

void write_file(const Fixture& f, const std::string& path, bool align64, uint64_t seed) {
  gguf_context* g = metadata_context(align64, seed);
  for (ggml_tensor* t : f.tensors) gguf_add_tensor(g, t);  // data pointer is taken from the tensor
  if (!gguf_write_to_file(g, path.c_str(), /*only_meta=*/false)) fail("gguf_write_to_file failed: " + path);

  // Read it back with ggml's own reader: a fixture ggml itself rejects would prove nothing.
  gguf_context* back = gguf_init_from_file(path.c_str(), {/*no_alloc=*/true, /*ctx=*/nullptr});
  if (back == nullptr) fail("ggml cannot read back " + path);
  if (gguf_get_n_tensors(back) != static_cast<int64_t>(f.tensors.size()) ||
      gguf_get_alignment(back) != (align64 ? kAlignment64 : GGUF_DEFAULT_ALIGNMENT)) {
    fail("read-back of " + path + " disagrees with what was written");
  }
  gguf_free(back);
  gguf_free(g);
}

std::string align64_path(const std::string& out) {
  const std::string ext = ".gguf";
  if (out.size() > ext.size() && out.compare(out.size() - ext.size(), ext.size(), ext) == 0) {
    return out.substr(0, out.size() - ext.size()) + "_align64" + ext;
  }
  return out + "_align64";
}

}  // namespace

int main(int argc, char** argv) {
  std::string out;
  uint64_t seed = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--seed" && i + 1 < argc) {
      char* end = nullptr;
      seed = std::strtoull(argv[++i], &end, 0);
      if (end == nullptr || *end != '\0') fail("bad --seed value");
    } else if (!a.empty() && a[0] != '-' && out.empty()) {
      out = a;
    } else {
      fail("usage: ggml_fixture_writer OUT.gguf [--seed S]");
    }
  }
  if (out.empty()) fail("usage: ggml_fixture_writer OUT.gguf [--seed S]");

  Fixture f = build_tensors(seed);
  write_file(f, out, /*align64=*/false, seed);
  write_file(f, align64_path(out), /*align64=*/true, seed);
  ggml_quantize_free();
  ggml_free(f.ctx);
  std::printf("ggml_fixture_writer: wrote %s and %s (%zu tensors, seed %llu)\n", out.c_str(),
              align64_path(out).c_str(), f.tensors.size(), static_cast<unsigned long long>(seed));
  return 0;
}
