// One embedding table on the GPU: resident, or tiered over a GPU cache,
// pinned host memory and a backing file, or over a Redis Cluster (a
// remote_table: its host tier and the cluster are the lower tiers, read by
// the host for each call's misses). CUDA-side header.
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

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <utility>
#include <vector>

#include "../../core/table_file.h"
#include "../../core/tier_config.h"
#include "../../core/types.h"
#include "../../cpu/thread_pool.h"
#include "../../distributed/remote_lookup.h"
#include "../../distributed/remote_table.h"
#include "device_buffer.h"

namespace tiemb {
namespace gpu {

/// Device counters of a table or a batch (unsigned long long for atomicAdd).
struct counters {
  unsigned long long unique_ids;
  unsigned long long hits;
  unsigned long long host_hits;
  unsigned long long file_reads;
  unsigned long long inserted;
  unsigned long long misses;      // batch: unique ids not in the GPU cache
  unsigned long long host_reads;  // batch: ids the host must fetch
  unsigned long long sync_inserts;
  unsigned long long batches;
  unsigned long long backing_reads;  // unique ids only in the backing file (per-tier hit rates)
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
  uint32_t* freq;         // rows: batches each was seen in; nullptr = plain LRU (no admission filter)
  // Following a remote table's version switches (gpu_table::follow_remote):
  // the device epoch, bumped by every invalidation, and the epoch the call
  // read before it fetched its misses; insert_row drops a call's inserts
  // once the two differ (invalidate.cu says why no stale row survives).
  uint32_t* epoch;        // nullptr: the table is not over a remote table
  uint32_t fetch_epoch;
};

class gpu_table {
 public:
  gpu_table(int device, dtype type, int64_t rows, int64_t dim, const void* host_data,
            const tier_config& tiers, const int64_t* profile_ids, int64_t num_profile);
  /// A table whose rows live in a Redis Cluster: the GPU cache (or, with
  /// cache_percentage 1, the whole table, read once here) over `remote`'s
  /// host tier and the cluster. tiers.cpu_cache_percentage and backing_file
  /// are not used (the host tier is the remote table's).
  gpu_table(int device, std::shared_ptr<remote_table> remote, const tier_config& tiers,
            const int64_t* profile_ids, int64_t num_profile);
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

  /// The kernels' view of this tiered table.
  tiered_ref ref();
  /// Whether misses may need the host (rows in the backing file, or the
  /// host tier read by batched copy).
  bool host_fetch() const { return sizes_.file_rows > 0 || !tiers_.host_zero_copy; }
  /// The remote table below the GPU cache, or null.
  const std::shared_ptr<remote_table>& remote() const { return remote_; }
  /// Next LRU stamp (one per lookup that touches the table).
  uint32_t next_batch() { return batch_no_++; }
  void count_lookups(int64_t n) { lookups_ += n; }

  table_stats stats() const;

 private:
  int device_;
  dtype type_;
  int64_t rows_, dim_;
  tier_config tiers_;
  tier_sizes sizes_;
  int num_sms_ = 1;
  std::atomic<uint32_t> batch_no_{1};
  std::atomic<int64_t> lookups_{0};
  device_buffer resident_;
  // Tiered state.
  device_buffer keys_, stamps_, versions_, cache_rows_, host_index_dev_, totals_;
  device_buffer freq_;                  // admission filter's counts (empty without it)
  pinned_buffer host_rows_;             // mapped
  std::vector<int32_t> host_index_;     // empty = identity
  std::unique_ptr<table_file_reader> file_;
  std::shared_ptr<remote_table> remote_;

  void build(const void* host_data, const int64_t* profile_ids, int64_t num_profile);
  /// Rows `ids` of the table into dst: from host_data, or from the remote table.
  void copy_rows(const void* host_data, const std::vector<int64_t>& ids, char* dst) const;

