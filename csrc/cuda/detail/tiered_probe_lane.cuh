// TIEMB_TIERED_PROBE=lane: the GPU cache probe with one lane per unique id
// (probe_kernel in tiered_kernels.cuh gives each id a group of kProbeLanes
// lanes). Included by tiered_batch.cu only, after tiered_kernels.cuh.
#pragma once

#include <cstdint>

#include "tiered_kernels.cuh"

namespace tiemb {
namespace gpu {
namespace {

// Volatile loads of 16, 8, 4 and 2 bytes, for cache rows and keys a writer
// may be changing (the sequence lock decides afterwards whether they count).
__device__ inline uint4 load_volatile(const uint4* p) {
  uint4 v;
  asm volatile("ld.volatile.global.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
__device__ inline uint2 load_volatile(const uint2* p) {
  uint2 v;
  asm volatile("ld.volatile.global.v2.u32 {%0,%1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}
__device__ inline uint32_t load_volatile(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.volatile.global.u32 %0, [%1];" : "=r"(v) : "l"(p));
  return v;
}
__device__ inline uint16_t load_volatile(const uint16_t* p) {
  uint16_t v;
  asm volatile("ld.volatile.global.u16 %0, [%1];" : "=h"(v) : "l"(p));
  return v;
}

// One lane copies a whole row in Unit-sized pieces, kLaneBatch loads issued
// before their stores: a store waits for its load's data, so interleaving
// them would put the row's loads one behind the other.
constexpr int kLaneBatch = 8;

template <typename Unit, bool Volatile>
__device__ inline void lane_copy_units(char* dst, const char* src, int64_t bytes) {
  const int64_t n = bytes / static_cast<int64_t>(sizeof(Unit));
  const auto* s = reinterpret_cast<const Unit*>(src);
  auto* d = reinterpret_cast<Unit*>(dst);
  for (int64_t k0 = 0; k0 < n; k0 += kLaneBatch) {
    Unit r[kLaneBatch];
#pragma unroll
    for (int j = 0; j < kLaneBatch; ++j) {
      if (k0 + j < n) {
        if constexpr (Volatile) {
          r[j] = load_volatile(s + k0 + j);
        } else {
          r[j] = s[k0 + j];
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kLaneBatch; ++j) {
      if (k0 + j < n) d[k0 + j] = r[j];
    }
  }
}

// The widest unit that divides the row (rows and staging slots start at
// allocation bases and advance by row_bytes, so they are aligned to it).
template <bool Volatile>
__device__ inline void lane_copy_row(char* dst, const char* src, int64_t bytes) {
  if ((bytes & 15) == 0) {
    lane_copy_units<uint4, Volatile>(dst, src, bytes);
  } else if ((bytes & 7) == 0) {
    lane_copy_units<uint2, Volatile>(dst, src, bytes);
  } else if ((bytes & 3) == 0) {
    lane_copy_units<uint32_t, Volatile>(dst, src, bytes);
  } else {
    lane_copy_units<uint16_t, Volatile>(dst, src, bytes);
  }
}

// blockIdx.y = table. Walks the unique list dedup built (lane implies the
// listed dedup), one lane per unique id, so a warp has 32 ids in flight where
// probe_kernel has 32 / kProbeLanes. Per id, as in probe_kernel: the set's
// version (even, else a miss), its 32 keys (256 contiguous bytes: 16
// independent 16-byte loads, all issued before any compare), the row copied
// into staging on a match; then one fence for the whole warp (32 ids, not
// 32 / kProbeLanes) and the version again: unchanged -> hit, else miss.
// Misses are listed and read exactly as probe_kernel does (inline zero-copy
// read by the lane, host_read_kernel, the read list, or the host fetch).
// Every warp collective is reached by the whole warp: the loop bound n and
// base are warp-uniform, lanes past the list carry active = false.
__global__ void probe_lane_kernel(const __grid_constant__ tiered_params p) {
  const tiered_call& c = p.calls[blockIdx.y];
  const tiered_ref& t = c.t;
  const int lane = threadIdx.x & 31;
  // Counted per block first: one global atomic per block, not per id.
  __shared__ unsigned long long block_hits, block_host_hits, block_backing;
  if (threadIdx.x == 0) {
    block_hits = 0;
    block_host_hits = 0;
    block_backing = 0;
  }
  __syncthreads();
  // Dedup's count of this call's unique ids (nothing here changes it): the
  // same for every thread, so the loop below is warp-uniform.
  const auto n = static_cast<int64_t>(c.batch->unique_ids);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x + (threadIdx.x & ~31); base < n;
       base += stride) {
    const int64_t i = base + lane;
    const bool active = i < n;
    int64_t id = 0, u = 0;  // the id and its hash slot (its staging row)
    if (active) {
      const longlong2 e = reinterpret_cast<const longlong2*>(c.unique_list)[i];
      id = e.x;
      u = e.y;
    }
    // Admission filter's counts (a prefetch is no sighting: its lookup counts).
    if (active && t.freq != nullptr && !c.prefetch) atomicAdd(&t.freq[id], 1u);
    const int64_t set = cache_set(id, t.sets);
    char* dst = c.staging + u * t.row_bytes;
    uint32_t v1 = 1;
    if (active) v1 = *reinterpret_cast<volatile uint32_t*>(&t.versions[set]);
    int way = -1;
    // Behind v1 by control dependency, as in probe_kernel.
    if (active && (v1 & 1u) == 0) {
      // 32 keys = 16 x (2 keys): every load issued before the first compare.
      // The set starts at a multiple of 256 bytes of a cudaMalloc base.
      const auto* k = reinterpret_cast<const uint4*>(&t.keys[set * 32]);
      uint4 keys[16];
#pragma unroll
      for (int q = 0; q < 16; ++q) keys[q] = load_volatile(k + q);
      const auto want = static_cast<uint64_t>(id);
#pragma unroll
      for (int q = 0; q < 16; ++q) {
        const uint64_t a = (static_cast<uint64_t>(keys[q].y) << 32) | keys[q].x;
        const uint64_t b = (static_cast<uint64_t>(keys[q].w) << 32) | keys[q].z;
        if (a == want) way = 2 * q;
        if (b == want) way = 2 * q + 1;
      }
    }
    // A prefetch needs no copy of a cached row, only to know it is there.
    const bool copied = way >= 0 && !c.prefetch;
    if (copied) lane_copy_row<true>(dst, t.cache_rows + (set * 32 + way) * t.row_bytes, t.row_bytes);
    // The rows' loads must complete before the versions are read again: one
    // fence for the warp's 32 ids (skipped when no lane copied a row).
    if (__any_sync(0xffffffffu, copied)) asm volatile("fence.acq_rel.gpu;" ::: "memory");
    const bool hit = way >= 0 && *reinterpret_cast<volatile uint32_t*>(&t.versions[set]) == v1;
    if (hit) t.stamps[set * 32 + way] = c.batch_no;
    const unsigned hits = __ballot_sync(0xffffffffu, hit);
    if (lane == 0 && hits != 0) atomicAdd(&block_hits, static_cast<unsigned long long>(__popc(hits)));
    const bool miss = active && !hit;
    warp_append(miss, &c.batch->misses, nullptr, 0, u, c.miss_list);
    const int64_t slot = (miss && t.host_index != nullptr) ? t.host_index[id] : id;
    const bool in_place = miss && c.zero_copy && slot >= 0;
    const unsigned backing = __ballot_sync(0xffffffffu, miss && slot < 0);  // per-tier stats: only in the file
    if (lane == 0 && backing != 0) atomicAdd(&block_backing, static_cast<unsigned long long>(__popc(backing)));
    if (c.read_list == nullptr) {
      // Deferred: host_read_kernel reads these rows after the probe.
      if (in_place && !c.defer_host_reads) lane_copy_row<false>(dst, t.host_rows + slot * t.row_bytes, t.row_bytes);
      const unsigned host_hits = __ballot_sync(0xffffffffu, in_place);
      if (lane == 0 && host_hits != 0) {
        atomicAdd(&block_host_hits, static_cast<unsigned long long>(__popc(host_hits)));
      }
    } else {
      // Listed for host_read_list_kernel; the list's counter is host_hits.
      // (c.read_list is the same for the whole block: every lane appends.)
      warp_append(in_place, &c.batch->host_hits, c.read_list,
                  in_place ? reinterpret_cast<int64_t>(t.host_rows + slot * t.row_bytes) : 0,
                  reinterpret_cast<int64_t>(dst), nullptr);
    }
    warp_append(miss && !in_place, &c.batch->host_reads, c.host_list, id, u, nullptr);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    if (block_hits) atomicAdd(&c.batch->hits, block_hits);
    if (block_host_hits) atomicAdd(&c.batch->host_hits, block_host_hits);
    if (block_backing) atomicAdd(&c.batch->backing_reads, block_backing);
  }
}

}  // namespace
}  // namespace gpu
}  // namespace tiemb
