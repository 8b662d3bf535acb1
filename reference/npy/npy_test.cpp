#include "reference/npy/npy.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace fb {
namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> to_bytes(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

// A .npy image with the given version and header text (padded the way numpy pads) and float data.
std::vector<uint8_t> make_npy(const std::string& dict, const std::vector<float>& data, int major = 1) {
  const size_t prefix = major == 1 ? 10 : 12;
  std::string header = dict;
  const size_t hlen = header.size() + 1;
  header.append(64 - ((prefix + hlen) % 64), ' ');
  header.push_back('\n');
  std::string out = "\x93NUMPY";
  out += static_cast<char>(major);
  out += '\0';
  const size_t n = header.size();
  out += static_cast<char>(n & 0xFF);
  out += static_cast<char>((n >> 8) & 0xFF);
  if (major != 1) {
    out += static_cast<char>((n >> 16) & 0xFF);
    out += static_cast<char>((n >> 24) & 0xFF);
  }
  out += header;
  std::vector<uint8_t> bytes = to_bytes(out);
  const size_t at = bytes.size();
  bytes.resize(at + data.size() * 4);
  if (!data.empty()) std::memcpy(bytes.data() + at, data.data(), data.size() * 4);
  return bytes;
}

std::string error_of(const std::vector<uint8_t>& bytes) {
  try {
    parse_npy(bytes, "t.npy");
  } catch (const NpyError& e) {
    return e.what();
  }
  return "<no error>";
}

class TempDir {
 public:
  TempDir() {
    m_path = fs::temp_directory_path() / ("npy_test_" + std::to_string(::getpid()) + "_" +
                                          ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(m_path);
    fs::create_directories(m_path);
  }
  ~TempDir() { fs::remove_all(m_path); }
  const fs::path& path() const { return m_path; }

 private:
  fs::path m_path;
};

TEST(Npy, ParsesNumpyOutputForEveryVersion) {
  const std::vector<float> v = {0, 1, 2, 3, 4, 5};
  for (int major : {1, 2, 3}) {
    const auto bytes = make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", v, major);
    const NpyArray a = parse_npy(bytes);
    EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3})) << major;
    EXPECT_EQ(a.data, v) << major;
  }
}

TEST(Npy, AcceptsPythonLiteralVariants) {
  // Key order, double quotes, no trailing comma, odd whitespace and Python 2 longs are all valid.
  const auto bytes = make_npy("{\"shape\":(1L,2L),\"fortran_order\":False,\"descr\":\"<f4\"}", {7, 8});
  const NpyArray a = parse_npy(bytes);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(a.data, (std::vector<float>{7, 8}));
}

TEST(Npy, ScalarEmptyAndOneDimensional) {
  EXPECT_EQ(parse_npy(make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", {3})).data,
            std::vector<float>{3});
  const NpyArray e = parse_npy(make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 5), }", {}));
  EXPECT_EQ(e.shape, (std::vector<int64_t>{0, 5}));
  EXPECT_TRUE(e.data.empty());
  // One dimension: Fortran and C order are the same bytes.
  EXPECT_EQ(parse_npy(make_npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", {1, 2})).data,
            (std::vector<float>{1, 2}));
}

TEST(Npy, WriterMatchesNumpyByteForByte) {
  TempDir dir;
  const fs::path p = dir.path() / "a.npy";
  const std::vector<float> v = {0, 1, 2, 3, 4, 5};
  const std::vector<int64_t> shape = {2, 3};
  write_npy(p, v, shape);
  // np.save(np.arange(6, dtype=np.float32).reshape(2, 3)) is 152 bytes with a 118-byte header.
  std::ifstream in(p, std::ios::binary);
  std::vector<uint8_t> got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_EQ(got.size(), 152u);
  const std::string head(got.begin(), got.begin() + 128);
  std::string want = std::string("\x93NUMPY\x01\x00v\x00", 10) +
                     "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  want.append(127 - want.size(), ' ');
  want += '\n';
  EXPECT_EQ(head, want);
  EXPECT_FALSE(fs::exists(p.string() + ".tmp"));
  EXPECT_EQ(read_npy(p).data, v);
}

TEST(Npy, RoundTripShapes) {
  TempDir dir;
  const std::vector<std::vector<int64_t>> shapes = {{}, {0}, {5}, {3, 4}, {2, 3, 4}, {0, 7}, {1, 1, 1, 1, 1}};
  for (const auto& shape : shapes) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) * 0.25f - 1.0f;
    const fs::path p = dir.path() / "r.npy";
    write_npy(p, v, shape);
    const NpyArray a = read_npy(p);
    EXPECT_EQ(a.shape, shape);
    EXPECT_EQ(a.data, v);
    EXPECT_EQ((fs::file_size(p) - v.size() * 4) % 64, 0u);
  }
}

