// The CUDA half of the error macro pair (see core/error.h): a failed CUDA
// call throws tiemb::device_error (not tiemb::error: the input is not at
// fault) with the call, the CUDA error name, file and line. The runtime's
// last-error state is reset first: a failed cudaMalloc (out of memory) would
// otherwise be reported again by the next launch's cudaGetLastError(), as if
// that later, sound launch had failed.
#pragma once

#include <cuda_runtime_api.h>

#include "../../core/error.h"

#define TIEMB_CUDA_CHECK(call)                                                          \
  do {                                                                                  \
    const cudaError_t tiemb_cuda_status_ = (call);                                      \
    if (tiemb_cuda_status_ != cudaSuccess) {                                            \
      (void)cudaGetLastError();                                                         \
      throw ::tiemb::device_error(                                                      \
          ::tiemb::detail::concat(#call, " failed: ", cudaGetErrorName(tiemb_cuda_status_), \
                                  " (", __FILE__, ":", __LINE__, ")"),                    \
          tiemb_cuda_status_ == cudaErrorMemoryAllocation);                             \
    }                                                                                   \
  } while (0)
