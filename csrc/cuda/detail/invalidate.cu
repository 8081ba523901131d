// A GPU table over a remote table follows the remote's version switches
// (tiemb update + refresh): gpu_table::follow_remote and its kernels.
//
// Why no stale row survives in a tiered table's cache. A stale row of id x
// for switch s is one fetched (read from the remote table) before s. Its
// call read the table's epoch before that fetch (gather: follow_remote, then
// ref() for the epoch, then the fetch), so before the first follow that sees
// s bumps the epoch (that follow runs after s, having seen it). That follow
// sets the device epoch, then clears x's set under the set's sequence lock.
// The insert of the stale row holds the same lock and reads the epoch under
// it, so either
//  - it held the lock before the clear took it: the clear removes the row; or
//  - it takes the lock after the clear released it: it reads the bumped
//    epoch (set before the clear, ordered by the lock's fences), which is
//    not the epoch its call carries, and inserts nothing.
// Calls start only after the follow completed (follow_remote waits for its
// stream, and other callers wait on follow_mutex_ until followed_ moves), so
// no call that starts after refresh() returned can hit a stale row. A call
// already running during the switch may return the old or the new row of an
// id, never anything else: a hit is guarded by the sequence lock, a miss
// reads one version under the remote table's lock.
#include <algorithm>
#include <cstring>
#include <mutex>
#include <numeric>

#include "../../core/cache_hash.h"
#include "cuda_check.h"
#include "device_util.cuh"
#include "gpu_table.h"

namespace tiemb {
namespace gpu {
namespace {

constexpr int kBlock = 256;
constexpr int kWarps = kBlock / 32;

__global__ void set_epoch_kernel(uint32_t* epoch, uint32_t value) {
  *reinterpret_cast<volatile uint32_t*>(epoch) = value;
  __threadfence();
}

// One warp per entry: the set of ids[k], or set k when ids is null (every
// way goes). Locks each set like insert_row, so probes that overlap see the
// version move and read the lower tier instead.
__global__ void invalidate_kernel(int64_t* keys, uint32_t* versions, int64_t sets, const int64_t* ids, int64_t n) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarps;
  for (int64_t k = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; k < n; k += warps) {
    const int64_t id = ids != nullptr ? ids[k] : -1;
    const int64_t set = ids != nullptr ? cache_set(id, sets) : k;
    uint32_t v = 0;
    if (lane == 0) {
      for (;;) {
        v = *reinterpret_cast<volatile uint32_t*>(&versions[set]);
        if ((v & 1u) == 0 && atomicCAS(&versions[set], v, v + 1) == v) break;
      }
      __threadfence();
    }
    v = __shfl_sync(0xffffffffu, v, 0);
    volatile int64_t* key = &keys[set * 32 + lane];
    if (ids == nullptr ? *key >= 0 : *key == id) *key = -1;
    __threadfence();
    __syncwarp();
    if (lane == 0) atomicExch(&versions[set], v + 2);
  }
}

// Row ids[k] of a resident table := rows[k] (one warp per row).
__global__ void write_rows_kernel(char* table, const int64_t* ids, const char* rows, int64_t n, int64_t row_bytes) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarps;
  for (int64_t k = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; k < n; k += warps) {
    group_copy_row(table + ids[k] * row_bytes, rows + k * row_bytes, row_bytes, lane, 32);
  }
}

unsigned warp_blocks(int64_t warps) {
  return static_cast<unsigned>(std::clamp<int64_t>((warps + kWarps - 1) / kWarps, 1, 65535));
}

}  // namespace

void gpu_table::follow_remote(cudaStream_t stream) {
  if (!remote_ || followed_.load(std::memory_order_acquire) == remote_->refreshes()) return;
  std::unique_lock<std::shared_mutex> lk(follow_mutex_);
  const int64_t seen = followed_.load(std::memory_order_relaxed);
  std::vector<int64_t> ids;
  int64_t now = seen;
  const bool known = remote_->changed_since(seen, &ids, &now);
  if (now == seen) return;  // another caller followed while this one waited
  if (sizes_.resident) {
    rewrite_resident(ids, !known, stream);
  } else {
    invalidate_cache(ids, !known, stream);
  }
  followed_.store(now, std::memory_order_release);
}

