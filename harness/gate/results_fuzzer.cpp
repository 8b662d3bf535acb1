// libFuzzer target for the results JSON loader (built with -DFUSEBENCH_FUZZ=ON, clang only; see
// scripts/fuzz): bytes -> gate::parse_results (JSON parse, header checks, validate_results against
// the schema), exactly what `fusebench compare` runs on a results file. Property: any input either
// loads or throws CliError with kExitBadInput; any other exception, crash or sanitizer report is a
// bug. Regression inputs live in testdata/fuzz-regressions/ and seed every run.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "harness/cli/exit_codes.h"
#include "harness/gate/load.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    (void)fb::gate::parse_results(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
  } catch (const fb::CliError& e) {
    if (e.code() != fb::kExitBadInput) std::abort();
  }
  return 0;
}
