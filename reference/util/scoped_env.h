#pragma once
// Sets (or, with a null value, unsets) an environment variable for a scope and restores what was
// there before, set or not. For tests that steer a kernel or the harness through a variable read per
// call (FB_TQ4_DECODE_PATH, FB_SWA_DECODE_MULTIROW, FUSEBENCH_GIT_SHA, ...): the next test in the
// same process must see the environment it started with. Header-only: used by CPU and GPU tests.
#include <cstdlib>
#include <optional>
#include <string>

namespace fb {

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : m_name(name) {
    if (const char* old = std::getenv(name)) m_old = old;
    set(value);
  }
  ~ScopedEnv() { set(m_old ? m_old->c_str() : nullptr); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

  // A new value for the rest of the scope; the destructor still restores the original one.
  void set(const char* value) const {
    if (value)
      setenv(m_name.c_str(), value, 1);
    else
      unsetenv(m_name.c_str());
  }

 private:
  std::string m_name;
  std::optional<std::string> m_old;
};

}  // namespace fb
