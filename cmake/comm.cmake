# cmake/comm.cmake: the communication libraries of data-parallel training (MPI, NCCL).
# Filled in by the data-parallelism work (issue 11); empty until then.
