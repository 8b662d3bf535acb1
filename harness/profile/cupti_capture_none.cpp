// Builds without CUDA or CUPTI: `fusebench profile` says why it cannot run.
#include <stdexcept>

#include "harness/profile/cupti_capture.h"

namespace fb::profile {

struct Capture::Impl {};
Capture::Capture() = default;
Capture::~Capture() = default;
void Capture::start() {
  throw std::runtime_error("this build has no CUPTI (a CUDA build with the toolkit's CUPTI is needed)");
}
void Capture::begin_group(uint64_t) {}
ActivityLog Capture::stop() { return {}; }

}  // namespace fb::profile
