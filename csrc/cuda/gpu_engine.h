// The GPU engine: device-resident (or tiered) tables and lookup groups that
// run every slot of a batch in one kernel launch. This header has no CUDA
// types so the bindings compile with or without the CUDA part; streams are
// passed as void* (a cudaStream_t).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../core/config.h"
#include "../core/request.h"
#include "../core/table_file.h"
#include "../core/tier_config.h"

namespace tiemb {

class remote_table;

namespace gpu {
class gpu_table;
}  // namespace gpu

/// Owns the device tables of one GPU. Add every table before the first
/// lookup group; afterwards the engine is read-only (the tiered caches
/// update themselves) and shared by any number of groups.
class gpu_engine {
 public:
  gpu_engine(const engine_config& config, int device);
  ~gpu_engine();
  gpu_engine(const gpu_engine&) = delete;
  gpu_engine& operator=(const gpu_engine&) = delete;

  /// Copies a rows x dim float32/float16 table from host memory. With
  /// tiers.cache_percentage == 1 the table is GPU-resident; otherwise it is
  /// split over the GPU cache, pinned host memory and a backing file.
  /// `profile_ids` (optional) are sample ids whose frequencies pick the rows
  /// that start in the GPU cache; without them the first rows do.
  int32_t add_table(dtype type, int64_t rows, int64_t dim, const void* host_data,
                    const tier_config& tiers, const int64_t* profile_ids, int64_t num_profile);

  /// A table whose rows live in a Redis Cluster (tiemb/enable_distributed):
  /// a GPU cache of tiers.cache_percentage of its rows over `remote`'s host
  /// tier and the cluster (cache_percentage 1: read whole at load, then
  /// resident). Each call's GPU-cache misses of all remote tables are read
  /// by the host in one pipelined batch (at most one round trip per cluster
  /// node), staged in pinned memory and moved up in one transfer per table.
  /// tiers.cpu_cache_percentage and backing_file are not used. The GPU
  /// copy follows the remote table's version switches (refresh()): a call
  /// that starts after a switch sees the new rows (gpu_table::follow_remote).
  int32_t add_remote_table(std::shared_ptr<remote_table> remote, const tier_config& tiers,
                           const int64_t* profile_ids, int64_t num_profile);

  const engine_config& config() const { return config_; }
  int device() const { return device_; }
  int32_t num_tables() const { return static_cast<int32_t>(tables_.size()); }
  gpu::gpu_table& table(int32_t id);
  table_stats stats(int32_t id);
  /// dtype, rows and dim of a table, for callers without CUDA headers.
  table_file_header shape(int32_t id);
  void freeze() { frozen_ = true; }
  /// Keeps `thing` alive as long as the engine (the remote tables'
  /// refresher of a store engine); released before the tables.
  void attach(std::shared_ptr<void> thing) { attached_.push_back(std::move(thing)); }

 private:
  engine_config config_;
  int device_;
  bool frozen_ = false;
  std::vector<std::unique_ptr<gpu::gpu_table>> tables_;
  // Last member (gpuinval): destroyed first, so a refresher stops before
  // the tables it updates go.
  std::vector<std::shared_ptr<void>> attached_;
};

/// A fixed list of slots looked up together on one GPU. Scratch buffers are
/// sized from the engine config at construction; calls allocate nothing.
/// Calls on one group must not overlap (the bindings serialise them).
class gpu_lookup_group {
 public:
  gpu_lookup_group(gpu_engine& engine, std::vector<slot_config> slots);
  ~gpu_lookup_group();
  gpu_lookup_group(const gpu_lookup_group&) = delete;
  gpu_lookup_group& operator=(const gpu_lookup_group&) = delete;

  int64_t num_slots() const { return static_cast<int64_t>(slots_.size()); }
  const slot_config& slot(int64_t s) const { return slots_[static_cast<size_t>(s)]; }
  int64_t dim(int64_t s) const;

  /// Inputs and outputs in device memory, run on `stream`; returns without
  /// waiting. Checks that need no data (dtypes, lengths, limits) throw here;
  /// data errors (ids out of range, unsorted segments) are found on the
  /// device and raised by check(). rows[s] is each slot's output row count
  /// (see device_rows for plain mode).
  void launch(const slot_request* reqs, int64_t n, const int64_t* rows, void* const* outputs,
              void* stream);

  /// Output row counts for device inputs. Plain-mode slots need one small
  /// device-to-host read (as TensorFlow's GPU kernel does): this waits for
  /// `stream`. Safe-mode slots need none.
  void device_rows(const slot_request* reqs, int64_t n, int64_t* rows, void* stream);

  /// Inputs and outputs in host memory: validated on the host (same messages
  /// as the CPU engine), staged through pinned buffers, waited for.
  /// prepare_host returns the output row counts; run_host fills `outputs`.
  const int64_t* prepare_host(const slot_request* reqs, int64_t n);
  void run_host(const slot_request* reqs, int64_t n, void* const* outputs);

  /// Raises tiemb::error for the first data error latched by an earlier
  /// launch (and clears it). wait = true waits for the last launch first;
  /// otherwise only a finished launch is looked at. Launches captured in a
  /// CUDA graph have no event to wait on (a replay runs no host code): for
  /// them wait = true waits for the device, and wait = false reads the
  /// latch's host mirror as it stands (the kernels write it themselves).
  void check(bool wait);

  /// Brings the rows of `reqs`' ids (ids only: segments, weights and row
  /// counts are not read) that are not in the GPU caches of this group's
  /// tiered tables into them, on a background stream, after `stream`'s work
  /// so far; returns without waiting where every table reads its misses in
  /// place (zero-copy host tier), else after the host has read them. Exact:
  /// a later lookup finds the rows in the cache or reads the lower tier as
  /// always. Ids outside a table are skipped (the lookup that uses them
  /// reports them); slots over resident tables are ignored. The first call
  /// allocates the prefetch scratch (as large as a lookup's), once, with the
  /// tiered variants the group was built with. Refused while `stream` is
  /// capturing a CUDA graph.
  void prefetch(const slot_request* reqs, int64_t n, void* stream);
  /// Waits for every prefetch issued so far.
  void wait_prefetch();
  /// Why launches of this group cannot be captured in a CUDA graph, naming
  /// the slot and table; "" when they can (every table GPU-resident and
  /// local, so that a launch is kernels only, its state derived from the
  /// request's addresses and the config).
  std::string capture_blocker() const;

 private:
  struct impl;
  // The steps of launch(), in order (streams as void*: no CUDA types here).
  void check_launch(const slot_request* reqs, int64_t n, const int64_t* rows) const;
  void launch_offsets_pass(const slot_request* reqs, int64_t n, const int64_t* rows, void* stream);
  void gather_tiered_rows(const slot_request* reqs, int64_t n, void* stream);
  void launch_fused_lookups(const slot_request* reqs, int64_t n, const int64_t* rows, void* const* outputs,
                            void* stream);

  gpu_engine& engine_;
  std::vector<slot_config> slots_;
  std::unique_ptr<impl> impl_;
};

}  // namespace tiemb
