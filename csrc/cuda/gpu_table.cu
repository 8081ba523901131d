#include "gpu_table.h"

#include <algorithm>
#include <cstring>

#include "cuda_check.h"

namespace tiemb {
namespace gpu {
namespace {

constexpr int kBlock = 256;
constexpr int kWarpsPerBlock = kBlock / 32;

__host__ __device__ inline uint64_t mix64(uint64_t x) {  // splitmix64 finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

__host__ __device__ inline int64_t cache_set(int64_t id, int64_t sets) {
  return static_cast<int64_t>(mix64(static_cast<uint64_t>(id)) % static_cast<uint64_t>(sets));
}

__device__ inline int64_t load_id(const void* p, bool is64, int64_t i) {
  return is64 ? static_cast<const int64_t*>(p)[i] : static_cast<int64_t>(static_cast<const int32_t*>(p)[i]);
}

// One row copied by the 32 lanes of a warp, in the widest unit the size allows.
__device__ inline void warp_copy_row(char* dst, const char* src, int64_t bytes, int lane) {
  if ((bytes & 15) == 0) {
    for (int64_t k = lane; k < bytes / 16; k += 32) {
      reinterpret_cast<uint4*>(dst)[k] = reinterpret_cast<const uint4*>(src)[k];
    }
  } else if ((bytes & 3) == 0) {
    for (int64_t k = lane; k < bytes / 4; k += 32) {
      reinterpret_cast<uint32_t*>(dst)[k] = reinterpret_cast<const uint32_t*>(src)[k];
    }
  } else {
    for (int64_t k = lane; k < bytes / 2; k += 32) {
      reinterpret_cast<uint16_t*>(dst)[k] = reinterpret_cast<const uint16_t*>(src)[k];
    }
  }
}

// Same, through volatile loads, for cache rows a writer may be changing (the
// sequence lock decides afterwards whether the copy counts).
__device__ inline void warp_copy_row_volatile(char* dst, const char* src, int64_t bytes, int lane) {
  const int64_t words = bytes / 2;
  if ((bytes & 3) == 0) {
    for (int64_t k = lane; k < bytes / 4; k += 32) {
      reinterpret_cast<uint32_t*>(dst)[k] = reinterpret_cast<const volatile uint32_t*>(src)[k];
    }
  } else {
    for (int64_t k = lane; k < words; k += 32) {
      reinterpret_cast<uint16_t*>(dst)[k] = reinterpret_cast<const volatile uint16_t*>(src)[k];
    }
  }
}

__device__ inline void warp_add(unsigned long long* counter, bool pred) {
  const unsigned mask = __ballot_sync(0xffffffffu, pred);
  if ((threadIdx.x & 31) == 0 && mask != 0) atomicAdd(counter, static_cast<unsigned long long>(__popc(mask)));
}

// Ids of one slot into the call's unique set. unique_index[i] = position of
// ids[i] in unique_ids, -1 for ids outside the table (the lookup kernel
// reports those).
__global__ void dedup_kernel(const void* ids, bool is64, int64_t n, int64_t rows,
                             unsigned long long* hash_keys, int32_t* hash_vals, uint64_t mask,
                             int64_t* unique_ids, counters* batch, counters* totals,
                             int32_t* unique_index) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x; base < n; base += stride) {
    const int64_t i = base + threadIdx.x;
    const bool active = i < n;
    warp_add(&totals->lookups, active);
    if (!active) continue;
    const int64_t id = load_id(ids, is64, i);
    if (id < 0 || id >= rows) {
      unique_index[i] = -1;
      continue;
    }
    uint64_t h = mix64(static_cast<uint64_t>(id)) & mask;
    int32_t u;
    for (;;) {
      const unsigned long long prev = atomicCAS(&hash_keys[h], ~0ULL, static_cast<unsigned long long>(id));
      if (prev == ~0ULL) {
        u = static_cast<int32_t>(atomicAdd(&batch->unique_ids, 1ULL));
        unique_ids[u] = id;
        __threadfence();
        atomicExch(&hash_vals[h], u);
        break;
      }
      if (prev == static_cast<unsigned long long>(id)) {
        // Another thread inserted it; its index appears right after.
        while ((u = atomicAdd(&hash_vals[h], 0)) < 0) {
        }
        break;
      }
      h = (h + 1) & mask;
    }
    unique_index[i] = u;
  }
}

// One warp per unique id: GPU cache, else host tier in place, else a request
// for the host. Misses are listed for insertion.
__global__ void probe_kernel(tiered_ref t, const int64_t* unique_ids, counters* batch, char* staging,
                             int32_t* miss_list, int64_t* host_list, bool zero_copy, uint32_t batch_no) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  const int64_t n = static_cast<int64_t>(batch->unique_ids);
  for (int64_t u = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; u < n; u += warps) {
    const int64_t id = unique_ids[u];
    char* dst = staging + u * t.row_bytes;
    const int64_t set = cache_set(id, t.sets);
    bool hit = false;
    const uint32_t v1 = *reinterpret_cast<volatile uint32_t*>(&t.versions[set]);
    if ((v1 & 1u) == 0) {
      const int64_t key = *reinterpret_cast<volatile int64_t*>(&t.keys[set * 32 + lane]);
      const unsigned match = __ballot_sync(0xffffffffu, key == id);
      if (match != 0) {
        const int way = __ffs(match) - 1;
        warp_copy_row_volatile(dst, t.cache_rows + (set * 32 + way) * t.row_bytes, t.row_bytes, lane);
        __threadfence();
        const uint32_t v2 = *reinterpret_cast<volatile uint32_t*>(&t.versions[set]);
        hit = v1 == v2;
        if (hit && lane == 0) t.stamps[set * 32 + way] = batch_no;
      }
    }
    if (lane == 0) {
      if (hit) {
        atomicAdd(&batch->hits, 1ULL);
      } else {
        const auto m = atomicAdd(&batch->misses, 1ULL);
        miss_list[m] = static_cast<int32_t>(u);
      }
    }
    if (hit) continue;
    const int64_t slot = t.host_index == nullptr ? id : t.host_index[id];
    if (zero_copy && slot >= 0) {
      warp_copy_row(dst, t.host_rows + slot * t.row_bytes, t.row_bytes, lane);
      if (lane == 0) atomicAdd(&batch->host_hits, 1ULL);
    } else if (lane == 0) {
      const auto k = atomicAdd(&batch->host_reads, 1ULL);
      host_list[2 * k] = id;
      host_list[2 * k + 1] = u;
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
    warp_copy_row(staging + host_list[2 * k + 1] * row_bytes, host_rows + k * row_bytes, row_bytes, lane);
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
    }
    warp_copy_row(t.cache_rows + (set * 32 + way) * t.row_bytes, src, t.row_bytes, lane);
    if (lane == 0) {
      t.keys[set * 32 + way] = id;
      t.stamps[set * 32 + way] = batch_no;
      atomicAdd(&t.totals->inserted, 1ULL);
    }
  }
  __syncwarp();
  if (lane == 0) {
    __threadfence();
    atomicExch(&t.versions[set], v + 2);
  }
}

// Below the hit-rate threshold: insert this batch's misses now (in stream
// order, before the lookup counts as returned). Otherwise hand them to the
// background inserter through `pending`.
__global__ void insert_or_defer_kernel(tiered_ref t, const char* staging, const int64_t* unique_ids,
                                       const int32_t* miss_list, counters* batch, double threshold,
                                       int64_t* pending_ids, char* pending_rows,
                                       unsigned long long* pending_count, uint32_t batch_no) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  const auto unique = static_cast<double>(batch->unique_ids);
  const auto misses = static_cast<int64_t>(batch->misses);
  const double hit_rate = unique == 0 ? 1.0 : static_cast<double>(batch->hits) / unique;
  const bool now = hit_rate < threshold;
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    *pending_count = now ? 0 : static_cast<unsigned long long>(misses);
    if (now && misses > 0) atomicAdd(&t.totals->sync_inserts, 1ULL);
    // Fold this batch into the table's totals.
    atomicAdd(&t.totals->unique_ids, batch->unique_ids);
    atomicAdd(&t.totals->hits, batch->hits);
    atomicAdd(&t.totals->host_hits, batch->host_hits);
    atomicAdd(&t.totals->file_reads, batch->host_reads);
    atomicAdd(&t.totals->batches, 1ULL);
  }
  for (int64_t m = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; m < misses; m += warps) {
    const int32_t u = miss_list[m];
    const char* src = staging + static_cast<int64_t>(u) * t.row_bytes;
    if (now) {
      insert_row(t, unique_ids[u], src, batch_no, lane);
    } else {
      if (lane == 0) pending_ids[m] = unique_ids[u];
      warp_copy_row(pending_rows + m * t.row_bytes, src, t.row_bytes, lane);
    }
  }
}

