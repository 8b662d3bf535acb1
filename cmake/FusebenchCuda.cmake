# FUSEBENCH_CUDA=AUTO enables CUDA when a compiler is found; ON insists; OFF never looks.
set(FUSEBENCH_WITH_CUDA OFF)
if(NOT FUSEBENCH_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  if(NOT CMAKE_CUDA_COMPILER)
    check_language(CUDA)
  endif()
  if(CMAKE_CUDA_COMPILER)
    set(FUSEBENCH_WITH_CUDA ON)
  elseif(FUSEBENCH_CUDA STREQUAL "ON")
    message(FATAL_ERROR "fusebench: FUSEBENCH_CUDA=ON but no CUDA compiler (nvcc) was found. "
                        "Put the CUDA toolkit's bin/ on PATH or set CMAKE_CUDA_COMPILER.")
  endif()
endif()

if(FUSEBENCH_WITH_CUDA)
  # One architecture keeps CI builds fast; the kernels target Hopper (sm_90a: wgmma, TMA).
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
    set(CMAKE_CUDA_ARCHITECTURES 90a CACHE STRING "CUDA architectures" FORCE)
  endif()
  enable_language(CUDA)
  # CMake 3.25 knows no C++20 dialect flag for nvcc and would fail the compiler probe.
  if(NOT DEFINED CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  endif()
  set(CMAKE_CUDA_STANDARD 20)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  find_package(CUDAToolkit REQUIRED)
  message(STATUS "fusebench: CUDA ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES}")
else()
  message(STATUS "fusebench: building without CUDA (FUSEBENCH_CUDA=${FUSEBENCH_CUDA}); "
                 "GPU checks will report themselves as skipped")
endif()
