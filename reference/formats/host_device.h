#pragma once
// Lets the POD format headers be used from host C++ and from CUDA device code alike.
#if defined(__CUDACC__)
#define FB_HOST_DEVICE __host__ __device__
#else
#define FB_HOST_DEVICE
#endif
