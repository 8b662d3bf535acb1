#pragma once
// cudaLaunchKernelEx with the two launch attributes fusebench kernels use, built in one place:
//   cluster_x > 0: thread-block clusters of cluster_x blocks along x (grid.x a multiple of it);
//   pdl: programmatic stream serialization, so the kernel may start while the previous kernel in
//        the stream finishes; it must wait (griddepcontrol.wait) before reading that kernel's
//        output. Captured into CUDA graphs as programmatic edges.
// Include from .cu files only (the templated cudaLaunchKernelEx is in cuda_runtime.h).
#include <cstddef>

#include <cuda_runtime.h>

#include "kernels/common/cuda_check.h"

namespace fb::cuda {

struct LaunchAttrs {
  unsigned cluster_x = 0;  // 0: no cluster attribute
  bool pdl = false;
};

// The launch configuration with its attributes stored in `storage`, which must outlive every use of
// the returned config (a launch, or an occupancy query such as cudaOccupancyMaxActiveClusters).
inline cudaLaunchConfig_t launch_config(dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                                        const LaunchAttrs& a, cudaLaunchAttribute (&storage)[2]) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  unsigned n = 0;
  if (a.cluster_x > 0) {
    storage[n].id = cudaLaunchAttributeClusterDimension;
    storage[n].val.clusterDim.x = a.cluster_x;
    storage[n].val.clusterDim.y = 1;
    storage[n].val.clusterDim.z = 1;
    ++n;
  }
  if (a.pdl) {
    storage[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    storage[n].val.programmaticStreamSerializationAllowed = 1;
    ++n;
  }
  cfg.attrs = storage;
  cfg.numAttrs = n;
  return cfg;
}

// Each argument is converted to the kernel's parameter type (as a <<<>>> launch would).
template <class... KArgs, class... Args>
void launch_kernel(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   const LaunchAttrs& a, Args... args) {
  cudaLaunchAttribute storage[2];
  const cudaLaunchConfig_t cfg = launch_config(grid, block, smem, stream, a, storage);
  FB_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, static_cast<KArgs>(args)...));
}

}  // namespace fb::cuda
