// Small device helpers shared by the lookup kernel and the tiered cache.
#pragma once

#include <cstdint>

namespace tiemb {
namespace gpu {

/// Element i of an int32 or int64 array, as int64.
__device__ inline int64_t load_index(const void* p, bool is64, int64_t i) {
  return is64 ? static_cast<const int64_t*>(p)[i] : static_cast<int64_t>(static_cast<const int32_t*>(p)[i]);
}

// Copies a row with the `width` lanes of a group (lane = index in the group).
__device__ inline void group_copy_row(char* dst, const char* src, int64_t bytes, int lane, int width) {
  if ((bytes & 15) == 0) {
    for (int64_t k = lane; k < bytes / 16; k += width) {
      reinterpret_cast<uint4*>(dst)[k] = reinterpret_cast<const uint4*>(src)[k];
    }
  } else if ((bytes & 3) == 0) {
    for (int64_t k = lane; k < bytes / 4; k += width) {
      reinterpret_cast<uint32_t*>(dst)[k] = reinterpret_cast<const uint32_t*>(src)[k];
    }
  } else {
    for (int64_t k = lane; k < bytes / 2; k += width) {
      reinterpret_cast<uint16_t*>(dst)[k] = reinterpret_cast<const uint16_t*>(src)[k];
    }
  }
}

}  // namespace gpu
}  // namespace tiemb
