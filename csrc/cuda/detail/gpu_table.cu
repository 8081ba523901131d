#include "gpu_table.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "../../core/cache_hash.h"
#include "../../core/cache_sim.h"
#include "cuda_check.h"
#include "device_util.cuh"
#include "gpu_types.h"

namespace tiemb {
namespace gpu {
namespace {

constexpr int kBlock = 256;
constexpr int kWarpsPerBlock = kBlock / 32;

// Ids of every view into its table's hash set; an id's unique index is its
// hash slot, so there is no counter to share and nothing to wait for.
// unique_index[i] = slot of ids[i], -1 for ids outside the table (the
// lookup kernel reports those).
__global__ void dedup_kernel(const __grid_constant__ tiered_params p) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t total = p.total_ids;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < total; g += stride) {
    int v = 0;
    while (v + 1 < p.num_views && p.views[v + 1].begin <= g) ++v;
    const dedup_view& view = p.views[v];
    const tiered_call& c = p.calls[view.call];
    const int64_t i = g - view.begin;
    const int64_t raw = load_index(view.ids, view.is64, id_offset(i, view.id_stride, view.ids_per_row, view.row_stride));
    const int64_t id = (view.wrap_negative && raw < 0) ? raw + c.t.rows : raw;
    if (id < 0 || id >= c.t.rows) {
      view.unique_index[i] = -1;
      continue;
    }
    uint64_t h = mix64(static_cast<uint64_t>(id)) & c.hash_mask;
    for (;;) {
      // Hot ids repeat thousands of times per batch: read first and keep
      // atomics for empty slots.
      unsigned long long key = *reinterpret_cast<volatile unsigned long long*>(&c.hash_keys[h]);
      if (key == ~0ULL) key = atomicCAS(&c.hash_keys[h], ~0ULL, static_cast<unsigned long long>(id));
      if (key == ~0ULL || key == static_cast<unsigned long long>(id)) break;
      h = (h + 1) & c.hash_mask;
    }
    view.unique_index[i] = static_cast<int32_t>(h);
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
  const int64_t capacity = static_cast<int64_t>(c.hash_mask) + 1;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  for (int64_t base = ((static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32) * 32; base < capacity;
       base += warps * 32) {
    // 32 slots per coalesced read; the occupied ones are this batch's ids.
    const unsigned long long my_key = *reinterpret_cast<volatile unsigned long long*>(&c.hash_keys[base + lane]);
    unsigned pending = __ballot_sync(0xffffffffu, my_key != ~0ULL);
    if (lane == 0) atomicAdd(&block_unique, static_cast<unsigned long long>(__popc(pending)));
    while (pending != 0) {
      // Each group of kProbeLanes lanes takes one of the next occupied slots.
      const int nth = __popc(pending) > sub ? static_cast<int>(__fns(pending, 0, sub + 1)) : -1;
      for (int g = 0; g < 32 / kProbeLanes && pending != 0; ++g) pending &= pending - 1u;  // drop the taken bits
      const bool active = nth >= 0;
      const int64_t u = base + (active ? nth : 0);
      const unsigned long long key = __shfl_sync(0xffffffffu, my_key, active ? nth : 0);  // every lane shuffles
      const int64_t id = active ? static_cast<int64_t>(key) : 0;
      if (active && gl == 0 && t.freq != nullptr) atomicAdd(&t.freq[id], 1u);  // admission filter's counts
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
        group_copy_row_volatile(dst, t.cache_rows + (set * 32 + way) * t.row_bytes, t.row_bytes, gl, kProbeLanes);
        // The row's loads must complete before the version is read again.
        asm volatile("fence.acq_rel.gpu;" ::: "memory");
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
      if (in_place) {
        // Deferred: host_read_kernel reads these rows after the probe.
        if (!c.defer_host_reads) group_copy_row(dst, t.host_rows + slot * t.row_bytes, t.row_bytes, gl, kProbeLanes);
        if (gl == 0) atomicAdd(&block_host_hits, 1ULL);
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
  const int64_t key = *reinterpret_cast<volatile int64_t*>(&t.keys[set * 32 + lane]);
  const bool present = __ballot_sync(0xffffffffu, key == id) != 0;
  if (!present) {
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
  const bool now = hit_rate < c.threshold;
  if (blockIdx.x == 0 && threadIdx.x == 0) {
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

gpu_table::gpu_table(int device, dtype type, int64_t rows, int64_t dim, const void* host_data,
                     const tier_config& tiers, const int64_t* profile_ids, int64_t num_profile)
    : device_(device), type_(type), rows_(rows), dim_(dim), tiers_(tiers) {
  TIEMB_EXPECT(type == dtype::float32 || type == dtype::float16,
               "table dtype must be float32 or float16, got ", to_string(type));
  TIEMB_EXPECT(rows > 0, "table must have at least one row, got ", rows);
  TIEMB_EXPECT(dim > 0, "table dimension must be > 0, got ", dim);
  tiers.validate(rows);
  sizes_ = compute_tier_sizes(rows, tiers);
  TIEMB_CUDA_CHECK(cudaDeviceGetAttribute(&num_sms_, cudaDevAttrMultiProcessorCount, device));
  const int64_t rb = row_bytes();
  const char* src = static_cast<const char*>(host_data);
  if (sizes_.resident) {
    resident_ = device_buffer(static_cast<size_t>(rows * rb));
    TIEMB_CUDA_CHECK(cudaMemcpy(resident_.get(), host_data, static_cast<size_t>(rows * rb),
                                cudaMemcpyHostToDevice));
    return;
  }
  const std::vector<int64_t> order =
      hot_rows(rows, profile_ids, num_profile, std::max(sizes_.gpu_rows, sizes_.host_rows));

  // Host tier: everything (identity), or the hottest rows plus an index.
  host_rows_ = pinned_buffer(static_cast<size_t>(std::max<int64_t>(sizes_.host_rows, 1) * rb), true);
  if (sizes_.host_rows == rows) {
    std::memcpy(host_rows_.get(), host_data, static_cast<size_t>(rows * rb));
  } else {
    host_index_.assign(static_cast<size_t>(rows), -1);
    for (int64_t k = 0; k < sizes_.host_rows; ++k) {
      const int64_t id = order[static_cast<size_t>(k)];
      host_index_[static_cast<size_t>(id)] = static_cast<int32_t>(k);
      std::memcpy(host_rows_.get<char>() + k * rb, src + id * rb, static_cast<size_t>(rb));
    }
    host_index_dev_ = device_buffer(host_index_.size() * sizeof(int32_t));
    TIEMB_CUDA_CHECK(cudaMemcpy(host_index_dev_.get(), host_index_.data(), host_index_dev_.bytes(),
                                cudaMemcpyHostToDevice));
  }
  if (sizes_.file_rows > 0) {
    // A store's own table file serves its cold rows (reads honour its
    // header); only a table given as an array is written out first.
    if (!tiers.backing_file_holds_table) write_table_file(tiers.backing_file, type, rows, dim, host_data);
    file_ = std::make_unique<table_file_reader>(tiers.backing_file);
    const table_file_header& h = file_->header();
    TIEMB_EXPECT(h.type == type && h.rows == rows && h.dim == dim, "backing file ", tiers.backing_file, " holds a ",
                 h.rows, " x ", h.dim, " ", to_string(h.type), " table, not this ", rows, " x ", dim, " ",
                 to_string(type), " one");
  }

  // GPU cache, warm: the hottest rows, each in its own set while ways last.
  // (warm_cache_keys is shared with the CPU simulator of `tiemb advise`.)
  const int64_t slots = sizes_.cache_sets * kCacheWays;
  const std::vector<int64_t> keys = warm_cache_keys(sizes_.cache_sets, order);
  std::vector<uint32_t> stamps(static_cast<size_t>(slots), 0);
  std::vector<char> data(static_cast<size_t>(slots * rb), 0);
  for (int64_t slot = 0; slot < slots; ++slot) {
    const int64_t id = keys[static_cast<size_t>(slot)];
    if (id >= 0) std::memcpy(data.data() + slot * rb, src + id * rb, static_cast<size_t>(rb));
  }
  keys_ = device_buffer(keys.size() * sizeof(int64_t));
  stamps_ = device_buffer(stamps.size() * sizeof(uint32_t));
  versions_ = device_buffer(static_cast<size_t>(sizes_.cache_sets) * sizeof(uint32_t));
  cache_rows_ = device_buffer(data.size());
  totals_ = device_buffer(sizeof(counters));
  TIEMB_CUDA_CHECK(cudaMemcpy(keys_.get(), keys.data(), keys_.bytes(), cudaMemcpyHostToDevice));
  TIEMB_CUDA_CHECK(cudaMemcpy(stamps_.get(), stamps.data(), stamps_.bytes(), cudaMemcpyHostToDevice));
  TIEMB_CUDA_CHECK(cudaMemset(versions_.get(), 0, versions_.bytes()));
  TIEMB_CUDA_CHECK(cudaMemcpy(cache_rows_.get(), data.data(), data.size(), cudaMemcpyHostToDevice));
  TIEMB_CUDA_CHECK(cudaMemset(totals_.get(), 0, totals_.bytes()));
  if (tiers.admission_filter) {
    // Batches each row was seen in, starting from the profile's counts (the
    // CPU simulator's lru_admit starts the same way).
    std::vector<uint32_t> freq(static_cast<size_t>(rows), 0);
    for (int64_t i = 0; i < num_profile; ++i) {
      const int64_t id = profile_ids[i];
      if (id >= 0 && id < rows) ++freq[static_cast<size_t>(id)];
    }
    freq_ = device_buffer(freq.size() * sizeof(uint32_t));
    TIEMB_CUDA_CHECK(cudaMemcpy(freq_.get(), freq.data(), freq_.bytes(), cudaMemcpyHostToDevice));
  }
}

gpu_table::~gpu_table() = default;

void gpu_table::read_row_host(int64_t id, void* dst) const {
  const int64_t rb = row_bytes();
  if (sizes_.resident) {
    TIEMB_CUDA_CHECK(cudaMemcpy(dst, resident_.get<char>() + id * rb, static_cast<size_t>(rb),
                                cudaMemcpyDeviceToHost));
    return;
  }
  const int64_t slot = host_index_.empty() ? id : host_index_[static_cast<size_t>(id)];
  if (slot >= 0) {
    std::memcpy(dst, host_rows_.get<char>() + slot * rb, static_cast<size_t>(rb));
  } else {
    file_->read_row(id, dst);
  }
}

tiered_ref gpu_table::ref() {
  tiered_ref t{};
  t.keys = keys_.get<int64_t>();
  t.stamps = stamps_.get<uint32_t>();
  t.versions = versions_.get<uint32_t>();
  t.cache_rows = cache_rows_.get<char>();
  t.host_rows = host_rows_.device<const char>();
  t.host_index = host_index_dev_.get<const int32_t>();
  t.totals = totals_.get<counters>();
  t.sets = sizes_.cache_sets;
  t.rows = rows_;
  t.freq = freq_.get<uint32_t>();  // null unless the admission filter is on
  t.row_bytes = row_bytes();
  return t;
}

table_stats gpu_table::stats() const {
  table_stats st;
  st.rows_gpu = sizes_.gpu_rows;
  st.rows_host = sizes_.host_rows;
  st.rows_file = sizes_.file_rows;
  if (sizes_.resident) return st;
  counters c{};
  TIEMB_CUDA_CHECK(cudaDeviceSynchronize());
  TIEMB_CUDA_CHECK(cudaMemcpy(&c, totals_.get(), sizeof c, cudaMemcpyDeviceToHost));
  st.lookups = lookups_.load();
  st.unique_ids = static_cast<int64_t>(c.unique_ids);
  st.hits = static_cast<int64_t>(c.hits);
  st.host_hits = static_cast<int64_t>(c.host_hits);
  st.host_fetches = static_cast<int64_t>(c.file_reads);
  st.batches = static_cast<int64_t>(c.batches);
  st.inserted = static_cast<int64_t>(c.inserted);
  st.sync_inserts = static_cast<int64_t>(c.sync_inserts);
  st.backing_reads = static_cast<int64_t>(c.backing_reads);
  return st;
}

// ---- tiered_batch ----------------------------------------------------------------

tiered_batch::tiered_batch(std::vector<gpu_table*> tables, std::vector<int64_t> max_ids, int num_sms)
    : tables_(std::move(tables)), num_sms_(num_sms), pool_(hardware_threads()) {
  const size_t n = tables_.size();
  TIEMB_EXPECT(n <= static_cast<size_t>(kMaxTieredTables), "a lookup group may use at most ", kMaxTieredTables,
               " tiered tables, got ", n);
  size_t keys_bytes = 0;
  for (size_t i = 0; i < n; ++i) {
    const int64_t m = std::max<int64_t>(max_ids[i], 1);
    int64_t cap = 32;
    while (cap < 2 * m) cap <<= 1;  // load factor <= 1/2 keeps probes short
    hash_capacity_.push_back(cap);
    max_capacity_ = std::max(max_capacity_, cap);
    keys_off_.push_back(keys_bytes);
    keys_bytes += static_cast<size_t>(cap) * 8;
  }
  hash_ = device_buffer(keys_bytes);
  batch_ = device_buffer(std::max<size_t>(n, 1) * sizeof(counters));
  batch_host_ = pinned_buffer(std::max<size_t>(n, 1) * sizeof(counters));
  for (size_t i = 0; i < n; ++i) {
    const auto m = static_cast<size_t>(std::max<int64_t>(max_ids[i], 1));
    max_misses_ = std::max(max_misses_, static_cast<int64_t>(m));
    const auto rb = static_cast<size_t>(tables_[i]->row_bytes());
    miss_list_.emplace_back(m * 4);
    host_list_.emplace_back(m * 16);
    staging_.emplace_back(static_cast<size_t>(hash_capacity_[i]) * rb);  // indexed by hash slot
    for (int p = 0; p < 2; ++p) {
      pending_ids_[p].emplace_back(m * 8);
      pending_rows_[p].emplace_back(m * rb);
      pending_count_[p].emplace_back(sizeof(unsigned long long));
      TIEMB_CUDA_CHECK(cudaMemset(pending_count_[p].back().get(), 0, sizeof(unsigned long long)));
    }
    if (tables_[i]->host_fetch()) {
      fetched_dev_.emplace_back(m * rb);
      list_host_.emplace_back(m * 16);
      fetched_host_.emplace_back(m * rb);
    } else {
      fetched_dev_.emplace_back();
      list_host_.emplace_back();
      fetched_host_.emplace_back();
    }
    batch_no_.push_back(0);
  }
  fetch_counts_.assign(n, 0);
  // Zero-copy reads inside the probe stay the default: on the H200 the
  // separate host-read kernel was slower (974 vs 671 us, 561 vs 471 us per
  // call in benchmarks/RESULTS.md). TIEMB_TIERED_INLINE_HOST_READS=0 selects
  // that kernel, so benchmarks can compare both in one run.
  const char* inline_reads = std::getenv("TIEMB_TIERED_INLINE_HOST_READS");
  defer_host_reads_ = inline_reads != nullptr && std::string(inline_reads) == "0";
  TIEMB_CUDA_CHECK(cudaEventCreateWithFlags(&fetch_done_, cudaEventDisableTiming));
  for (int p = 0; p < 2; ++p) {
    TIEMB_CUDA_CHECK(cudaEventCreateWithFlags(&main_done_[p], cudaEventDisableTiming));
    TIEMB_CUDA_CHECK(cudaEventCreateWithFlags(&side_done_[p], cudaEventDisableTiming));
  }
  // The background inserter runs at low priority so lookups go first.
  int least = 0, greatest = 0;
  TIEMB_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  TIEMB_CUDA_CHECK(cudaStreamCreateWithPriority(&side_, cudaStreamNonBlocking, least));
}

tiered_batch::~tiered_batch() {
  if (fetch_done_) {
    cudaEventSynchronize(fetch_done_);
    cudaEventDestroy(fetch_done_);
  }
  if (side_) {
    cudaStreamSynchronize(side_);
    cudaStreamDestroy(side_);
  }
  for (int p = 0; p < 2; ++p) {
    if (main_done_[p]) cudaEventDestroy(main_done_[p]);
    if (side_done_[p]) cudaEventDestroy(side_done_[p]);
  }
}

int tiered_batch::index_of(const gpu_table* table) const {
  for (size_t i = 0; i < tables_.size(); ++i) {
    if (tables_[i] == table) return static_cast<int>(i);
  }
  return -1;
}

tiered_params tiered_batch::params(int parity) {
  tiered_params p{};
  p.num_calls = num_tables();
  for (int i = 0; i < p.num_calls; ++i) {
    const auto u = static_cast<size_t>(i);
    tiered_call& c = p.calls[i];
    c.t = tables_[u]->ref();
    c.hash_keys = reinterpret_cast<unsigned long long*>(hash_.get<char>() + keys_off_[u]);
    c.hash_mask = static_cast<uint64_t>(hash_capacity_[u] - 1);
    c.batch = batch_.get<counters>() + i;
    c.staging = staging_[u].get<char>();
    c.miss_list = miss_list_[u].get<int32_t>();
    c.host_list = host_list_[u].get<int64_t>();
    c.pending_ids = pending_ids_[parity][u].get<int64_t>();
    c.pending_rows = pending_rows_[parity][u].get<char>();
    c.pending_count = pending_count_[parity][u].get<unsigned long long>();
    c.threshold = tables_[u]->tiers().hit_rate_threshold;
    c.batch_no = batch_no_[u];
    c.zero_copy = tables_[u]->tiers().host_zero_copy;
    c.defer_host_reads = defer_host_reads_;
  }
  return p;
}

void tiered_batch::gather(const dedup_view* views, int num_views, cudaStream_t stream) {
  TIEMB_EXPECT(num_views <= kMaxTieredViews, "a lookup group may have at most ", kMaxTieredViews,
               " slots over tiered tables, got ", num_views);
  for (size_t i = 0; i < tables_.size(); ++i) batch_no_[i] = tables_[i]->next_batch();
  staged_ = params(parity_);
  staged_.num_views = num_views;
  int64_t total = 0;
  for (int v = 0; v < num_views; ++v) {
    staged_.views[v] = views[v];
    staged_.views[v].begin = total;
    total += views[v].n;
    tables_[static_cast<size_t>(views[v].call)]->count_lookups(views[v].n);
  }
  staged_.total_ids = total;
  TIEMB_CUDA_CHECK(cudaMemsetAsync(hash_.get(), 0xff, hash_.bytes(), stream));
  TIEMB_CUDA_CHECK(cudaMemsetAsync(batch_.get(), 0, batch_.bytes(), stream));
  if (total > 0) {
    const int blocks = static_cast<int>(std::min<int64_t>((total + kBlock - 1) / kBlock, num_sms_ * 8LL));
    dedup_kernel<<<blocks, kBlock, 0, stream>>>(staged_);
    TIEMB_CUDA_CHECK(cudaGetLastError());
  }
  const dim3 grid(static_cast<unsigned>(table_grid(max_capacity_ / 32, num_sms_, num_tables(), 16)),
                  static_cast<unsigned>(num_tables()));
  probe_kernel<<<grid, kBlock, 0, stream>>>(staged_);
  TIEMB_CUDA_CHECK(cudaGetLastError());
  if (defer_host_reads_) {
    // kProbeLanes lanes per row: 32 / kProbeLanes rows per warp.
    const int64_t warps = (max_misses_ * kProbeLanes + 31) / 32;
    const dim3 reads(static_cast<unsigned>(table_grid(warps, num_sms_, num_tables(), 8)),
                     static_cast<unsigned>(num_tables()));
    host_read_kernel<<<reads, kBlock, 0, stream>>>(staged_);
    TIEMB_CUDA_CHECK(cudaGetLastError());
  }
  bool any_host = false;
  for (auto* t : tables_) any_host = any_host || t->host_fetch();
  if (any_host) fetch_on_host(stream);
}

void tiered_batch::fetch_on_host(cudaStream_t stream) {
  // The pinned buffers of the previous call's transfers must be free again.
  if (fetch_pending_) TIEMB_CUDA_CHECK(cudaEventSynchronize(fetch_done_));
  fetch_pending_ = false;
  // The host must see which rows are wanted: one wait for every table's
  // counts, one for every table's list.
  TIEMB_CUDA_CHECK(cudaMemcpyAsync(batch_host_.get(), batch_.get(), batch_.bytes(), cudaMemcpyDeviceToHost, stream));
  TIEMB_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<int64_t>& counts = fetch_counts_;
  bool any = false;
  for (int i = 0; i < num_tables(); ++i) {
    const auto u = static_cast<size_t>(i);
    counts[u] = tables_[u]->host_fetch() ? static_cast<int64_t>(batch_host_.get<counters>()[i].host_reads) : 0;
    if (counts[u] == 0) continue;
    any = true;
    TIEMB_CUDA_CHECK(cudaMemcpyAsync(list_host_[u].get(), host_list_[u].get(), static_cast<size_t>(counts[u]) * 16,
                                     cudaMemcpyDeviceToHost, stream));
  }
  if (!any) return;
  TIEMB_CUDA_CHECK(cudaStreamSynchronize(stream));
  // Gather the rows on all host threads: (table, chunk) tasks.
  constexpr int64_t kChunk = 256;
  std::vector<std::pair<int, int64_t>>& tasks = fetch_tasks_;
  tasks.clear();
  for (int i = 0; i < num_tables(); ++i) {
    for (int64_t b = 0; b < counts[static_cast<size_t>(i)]; b += kChunk) tasks.emplace_back(i, b);
  }
  std::vector<std::string>& errors = fetch_errors_;
  errors.assign(tasks.size(), std::string());
  auto gather_chunk = [&](int64_t t, int) {
    const auto [i, begin] = tasks[static_cast<size_t>(t)];
    const auto u = static_cast<size_t>(i);
    const int64_t rb = tables_[u]->row_bytes();
    const auto* list = list_host_[u].get<int64_t>();
    char* rows = fetched_host_[u].get<char>();
    try {
      for (int64_t j = begin; j < std::min(begin + kChunk, counts[u]); ++j) {
        tables_[u]->read_row_host(list[2 * j], rows + j * rb);
      }
    } catch (const std::exception& e) {
      errors[static_cast<size_t>(t)] = e.what();
    }
  };
  pool_.parallel_for(static_cast<int64_t>(tasks.size()), gather_chunk);
  for (const auto& e : errors) {
    if (!e.empty()) throw error(e);
  }
  for (int i = 0; i < num_tables(); ++i) {
    const auto u = static_cast<size_t>(i);
    if (counts[u] == 0) continue;
    const int64_t rb = tables_[u]->row_bytes();
    TIEMB_CUDA_CHECK(cudaMemcpyAsync(fetched_dev_[u].get(), fetched_host_[u].get(), static_cast<size_t>(counts[u] * rb),
                                     cudaMemcpyHostToDevice, stream));
    scatter_rows_kernel<<<warp_grid(counts[u], num_sms_), kBlock, 0, stream>>>(
        fetched_dev_[u].get<char>(), host_list_[u].get<int64_t>(), batch_.get<counters>() + i,
        staging_[u].get<char>(), rb);
    TIEMB_CUDA_CHECK(cudaGetLastError());
  }
  // Waited for at the next call, before the pinned buffers are written again.
  TIEMB_CUDA_CHECK(cudaEventRecord(fetch_done_, stream));
  fetch_pending_ = true;
}

void tiered_batch::insert(cudaStream_t stream) {
  const int p = parity_;
  // pending[p] was last handed to the side stream two calls ago.
  if (side_used_[p]) TIEMB_CUDA_CHECK(cudaStreamWaitEvent(stream, side_done_[p], 0));
  const dim3 grid(static_cast<unsigned>(table_grid(max_misses_, num_sms_, num_tables(), 4)),
                  static_cast<unsigned>(num_tables()));
  insert_or_defer_kernel<<<grid, kBlock, 0, stream>>>(staged_);
  TIEMB_CUDA_CHECK(cudaGetLastError());
  TIEMB_CUDA_CHECK(cudaEventRecord(main_done_[p], stream));
  TIEMB_CUDA_CHECK(cudaStreamWaitEvent(side_, main_done_[p], 0));
  insert_pending_kernel<<<grid, kBlock, 0, side_>>>(staged_);
  TIEMB_CUDA_CHECK(cudaGetLastError());
  TIEMB_CUDA_CHECK(cudaEventRecord(side_done_[p], side_));
  side_used_[p] = true;
  parity_ ^= 1;
}

}  // namespace gpu
}  // namespace tiemb
