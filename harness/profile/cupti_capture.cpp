// CUPTI activity API (cupti_activity.h): asynchronous record buffers, drained into an ActivityLog.
#include "harness/profile/cupti_capture.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <fmt/format.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

#include <cupti.h>

namespace fb::profile {

namespace {

constexpr size_t kBufferBytes = 8 << 20;
constexpr CUpti_ExternalCorrelationKind kGroupKind = CUPTI_EXTERNAL_CORRELATION_KIND_CUSTOM0;

void check(CUptiResult r, const char* what) {
  if (r == CUPTI_SUCCESS) return;
  const char* msg = nullptr;
  cuptiGetResultString(r, &msg);
  throw std::runtime_error(fmt::format("CUPTI {} failed: {}", what, msg ? msg : "unknown error"));
}

std::string demangle(const char* name) {
  if (name == nullptr) return "(unnamed)";
  int status = 0;
  char* d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string out = status == 0 && d ? d : name;
  std::free(d);
  return short_kernel_name(out);
}

// CUPTI calls these from its own threads; one capture at a time per process.
std::mutex g_mutex;
ActivityLog* g_log = nullptr;
// NVTX START records carry the name; END records only the id. Open ranges by id until their END.
std::unordered_map<uint32_t, RangeRecord>* g_open = nullptr;

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = kBufferBytes;
  *max_records = 0;
}

void take(CUpti_Activity* rec) {
  switch (rec->kind) {
    case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL:
    case CUPTI_ACTIVITY_KIND_KERNEL: {
      const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(rec);
      g_log->kernels.push_back({k->correlationId, k->start, k->end, demangle(k->name)});
      break;
    }
    case CUPTI_ACTIVITY_KIND_RUNTIME:
    case CUPTI_ACTIVITY_KIND_DRIVER: {
      const auto* a = reinterpret_cast<const CUpti_ActivityAPI*>(rec);
      g_log->apis.push_back({a->correlationId, a->threadId, a->start});
      break;
    }
    case CUPTI_ACTIVITY_KIND_EXTERNAL_CORRELATION: {
      const auto* e = reinterpret_cast<const CUpti_ActivityExternalCorrelation*>(rec);
      if (e->externalKind == kGroupKind) g_log->externals.push_back({e->correlationId, e->externalId});
      break;
    }
    case CUPTI_ACTIVITY_KIND_MARKER: {
      const auto* m = reinterpret_cast<const CUpti_ActivityMarker2*>(rec);
      if (m->flags & CUPTI_ACTIVITY_FLAG_MARKER_START) {
        RangeRecord r;
        r.thread = m->objectKind == CUPTI_ACTIVITY_OBJECT_THREAD ? m->objectId.pt.threadId : 0;
        r.start_ns = m->timestamp;
        r.name = m->name ? m->name : "";
        r.domain = m->domain ? m->domain : "";
        (*g_open)[m->id] = std::move(r);
      } else if (m->flags & CUPTI_ACTIVITY_FLAG_MARKER_END) {
        auto it = g_open->find(m->id);
        if (it != g_open->end()) {
          it->second.end_ns = m->timestamp;
          g_log->ranges.push_back(std::move(it->second));
          g_open->erase(it);
        }
      }
      break;
    }
    default:
      break;
  }
}

void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t* buffer, size_t, size_t valid) {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    CUpti_Activity* rec = nullptr;
    while (g_log && cuptiActivityGetNextRecord(buffer, valid, &rec) == CUPTI_SUCCESS) take(rec);
    size_t dropped = 0;
    if (g_log && cuptiActivityGetNumDroppedRecords(ctx, stream, &dropped) == CUPTI_SUCCESS)
      g_log->dropped += dropped;
  }
  std::free(buffer);
}

constexpr CUpti_ActivityKind kKinds[] = {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_RUNTIME,
                                         CUPTI_ACTIVITY_KIND_DRIVER, CUPTI_ACTIVITY_KIND_EXTERNAL_CORRELATION,
                                         CUPTI_ACTIVITY_KIND_MARKER};

}  // namespace

struct Capture::Impl {
  ActivityLog log;
  std::unordered_map<uint32_t, RangeRecord> open;
  bool started = false, pushed = false;
};

Capture::Capture() : m_impl(std::make_unique<Impl>()) {}
Capture::~Capture() {
  if (m_impl->started) {
    try {
      stop();
    } catch (...) {
    }
  }
}

void Capture::start() {
  // NVTX hands its calls to the library named here (nvtx3 reads it at its first call). CUPTI only
  // sees NVTX ranges that way; nsys sets it itself, so an existing value is left alone.
  if (std::getenv("NVTX_INJECTION64_PATH") == nullptr) {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&cuptiActivityEnable), &info) != 0 && info.dli_fname)
      setenv("NVTX_INJECTION64_PATH", info.dli_fname, 0);
  }
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (g_log) throw std::runtime_error("a CUPTI capture is already running");
    g_log = &m_impl->log;
    g_open = &m_impl->open;
  }
  check(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed), "cuptiActivityRegisterCallbacks");
  for (CUpti_ActivityKind k : kKinds)
    check(cuptiActivityEnable(k), fmt::format("enable kind {}", int(k)).c_str());
  m_impl->started = true;
}

void Capture::begin_group(uint64_t id) {
  uint64_t last = 0;
  if (m_impl->pushed) check(cuptiActivityPopExternalCorrelationId(kGroupKind, &last), "pop correlation id");
  check(cuptiActivityPushExternalCorrelationId(kGroupKind, id), "push correlation id");
  m_impl->pushed = true;
}

ActivityLog Capture::stop() {
  if (!m_impl->started) return std::move(m_impl->log);
  uint64_t last = 0;
  if (m_impl->pushed) cuptiActivityPopExternalCorrelationId(kGroupKind, &last);
  m_impl->pushed = false;
  cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  for (CUpti_ActivityKind k : kKinds) cuptiActivityDisable(k);
  m_impl->started = false;
  std::lock_guard<std::mutex> lock(g_mutex);
  g_log = nullptr;
  g_open = nullptr;
  return std::move(m_impl->log);
}

}  // namespace fb::profile
