// One embedding table on the GPU: resident, or tiered over a GPU cache,
// pinned host memory and a backing file. CUDA-side header.
//
// The GPU cache is set-associative: kCacheWays (32) ways per set so one warp
// probes a set with one load per lane and a ballot. Eviction is LRU with
// batch-granularity stamps: a hit stamps its way with the batch number, an
// insert takes an empty way or else the least recently stamped one. LRU was
// chosen over LFU because it needs no counter decay and the warm start (the
// hottest rows of a profile) already gives it the frequency prior.
//
// Every set has a sequence lock: writers (inserts, possibly on a background
// stream) make it odd while they change the set; a reader that saw it odd or
// changed treats the row as a miss and reads the lower tier. Results are
// exact whatever runs concurrently.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "../core/table_file.h"
#include "../core/tier_config.h"
#include "../core/types.h"
#include "device_buffer.h"

namespace tiemb {
namespace gpu {

/// Device counters of a table or a batch (unsigned long long for atomicAdd).
struct counters {
  unsigned long long lookups;
  unsigned long long unique_ids;
  unsigned long long hits;
  unsigned long long host_hits;
  unsigned long long file_reads;
  unsigned long long inserted;
  unsigned long long misses;      // batch: unique ids not in the GPU cache
  unsigned long long host_reads;  // batch: ids the host must fetch
  unsigned long long sync_inserts;
  unsigned long long batches;
};

/// Non-owning, trivially copyable view of a tiered table for kernels.
struct tiered_ref {
  int64_t* keys;          // sets * kCacheWays, -1 = empty
  uint32_t* stamps;       // LRU stamps
  uint32_t* versions;     // per set sequence lock
  char* cache_rows;       // sets * kCacheWays rows
  const char* host_rows;  // device address of mapped pinned rows (nullptr without zero-copy)
  const int32_t* host_index;  // row -> host slot, -1 = file only; nullptr = identity
  counters* totals;
  int64_t sets;
  int64_t rows;
  int64_t row_bytes;
};

/// Per group and tiered table: the scratch of one call, sized once.
struct tiered_scratch {
  int64_t max_ids = 0;   // ids of all slots using the table, per call
  int64_t hash_capacity = 0;
  device_buffer hash_keys, hash_vals, unique_ids, miss_list, host_list, staging, batch;
  device_buffer host_rows_dev;   // rows fetched by the host this call
  pinned_buffer batch_host, host_list_host, host_rows_host;
  // Background insertion: two pending buffers used in turn, a side stream.
  device_buffer pending_ids[2], pending_rows[2], pending_count[2];
  cudaEvent_t main_done[2] = {nullptr, nullptr};
  cudaEvent_t side_done[2] = {nullptr, nullptr};
  cudaStream_t side = nullptr;
  int parity = 0;
  bool side_used[2] = {false, false};
  ~tiered_scratch();
};

class gpu_table {
 public:
  gpu_table(int device, dtype type, int64_t rows, int64_t dim, const void* host_data,
            const tier_config& tiers, const int64_t* profile_ids, int64_t num_profile);
  ~gpu_table();

  dtype type() const { return type_; }
  int64_t rows() const { return rows_; }
  int64_t dim() const { return dim_; }
  int64_t row_bytes() const { return dim_ * size_of(type_); }
  bool resident() const { return sizes_.resident; }
  const tier_config& tiers() const { return tiers_; }
  /// Resident tables: the device rows.
  const void* device_rows() const { return resident_.get(); }
  /// Copies row `id` to host memory `dst`, from whichever tier holds it.
  void read_row_host(int64_t id, void* dst) const;

  /// Scratch for a group whose slots pass at most `max_ids` ids per call.
  std::unique_ptr<tiered_scratch> make_scratch(int64_t max_ids) const;

  /// Dedup + probe + lower tiers for one call: fills `unique_index` (one per
  /// id, -1 for ids out of range) of every (ids, n) pair and the scratch's
  /// staging rows. Host-tier reads by batched copy and file reads wait for
  /// the stream; zero-copy host reads do not.
  struct ids_view {
    const void* ids;
    bool is64;
    int64_t n;
    int32_t* unique_index;
  };
  void gather(tiered_scratch& scratch, const ids_view* views, int num_views, cudaStream_t stream);
  /// After the lookup kernel: inserts this call's misses into the GPU cache,
  /// on `stream` when the batch hit rate is below the threshold, else on
  /// the scratch's side stream.
  void insert(tiered_scratch& scratch, cudaStream_t stream);

  table_stats stats() const;

 private:
  void fetch_on_host(tiered_scratch& s, cudaStream_t stream);

  int device_;
  dtype type_;
  int64_t rows_, dim_;
  tier_config tiers_;
  tier_sizes sizes_;
  int num_sms_ = 1;
  uint32_t batch_no_ = 1;
  device_buffer resident_;
  // Tiered state.
  device_buffer keys_, stamps_, versions_, cache_rows_, host_index_dev_, totals_;
  pinned_buffer host_rows_;             // mapped
  std::vector<int32_t> host_index_;     // empty = identity
  std::unique_ptr<table_file_reader> file_;
};

}  // namespace gpu
}  // namespace tiemb