void gpu_table::invalidate_cache(const std::vector<int64_t>& ids, bool all, cudaStream_t stream) {
  // A call that reads this epoch in ref() from now on fetches after the
  // switch; its inserts are current even if they land before the device
  // epoch below is set (then they are only dropped, never wrong).
  const uint32_t epoch = epoch_.load(std::memory_order_relaxed) + 1;
  epoch_.store(epoch, std::memory_order_release);
  set_epoch_kernel<<<1, 1, 0, stream>>>(epoch_dev_.get<uint32_t>(), epoch);
  TIEMB_CUDA_CHECK(cudaGetLastError());
  const auto n = static_cast<int64_t>(all ? sizes_.cache_sets : static_cast<int64_t>(ids.size()));
  device_buffer ids_dev;  // allocated here: an update is rare, and its size is the update's
  if (!all && n > 0) {
    ids_dev = device_buffer(ids.size() * sizeof(int64_t));
    TIEMB_CUDA_CHECK(cudaMemcpyAsync(ids_dev.get(), ids.data(), ids_dev.bytes(), cudaMemcpyHostToDevice, stream));
  }
  if (n > 0) {
    invalidate_kernel<<<warp_blocks(n), kBlock, 0, stream>>>(keys_.get<int64_t>(), versions_.get<uint32_t>(),
                                                              sizes_.cache_sets,
                                                              all ? nullptr : ids_dev.get<const int64_t>(), n);
    TIEMB_CUDA_CHECK(cudaGetLastError());
  }
  // A host wait, on an update only: the clear is done before any later call
  // of any group probes (and ids.data() may be freed).
  TIEMB_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void gpu_table::rewrite_resident(const std::vector<int64_t>& changed, bool all, cudaStream_t stream) {
  std::vector<int64_t> every;
  if (all) {
    every.resize(static_cast<size_t>(rows_));
    std::iota(every.begin(), every.end(), int64_t{0});
  }
  const std::vector<int64_t>& ids = all ? every : changed;
  if (ids.empty()) return;
  const auto rb = static_cast<size_t>(row_bytes());
  std::vector<char> rows(ids.size() * rb);
  remote_->read_current(ids, rows.data());
  device_buffer ids_dev, rows_dev;
  if (!all) {
    ids_dev = device_buffer(ids.size() * sizeof(int64_t));
    rows_dev = device_buffer(rows.size());
  }
  // Resident rows have no sequence lock: every kernel queued before this
  // follow took follow_mutex_ must finish before a row changes, and lookups
  // queue nothing over this table while the lock is held.
  TIEMB_CUDA_CHECK(cudaDeviceSynchronize());
  if (all) {
    TIEMB_CUDA_CHECK(cudaMemcpyAsync(resident_.get(), rows.data(), rows.size(), cudaMemcpyHostToDevice, stream));
  } else {
    TIEMB_CUDA_CHECK(cudaMemcpyAsync(ids_dev.get(), ids.data(), ids_dev.bytes(), cudaMemcpyHostToDevice, stream));
    TIEMB_CUDA_CHECK(cudaMemcpyAsync(rows_dev.get(), rows.data(), rows.size(), cudaMemcpyHostToDevice, stream));
    write_rows_kernel<<<warp_blocks(static_cast<int64_t>(ids.size())), kBlock, 0, stream>>>(
        resident_.get<char>(), ids_dev.get<const int64_t>(), rows_dev.get<const char>(),
        static_cast<int64_t>(ids.size()), row_bytes());
    TIEMB_CUDA_CHECK(cudaGetLastError());
  }
  TIEMB_CUDA_CHECK(cudaStreamSynchronize(stream));
}

}  // namespace gpu
}  // namespace tiemb
