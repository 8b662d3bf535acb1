#include "harness/results/results.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <stdexcept>

#include "harness/timing/inject_slowdown.h"

#include "results_build_info.h"

namespace fb {

namespace {

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;  // gethostname may not terminate a truncated name; the zeroed last byte does
}

std::string os_string() {
  utsname u{};
  if (uname(&u) != 0) return "unknown";
  return fmt::format("{} {} {}", u.sysname, u.release, u.machine);
}

std::string compiler_string() {
#if defined(__clang__)
  return __VERSION__;  // clang's already names itself: "Debian Clang 14.0.6"
#elif defined(__GNUC__)
  return "gcc " __VERSION__;  // gcc's is the bare number: "12.2.0"
#else
  return __VERSION__;
#endif
}

std::string utc_now_iso8601() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03d}Z", buf, static_cast<int>(ms));
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// The schema's pattern for git_sha is ^([0-9a-f]{7,64}|unknown)$ (64: SHA-256 repositories).
bool is_commit_id(const std::string& s) {
  return s.size() >= 7 && s.size() <= 64 &&
         std::all_of(s.begin(), s.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
}

}  // namespace

RunEnv capture_env(int argc, const char* const* argv, uint64_t seed) {
  RunEnv env;
  env.host = host_name();
  env.os = os_string();
  env.build_type = FUSEBENCH_BUILD_TYPE;
  env.compiler = compiler_string();
  env.cuda_compiler = FUSEBENCH_CUDA_COMPILER;
  for (int i = 0; i < argc; ++i) env.argv.emplace_back(argv[i] ? argv[i] : "");
  env.seed = seed;
  env.started_utc = utc_now_iso8601();
  env.injected_slowdown = injected_slowdown_fraction();

  env.git_sha = FUSEBENCH_GIT_SHA_CONFIGURED;
  env.git_dirty = FUSEBENCH_GIT_DIRTY_CONFIGURED != 0;
  // Trees shipped without .git (the GPU machine) were configured with sha "unknown": the caller
  // passes the commit it ran from. The override always wins, since it is the caller's statement.
  if (const char* sha = std::getenv("FUSEBENCH_GIT_SHA"); sha && *sha) {
    const std::string s = lower(sha);
    if (!is_commit_id(s))
      throw std::invalid_argument(
          fmt::format("FUSEBENCH_GIT_SHA='{}' is not a commit id (7 to 64 hex digits)", sha));
    // A dirty flag measured on some other commit says nothing about this one: unknown counts as
    // dirty. An abbreviation of the configured commit (or the reverse) is the same commit.
    const bool same = env.git_sha.rfind(s, 0) == 0 || s.rfind(env.git_sha, 0) == 0;
    if (!same) env.git_dirty = true;
    if (!same || s.size() > env.git_sha.size()) env.git_sha = s;
  }
  if (const char* dirty = std::getenv("FUSEBENCH_GIT_DIRTY"); dirty && *dirty) {
    const std::string d = lower(dirty);
    if (d == "yes" || d == "true" || d == "1" || d == "unknown")
      env.git_dirty = true;
    else if (d == "no" || d == "false" || d == "0")
      env.git_dirty = false;
    else
      throw std::invalid_argument(
          fmt::format("FUSEBENCH_GIT_DIRTY='{}' is not one of yes/no/true/false/1/0/unknown", dirty));
  }
  if (env.git_sha == "unknown") env.git_dirty = true;

  env.device = query_device();
  return env;
}

nlohmann::json to_json(const RunEnv& env) {
  nlohmann::json j = {{"host", env.host},
          {"os", env.os},
          {"git_sha", env.git_sha},
          {"git_dirty", env.git_dirty},
          {"build_type", env.build_type},
          {"compiler", env.compiler},
          {"cuda_compiler", env.cuda_compiler},
          {"argv", env.argv},
          {"seed", env.seed},
          {"started_utc", env.started_utc},
          {"device", to_json(env.device)}};
  // Written only when set: absent means a real measurement (files from before the key existed too).
  if (env.injected_slowdown) j["injected_slowdown"] = *env.injected_slowdown;
  return j;
}

void write_json_atomically(const std::filesystem::path& path, const nlohmann::json& doc) {
  // Serialize before touching the file system: dump() throws on invalid UTF-8, and a throw here must
  // leave nothing behind. NaN/Inf become null (nlohmann's behaviour, and what the schema expects).
  // Compact: a bench run keeps every sample (tens of thousands of numbers), which indentation would
  // put one per line and triple the size; `python3 -m json.tool` pretty-prints on demand.
  const std::string text = doc.dump() + "\n";

  auto fail = [&](const char* what, int err) -> std::runtime_error {
    return std::runtime_error(
        fmt::format("cannot write results to '{}': {}: {}", path.string(), what, std::strerror(err)));
  };
  if (path.filename().empty()) throw fail("no file name", EINVAL);

  // Same directory as the target, so rename() is atomic (no cross-device move). Hidden, and unique
  // per process and call, so concurrent writers never share a temp file.
  const std::filesystem::path dir = path.parent_path().empty() ? "." : path.parent_path();
  static std::atomic<unsigned> counter{0};
  const unsigned salt = std::random_device{}();
  std::filesystem::path tmp;
  int fd = -1;
  for (int attempt = 0; fd < 0 && attempt < 16; ++attempt) {
    tmp = dir /
          fmt::format(".{}.tmp.{}.{}.{:08x}", path.filename().string(), getpid(), counter++, salt + attempt);
    // 0666 & ~umask, like an ordinary file; mkstemp's 0600 would hide results from other users.
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) throw fail("cannot create a temp file in its directory", errno);
  }
  if (fd < 0) throw fail("cannot create a temp file in its directory", EEXIST);

  auto abandon = [&](const char* what) -> std::runtime_error {
    const int err = errno;  // close/unlink may overwrite it
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    return fail(what, err);
  };
  for (size_t done = 0; done < text.size();) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw abandon("write failed");
    }
    done += static_cast<size_t>(n);
  }
  // Data on disk before the rename makes it visible: otherwise a crash could leave an empty file
  // under the final name.
  if (::fsync(fd) != 0) throw abandon("fsync failed");
  const int closed = ::close(fd);
  fd = -1;
  if (closed != 0) throw abandon("close failed");  // NFS reports deferred write errors here
  if (::rename(tmp.c_str(), path.c_str()) != 0) throw abandon("rename over the target failed");

  // Persist the directory entry too. Best effort: some file systems refuse fsync on directories,
  // and the file is already complete under its final name.
  if (int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace fb
