#include <cuda_runtime_api.h>

#include "../device_info.h"

#ifndef TIEMB_CUDA_ARCHITECTURES
#define TIEMB_CUDA_ARCHITECTURES "unknown"
#endif

namespace tiemb {

bool cuda_compiled() { return true; }

int cuda_device_count() {
  int n = 0;
  // No driver or no device is a normal situation on CPU hosts, not an error.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

std::string cuda_device_name(int ordinal) {
  if (ordinal < 0 || ordinal >= cuda_device_count()) return "";
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, ordinal) != cudaSuccess) {
    (void)cudaGetLastError();
    return "";
  }
  return prop.name;
}

int cuda_runtime_version() { return CUDART_VERSION; }

std::string cuda_architectures() { return TIEMB_CUDA_ARCHITECTURES; }

int cuda_current_device() {
  int device = -1;
  if (cudaGetDevice(&device) != cudaSuccess) {
    (void)cudaGetLastError();
    return -1;
  }
  return device;
}

}  // namespace tiemb