TEST(Npy, WriterRejectsMismatchedShape) {
  TempDir dir;
  const std::vector<float> v = {1, 2, 3};
  const std::vector<int64_t> shape = {2, 2};
  EXPECT_THROW(write_npy(dir.path() / "x.npy", v, shape), std::invalid_argument);
  const std::vector<int64_t> neg = {-3};
  EXPECT_THROW(write_npy(dir.path() / "x.npy", v, neg), std::invalid_argument);
  EXPECT_FALSE(fs::exists(dir.path() / "x.npy"));
}

TEST(Npy, IoErrorsAreNpyIoError) {
  TempDir dir;
  EXPECT_THROW(read_npy(dir.path() / "missing.npy"), NpyIoError);
  const std::vector<float> v = {1};
  const std::vector<int64_t> shape = {1};
  EXPECT_THROW(write_npy(dir.path() / "no" / "such" / "dir.npy", v, shape), NpyIoError);
  // Writing over a directory fails at rename; the temp file must not be left behind.
  fs::create_directories(dir.path() / "d.npy" / "inner");
  EXPECT_THROW(write_npy(dir.path() / "d.npy", v, shape), NpyIoError);
  EXPECT_FALSE(fs::exists(dir.path() / "d.npy.tmp"));
  for (const auto& e : fs::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
}

TEST(Npy, WriterUsesAUniqueTempAndLeavesAStaleOneAlone) {
  TempDir dir;
  const fs::path p = dir.path() / "a.npy";
  {
    std::ofstream stale(p.string() + ".tmp");
    stale << "stale";
  }
  const std::vector<float> v = {1, 2};
  const std::vector<int64_t> shape = {2};
  write_npy(p, v, shape);
  EXPECT_EQ(read_npy(p).data, v);
  std::ifstream in(p.string() + ".tmp");
  std::string s;
  in >> s;
  EXPECT_EQ(s, "stale");
  int files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path())) ++files;
  EXPECT_EQ(files, 2);  // a.npy and the stale temp: our own temp was renamed away
}

