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

gpu_table::gpu_table(int device, dtype type, int64_t rows, int64_t dim, const void* host_data,
                     const tier_config& tiers, const int64_t* profile_ids, int64_t num_profile)
    : device_(device), type_(type), rows_(rows), dim_(dim), tiers_(tiers) {
  TIEMB_EXPECT(type == dtype::float32 || type == dtype::float16,
               "table dtype must be float32 or float16, got ", to_string(type));
  TIEMB_EXPECT(rows > 0, "table must have at least one row, got ", rows);
  TIEMB_EXPECT(dim > 0, "table dimension must be > 0, got ", dim);
  tiers.validate(rows);
  sizes_ = compute_tier_sizes(rows, tiers);
  build(host_data, profile_ids, num_profile);
}

gpu_table::gpu_table(int device, std::shared_ptr<remote_table> remote, const tier_config& tiers,
                     const int64_t* profile_ids, int64_t num_profile)
    : device_(device), tiers_(tiers), remote_(std::move(remote)) {
  TIEMB_EXPECT(remote_ != nullptr, "a remote GPU table needs its remote table");
  // Before the rows are read: a switch during the build is followed at the
  // first call (at worst re-doing it), never missed.
  followed_ = remote_->refreshes();
  type_ = remote_->type();
  rows_ = remote_->rows();
  dim_ = remote_->dim();
  // The host tier is the remote table's; every GPU-cache miss is fetched by
  // the host (remote_resolver), so no pinned tier and no backing file here.
  tiers_.cpu_cache_percentage = 0.0;
  tiers_.backing_file = "(the Redis Cluster)";
  tiers_.backing_file_holds_table = true;
  tiers_.validate(rows_);
  sizes_ = compute_tier_sizes(rows_, tiers_);
  build(nullptr, profile_ids, num_profile);
}

void gpu_table::copy_rows(const void* host_data, const std::vector<int64_t>& ids, char* dst) const {
  const auto rb = static_cast<size_t>(row_bytes());
  if (remote_) {
    remote_->read_current(ids, dst);
    return;
  }
  const char* src = static_cast<const char*>(host_data);
  for (size_t k = 0; k < ids.size(); ++k) std::memcpy(dst + k * rb, src + static_cast<size_t>(ids[k]) * rb, rb);
}

void gpu_table::build(const void* host_data, const int64_t* profile_ids, int64_t num_profile) {
  const int64_t rows = rows_, dim = dim_;
  const dtype type = type_;
  const tier_config& tiers = tiers_;
  TIEMB_CUDA_CHECK(cudaDeviceGetAttribute(&num_sms_, cudaDevAttrMultiProcessorCount, device_));
  const int64_t rb = row_bytes();
  const char* src = static_cast<const char*>(host_data);
  if (sizes_.resident) {
    resident_ = device_buffer(static_cast<size_t>(rows * rb));
    std::vector<char> all;
    if (remote_) {  // read once at load; lookups then never reach the cluster
      std::vector<int64_t> ids(static_cast<size_t>(rows));
      for (int64_t i = 0; i < rows; ++i) ids[static_cast<size_t>(i)] = i;
      all.resize(static_cast<size_t>(rows * rb));
      copy_rows(nullptr, ids, all.data());
      host_data = all.data();
    }
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
  if (sizes_.file_rows > 0 && !remote_) {
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
  std::vector<int64_t> warm, warm_slots;
  for (int64_t slot = 0; slot < slots; ++slot) {
    if (keys[static_cast<size_t>(slot)] < 0) continue;
    warm.push_back(keys[static_cast<size_t>(slot)]);
    warm_slots.push_back(slot);
  }
  std::vector<char> warm_rows(warm.size() * static_cast<size_t>(rb));
  copy_rows(host_data, warm, warm_rows.data());
  for (size_t k = 0; k < warm.size(); ++k) {
    std::memcpy(data.data() + warm_slots[k] * rb, warm_rows.data() + k * static_cast<size_t>(rb),
                static_cast<size_t>(rb));
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
  if (remote_) {  // the epoch follow_remote bumps
    epoch_dev_ = device_buffer(sizeof(uint32_t));
    TIEMB_CUDA_CHECK(cudaMemset(epoch_dev_.get(), 0, sizeof(uint32_t)));
  }
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
  if (remote_) {
    copy_rows(nullptr, {id}, static_cast<char*>(dst));
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
  t.epoch = epoch_dev_.get<uint32_t>();  // null unless tiered over a remote table
  t.fetch_epoch = epoch_.load(std::memory_order_acquire);
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

}  // namespace gpu
}  // namespace tiemb
