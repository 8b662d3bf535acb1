# Sanitizer and fuzzer builds (issue 7). Both are opt-in and CPU-only (FUSEBENCH_CUDA=OFF): nvcc
# code cannot be ASan-instrumented; the GPU side is covered by `scripts/gpu-check --sanitize`
# (compute-sanitizer).
#   -DFUSEBENCH_SANITIZE=ON  every target built with ASan + UBSan, any UBSan report fatal
#   -DFUSEBENCH_FUZZ=ON      also libFuzzer targets (clang only); implies FUSEBENCH_SANITIZE and
#                            adds coverage instrumentation (-fsanitize=fuzzer-no-link) to all code
#                            so the fuzzer sees branches inside the libraries, not only the target.
option(FUSEBENCH_SANITIZE "Build everything with AddressSanitizer + UndefinedBehaviorSanitizer" OFF)
option(FUSEBENCH_FUZZ "Build the libFuzzer targets (clang; implies FUSEBENCH_SANITIZE)" OFF)

if(FUSEBENCH_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "fusebench: FUSEBENCH_FUZZ needs clang (libFuzzer): configure with "
                        "-DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang (Debian: clang)")
  endif()
  set(FUSEBENCH_SANITIZE ON CACHE BOOL "" FORCE)
endif()

if(FUSEBENCH_SANITIZE)
  if(FUSEBENCH_WITH_CUDA)
    message(FATAL_ERROR "fusebench: FUSEBENCH_SANITIZE/FUSEBENCH_FUZZ need -DFUSEBENCH_CUDA=OFF")
  endif()
  # float-divide-by-zero is left out: the references produce and test Inf/NaN on purpose.
  set(_fb_san -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
  add_compile_options("$<$<COMPILE_LANGUAGE:C,CXX>:${_fb_san}>")
  add_link_options(-fsanitize=address,undefined)
  if(FUSEBENCH_FUZZ)
    add_compile_options("$<$<COMPILE_LANGUAGE:C,CXX>:-fsanitize=fuzzer-no-link>")
  endif()
endif()

# fusebench_add_fuzzer(NAME SOURCES a.cpp LIBS x y SEEDS dir...)
# A libFuzzer executable; SEEDS are the committed seed corpora scripts/fuzz starts from (recorded
# in <build>/fuzz/NAME.seeds, one directory a line, so the script needs no list of its own).
function(fusebench_add_fuzzer name)
  cmake_parse_arguments(F "" "" "SOURCES;LIBS;SEEDS" ${ARGN})
  if(NOT FUSEBENCH_FUZZ)
    return()
  endif()
  add_executable(${name} ${F_SOURCES})
  target_link_libraries(${name} PRIVATE ${F_LIBS})
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
  list(JOIN F_SEEDS "\n" seeds)
  file(WRITE ${PROJECT_BINARY_DIR}/fuzz/${name}.seeds "${seeds}\n")
  set_property(GLOBAL APPEND PROPERTY FUSEBENCH_FUZZERS ${name})
endfunction()
