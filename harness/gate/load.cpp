#include "harness/gate/load.h"

#include <fmt/format.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "harness/cli/exit_codes.h"
#include "harness/results/results.h"

#if FUSEBENCH_HAVE_ZLIB
#include <zlib.h>
#endif

namespace fb::gate {

namespace {

std::string read_gz(const std::filesystem::path& path) {
#if FUSEBENCH_HAVE_ZLIB
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) throw CliError(kExitIo, fmt::format("{}: cannot open", path.string()));
  std::string out;
  char buf[1 << 16];
  int n = 0;
  while ((n = gzread(f, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  int err = 0;
  const char* msg = gzerror(f, &err);
  const std::string what = msg ? msg : "";
  gzclose(f);
  if (n < 0 || (err != Z_OK && err != Z_STREAM_END))
    throw CliError(kExitBadInput, fmt::format("{}: bad gzip data: {}", path.string(), what));
  return out;
#else
  // No zlib headers at build time: let gzip(1) decompress (the path single-quoted for the shell).
  std::string quoted = "'";
  for (char ch : path.string()) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  quoted += "'";
  FILE* pipe = ::popen(("gzip -dc -- " + quoted + " 2>/dev/null").c_str(), "r");
  if (pipe == nullptr) throw CliError(kExitIo, fmt::format("{}: cannot run gzip", path.string()));
  std::string out;
  char buf[1 << 16];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  if (::pclose(pipe) != 0)
    throw CliError(kExitBadInput,
                   fmt::format("{}: gzip could not decompress it (this build has no zlib)", path.string()));
  return out;
#endif
}

}  // namespace

nlohmann::json load_results(const std::filesystem::path& path) {
  std::string text;
  if (path.extension() == ".gz") {
    text = read_gz(path);
  } else {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw CliError(kExitIo, fmt::format("{}: cannot open", path.string()));
    std::ostringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  return parse_results(text, path.string());
}

nlohmann::json parse_results(std::string_view text, const std::string& name) {
  const std::filesystem::path path(name);
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    // Not only parse_error: a number beyond double's range ("1e999") is out_of_range.406, found by
    // the results fuzzer (regression input harness/gate/testdata/fuzz-regressions/).
    throw CliError(kExitBadInput, fmt::format("{}: not JSON: {}", path.string(), e.what()));
  }
  // Compared as JSON values, not through value<T>(), which throws type_error on {"schema": 1}.
  if (!doc.is_object() || !doc.contains("schema") || doc.at("schema") != "fusebench-results" ||
      !doc.contains("cases")) {
    throw CliError(kExitBadInput, fmt::format("{}: not a fusebench results document", path.string()));
  }
  if (!doc.contains("schema_version") || doc.at("schema_version") != 1) {
    throw CliError(
        kExitBadInput,
        fmt::format("{}: schema_version {} is not one this build reads (1)", path.string(),
                    doc.contains("schema_version") ? doc.at("schema_version").dump() : "(missing)"));
  }
  // The whole schema, not only the header: an unknown key (a typo, a field from a newer build) is
  // rejected rather than ignored, and a wrong type is named here instead of surfacing later as a
  // JSON type error deep inside the comparison.
  if (const auto problems = validate_results(doc); !problems.empty()) {
    throw CliError(kExitBadInput,
                   fmt::format("{}: {}{} (expected a document matching "
                               "results/schema/fusebench-results.schema.json)",
                               path.string(), problems.front(),
                               problems.size() > 1 ? fmt::format("; and {} more", problems.size() - 1) : ""));
  }
  return doc;
}

}  // namespace fb::gate
