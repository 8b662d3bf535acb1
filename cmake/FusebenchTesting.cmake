include(CTest)
include(GoogleTest)

# fusebench_add_test(NAME SOURCES a.cpp b.cpp LIBS x y LABEL cpu|gpu)
# Tests live beside the code they test; LABEL drives `ctest -L cpu` / `ctest -L gpu`.
function(fusebench_add_test name)
  cmake_parse_arguments(T "" "LABEL" "SOURCES;LIBS" ${ARGN})
  if(NOT FUSEBENCH_TESTS)
    return()
  endif()
  if(NOT T_LABEL)
    set(T_LABEL cpu)
  endif()
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main)
  target_compile_definitions(${name} PRIVATE FUSEBENCH_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  # GPU tests GTEST_SKIP() with a reason when no device is usable; CTest reports them as skipped.
  gtest_discover_tests(${name} TEST_PREFIX "${name}." PROPERTIES LABELS ${T_LABEL}
                       DISCOVERY_TIMEOUT 60)
endfunction()
