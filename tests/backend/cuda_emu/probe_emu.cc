// src/cuda/cuda_probe.cu compiled as C++ on the CPU stand-in (cuda_runtime.h here).
#include "cuda/cuda_probe.cu"
