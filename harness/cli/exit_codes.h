#pragma once
// Process exit codes shared by every fusebench subcommand (documented in README "Exit codes").
#include <stdexcept>
#include <string>

namespace fb {

enum ExitCode : int {
  kExitOk = 0,
  kExitCheckFailed = 1,  // a numerics/fusion check or regression gate failed
  kExitUsage = 2,        // bad command line
  kExitBadInput = 3,     // an input file is malformed or does not hold what was asked for
  kExitIo = 4,           // cannot read or write a file
  kExitInternal = 70,    // a bug: an unexpected exception
};

// Thrown by subcommands; main() prints "fusebench: <message>" to stderr and exits with `code`.
class CliError : public std::runtime_error {
 public:
  CliError(ExitCode code, const std::string& message) : std::runtime_error(message), m_code(code) {}
  ExitCode code() const noexcept { return m_code; }

 private:
  ExitCode m_code;
};

}  // namespace fb
