# cmake/fuzz.cmake: libFuzzer targets (CHIMERA_FUZZ=ON with clang).
# Filled in by the reliability work (issue 9); empty until then.
