// tiered_batch: one call's misses over the tiered tables of a lookup group
// (dedup, probe, host reads, staging, inserts), launched on the caller's
// stream; the kernels are in tiered_kernels.cuh.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>

#include "gpu_table.h"
#include "tiered_kernels.cuh"
#include "tiered_probe_lane.cuh"

namespace tiemb {
namespace gpu {

namespace {

// The widest load (16, 8, 4 or 2 bytes) that divides a row, for
// host_read_list_kernel: rows and staging slots are aligned to it.
int32_t read_unit(int64_t row_bytes) {
  for (int32_t u = 16; u > 2; u /= 2) {
    if (row_bytes % u == 0) return u;
  }
  return 2;
}

// An environment variable's value among `allowed`, or "" when unset or empty;
// anything else is an error naming the variable and the value.
std::string env_choice(const char* name, std::initializer_list<const char*> allowed) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return "";
  std::string names;
  for (const char* a : allowed) {
    if (std::string(v) == a) return v;
    names += names.empty() ? std::string("'") + a + "'" : std::string(", '") + a + "'";
  }
  throw error(std::string(name) + " must be one of " + names + " (or unset), got '" + v + "'");
}

}  // namespace

tiered_variants tiered_variants::from_env() {
  // TIEMB_TIERED_INLINE_HOST_READS=0 is the older name of HOST_READS=kernel.
  const std::string probe = env_choice("TIEMB_TIERED_PROBE", {"slots", "list", "lane"});
  const std::string reads = env_choice("TIEMB_TIERED_HOST_READS", {"inline", "kernel", "list"});
  const std::string old_reads = env_choice("TIEMB_TIERED_INLINE_HOST_READS", {"0", "1"});
  TIEMB_EXPECT(reads.empty() || old_reads.empty() || (old_reads == "0") == (reads == "kernel"),
               "TIEMB_TIERED_INLINE_HOST_READS=", old_reads, " contradicts TIEMB_TIERED_HOST_READS=", reads,
               ": set only TIEMB_TIERED_HOST_READS");
  tiered_variants v;
  // The lane probe walks the list the listed dedup builds.
  v.list_probe = probe == "list" || probe == "lane";
  v.lane_probe = probe == "lane";
  v.list_reads = reads == "list";
  // Zero-copy reads inside the probe stay the default: on the H200 the
  // separate host-read kernel was slower (974 vs 671 us, 561 vs 471 us per
  // call in benchmarks/RESULTS.md); =kernel selects it, so benchmarks can
  // compare both in one run.
  v.defer_host_reads = reads == "kernel" || old_reads == "0";
  return v;
}

// ---- tiered_batch ----------------------------------------------------------------

tiered_batch::tiered_batch(std::vector<gpu_table*> tables, std::vector<int64_t> max_ids, int num_sms,
                           const tiered_variants& variants)
    : tables_(std::move(tables)),
      num_sms_(num_sms),
      pool_(hardware_threads()),
      defer_host_reads_(variants.defer_host_reads),
      list_probe_(variants.list_probe || variants.lane_probe),
      lane_probe_(variants.lane_probe),
      list_reads_(variants.list_reads) {
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
  // The unique counts are the previous call's list lengths for
  // clear_listed_kernel; the set starts empty once, then each call empties
  // the slots it used.
  TIEMB_CUDA_CHECK(cudaMemset(batch_.get(), 0, batch_.bytes()));
  if (list_probe_) TIEMB_CUDA_CHECK(cudaMemset(hash_.get(), 0xff, hash_.bytes()));
  batch_host_ = pinned_buffer(std::max<size_t>(n, 1) * sizeof(counters));
  for (size_t i = 0; i < n; ++i) {
    const auto m = static_cast<size_t>(std::max<int64_t>(max_ids[i], 1));
    max_misses_ = std::max(max_misses_, static_cast<int64_t>(m));
    const auto rb = static_cast<size_t>(tables_[i]->row_bytes());
    miss_list_.emplace_back(m * 4);
    host_list_.emplace_back(m * 16);
    staging_.emplace_back(static_cast<size_t>(hash_capacity_[i]) * rb);  // indexed by hash slot
    unique_list_.emplace_back(list_probe_ ? m * 16 : 0);
    const bool listed_reads = list_reads_ && tables_[i]->tiers().host_zero_copy;
    read_list_.emplace_back(listed_reads ? m * 16 : 0);
    if (listed_reads) {
      max_read_units_ = std::max(max_read_units_, static_cast<int64_t>(m) * tables_[i]->row_bytes() /
                                                      read_unit(tables_[i]->row_bytes()));
    }
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
  // The memsets above ran on the legacy stream, which a non-blocking caller
  // stream does not wait for.
  TIEMB_CUDA_CHECK(cudaStreamSynchronize(cudaStreamLegacy));
  fetch_counts_.assign(n, 0);
  // Remote tables: one resolver "slot" per table (null for the others),
  // scratch sized from the largest remote table's ids per call, once.
  std::vector<std::shared_ptr<remote_table>> remotes;
  std::vector<slot_config> remote_slots(n);
  int64_t most_ids = 1;
  for (size_t i = 0; i < n; ++i) {
    remotes.push_back(tables_[i]->remote());
    remote_slots[i].table = static_cast<int32_t>(i);
    if (remotes.back()) {
      any_remote_ = true;
      most_ids = std::max(most_ids, max_ids[i]);
    }
  }
  if (any_remote_) {
    remote_ = std::make_unique<remote_resolver>(engine_config{most_ids, static_cast<int64_t>(n), 1, 0}, remote_slots,
                                                std::move(remotes));
    remote_requests_.resize(n);
  }
  TIEMB_CUDA_CHECK(cudaEventCreateWithFlags(&fetch_done_, cudaEventDisableTiming));
  TIEMB_CUDA_CHECK(cudaEventCreateWithFlags(&prefetch_ready_, cudaEventDisableTiming));
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
  if (prefetch_ready_) cudaEventDestroy(prefetch_ready_);
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
    c.unique_list = unique_list_[u].get<int64_t>();  // null unless TIEMB_TIERED_PROBE=list or lane
    c.read_list = read_list_[u].get<int64_t>();      // null unless TIEMB_TIERED_HOST_READS=list (zero-copy)
    c.read_unit = read_unit(tables_[u]->row_bytes());
    c.prefetch = prefetching_;
  }
  return p;
}

void tiered_batch::gather(const dedup_view* views, int num_views, cudaStream_t stream) {
  TIEMB_EXPECT(num_views <= kMaxTieredViews, "a lookup group may have at most ", kMaxTieredViews,
               " slots over tiered tables, got ", num_views);
  for (size_t i = 0; i < tables_.size(); ++i) {
    if (any_remote_) tables_[i]->follow_remote(stream);  // before ref() reads the epoch
    batch_no_[i] = tables_[i]->next_batch();
  }
  staged_ = params(parity_);
  staged_.num_views = num_views;
  int64_t total = 0;
  for (int v = 0; v < num_views; ++v) {
    staged_.views[v] = views[v];
    staged_.views[v].begin = total;
    total += views[v].n;
    if (!prefetching_) tables_[static_cast<size_t>(views[v].call)]->count_lookups(views[v].n);
  }
  staged_.total_ids = total;
  if (list_probe_) {
    // One thread per slot the previous call used, at most max_misses_ of them.
    const dim3 clear(static_cast<unsigned>(table_grid((max_misses_ + 31) / 32, num_sms_, num_tables(), 8)),
                     static_cast<unsigned>(num_tables()));
    clear_listed_kernel<<<clear, kBlock, 0, stream>>>(staged_);
    TIEMB_CUDA_CHECK(cudaGetLastError());
  } else {
    TIEMB_CUDA_CHECK(cudaMemsetAsync(hash_.get(), 0xff, hash_.bytes(), stream));
  }
  TIEMB_CUDA_CHECK(cudaMemsetAsync(batch_.get(), 0, batch_.bytes(), stream));
  if (total > 0) {
    const int blocks = static_cast<int>(std::min<int64_t>((total + kBlock - 1) / kBlock, num_sms_ * 8LL));
    dedup_kernel<<<blocks, kBlock, 0, stream>>>(staged_);
    TIEMB_CUDA_CHECK(cudaGetLastError());
  }
  // A warp takes 32 hash slots, 32 / kProbeLanes entries of the unique list
  // (at most max_misses_, the most ids of a table per call), or with the lane
  // probe 32 entries, at a time.
  const int64_t per_warp = lane_probe_ ? 32 : 32 / kProbeLanes;
  const int64_t probe_warps = list_probe_ ? (max_misses_ + per_warp - 1) / per_warp : max_capacity_ / 32;
  const dim3 grid(static_cast<unsigned>(table_grid(probe_warps, num_sms_, num_tables(), 16)),
                  static_cast<unsigned>(num_tables()));
  if (lane_probe_) {
    probe_lane_kernel<<<grid, kBlock, 0, stream>>>(staged_);
  } else {
    probe_kernel<<<grid, kBlock, 0, stream>>>(staged_);
  }
  TIEMB_CUDA_CHECK(cudaGetLastError());
  if (list_reads_) {
    // One thread per load of a call's most misses, up to 32 blocks of 256
    // per SM over all tables (four times what the SMs hold at once; the
    // kernel loops beyond that).
    const dim3 reads(static_cast<unsigned>(table_grid((max_read_units_ + 31) / 32, num_sms_, num_tables(), 32)),
                     static_cast<unsigned>(num_tables()));
    host_read_list_kernel<<<reads, kBlock, 0, stream>>>(staged_);
    TIEMB_CUDA_CHECK(cudaGetLastError());
  }
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
    if (tables_[static_cast<size_t>(i)]->remote()) continue;  // fetch_remote reads these
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
  if (any_remote_) fetch_remote();
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

void tiered_batch::fetch_remote() {
  // The misses' ids are list_host_[u][2k] (unique per table): one slot
  // request per remote table, every table's cluster reads in one pipelined
  // batch (at most one round trip per node), host-tier rows copied.
  for (size_t u = 0; u < tables_.size(); ++u) {
    slot_request& r = remote_requests_[u];
    r = slot_request{};
    if (!tables_[u]->remote() || fetch_counts_[u] == 0) continue;
    r.ids = list_host_[u].get<int64_t>();
    r.id_type = dtype::int64;
    r.num_ids = fetch_counts_[u];
    r.id_stride = 2;
  }
  remote_->resolve(remote_requests_.data(), static_cast<int64_t>(tables_.size()));
  for (size_t u = 0; u < tables_.size(); ++u) {
    if (!tables_[u]->remote() || fetch_counts_[u] == 0) continue;
    // Staged rows follow the ids' first appearance, and these ids are unique.
    TIEMB_EXPECT(remote_->rows(static_cast<int64_t>(u)) == fetch_counts_[u], "distributed table '",
                 tables_[u]->remote()->name(), "': ", remote_->rows(static_cast<int64_t>(u)), " rows staged for ",
                 fetch_counts_[u], " misses");
    std::memcpy(fetched_host_[u].get(), remote_->data(static_cast<int64_t>(u)),
                static_cast<size_t>(fetch_counts_[u] * tables_[u]->row_bytes()));
  }
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

void tiered_batch::prefetch(const dedup_view* views, int num_views, cudaStream_t stream) {
  // From now on this batch's calls are prefetches (params() marks them).
  prefetching_ = true;
  // The ids are the caller's: read them after its stream's work so far.
  TIEMB_CUDA_CHECK(cudaEventRecord(prefetch_ready_, stream));
  TIEMB_CUDA_CHECK(cudaStreamWaitEvent(side_, prefetch_ready_, 0));
  gather(views, num_views, side_);
  const dim3 grid(static_cast<unsigned>(table_grid(max_misses_, num_sms_, num_tables(), 4)),
                  static_cast<unsigned>(num_tables()));
  insert_or_defer_kernel<<<grid, kBlock, 0, side_>>>(staged_);
  TIEMB_CUDA_CHECK(cudaGetLastError());
}

void tiered_batch::wait_prefetch() { TIEMB_CUDA_CHECK(cudaStreamSynchronize(side_)); }

}  // namespace gpu
}  // namespace tiemb
