// The GPU cache's set hash, shared by the CUDA kernels and the CPU cache
// simulator (csrc/core/cache_sim.h) so that both place a row in the same set.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define TIEMB_HOST_DEVICE __host__ __device__
#else
#define TIEMB_HOST_DEVICE
#endif

namespace tiemb {

/// splitmix64 finaliser.
TIEMB_HOST_DEVICE inline uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/// The GPU cache set of row `id` in a cache of `sets` sets.
TIEMB_HOST_DEVICE inline int64_t cache_set(int64_t id, int64_t sets) {
  return static_cast<int64_t>(mix64(static_cast<uint64_t>(id)) % static_cast<uint64_t>(sets));
}

}  // namespace tiemb
