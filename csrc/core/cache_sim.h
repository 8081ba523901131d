// The GPU cache of a tiered table, simulated on the CPU: the same set count
// (compute_tier_sizes), set hash (cache_hash.h), 32 ways, warm start
// (warm_cache_keys from hot_rows of a profile), per-batch dedup, hits counted
// per unique id per batch, LRU by batch stamps and the batch's misses
// inserted after the batch in order of first appearance. `tiemb advise`
// sizes caches with it; tests/gpu checks it against the GPU engine's counters.
//
// What it does not model: the GPU inserts one batch's misses in parallel (so
// when more misses than free or older ways land in one set, which of them
// stay may differ), and with a hit rate at or above hit_rate_threshold the
// GPU inserts in the background, possibly after the next batch's probe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tier_config.h"

namespace tiemb {

/// Slot keys of a freshly built GPU cache of `sets` sets: the rows of `order`
/// (hottest first) each into its set's next free way while ways last; -1 =
/// empty. The GPU table and the simulator both start from this.
std::vector<int64_t> warm_cache_keys(int64_t sets, const std::vector<int64_t>& order);

/// Eviction policies the simulator knows. Only `lru` is the engine's; the
/// others exist to compare what another policy would gain on the same traffic.
enum class cache_policy {
  lru,        ///< the engine: evict the least recently stamped way (ties: lowest way)
  lfu,        ///< evict the way with the fewest batches seen (ties: as lru)
  lru_admit,  ///< lru, but a miss replaces the victim only if seen in more batches (TinyLFU-style filter)
};

/// Parses "lru", "lfu" or "lru_admit"; throws tiemb::error naming the value.
cache_policy parse_cache_policy(const std::string& name);

/// Counters of a simulation (same meaning as table_stats').
struct cache_sim_counts {
  int64_t batches = 0;
  int64_t lookups = 0;        ///< ids given, duplicates and out-of-range included
  int64_t unique_ids = 0;     ///< distinct in-range ids per batch, summed
  int64_t hits = 0;           ///< unique ids found in the GPU cache
  int64_t host_hits = 0;      ///< misses held in pinned host memory
  int64_t backing_reads = 0;  ///< misses only in the backing file
  int64_t inserted = 0;       ///< rows inserted into the GPU cache
  int64_t rejected = 0;       ///< misses the admission filter kept out (lru_admit)
};

class cache_simulator {
 public:
  /// A table of `rows` rows with tiers `tiers`, warm from `profile_ids`
  /// (may be null). Memory: about 9 bytes per row plus the cache's slots.
  cache_simulator(int64_t rows, const tier_config& tiers, const int64_t* profile_ids, int64_t num_profile,
                  cache_policy policy = cache_policy::lru);

  /// One lookup of `n` ids (ids outside [0, rows) are skipped, as the GPU
  /// skips them).
  void batch(const int64_t* ids, int64_t n);

  const cache_sim_counts& counts() const { return counts_; }
  const tier_sizes& sizes() const { return sizes_; }
  /// Cache slots (set * 32 + way): row id or -1, and LRU stamps.
  const std::vector<int64_t>& keys() const { return keys_; }
  const std::vector<uint32_t>& stamps() const { return stamps_; }

 private:
  int find(int64_t set, int64_t id) const;
  int victim(int64_t set, uint32_t batch_no) const;

  int64_t rows_;
  tier_sizes sizes_;
  cache_policy policy_;
  uint32_t batch_no_ = 1;  // the GPU table's first stamp
  std::vector<int64_t> keys_;
  std::vector<uint32_t> stamps_;
  std::vector<uint32_t> seen_;   // batch number an id was last seen in (dedup)
  std::vector<uint32_t> freq_;   // batches an id was seen in (+ profile counts): lfu / lru_admit
  std::vector<bool> in_host_;    // empty = every row in host memory
  std::vector<int64_t> unique_, misses_;
  cache_sim_counts counts_;
};

}  // namespace tiemb