  // ---- Following the remote table's version switches (gpuinval, issue 16;
  // defined in invalidate.cu) ----
 public:
  /// Brings the GPU copy up to the remote table's current version; a no-op
  /// (two atomic loads) unless remote()->refreshes() moved since the last
  /// follow. Tiered tables: the ways holding the changed ids are cleared
  /// (every way when the change log no longer reaches back); resident
  /// tables: the changed rows are re-read (remote_table::read_current) and
  /// written to device memory. Runs on `stream` and waits for it, under
  /// follow_mutex() held exclusively, so the change is visible to every
  /// lookup group before any later probe. Resident tables also wait for the
  /// whole device first: their rows have no sequence lock, so no lookup may
  /// read them while they change (lookups over them hold follow_mutex()
  /// shared while they enqueue). Call at the start of each lookup call.
  void follow_remote(cudaStream_t stream);
  /// Held exclusively by follow_remote; lookups over a resident remote table
  /// hold it shared from their follow_remote until their kernels are queued.
  std::shared_mutex& follow_mutex() { return follow_mutex_; }
  /// remote()->refreshes() as of the last completed follow.
  int64_t followed_refreshes() const { return followed_.load(std::memory_order_acquire); }

 private:
  std::shared_mutex follow_mutex_;
  std::atomic<int64_t> followed_{0};
  std::atomic<uint32_t> epoch_{0};  // host copy of the device epoch (written under follow_mutex_)
  device_buffer epoch_dev_;         // one uint32_t; empty unless tiered over a remote table
  void invalidate_cache(const std::vector<int64_t>& ids, bool all, cudaStream_t stream);
  void rewrite_resident(const std::vector<int64_t>& ids, bool all, cudaStream_t stream);
};

/// Most tiered tables, and slots over them, one group serves (their state
/// travels as one kernel parameter).
constexpr int kMaxTieredTables = 64;
constexpr int kMaxTieredViews = 64;

/// One tiered table's part of a call, as the kernels see it.
struct tiered_call {
  tiered_ref t;
  unsigned long long* hash_keys;  // the batch's unique ids; an id's slot is its unique index
  uint64_t hash_mask;
  counters* batch;
  char* staging;
  int32_t* miss_list;
  int64_t* host_list;
  int64_t* pending_ids;
  char* pending_rows;
  unsigned long long* pending_count;
  double threshold;
  uint32_t batch_no;
  bool zero_copy;
  bool defer_host_reads;  // zero-copy rows read by host_read_kernel after the probe, not inside it
  // Issue 15 (tiered variants, appended):
  int64_t* unique_list;  // TIEMB_TIERED_PROBE=list or lane: (id, hash slot) of each unique id, dedup's append order;
                         // null = the probe walks every hash slot
  int64_t* read_list;    // TIEMB_TIERED_HOST_READS=list: (host address, staging address) of each zero-copy miss
  int32_t read_unit;     // bytes per load of host_read_list_kernel (16, 8, 4 or 2: divides row_bytes)
  bool prefetch;         // tiered_batch::prefetch: insert every miss now, count nothing as a lookup
};

/// The ids of one slot over a tiered table.
struct dedup_view {
  const void* ids;
  int32_t* unique_index;
  int64_t n;
  int64_t begin;  // prefix over views of n
  int32_t call;
  bool is64;
  int64_t id_stride;    // logical id k is at ids[id_offset(k, id_stride, ids_per_row, row_stride)]
  int64_t ids_per_row;
  int64_t row_stride;
  bool wrap_negative;   // gather: id < 0 means rows + id
};

struct tiered_params {
  tiered_call calls[kMaxTieredTables];
  dedup_view views[kMaxTieredViews];
  int32_t num_calls;
  int32_t num_views;
  int64_t total_ids;
};

/// The tiered variants (issue 15; README "Tiered tables"), read from the
/// environment once, when a lookup group is built, and given to each of its
/// tiered_batches (the lookups' and, made later, the prefetches').
struct tiered_variants {
  /// TIEMB_TIERED_PROBE=list: dedup lists the unique ids and the probe walks
  /// that list (clear_listed_kernel then clears only the used hash slots).
  bool list_probe = false;
  /// TIEMB_TIERED_PROBE=lane: the listed dedup (list_probe is set too) and
  /// probe_lane_kernel, one lane per unique id, walking that list.
  bool lane_probe = false;
  /// TIEMB_TIERED_HOST_READS=list: zero-copy misses read in
  /// host_read_list_kernel, one load per thread.
  bool list_reads = false;
  /// TIEMB_TIERED_HOST_READS=kernel (or the older TIEMB_TIERED_INLINE_HOST_READS=0):
  /// zero-copy misses read in host_read_kernel after the probe.
  bool defer_host_reads = false;
  /// Throws naming the variable and value for anything but the documented values.
  static tiered_variants from_env();
};

/// The tiered tables of one lookup group: scratch for every call, sized once
/// from the config, and the launches that dedup, probe, fetch and insert for
/// all of them together.
class tiered_batch {
 public:
  /// tables[i] is used by slots whose ids total at most max_ids[i] per call.
  tiered_batch(std::vector<gpu_table*> tables, std::vector<int64_t> max_ids, int num_sms,
               const tiered_variants& variants);
  ~tiered_batch();
  tiered_batch(const tiered_batch&) = delete;
  tiered_batch& operator=(const tiered_batch&) = delete;

