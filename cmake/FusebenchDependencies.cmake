# Every dependency comes from Debian. When one is missing, say which package provides it
# instead of letting CMake print a generic "could not find" wall of text.
function(fusebench_require package debian_package)
  find_package(${package} ${ARGN} QUIET)
  if(NOT ${package}_FOUND)
    message(FATAL_ERROR
      "fusebench: ${package} not found. Install the Debian package '${debian_package}' "
      "(apt-get install -y ${debian_package}) or run scripts/setup-deps.")
  endif()
endfunction()

fusebench_require(Eigen3 libeigen3-dev NO_MODULE)
fusebench_require(fmt libfmt-dev)
fusebench_require(GTest libgtest-dev)
fusebench_require(benchmark libbenchmark-dev)
fusebench_require(nlohmann_json nlohmann-json3-dev)
fusebench_require(CLI11 libcli11-dev)
find_package(Threads REQUIRED)
find_package(Python3 COMPONENTS Interpreter)
