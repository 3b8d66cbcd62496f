// src/cuda/kern_cuda.cu compiled as C++ on the CPU stand-in (cuda_runtime.h here).
#include "cuda/kern_cuda.cu"