TEST(Npy, WrongDtypeSaysHowToConvert) {
  const auto err = [](const std::string& descr) {
    return error_of(make_npy("{'descr': '" + descr + "', 'fortran_order': False, 'shape': (2,), }", {1, 2}));
  };
  EXPECT_NE(
      err("<f8").find("expected '<f4' float32, found '<f8' (float64) — convert with arr.astype(np.float32)"),
      std::string::npos)
      << err("<f8");
  EXPECT_NE(err("<f2").find("found '<f2' (float16)"), std::string::npos);
  EXPECT_NE(err("<i4").find("found '<i4' (int32)"), std::string::npos);
  EXPECT_NE(err("|u1").find("found '|u1' (uint8)"), std::string::npos);
  EXPECT_NE(err(">f4").find("found '>f4' (big-endian float32) — convert with arr.astype('<f4')"),
            std::string::npos);
  EXPECT_NE(err("|b1").find("(bool)"), std::string::npos);
  EXPECT_NE(err("|O").find("Python objects"), std::string::npos);
  const std::string structured =
      error_of(make_npy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", {1, 2}));
  EXPECT_NE(structured.find("structured dtype"), std::string::npos) << structured;
}

struct Malformed {
  const char* what;
  std::vector<uint8_t> bytes;
  const char* expect;  // substring of the message, offset included
};

TEST(Npy, MalformedHeadersNameTheOffset) {
  const std::string ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
  const std::vector<float> two = {1, 2};
  auto with = [&](size_t at, uint8_t byte) {
    auto b = make_npy(ok, two);
    b[at] = byte;
    return b;
  };
  auto header = [&](const std::string& dict) { return make_npy(dict, two); };
  auto big_len = make_npy(ok, two);
  big_len[8] = 0xFF;
  big_len[9] = 0xFF;
  auto v2_huge = make_npy(ok, two, 2);
  v2_huge[11] = 0x40;
  auto zero_len = make_npy(ok, two);
  zero_len[8] = zero_len[9] = 0;
  auto long_data = make_npy(ok, two);
  long_data.push_back(0);
  std::vector<uint8_t> nonascii = make_npy(ok, two);
  nonascii[20] = 0xE9;

  const std::vector<Malformed> cases = {
      {"bad magic", with(1, 'X'), "t.npy: offset 1: found 'X' (expected the .npy magic"},
      {"version 4", with(6, 4), "offset 6: unsupported .npy format version 4.0"},
      {"version 1.1", with(7, 1), "offset 6: unsupported .npy format version 1.1"},
      {"header past end", big_len, "truncated: header declares 65535 bytes"},
      {"v2 header too long", v2_huge, "offset 8: header length"},
      {"zero header", zero_len, "offset 8: header length 0 out of range"},
      {"non-ascii", nonascii, "offset 20: byte 0xe9 in the header"},
      {"not a dict", header("['descr']"), "offset 10: found '[' (expected '{' opening the header dict)"},
      {"missing shape", header("{'descr': '<f4', 'fortran_order': False}"),
       "offset 10: header dict has no 'shape' key"},
      {"missing descr", header("{'shape': (2,), 'fortran_order': False}"), "no 'descr' key"},
      {"missing fortran", header("{'shape': (2,), 'descr': '<f4'}"), "no 'fortran_order' key"},
      {"extra key", header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}"),
       "offset 66: unexpected header key 'x'"},
      {"duplicate key", header("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}"),
       "offset 27: duplicate header key 'descr'"},
      {"unquoted key", header("{descr: '<f4'}"), "offset 11: found 'd' (expected a quoted key)"},
      {"missing colon", header("{'descr' '<f4'}"), "offset 19: found ''' (expected ':' after the key)"},
      {"missing comma", header("{'descr': '<f4' 'shape': (2,)}"), "where ',' or '}' should follow"},
      {"unterminated string", header("{'descr: '<f4'}"), "expected ':' after the key"},
      {"escape", header("{'de\\scr': '<f4'}"), "escape or newline inside a header string"},
      {"fortran not bool", header("{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}"),
       "expected fortran_order True or False"},
      {"fortran 2-D", make_npy("{'descr': '<f4', 'fortran_order': True, 'shape': (1, 2), }", two),
       "fortran_order True (column-major) is not supported"},
      {"shape int", header("{'descr': '<f4', 'fortran_order': False, 'shape': 2}"),
       "expected shape as a tuple such as (4, 512)"},
      {"shape (n)", header("{'descr': '<f4', 'fortran_order': False, 'shape': (2)}"), "is not a tuple"},
      {"negative dim", header("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}"),
       "found '-' in shape (expected a non-negative integer"},
      {"float dim", header("{'descr': '<f4', 'fortran_order': False, 'shape': (2.0,)}"),
       "found '.' in shape (expected ',' or ')')"},
      {"huge dim", header("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}"),
       "shape dimension too large"},
      {"product overflow",
       header("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)}"),
       "more elements than fit in 64 bits"},
      {"product times 4 overflow",
       header("{'descr': '<f4', 'fortran_order': False, 'shape': (2147483648, 2147483648)}"),
       "more elements than fit in 64 bits"},
      {"too little data", header("{'descr': '<f4', 'fortran_order': False, 'shape': (3,)}"),
       "truncated: shape (3,) needs 12 data bytes but only 8 remain"},
      {"too much data", long_data, "offset 136: 1 unexpected bytes after the 8 data bytes of shape (2,)"},
      {"garbage after dict", header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} x"),
       "found 'x' after the header dict"},
      {"unclosed dict", header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), "),
       "found the end of the header (expected a quoted key)"},
  };
  for (const auto& c : cases) {
    const std::string msg = error_of(c.bytes);
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.what << ": " << msg;
    EXPECT_NE(msg.find("offset "), std::string::npos) << c.what << ": " << msg;
  }
}

TEST(Npy, TruncationAtEveryByteIsAnError) {
  for (int major : {1, 2, 3}) {
    const auto bytes =
        make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", {1, 2, 3, 4, 5, 6}, major);
    ASSERT_NO_THROW(parse_npy(bytes));
    for (size_t n = 0; n < bytes.size(); ++n) {
      const std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + static_cast<long>(n));
      const std::string msg = error_of(prefix);
      EXPECT_NE(msg.find("offset "), std::string::npos) << "prefix " << n << ": " << msg;
    }
  }
}

TEST(Npy, SingleByteCorruptionNeverCrashes) {
  // Every position, a few values each: the parser either accepts or throws NpyError, nothing else.
  const auto bytes =
      make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", {1, 2, 3, 4, 5, 6});
  std::mt19937 rng(1234);
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (uint8_t v : {uint8_t{0}, uint8_t{0xFF}, uint8_t{'('}, uint8_t{','}, static_cast<uint8_t>(rng())}) {
      auto b = bytes;
      b[i] = v;
      try {
        const NpyArray a = parse_npy(b);
        // Accepted: then the shape must describe exactly the data read (the fuzzer's property too).
        size_t n = 1;
        for (int64_t d : a.shape) {
          ASSERT_GE(d, 0) << "byte " << i << " = " << int{v};
          n *= static_cast<size_t>(d);
        }
        EXPECT_EQ(n, a.data.size()) << "byte " << i << " = " << int{v} << ": shape "
                                    << format_npy_shape(a.shape);
      } catch (const NpyError&) {
      }
    }
  }
}

}  // namespace
}  // namespace fb
