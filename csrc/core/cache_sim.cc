#include "cache_sim.h"

#include <algorithm>

#include "cache_hash.h"
#include "error.h"

namespace tiemb {

std::vector<int64_t> warm_cache_keys(int64_t sets, const std::vector<int64_t>& order) {
  const int64_t slots = sets * kCacheWays;
  std::vector<int64_t> keys(static_cast<size_t>(slots), -1);
  std::vector<int> used(static_cast<size_t>(sets), 0);
  int64_t placed = 0;
  for (int64_t id : order) {
    if (placed == slots) break;
    const int64_t set = cache_set(id, sets);
    int& u = used[static_cast<size_t>(set)];
    if (u == kCacheWays) continue;
    keys[static_cast<size_t>(set * kCacheWays + u++)] = id;
    ++placed;
  }
  return keys;
}

cache_policy parse_cache_policy(const std::string& name) {
  if (name == "lru") return cache_policy::lru;
  if (name == "lfu") return cache_policy::lfu;
  if (name == "lru_admit") return cache_policy::lru_admit;
  throw error("cache policy must be 'lru', 'lfu' or 'lru_admit', got '" + name + "'");
}

cache_simulator::cache_simulator(int64_t rows, const tier_config& tiers, const int64_t* profile_ids,
                                 int64_t num_profile, cache_policy policy)
    : rows_(rows), policy_(policy) {
  TIEMB_EXPECT(rows > 0, "table must have at least one row, got ", rows);
  TIEMB_EXPECT(tiers.cache_percentage > 0.0 && tiers.cache_percentage <= 1.0,
               "cache_percentage must be in (0, 1], got ", tiers.cache_percentage);
  TIEMB_EXPECT(tiers.cpu_cache_percentage >= 0.0 && tiers.cpu_cache_percentage <= 1.0,
               "cpu_cache_percentage must be in [0, 1], got ", tiers.cpu_cache_percentage);
  sizes_ = compute_tier_sizes(rows, tiers);
  seen_.assign(static_cast<size_t>(rows), 0);
  if (sizes_.resident) return;
  const std::vector<int64_t> order =
      hot_rows(rows, profile_ids, num_profile, std::max(sizes_.gpu_rows, sizes_.host_rows));
  keys_ = warm_cache_keys(sizes_.cache_sets, order);
  stamps_.assign(keys_.size(), 0);
  if (sizes_.host_rows < rows) {
    in_host_.assign(static_cast<size_t>(rows), false);
    for (int64_t k = 0; k < sizes_.host_rows; ++k) in_host_[static_cast<size_t>(order[static_cast<size_t>(k)])] = true;
  }
  if (policy_ != cache_policy::lru) {
    freq_.assign(static_cast<size_t>(rows), 0);
    for (int64_t i = 0; i < num_profile; ++i) {
      const int64_t id = profile_ids[i];
      if (id >= 0 && id < rows) ++freq_[static_cast<size_t>(id)];
    }
  }
}

int cache_simulator::find(int64_t set, int64_t id) const {
  const int64_t* k = keys_.data() + set * kCacheWays;
  for (int w = 0; w < kCacheWays; ++w) {
    if (k[w] == id) return w;
  }
  return -1;
}

// The GPU's choice (insert_row): the first empty way, else the largest age
// batch_no - stamp (unsigned, so wrap-around keeps the order), lowest way on ties.
int cache_simulator::victim(int64_t set, uint32_t batch_no) const {
  const int64_t* k = keys_.data() + set * kCacheWays;
  const uint32_t* s = stamps_.data() + set * kCacheWays;
  for (int w = 0; w < kCacheWays; ++w) {
    if (k[w] < 0) return w;
  }
  int best = 0;
  for (int w = 1; w < kCacheWays; ++w) {
    const uint32_t age = batch_no - s[w], best_age = batch_no - s[best];
    if (policy_ == cache_policy::lfu) {
      const uint32_t f = freq_[static_cast<size_t>(k[w])], bf = freq_[static_cast<size_t>(k[best])];
      if (f < bf || (f == bf && age > best_age)) best = w;
    } else if (age > best_age) {
      best = w;
    }
  }
  return best;
}

void cache_simulator::batch(const int64_t* ids, int64_t n) {
  const uint32_t b = batch_no_++;
  ++counts_.batches;
  counts_.lookups += n;
  unique_.clear();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = ids[i];
    if (id < 0 || id >= rows_) continue;
    uint32_t& s = seen_[static_cast<size_t>(id)];
    if (s == b) continue;
    s = b;
    unique_.push_back(id);
  }
  counts_.unique_ids += static_cast<int64_t>(unique_.size());
  if (sizes_.resident) {
    counts_.hits += static_cast<int64_t>(unique_.size());
    return;
  }
  // Probe: every unique id against the cache as it was before this batch.
  misses_.clear();
  for (int64_t id : unique_) {
    if (!freq_.empty()) ++freq_[static_cast<size_t>(id)];
    const int64_t set = cache_set(id, sizes_.cache_sets);
    const int w = find(set, id);
    if (w >= 0) {
      stamps_[static_cast<size_t>(set * kCacheWays + w)] = b;
      ++counts_.hits;
      continue;
    }
    misses_.push_back(id);
    if (in_host_.empty() || in_host_[static_cast<size_t>(id)]) {
      ++counts_.host_hits;
    } else {
      ++counts_.backing_reads;
    }
  }
  // Insert after the batch, stamped with its number.
  for (int64_t id : misses_) {
    const int64_t set = cache_set(id, sizes_.cache_sets);
    if (find(set, id) >= 0) continue;
    const int w = victim(set, b);
    const auto slot = static_cast<size_t>(set * kCacheWays + w);
    if (policy_ == cache_policy::lru_admit && keys_[slot] >= 0 &&
        freq_[static_cast<size_t>(id)] <= freq_[static_cast<size_t>(keys_[slot])]) {
      ++counts_.rejected;
      continue;
    }
    keys_[slot] = id;
    stamps_[slot] = b;
    ++counts_.inserted;
  }
}

}  // namespace tiemb
