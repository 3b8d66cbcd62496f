// src/cuda/transport_nccl.cu compiled as C++ on the CPU stand-in (cuda_runtime.h, nccl.h here).
#include "cuda/transport_nccl.cu"
