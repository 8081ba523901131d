#include "remote_lookup.h"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <shared_mutex>

#include "../core/error.h"

namespace tiemb {

namespace {
int64_t pow2_at_least(int64_t n) {
  int64_t p = 16;
  while (p < n) p <<= 1;
  return p;
}
}  // namespace

remote_resolver::remote_resolver(const engine_config& cfg, const std::vector<slot_config>& slots,
                                 std::vector<std::shared_ptr<remote_table>> tables)
    : slots_(slots), tables_(std::move(tables)), scratch_(slots.size()), staged_(slots.size()) {
  const int64_t max_ids = cfg.max_ids_per_slot();
  for (size_t s = 0; s < slots.size(); ++s) {
    if (!tables_[s]) continue;
    slot_scratch& sc = scratch_[s];
    sc.ids.resize(static_cast<size_t>(max_ids));
    sc.rows.resize(static_cast<size_t>(max_ids + 1) * static_cast<size_t>(tables_[s]->row_bytes()));
    sc.unique.resize(static_cast<size_t>(max_ids + 1));
    const int64_t buckets = pow2_at_least(2 * (max_ids + 1));
    sc.map_keys.assign(static_cast<size_t>(buckets), -1);
    sc.map_vals.resize(static_cast<size_t>(buckets));
    sc.touched.reserve(static_cast<size_t>(max_ids + 1));
  }
  misses_.reserve(static_cast<size_t>(max_ids) * 2);
  for (const auto& t : tables_) {
    if (t && std::find(distinct_.begin(), distinct_.end(), t.get()) == distinct_.end()) distinct_.push_back(t.get());
  }
  locks_.reserve(distinct_.size());
  // At most one block per staged row of every remote slot.
  int64_t most_keys = 0;
  for (const auto& t : tables_) most_keys += t ? max_ids + 1 : 0;
  const int64_t buckets = pow2_at_least(2 * most_keys);
  block_map_keys_.assign(static_cast<size_t>(buckets), -1);
  block_map_vals_.resize(static_cast<size_t>(buckets));
  block_map_touched_.reserve(static_cast<size_t>(most_keys));
  keys_.reserve(static_cast<size_t>(most_keys));
  key_blocks_.reserve(static_cast<size_t>(most_keys));
  key_slots_.reserve(static_cast<size_t>(most_keys));
  checked_.reserve(static_cast<size_t>(most_keys));
  replies_.reserve(static_cast<size_t>(most_keys));
}

int32_t remote_resolver::key_of_block(int64_t table_ordinal, int64_t block, bool* fresh) {
  const int64_t key = (table_ordinal << 40) | block;  // blocks < 2^40: tables have < 2^31 rows
  const auto mask = static_cast<uint64_t>(block_map_keys_.size() - 1);
  const uint64_t h = static_cast<uint64_t>(key) * 0x9E3779B97F4A7C15ull;
  for (uint64_t b = (h >> 20) & mask;; b = (b + 1) & mask) {
    if (block_map_keys_[b] == key) {
      *fresh = false;
      return block_map_vals_[b];
    }
    if (block_map_keys_[b] < 0) {
      block_map_keys_[b] = key;
      block_map_vals_[b] = static_cast<int32_t>(num_keys_);
      block_map_touched_.push_back(static_cast<int64_t>(b));
      *fresh = true;
      return static_cast<int32_t>(num_keys_);
    }
  }
}

int64_t remote_resolver::stage(slot_scratch& sc, int64_t id) {
  const auto mask = static_cast<uint64_t>(sc.map_keys.size() - 1);
  uint64_t h = static_cast<uint64_t>(id) * 0x9E3779B97F4A7C15ull;
  for (uint64_t b = (h >> 20) & mask;; b = (b + 1) & mask) {
    if (sc.map_keys[b] == id) return sc.map_vals[b];
    if (sc.map_keys[b] < 0) {
      sc.map_keys[b] = id;
      sc.map_vals[b] = static_cast<int32_t>(sc.count);
      sc.touched.push_back(static_cast<int64_t>(b));
      sc.unique[static_cast<size_t>(sc.count)] = id;
      return sc.count++;
    }
  }
}

namespace {
template <class IdT>
int64_t id_at(const void* ids, int64_t i) {
  return static_cast<int64_t>(static_cast<const IdT*>(ids)[i]);
}
}  // namespace

void remote_resolver::resolve(const slot_request* requests, int64_t n) {
  misses_.clear();
  num_keys_ = 0;
  key_blocks_.clear();
  key_slots_.clear();
  for (int64_t b : block_map_touched_) block_map_keys_[static_cast<size_t>(b)] = -1;
  block_map_touched_.clear();
  locks_.clear();
  for (remote_table* t : distinct_) locks_.emplace_back(t->mutex());
  struct release {
    std::vector<std::shared_lock<std::shared_mutex>>& locks;
    ~release() { locks.clear(); }  // also when staging throws
  } unlock_at_end{locks_};
  for (int64_t s = 0; s < n; ++s) {
    staged_[static_cast<size_t>(s)] = requests[s];
    const auto& table = tables_[static_cast<size_t>(s)];
    if (!table) continue;
    slot_scratch& sc = scratch_[static_cast<size_t>(s)];
    for (int64_t b : sc.touched) sc.map_keys[static_cast<size_t>(b)] = -1;
    sc.touched.clear();
    sc.count = 0;
    const slot_request& req = requests[s];
    const slot_config& cfg = slots_[static_cast<size_t>(s)];
    const int64_t rows = table->rows();
    auto read_id = [&](int64_t i) {
      return req.id_type == dtype::int32 ? id_at<int32_t>(req.ids, i) : id_at<int64_t>(req.ids, i);
    };
    auto remap = [&](int64_t id) -> int64_t {
      if (id < 0) {
        if (!cfg.wrap_negative) return -1;  // pruned padding; the plan rejected it elsewhere
        id += rows;
      }
      return stage(sc, id);
    };
    slot_request& out = staged_[static_cast<size_t>(s)];
    if (req.ids_per_row > 0) {
      const int64_t k = req.ids_per_row;
      const int64_t stride = req.row_stride > 0 ? req.row_stride : k * req.id_stride;
      for (int64_t r = 0; r < req.num_rows; ++r) {
        for (int64_t j = 0; j < k; ++j) sc.ids[static_cast<size_t>(r * k + j)] = remap(read_id(r * stride + j * req.id_stride));
      }
      out.row_stride = k;
    } else {
      for (int64_t j = 0; j < req.num_ids; ++j) sc.ids[static_cast<size_t>(j)] = remap(read_id(j * req.id_stride));
    }
    out.ids = sc.ids.data();
    out.id_type = dtype::int64;
    out.id_stride = 1;
    sc.default_id = cfg.mode == row_mode::safe && cfg.default_id >= 0 ? stage(sc, cfg.default_id) : cfg.default_id;

    // Host tier first; the rest become block reads (under locks_).
    const auto rb = static_cast<size_t>(table->row_bytes());
    int64_t host_hits = 0;
    for (int64_t i = 0; i < sc.count; ++i) {
      const int64_t id = sc.unique[static_cast<size_t>(i)];
      if (const char* row = table->host_row(id)) {
        std::memcpy(sc.rows.data() + static_cast<size_t>(i) * rb, row, rb);
        ++host_hits;
        continue;
      }
      // Block keys shared by slots of one table are read once.
      const auto ordinal = static_cast<int64_t>(
          std::find(distinct_.begin(), distinct_.end(), table.get()) - distinct_.begin());
      bool fresh = false;
      const int32_t k = key_of_block(ordinal, table->block_of(id), &fresh);
      if (fresh) {
        if (keys_.size() <= num_keys_) keys_.emplace_back();
        table->block_key_of(id, keys_[num_keys_]);
        ++num_keys_;
        key_blocks_.push_back(table->block_of(id));
        key_slots_.push_back(static_cast<int32_t>(s));
      }
      misses_.push_back(miss{static_cast<int32_t>(s), static_cast<int32_t>(i), id, k});
    }
    table->count(host_hits, sc.count - host_hits, 0);
  }
  // Block values of a version never change, so the fetch needs no lock.
  locks_.clear();
  if (num_keys_ == 0) return;
  // One pipelined batch for the whole call: at most one round trip per node.
  tables_[static_cast<size_t>(key_slots_[0])]->client().get_many(keys_.data(), num_keys_, &replies_);
  std::vector<char>& checked = checked_;
  checked.assign(num_keys_, 0);
  for (const miss& m : misses_) {
    const auto& table = *tables_[static_cast<size_t>(m.slot)];
    const cluster_reply& r = replies_[static_cast<size_t>(m.key)];
    if (!checked[static_cast<size_t>(m.key)]) {
      remote_layout view;  // only what check_block_value reads
      view.name = table.name();
      view.type = table.type();
      view.rows = table.rows();
      view.dim = table.dim();
      view.block_rows = table.block_rows();
      check_block_value(view, key_blocks_[static_cast<size_t>(m.key)], keys_[static_cast<size_t>(m.key)], r);
      checked[static_cast<size_t>(m.key)] = 1;
      tables_[static_cast<size_t>(m.slot)]->count(0, 0, 1);
    }
    const auto rb = static_cast<size_t>(table.row_bytes());
    const int64_t offset = m.id - key_blocks_[static_cast<size_t>(m.key)] * table.block_rows();
    std::memcpy(scratch_[static_cast<size_t>(m.slot)].rows.data() + static_cast<size_t>(m.staged) * rb,
                r.value.data() + static_cast<size_t>(offset) * rb, rb);
  }
}

}  // namespace tiemb
