#pragma once
// Reads a results JSON document, plain or gzipped (committed results are .json.gz).
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace fb::gate {

// Throws CliError: kExitIo when the file cannot be read, kExitBadInput when it is not JSON or
// not a fusebench results document valid against the schema (unknown keys included; the message
// names the file and the JSON pointer of the first problem), or a .gz file in a build without zlib.
nlohmann::json load_results(const std::filesystem::path& path);
// The same checks on text already in memory; `name` is used in messages (also the fuzz target).
nlohmann::json parse_results(std::string_view text, const std::string& name);

}  // namespace fb::gate
