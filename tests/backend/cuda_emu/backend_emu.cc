// src/cuda/backend_cuda.cu compiled as C++ on the CPU stand-in (cuda_runtime.h here).
#include "cuda/backend_cuda.cu"
