// The kernels of the tiered cache (csrc/cuda/detail/tiered_batch.cu launches
// them): dedup of a call's ids, the GPU cache probe, host reads, row
// scatter, and inserting misses. Included by tiered_batch.cu only.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../../core/cache_hash.h"
#include "cuda_check.h"
#include "device_util.cuh"
#include "gpu_table.h"
#include "gpu_types.h"

namespace tiemb {
namespace gpu {
namespace {

constexpr int kBlock = 256;
constexpr int kWarpsPerBlock = kBlock / 32;

// Ids of every view into its table's hash set; an id's unique index is its
// hash slot, so there is no counter to share and nothing to wait for.
// unique_index[i] = slot of ids[i], -1 for ids outside the table (the
// lookup kernel reports those; a view without unique_index, a prefetch,
// skips them). With a unique list (TIEMB_TIERED_PROBE=list) the thread that
// puts an id into the set appends (id, slot) to its table's list, one atomic
// per table and warp; the warp walks the ids in step (base + lane) so that
// append is a full-warp collective.
__global__ void dedup_kernel(const __grid_constant__ tiered_params p) {
  const int lane = threadIdx.x & 31;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t total = p.total_ids;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x + (threadIdx.x & ~31); base < total;
       base += stride) {
    const int64_t g = base + lane;
    int call = 0;
    int64_t h = 0;
    bool won = false;  // this lane put its id into the set
    int64_t id = 0;
    if (g < total) {
      int v = 0;
      while (v + 1 < p.num_views && p.views[v + 1].begin <= g) ++v;
      const dedup_view& view = p.views[v];
      const tiered_call& c = p.calls[view.call];
      const int64_t i = g - view.begin;
      const int64_t raw =
          load_index(view.ids, view.is64, id_offset(i, view.id_stride, view.ids_per_row, view.row_stride));
      id = (view.wrap_negative && raw < 0) ? raw + c.t.rows : raw;
      call = view.call;
      if (id < 0 || id >= c.t.rows) {
        if (view.unique_index != nullptr) view.unique_index[i] = -1;
      } else {
        h = static_cast<int64_t>(mix64(static_cast<uint64_t>(id)) & c.hash_mask);
        for (;;) {
          // Hot ids repeat thousands of times per batch: read first and keep
          // atomics for empty slots.
          unsigned long long key = *reinterpret_cast<volatile unsigned long long*>(&c.hash_keys[h]);
          if (key == ~0ULL) {
            key = atomicCAS(&c.hash_keys[h], ~0ULL, static_cast<unsigned long long>(id));
            won = key == ~0ULL;
          }
          if (key == ~0ULL || key == static_cast<unsigned long long>(id)) break;
          h = static_cast<int64_t>((static_cast<uint64_t>(h) + 1) & c.hash_mask);
        }
        if (view.unique_index != nullptr) view.unique_index[i] = static_cast<int32_t>(h);
      }
    }
    // Every table of a batch has a list, or none does: uniform per warp.
    if (p.calls[0].unique_list == nullptr) continue;
    const unsigned winners = __ballot_sync(0xffffffffu, won);
    if (won) {
      // Lanes of the same table share one atomic on its unique counter.
      const unsigned peers = __match_any_sync(winners, call);
      const int leader = __ffs(peers) - 1;
      const tiered_call& c = p.calls[call];
      unsigned long long first = 0;
      if (lane == leader) first = atomicAdd(&c.batch->unique_ids, static_cast<unsigned long long>(__popc(peers)));
      // Safe although masks differ per table: every lane a mask names runs
      // this shuffle with that same mask, and the leader is in it.
      first = __shfl_sync(peers, first, leader);
      const auto k = static_cast<int64_t>(first + __popc(peers & ((1u << lane) - 1u)));
      reinterpret_cast<longlong2*>(c.unique_list)[k] = make_longlong2(id, h);
    }
  }
}

// TIEMB_TIERED_PROBE=list, before dedup: empties the hash slots the previous
// call used (its unique list, its count still in batch->unique_ids), instead
// of a memset of the whole capacity (2x-4x the most ids a call may have).
__global__ void clear_listed_kernel(const __grid_constant__ tiered_params p) {
  const tiered_call& c = p.calls[blockIdx.y];
  // The first call finds n = 0 and an empty set: the constructor cleared
  // both and waited. An interrupted call (a throw after dedup) leaves list and
  // count consistent, so the next call still clears exactly its slots.
  const auto n = static_cast<int64_t>(c.batch->unique_ids);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n; k += stride) {
    c.hash_keys[c.unique_list[2 * k + 1]] = ~0ULL;
  }
}

// Same through volatile 16/4/2-byte loads, for cache rows a writer may be
// changing (the sequence lock decides afterwards whether the copy counts).
__device__ inline void group_copy_row_volatile(char* dst, const char* src, int64_t bytes, int lane, int width) {
  if ((bytes & 15) == 0) {
    for (int64_t k = lane; k < bytes / 16; k += width) {
      uint4 v;
      asm volatile("ld.volatile.global.v4.u32 {%0,%1,%2,%3}, [%4];"
                   : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                   : "l"(reinterpret_cast<const uint4*>(src) + k));
      reinterpret_cast<uint4*>(dst)[k] = v;
    }
  } else if ((bytes & 3) == 0) {
    for (int64_t k = lane; k < bytes / 4; k += width) {
      reinterpret_cast<uint32_t*>(dst)[k] = reinterpret_cast<const volatile uint32_t*>(src)[k];
    }
  } else {
    for (int64_t k = lane; k < bytes / 2; k += width) {
      reinterpret_cast<uint16_t*>(dst)[k] = reinterpret_cast<const volatile uint16_t*>(src)[k];
    }
  }
}

// Appends `value` for every lane whose `flag` is set, with one atomic per
// warp. Every lane of the warp must call it.
__device__ inline void warp_append(bool flag, unsigned long long* count, int64_t* list2, int64_t a, int64_t b,
                                   int32_t* list1) {
  const unsigned mask = __ballot_sync(0xffffffffu, flag);
  if (mask == 0) return;
  const int lane = threadIdx.x & 31;
  const int leader = __ffs(mask) - 1;
  unsigned long long first = 0;
  if (lane == leader) first = atomicAdd(count, static_cast<unsigned long long>(__popc(mask)));
  first = __shfl_sync(0xffffffffu, first, leader);
  if (flag) {
    const auto k = static_cast<int64_t>(first + __popc(mask & ((1u << lane) - 1u)));
    if (list1 != nullptr) list1[k] = static_cast<int32_t>(b);
    if (list2 != nullptr) {
      list2[2 * k] = a;
      list2[2 * k + 1] = b;
    }
  }
}

// blockIdx.y = table. Groups of kProbeLanes lanes, one unique id each, probe
// the id's set (kCacheWays / kProbeLanes ways per lane) and copy the row from
// the GPU cache, else from the host tier in place, else ask the host for it.
// Misses are listed for insertion. Control flow stays warp-uniform around the
// ballots and shuffles; inactive groups carry `active = false`.
// The unique ids come from the hash slots (every slot read, 2x-4x the most
// ids a call may have) or, with a unique list, from that list (only the ids
// present; its length is dedup's count, read here on the device).
// Zero-copy misses are read here (default), by host_read_kernel, or listed
// as (host, staging) address pairs for host_read_list_kernel.
constexpr int kProbeLanes = 8;
constexpr int kWaysPerLane = 32 / kProbeLanes;

__global__ void probe_kernel(const __grid_constant__ tiered_params p) {
  const tiered_call& c = p.calls[blockIdx.y];
  const tiered_ref& t = c.t;
  const int lane = threadIdx.x & 31;
  const int sub = lane / kProbeLanes;  // group within the warp
  const int gl = lane % kProbeLanes;   // lane within the group
  const int leader = sub * kProbeLanes;
  // Counted per block first: one global atomic per block, not per id.
  __shared__ unsigned long long block_unique, block_hits, block_host_hits, block_backing;
  if (threadIdx.x == 0) {
    block_unique = 0;
    block_hits = 0;
    block_host_hits = 0;
    block_backing = 0;
  }
  __syncthreads();
  const bool listed = c.unique_list != nullptr;
  // Warp-uniform either way: with a list every thread reads the same counter,
  // which nothing in this kernel changes (block_unique stays 0 below).
  const int64_t limit = listed ? static_cast<int64_t>(c.batch->unique_ids) : static_cast<int64_t>(c.hash_mask) + 1;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  // 32 slots per coalesced read (the occupied ones are this batch's ids), or
  // one list entry per group: every entry is an id, so a warp's groups are
  // all busy in one round and the entries spread over all warps.
  const int64_t chunk = listed ? 32 / kProbeLanes : 32;
  for (int64_t base = ((static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32) * chunk; base < limit;
       base += warps * chunk) {
    int64_t my_u = base + lane;
    unsigned long long my_key = ~0ULL;
    if (!listed) {
      my_key = *reinterpret_cast<volatile unsigned long long*>(&c.hash_keys[my_u]);
    } else if (lane < chunk && my_u < limit) {
      const longlong2 e = reinterpret_cast<const longlong2*>(c.unique_list)[my_u];
      my_key = static_cast<unsigned long long>(e.x);
      my_u = e.y;
    }
    unsigned pending = __ballot_sync(0xffffffffu, my_key != ~0ULL);
    // With a list, dedup counted the unique ids.
    if (!listed && lane == 0) atomicAdd(&block_unique, static_cast<unsigned long long>(__popc(pending)));
    while (pending != 0) {
      // Each group of kProbeLanes lanes takes one of the next occupied slots.
      const int nth = __popc(pending) > sub ? static_cast<int>(__fns(pending, 0, sub + 1)) : -1;
      for (int g = 0; g < 32 / kProbeLanes && pending != 0; ++g) pending &= pending - 1u;  // drop the taken bits
      const bool active = nth >= 0;
      const int64_t u = __shfl_sync(0xffffffffu, my_u, active ? nth : 0);  // the id's hash slot
      const unsigned long long key = __shfl_sync(0xffffffffu, my_key, active ? nth : 0);  // every lane shuffles
      const int64_t id = active ? static_cast<int64_t>(key) : 0;
      // Admission filter's counts (a prefetch is no sighting: its lookup counts).
      if (active && gl == 0 && t.freq != nullptr && !c.prefetch) atomicAdd(&t.freq[id], 1u);
      const int64_t set = cache_set(id, t.sets);
      char* dst = c.staging + u * t.row_bytes;
      uint32_t v1 = 1;
      if (active) v1 = *reinterpret_cast<volatile uint32_t*>(&t.versions[set]);
      int my_way = -1;
      if (active && (v1 & 1u) == 0) {
#pragma unroll
        for (int q = 0; q < kWaysPerLane; ++q) {
          const int w = gl * kWaysPerLane + q;
          if (*reinterpret_cast<volatile int64_t*>(&t.keys[set * 32 + w]) == id) my_way = w;
        }
      }
      const unsigned found = __ballot_sync(0xffffffffu, my_way >= 0) & (0xffu << leader);
      const int way = __shfl_sync(0xffffffffu, my_way, found ? __ffs(found) - 1 : leader);
      bool hit = false;
      if (found) {
        // A prefetch needs no copy of a cached row, only to know it is there.
        if (!c.prefetch) {
          group_copy_row_volatile(dst, t.cache_rows + (set * 32 + way) * t.row_bytes, t.row_bytes, gl, kProbeLanes);
          // The row's loads must complete before the version is read again.
          asm volatile("fence.acq_rel.gpu;" ::: "memory");
        }
        hit = *reinterpret_cast<volatile uint32_t*>(&t.versions[set]) == v1;
      }
      // The group leader's view decides for the whole group.
      hit = __shfl_sync(0xffffffffu, hit, leader);
      if (hit && gl == 0) {
        t.stamps[set * 32 + way] = c.batch_no;
        atomicAdd(&block_hits, 1ULL);
      }
      const bool miss = active && !hit;
      warp_append(miss && gl == 0, &c.batch->misses, nullptr, 0, u, c.miss_list);
      const int64_t slot = (miss && t.host_index != nullptr) ? t.host_index[id] : id;
      const bool in_place = miss && c.zero_copy && slot >= 0;
      if (miss && slot < 0 && gl == 0) atomicAdd(&block_backing, 1ULL);  // per-tier stats: only in the file
      if (in_place && c.read_list == nullptr) {
        // Deferred: host_read_kernel reads these rows after the probe.
        if (!c.defer_host_reads) group_copy_row(dst, t.host_rows + slot * t.row_bytes, t.row_bytes, gl, kProbeLanes);
        if (gl == 0) atomicAdd(&block_host_hits, 1ULL);
      }
      // Listed for host_read_list_kernel; the list's counter is host_hits.
      // (c.read_list is the same for the whole block: every lane appends.)
      if (c.read_list != nullptr) {
        warp_append(in_place && gl == 0, &c.batch->host_hits, c.read_list,
                    in_place ? reinterpret_cast<int64_t>(t.host_rows + slot * t.row_bytes) : 0,
                    reinterpret_cast<int64_t>(dst), nullptr);
      }
      warp_append(miss && !in_place && gl == 0, &c.batch->host_reads, c.host_list, id, u, nullptr);
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    if (block_unique) atomicAdd(&c.batch->unique_ids, block_unique);
    if (block_hits) atomicAdd(&c.batch->hits, block_hits);
    if (block_host_hits) atomicAdd(&c.batch->host_hits, block_host_hits);
    if (block_backing) atomicAdd(&c.batch->backing_reads, block_backing);
  }
}

// blockIdx.y = table. The misses held in pinned host memory, read in place
// (zero-copy) into their staging slots after the probe: rows that are only
// independent loads, many in flight per SM, where inside the probe each read
// waited behind that id's dependent cache loads and fence. Rows outside host
// memory (slot -1) are left to the host fetch (scatter_rows_kernel), so every
// staging slot is written by exactly one kernel.
__global__ void host_read_kernel(const __grid_constant__ tiered_params p) {
  const tiered_call& c = p.calls[blockIdx.y];
  if (!c.zero_copy || !c.defer_host_reads) return;
  const tiered_ref& t = c.t;
  const int gl = (threadIdx.x & 31) % kProbeLanes;
  const int64_t groups = static_cast<int64_t>(gridDim.x) * (blockDim.x / kProbeLanes);
  const auto n = static_cast<int64_t>(c.batch->misses);
  for (int64_t m = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kProbeLanes; m < n;
       m += groups) {
    const int64_t u = c.miss_list[m];
    const auto id = static_cast<int64_t>(c.hash_keys[u]);
    const int64_t slot = t.host_index != nullptr ? t.host_index[id] : id;
    if (slot >= 0) {
      group_copy_row(c.staging + u * t.row_bytes, t.host_rows + slot * t.row_bytes, t.row_bytes, gl, kProbeLanes);
    }
  }
}

// TIEMB_TIERED_HOST_READS=list, blockIdx.y = table: the zero-copy misses the
// probe listed as (host address, staging address), one read_unit-byte load
// per thread (a 64-byte row is 4 threads), the grid sized once from the
// config to cover a call's most misses. Unlike host_read_kernel (8 lanes per
// row, each row behind the dependent loads miss_list -> hash key ->
// host_index before its host read), a thread's only load before the host
// read is its list entry, and every host load is independent: as many in
// flight as the SMs hold, so the link's read queue stays full.
__global__ void host_read_list_kernel(const __grid_constant__ tiered_params p) {
  const tiered_call& c = p.calls[blockIdx.y];
  if (c.read_list == nullptr) return;
  const int64_t units = c.t.row_bytes / c.read_unit;
  const auto n = static_cast<int64_t>(c.batch->host_hits) * units;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride) {
    const int64_t m = e / units, k = e - m * units;
    const longlong2 a = reinterpret_cast<const longlong2*>(c.read_list)[m];
    const char* src = reinterpret_cast<const char*>(a.x);
    char* dst = reinterpret_cast<char*>(a.y);
    // Aligned to read_unit: host rows and staging start at cudaHostAlloc /
    // cudaMalloc bases and advance by row_bytes, a multiple of read_unit.
    switch (c.read_unit) {
      case 16: reinterpret_cast<uint4*>(dst)[k] = reinterpret_cast<const uint4*>(src)[k]; break;
      case 8: reinterpret_cast<uint2*>(dst)[k] = reinterpret_cast<const uint2*>(src)[k]; break;
      case 4: reinterpret_cast<uint32_t*>(dst)[k] = reinterpret_cast<const uint32_t*>(src)[k]; break;
      default: reinterpret_cast<uint16_t*>(dst)[k] = reinterpret_cast<const uint16_t*>(src)[k]; break;
    }
  }
}

// Rows the host fetched (host_rows[k] belongs to unique index host_list[2k+1]).
__global__ void scatter_rows_kernel(const char* host_rows, const int64_t* host_list, const counters* batch,
                                    char* staging, int64_t row_bytes) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  const auto n = static_cast<int64_t>(batch->host_reads);
  for (int64_t k = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; k < n; k += warps) {
    group_copy_row(staging + host_list[2 * k + 1] * row_bytes, host_rows + k * row_bytes, row_bytes, lane, 32);
  }
}

// Puts row `src` of id into its set: an empty way, else the least recently
// used one. One warp; lane 0 holds the set's sequence lock meanwhile.
__device__ void insert_row(const tiered_ref& t, int64_t id, const char* src, uint32_t batch_no, int lane) {
  const int64_t set = cache_set(id, t.sets);
  uint32_t v = 0;
  if (lane == 0) {
    for (;;) {
      v = *reinterpret_cast<volatile uint32_t*>(&t.versions[set]);
      if ((v & 1u) == 0 && atomicCAS(&t.versions[set], v, v + 1) == v) break;
    }
    __threadfence();
  }
  v = __shfl_sync(0xffffffffu, v, 0);
  // Read under the set lock: a row fetched before a version switch is never
  // inserted once gpu_table::follow_remote bumped the epoch (why that is
  // enough: the comment in invalidate.cu).
  bool stale = false;
  if (lane == 0 && t.epoch != nullptr) stale = *reinterpret_cast<volatile uint32_t*>(t.epoch) != t.fetch_epoch;
  stale = __shfl_sync(0xffffffffu, stale, 0);
  const int64_t key = *reinterpret_cast<volatile int64_t*>(&t.keys[set * 32 + lane]);
  const bool present = __ballot_sync(0xffffffffu, key == id) != 0;
  if (!present && !stale) {
    const unsigned empty = __ballot_sync(0xffffffffu, key < 0);
    int way;
    bool admit = true;
    if (empty != 0) {
      way = __ffs(empty) - 1;
    } else {
      // Oldest stamp; stamps are batch numbers, compared as distances so a
      // wrap-around of the counter does not invert the order.
      uint32_t age = batch_no - *reinterpret_cast<volatile uint32_t*>(&t.stamps[set * 32 + lane]);
      int best = lane;
      for (int off = 16; off > 0; off >>= 1) {
        const uint32_t other_age = __shfl_down_sync(0xffffffffu, age, off);
        const int other = __shfl_down_sync(0xffffffffu, best, off);
        if (other_age > age || (other_age == age && other < best)) {
          age = other_age;
          best = other;
        }
      }
      way = __shfl_sync(0xffffffffu, best, 0);
      if (t.freq != nullptr) {
        // Admission filter: replace the victim only with a row seen in more
        // batches. Keeping the victim changes no result: the miss was served.
        const int64_t victim = __shfl_sync(0xffffffffu, key, way);
        admit = *reinterpret_cast<volatile uint32_t*>(&t.freq[id]) >
                *reinterpret_cast<volatile uint32_t*>(&t.freq[victim]);
        admit = __shfl_sync(0xffffffffu, admit, 0);
      }
    }
    if (admit) {
      group_copy_row(t.cache_rows + (set * 32 + way) * t.row_bytes, src, t.row_bytes, lane, 32);
      if (lane == 0) {
        t.keys[set * 32 + way] = id;
        t.stamps[set * 32 + way] = batch_no;
        atomicAdd(&t.totals->inserted, 1ULL);
      }
    }
  }
  __syncwarp();
  if (lane == 0) {
    __threadfence();
    atomicExch(&t.versions[set], v + 2);
  }
}

// blockIdx.y = table. Below the table's hit-rate threshold: insert this
// batch's misses now (in stream order, before the lookup counts as
// returned). Otherwise hand them to the background inserter.
__global__ void insert_or_defer_kernel(const __grid_constant__ tiered_params p) {
  const tiered_call& c = p.calls[blockIdx.y];
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  const auto unique = static_cast<double>(c.batch->unique_ids);
  const auto misses = static_cast<int64_t>(c.batch->misses);
  const double hit_rate = unique == 0 ? 1.0 : static_cast<double>(c.batch->hits) / unique;
  // A prefetch inserts now (it runs on the background stream already) and
  // is no lookup: the table's counters leave it out (insert_row counts what
  // it inserts).
  const bool now = hit_rate < c.threshold || c.prefetch;
  if (blockIdx.x == 0 && threadIdx.x == 0 && c.prefetch) *c.pending_count = 0;
  if (blockIdx.x == 0 && threadIdx.x == 0 && !c.prefetch) {
    *c.pending_count = now ? 0 : static_cast<unsigned long long>(misses);
    counters* tot = c.t.totals;
    if (now && misses > 0) atomicAdd(&tot->sync_inserts, 1ULL);
    atomicAdd(&tot->unique_ids, c.batch->unique_ids);
    atomicAdd(&tot->hits, c.batch->hits);
    atomicAdd(&tot->host_hits, c.batch->host_hits);
    atomicAdd(&tot->file_reads, c.batch->host_reads);
    atomicAdd(&tot->batches, 1ULL);
    atomicAdd(&tot->backing_reads, c.batch->backing_reads);
  }
  for (int64_t m = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; m < misses; m += warps) {
    const int32_t u = c.miss_list[m];
    const char* src = c.staging + static_cast<int64_t>(u) * c.t.row_bytes;
    if (now) {
      insert_row(c.t, static_cast<int64_t>(c.hash_keys[u]), src, c.batch_no, lane);
    } else {
      if (lane == 0) c.pending_ids[m] = static_cast<int64_t>(c.hash_keys[u]);
      group_copy_row(c.pending_rows + m * c.t.row_bytes, src, c.t.row_bytes, lane, 32);
    }
  }
}

__global__ void insert_pending_kernel(const __grid_constant__ tiered_params p) {
  const tiered_call& c = p.calls[blockIdx.y];
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  const auto n = static_cast<int64_t>(*c.pending_count);
  for (int64_t m = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; m < n; m += warps) {
    insert_row(c.t, c.pending_ids[m], c.pending_rows + m * c.t.row_bytes, c.batch_no, lane);
  }
}

int warp_grid(int64_t warps, int num_sms) {
  const int64_t blocks = (warps + kWarpsPerBlock - 1) / kWarpsPerBlock;
  return static_cast<int>(std::clamp<int64_t>(blocks, 1, static_cast<int64_t>(num_sms) * 8));
}

// Blocks per table for kernels with one row of blocks per table: about
// `per_sm` blocks per SM over all tables together (the kernels loop), never
// more than the work needs.
int table_grid(int64_t warps, int num_sms, int tables, int per_sm) {
  const int64_t need = (warps + kWarpsPerBlock - 1) / kWarpsPerBlock;
  const int64_t share = std::max<int64_t>(1, static_cast<int64_t>(num_sms) * per_sm / std::max(tables, 1));
  return static_cast<int>(std::clamp<int64_t>(need, 1, share));
}

}  // namespace
}  // namespace gpu
}  // namespace tiemb
