// libFuzzer target for the GGUF reader (built with -DFUSEBENCH_FUZZ=ON, clang only; see
// scripts/fuzz). Property: any byte string either parses, and then every accessor stays inside the
// buffer, or throws GgufError; anything else (a crash, another exception, a sanitizer report, a
// leak, a hang) is a bug.
#include <cstddef>
#include <cstdint>
#include <span>

#include "reference/gguf/gguf_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const fb::GgufFile f = fb::GgufFile::parse(std::span<const uint8_t>(data, size), "fuzz");
    for (const auto& kv : f.metadata()) {
      (void)kv.value.to_display();
      (void)kv.value.as_int();
      (void)kv.value.as_float();
    }
    // The typed getters must throw GgufError, never something else, on a wrongly typed value.
    for (const char* key : {"general.architecture", "general.alignment", "general.name"}) {
      try {
        (void)f.get_string(key);
      } catch (const fb::GgufError&) {
      }
      try {
        (void)f.get_uint(key);
      } catch (const fb::GgufError&) {
      }
      try {
        (void)f.get_float(key);
      } catch (const fb::GgufError&) {
      }
    }
    // Reading every tensor byte lets ASan prove the validated extents lie inside the input.
    uint8_t acc = 0;
    for (const auto& t : f.tensors()) {
      const auto bytes = f.tensor_data(t);
      if (!bytes.empty()) acc ^= bytes.front() ^ bytes.back();
      (void)f.find_tensor(t.name);
    }
    volatile uint8_t sink = acc;
    (void)sink;
  } catch (const fb::GgufError&) {
  }
  return 0;
}
