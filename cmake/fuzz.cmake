# cmake/fuzz.cmake: libFuzzer targets for the parsers of outside input (issue 9).
#
# With -DCHIMERA_FUZZ=ON (clang only) every tests/fuzz/fuzz_<name>.c becomes an
# executable fuzz_<name> linked with -fsanitize=fuzzer (libFuzzer brings main;
# the file defines only LLVMFuzzerTestOneInput), and the library is compiled
# with -fsanitize=fuzzer-no-link so that the fuzzer sees its coverage. Add
# -DCHIMERA_SANITIZE=ON for ASan + UBSan (tools/fuzz.sh does). Seed corpora:
# tests/fuzz/<name>/. tools/fuzz.sh builds build-fuzz and runs every target.
option(CHIMERA_FUZZ "Build the libFuzzer targets of tests/fuzz (needs clang)" OFF)
if(CHIMERA_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "CHIMERA_FUZZ=ON needs clang (libFuzzer comes with it): "
                        "configure with CC=clang")
  endif()
  target_compile_options(chimera PRIVATE -fsanitize=fuzzer-no-link)
  file(GLOB _fuzz_sources CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_*.c)
  set(_fuzz_names "")
  foreach(_src IN LISTS _fuzz_sources)
    get_filename_component(_name ${_src} NAME_WE)
    add_executable(${_name} ${_src})
    target_include_directories(${_name} PRIVATE ${CMAKE_SOURCE_DIR}/src ${CMAKE_SOURCE_DIR}/tests/fuzz)
    target_compile_options(${_name} PRIVATE -fsanitize=fuzzer)
    target_link_options(${_name} PRIVATE -fsanitize=fuzzer)
    target_link_libraries(${_name} PRIVATE chimera)
    list(APPEND _fuzz_names ${_name})
  endforeach()
  list(LENGTH _fuzz_names _n)
  string(REPLACE ";" " " _fuzz_names "${_fuzz_names}")
  message(STATUS "  fuzz   : ON   (${_n} libFuzzer targets: ${_fuzz_names})")
  message(STATUS "")
endif()
