// A results file killed mid-write leaves the old file or none, never a torn one (DESIGN §6). A
// child process writes a large document over an existing results file and is SIGKILLed as soon as
// its temp file appears (and, in later rounds, a little later); the target must still parse and
// equal the old document, or, once the child won the race, equal the new one in full.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "harness/results/results.h"

namespace fb {
namespace {

namespace fs = std::filesystem;

nlohmann::json big_doc() {
  // ~8 MB of JSON: enough that write() + fsync take long enough to be interrupted.
  nlohmann::json samples = nlohmann::json::array();
  for (int i = 0; i < 600000; ++i) samples.push_back(i * 0.123456789);
  return {{"kind", "new"}, {"samples", samples}};
}

bool has_temp(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp") != std::string::npos) return true;
  return false;
}

TEST(ResultsAtomic, KilledWriterLeavesTheOldFileOrTheWholeNewOne) {
  const fs::path dir = fs::temp_directory_path() / ("fb_results_atomic_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path target = dir / "check.json";
  const nlohmann::json old_doc = {{"kind", "old"}};
  const nlohmann::json new_doc = big_doc();
  int killed_mid_write = 0;
  for (int round = 0; round < 6; ++round) {
    write_json_atomically(target, old_doc);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      write_json_atomically(target, new_doc);
      ::_exit(0);
    }
    // Wait for the temp file (the write has begun), then let it run a little longer each round.
    const auto t0 = std::chrono::steady_clock::now();
    while (!has_temp(dir) && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10)) {
      int status = 0;
      if (::waitpid(child, &status, WNOHANG) == child) break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(round * 500));
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    const bool was_killed = WIFSIGNALED(status);
    std::ifstream in(target);
    ASSERT_TRUE(in.good()) << "round " << round << ": the old file vanished";
    nlohmann::json got;
    ASSERT_NO_THROW(got = nlohmann::json::parse(in)) << "round " << round << ": torn results file";
    if (got == old_doc) {
      killed_mid_write += was_killed;
    } else {
      EXPECT_EQ(got, new_doc) << "round " << round;
    }
    // A killed writer may leave its hidden temp behind; it never carries the target's name.
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path() != target) fs::remove(e.path());
    }
  }
  EXPECT_GT(killed_mid_write, 0) << "no round killed the writer mid-write; the test proved nothing";
  fs::remove_all(dir);
}

}  // namespace
}  // namespace fb
