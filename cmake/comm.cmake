# cmake/comm.cmake: the communication libraries of data-parallel training
# (include/chimera/comm.h, src/comm/).
#
# MPI (Open MPI from Debian: libopenmpi-dev openmpi-bin) is linked when found
# (CHIMERA_MPI=AUTO) and defines CHIMERA_HAVE_MPI: the cpu and vulkan backends
# reduce through it (host-staged), and under mpirun the cuda backend uses it
# to hand out the NCCL id. Without it the build still works: one process, or
# --rank/--world-size with NCCL.
#
# NCCL is never linked: src/comm/comm_nccl.c loads libnccl.so.2 at run time
# (dlopen) through a small function table, so the NCCL path compiles wherever
# the cuda backend does and a binary built here runs on machines without
# NCCL. When nccl.h is found (the CUDA toolkit's include folder) the table's
# prototypes are checked against it at compile time (CHIMERA_HAVE_NCCL_H).
set(CHIMERA_MPI AUTO CACHE STRING "Link MPI for data-parallel training: AUTO, ON or OFF")
set_property(CACHE CHIMERA_MPI PROPERTY STRINGS AUTO ON OFF)

set(CHIMERA_HAVE_MPI OFF)
if(NOT CHIMERA_MPI STREQUAL "OFF")
  find_package(MPI COMPONENTS C QUIET)
  if(MPI_C_FOUND)
    set(CHIMERA_HAVE_MPI ON)
    target_link_libraries(chimera PUBLIC MPI::MPI_C)
    target_compile_definitions(chimera PUBLIC CHIMERA_HAVE_MPI=1)
    list(GET MPI_C_LIBRARIES 0 _mpi_lib)
    chimera_note("mpi    : ON   (MPI ${MPI_C_VERSION}, ${_mpi_lib}, launch with mpirun -np N chimera train ...)")
  elseif(CHIMERA_MPI STREQUAL "ON")
    message(FATAL_ERROR "CHIMERA_MPI=ON but no MPI was found: apt-get install libopenmpi-dev openmpi-bin")
  else()
    chimera_note("mpi    : OFF  (no MPI found: apt-get install libopenmpi-dev openmpi-bin, or tools/bootstrap.sh; one process, or --rank/--world-size with NCCL)")
  endif()
else()
  chimera_note("mpi    : OFF  (CHIMERA_MPI=OFF)")
endif()

if(CHIMERA_HAVE_CUDA)
  # dlopen lives in libc since glibc 2.34; CMAKE_DL_LIBS covers older systems.
  target_link_libraries(chimera PUBLIC ${CMAKE_DL_LIBS})
  find_path(CHIMERA_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include)
  if(CHIMERA_NCCL_INCLUDE_DIR)
    target_compile_definitions(chimera PRIVATE CHIMERA_HAVE_NCCL_H=1)
    target_include_directories(chimera PRIVATE ${CHIMERA_NCCL_INCLUDE_DIR})
    chimera_note("nccl   : loaded at run time (libnccl.so.2), declarations checked against ${CHIMERA_NCCL_INCLUDE_DIR}/nccl.h")
  else()
    chimera_note("nccl   : loaded at run time (libnccl.so.2), own declarations (no nccl.h found)")
  endif()
else()
  chimera_note("nccl   : OFF  (needs the cuda backend)")
endif()
