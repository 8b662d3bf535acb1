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
# Scenario files are TOML (scenarios/README.md says why). Header-only use: the device machines may
# carry only the headers.
find_path(FUSEBENCH_TOMLPP_INCLUDE toml++/toml.h PATHS ${FUSEBENCH_EXTRA_INCLUDE})
if(NOT FUSEBENCH_TOMLPP_INCLUDE)
  message(FATAL_ERROR "fusebench: toml++ not found. Install the Debian package 'libtomlplusplus-dev' "
                      "(apt-get install -y libtomlplusplus-dev) or run scripts/setup-deps.")
endif()
add_library(fusebench_tomlplusplus INTERFACE)
target_include_directories(fusebench_tomlplusplus SYSTEM INTERFACE ${FUSEBENCH_TOMLPP_INCLUDE})
target_compile_definitions(fusebench_tomlplusplus INTERFACE TOML_HEADER_ONLY=1 TOML_EXCEPTIONS=1)
find_package(Threads REQUIRED)
find_package(Python3 COMPONENTS Interpreter)