  int num_tables() const { return static_cast<int>(tables_.size()); }
  /// Index of `table` in this batch, -1 if it is not tiered here.
  int index_of(const gpu_table* table) const;
  const char* staging(int i) const { return staging_[static_cast<size_t>(i)].get<char>(); }

  /// Dedup + probe + lower tiers for all tables: fills every view's
  /// unique_index and each table's staging rows. Waits for the stream only
  /// when some table needs the host (file rows, batched copy).
  void gather(const dedup_view* views, int num_views, cudaStream_t stream);
  /// After the lookup kernel: inserts the misses into the GPU caches, in
  /// stream order for tables below their hit-rate threshold, else on the
  /// background stream.
  void insert(cudaStream_t stream);
  /// Issue 15: brings the rows of `views`' ids that are not in the GPU caches
  /// into them, on this batch's background stream after `stream`'s work so
  /// far (views' unique_index may be null). Use a tiered_batch of its own for
  /// prefetches (its scratch is not the lookups'). Waits on the host only
  /// where a table's misses need the host (file rows, batched copy).
  void prefetch(const dedup_view* views, int num_views, cudaStream_t stream);
  /// Waits for every prefetch issued so far.
  void wait_prefetch();

 private:
  tiered_params params(int parity);
  void fetch_on_host(cudaStream_t stream);
  void fetch_remote();

  std::vector<gpu_table*> tables_;
  int num_sms_;
  int64_t max_capacity_ = 32;
  int64_t max_misses_ = 1;
  device_buffer hash_;      // all tables' keys
  device_buffer batch_;     // counters per table
  std::vector<int64_t> hash_capacity_;
  std::vector<size_t> keys_off_;
  std::vector<device_buffer> miss_list_, host_list_, staging_;
  std::vector<device_buffer> pending_ids_[2], pending_rows_[2], pending_count_[2];
  // Host fetch path.
  pinned_buffer batch_host_;
  std::vector<device_buffer> fetched_dev_;
  std::vector<pinned_buffer> list_host_, fetched_host_;
  std::vector<uint32_t> batch_no_;
  // Remote tables' misses: one remote_resolver "slot" per table of this
  // batch, so all of a call's cluster reads go out in one pipelined batch.
  std::unique_ptr<remote_resolver> remote_;
  std::vector<slot_request> remote_requests_;
  bool any_remote_ = false;
  // Host fetches: rows gathered on all host threads; their pinned buffers are
  // reused once fetch_done_ (the last transfer up) has passed.
  thread_pool pool_;
  std::vector<int64_t> fetch_counts_;
  std::vector<std::pair<int, int64_t>> fetch_tasks_;
  std::vector<std::string> fetch_errors_;
  cudaEvent_t fetch_done_ = nullptr;
  bool fetch_pending_ = false;
  cudaStream_t side_ = nullptr;
  cudaEvent_t main_done_[2] = {nullptr, nullptr};
  cudaEvent_t side_done_[2] = {nullptr, nullptr};
  bool side_used_[2] = {false, false};
  int parity_ = 0;
  tiered_params staged_{};
  // The group's tiered_variants (see there).
  bool defer_host_reads_ = false;
  bool list_probe_ = false;
  bool lane_probe_ = false;  // implies list_probe_
  bool list_reads_ = false;
  bool prefetching_ = false;  // set by the first prefetch(): this batch serves prefetches only
  int64_t max_read_units_ = 1;  // most host_read_list_kernel threads one table may need per call
  std::vector<device_buffer> unique_list_, read_list_;
  cudaEvent_t prefetch_ready_ = nullptr;
};

}  // namespace gpu
}  // namespace tiemb