__global__ void insert_pending_kernel(tiered_ref t, const int64_t* pending_ids, const char* pending_rows,
                                      const unsigned long long* pending_count, uint32_t batch_no) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  const auto n = static_cast<int64_t>(*pending_count);
  for (int64_t m = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; m < n; m += warps) {
    insert_row(t, pending_ids[m], pending_rows + m * t.row_bytes, batch_no, lane);
  }
}

int warp_grid(int64_t warps, int num_sms) {
  const int64_t blocks = (warps + kWarpsPerBlock - 1) / kWarpsPerBlock;
  return static_cast<int>(std::clamp<int64_t>(blocks, 1, static_cast<int64_t>(num_sms) * 8));
}

}  // namespace

tiered_scratch::~tiered_scratch() {
  for (int p = 0; p < 2; ++p) {
    if (main_done[p]) cudaEventDestroy(main_done[p]);
    if (side_done[p]) cudaEventDestroy(side_done[p]);
  }
  if (side) {
    cudaStreamSynchronize(side);
    cudaStreamDestroy(side);
  }
}

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
    write_table_file(tiers.backing_file, type, rows, dim, host_data);
    file_ = std::make_unique<table_file_reader>(tiers.backing_file);
  }

  // GPU cache, warm: the hottest rows, each in its own set while ways last.
  const int64_t slots = sizes_.cache_sets * kCacheWays;
  std::vector<int64_t> keys(static_cast<size_t>(slots), -1);
  std::vector<uint32_t> stamps(static_cast<size_t>(slots), 0);
  std::vector<char> data(static_cast<size_t>(slots * rb), 0);
  std::vector<int> used(static_cast<size_t>(sizes_.cache_sets), 0);
  int64_t placed = 0;
  for (int64_t id : order) {
    if (placed == slots) break;
    const int64_t set = cache_set(id, sizes_.cache_sets);
    int& u = used[static_cast<size_t>(set)];
    if (u == kCacheWays) continue;
    const int64_t slot = set * kCacheWays + u++;
    keys[static_cast<size_t>(slot)] = id;
    std::memcpy(data.data() + slot * rb, src + id * rb, static_cast<size_t>(rb));
    ++placed;
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

std::unique_ptr<tiered_scratch> gpu_table::make_scratch(int64_t max_ids) const {
  auto s = std::make_unique<tiered_scratch>();
  const int64_t rb = row_bytes();
  const int64_t n = std::max<int64_t>(max_ids, 1);
  s->max_ids = n;
  int64_t cap = 2;
  while (cap < 2 * n) cap <<= 1;
  s->hash_capacity = cap;
  s->hash_keys = device_buffer(static_cast<size_t>(cap) * 8);
  s->hash_vals = device_buffer(static_cast<size_t>(cap) * 4);
  s->unique_ids = device_buffer(static_cast<size_t>(n) * 8);
  s->miss_list = device_buffer(static_cast<size_t>(n) * 4);
  s->host_list = device_buffer(static_cast<size_t>(n) * 16);
  s->staging = device_buffer(static_cast<size_t>(n * rb));
  s->batch = device_buffer(sizeof(counters));
  s->batch_host = pinned_buffer(sizeof(counters));
  const bool host_fetch = sizes_.file_rows > 0 || !tiers_.host_zero_copy;
  if (host_fetch) {
    s->host_rows_dev = device_buffer(static_cast<size_t>(n * rb));
    s->host_list_host = pinned_buffer(static_cast<size_t>(n) * 16);
    s->host_rows_host = pinned_buffer(static_cast<size_t>(n * rb));
  }
  for (int p = 0; p < 2; ++p) {
    s->pending_ids[p] = device_buffer(static_cast<size_t>(n) * 8);
    s->pending_rows[p] = device_buffer(static_cast<size_t>(n * rb));
    s->pending_count[p] = device_buffer(sizeof(unsigned long long));
    TIEMB_CUDA_CHECK(cudaMemset(s->pending_count[p].get(), 0, sizeof(unsigned long long)));
    TIEMB_CUDA_CHECK(cudaEventCreateWithFlags(&s->main_done[p], cudaEventDisableTiming));
    TIEMB_CUDA_CHECK(cudaEventCreateWithFlags(&s->side_done[p], cudaEventDisableTiming));
  }
  // The background inserter runs at low priority so lookups go first.
  int least = 0, greatest = 0;
  TIEMB_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  TIEMB_CUDA_CHECK(cudaStreamCreateWithPriority(&s->side, cudaStreamNonBlocking, least));
  return s;
}

namespace {
tiered_ref make_ref(device_buffer& keys, device_buffer& stamps, device_buffer& versions,
                    device_buffer& cache_rows, const pinned_buffer& host_rows, const device_buffer& host_index,
                    device_buffer& totals, int64_t sets, int64_t rows, int64_t row_bytes) {
  tiered_ref t{};
  t.keys = keys.get<int64_t>();
  t.stamps = stamps.get<uint32_t>();
  t.versions = versions.get<uint32_t>();
  t.cache_rows = cache_rows.get<char>();
  t.host_rows = host_rows.device<const char>();
  t.host_index = host_index.get<const int32_t>();
  t.totals = totals.get<counters>();
  t.sets = sets;
  t.rows = rows;
  t.row_bytes = row_bytes;
  return t;
}
}  // namespace

void gpu_table::gather(tiered_scratch& s, const ids_view* views, int num_views, cudaStream_t stream) {
  TIEMB_CUDA_CHECK(cudaMemsetAsync(s.hash_keys.get(), 0xff, s.hash_keys.bytes(), stream));
  TIEMB_CUDA_CHECK(cudaMemsetAsync(s.hash_vals.get(), 0xff, s.hash_vals.bytes(), stream));
  TIEMB_CUDA_CHECK(cudaMemsetAsync(s.batch.get(), 0, sizeof(counters), stream));
  const tiered_ref t = make_ref(keys_, stamps_, versions_, cache_rows_, host_rows_, host_index_dev_, totals_,
                                sizes_.cache_sets, rows_, row_bytes());
  for (int v = 0; v < num_views; ++v) {
    const ids_view& iv = views[v];
    if (iv.n == 0) continue;
    const int blocks = static_cast<int>(std::min<int64_t>((iv.n + kBlock - 1) / kBlock, num_sms_ * 8LL));
    dedup_kernel<<<blocks, kBlock, 0, stream>>>(iv.ids, iv.is64, iv.n, rows_,
                                               s.hash_keys.get<unsigned long long>(), s.hash_vals.get<int32_t>(),
                                               static_cast<uint64_t>(s.hash_capacity - 1), s.unique_ids.get<int64_t>(),
                                               s.batch.get<counters>(), totals_.get<counters>(), iv.unique_index);
    TIEMB_CUDA_CHECK(cudaGetLastError());
  }
  probe_kernel<<<warp_grid(s.max_ids, num_sms_), kBlock, 0, stream>>>(
      t, s.unique_ids.get<int64_t>(), s.batch.get<counters>(), s.staging.get<char>(), s.miss_list.get<int32_t>(),
      s.host_list.get<int64_t>(), tiers_.host_zero_copy, batch_no_);
  TIEMB_CUDA_CHECK(cudaGetLastError());
  if (sizes_.file_rows > 0 || !tiers_.host_zero_copy) fetch_on_host(s, stream);
}

void gpu_table::fetch_on_host(tiered_scratch& s, cudaStream_t stream) {
  // The host must see which rows are wanted: this path waits for the stream.
  auto* batch = s.batch_host.get<counters>();
  TIEMB_CUDA_CHECK(cudaMemcpyAsync(batch, s.batch.get(), sizeof(counters), cudaMemcpyDeviceToHost, stream));
  TIEMB_CUDA_CHECK(cudaStreamSynchronize(stream));
  const auto k = static_cast<int64_t>(batch->host_reads);
  if (k == 0) return;
  TIEMB_CUDA_CHECK(cudaMemcpyAsync(s.host_list_host.get(), s.host_list.get(), static_cast<size_t>(k) * 16,
                                   cudaMemcpyDeviceToHost, stream));
  TIEMB_CUDA_CHECK(cudaStreamSynchronize(stream));
  const int64_t rb = row_bytes();
  const auto* list = s.host_list_host.get<int64_t>();
  char* rows = s.host_rows_host.get<char>();
  for (int64_t i = 0; i < k; ++i) read_row_host(list[2 * i], rows + i * rb);
  TIEMB_CUDA_CHECK(cudaMemcpyAsync(s.host_rows_dev.get(), rows, static_cast<size_t>(k * rb),
                                   cudaMemcpyHostToDevice, stream));
  scatter_rows_kernel<<<warp_grid(k, num_sms_), kBlock, 0, stream>>>(
      s.host_rows_dev.get<char>(), s.host_list.get<int64_t>(), s.batch.get<counters>(), s.staging.get<char>(), rb);
  TIEMB_CUDA_CHECK(cudaGetLastError());
  // The pinned staging is reused by the next call: it must be consumed first.
  TIEMB_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void gpu_table::insert(tiered_scratch& s, cudaStream_t stream) {
  const int p = s.parity;
  const tiered_ref t = make_ref(keys_, stamps_, versions_, cache_rows_, host_rows_, host_index_dev_, totals_,
                                sizes_.cache_sets, rows_, row_bytes());
  // pending[p] was last handed to the side stream two calls ago.
  if (s.side_used[p]) TIEMB_CUDA_CHECK(cudaStreamWaitEvent(stream, s.side_done[p], 0));
  const int grid = warp_grid(s.max_ids, num_sms_);
  insert_or_defer_kernel<<<grid, kBlock, 0, stream>>>(
      t, s.staging.get<char>(), s.unique_ids.get<int64_t>(), s.miss_list.get<int32_t>(), s.batch.get<counters>(),
      tiers_.hit_rate_threshold, s.pending_ids[p].get<int64_t>(), s.pending_rows[p].get<char>(),
      s.pending_count[p].get<unsigned long long>(), batch_no_);
  TIEMB_CUDA_CHECK(cudaGetLastError());
  TIEMB_CUDA_CHECK(cudaEventRecord(s.main_done[p], stream));
  TIEMB_CUDA_CHECK(cudaStreamWaitEvent(s.side, s.main_done[p], 0));
  insert_pending_kernel<<<grid, kBlock, 0, s.side>>>(t, s.pending_ids[p].get<int64_t>(),
                                                     s.pending_rows[p].get<char>(),
                                                     s.pending_count[p].get<unsigned long long>(), batch_no_);
  TIEMB_CUDA_CHECK(cudaGetLastError());
  TIEMB_CUDA_CHECK(cudaEventRecord(s.side_done[p], s.side));
  s.side_used[p] = true;
  s.parity ^= 1;
  ++batch_no_;
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
  st.lookups = static_cast<int64_t>(c.lookups);
  st.unique_ids = static_cast<int64_t>(c.unique_ids);
  st.hits = static_cast<int64_t>(c.hits);
  st.host_hits = static_cast<int64_t>(c.host_hits);
  st.host_fetches = static_cast<int64_t>(c.file_reads);
  st.batches = static_cast<int64_t>(c.batches);
  st.inserted = static_cast<int64_t>(c.inserted);
  st.sync_inserts = static_cast<int64_t>(c.sync_inserts);
  return st;
}

}  // namespace gpu
}  // namespace tiemb
