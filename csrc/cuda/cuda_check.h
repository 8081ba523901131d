// The CUDA half of the error macro pair (see core/error.h): a failed CUDA
// call throws tiemb::error with the call, the CUDA error name, file and line.
#pragma once

#include <cuda_runtime_api.h>

#include "../core/error.h"

#define TIEMB_CUDA_CHECK(call)                                                          \
  do {                                                                                  \
    const cudaError_t tiemb_cuda_status_ = (call);                                      \
    if (tiemb_cuda_status_ != cudaSuccess) {                                            \
      throw ::tiemb::error(::tiemb::detail::concat(#call, " failed: ",                  \
                                                   cudaGetErrorName(tiemb_cuda_status_), \
                                                   " (", __FILE__, ":", __LINE__, ")")); \
    }                                                                                   \
  } while (0)
