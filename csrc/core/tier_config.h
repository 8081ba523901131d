// Tier settings and statistics of one GPU table (no CUDA types).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tiemb {

/// The defaults of the tiemb/cache_percentage, tiemb/cpu_cache_percentage
/// and tiemb/hit_rate_threshold parameters: the C++ side's one copy. Keep in
/// sync with PARAMETERS in tiemb/config.py (tests/build checks they agree).
constexpr double kDefaultCachePercentage = 0.2;
constexpr double kDefaultCpuCachePercentage = 1.0;
constexpr double kDefaultHitRateThreshold = 0.95;

/// How one table's rows are split over the tiers; the defaults are the
/// tiemb/* parameters' (a GPU cache of 20% of the rows over host memory).
struct tier_config {
  double cache_percentage = kDefaultCachePercentage;         ///< share of rows in the GPU cache; 1 = resident, no probe
  double cpu_cache_percentage = kDefaultCpuCachePercentage;  ///< share of rows in pinned host memory
  double hit_rate_threshold = kDefaultHitRateThreshold;      ///< below: insert misses before returning; else in background
  std::string backing_file;           ///< rows beyond the host tier are read from here
  bool host_zero_copy = true;         ///< read host-tier misses in place (else batched copy)
  bool admission_filter = false;      ///< LRU, but a miss replaces its victim only if seen in more batches
  // Appended (issue 12): a store's table file is its own backing file.
  /// backing_file already holds this table (a table store's file, checked by
  /// the store's reader): rows are read from it in place and nothing is
  /// written. false: the table is written to backing_file when added.
  bool backing_file_holds_table = false;

  /// Throws tiemb::error naming the field ("cache_percentage must be in (0, 1], got 2").
  void validate(int64_t rows) const;
};

/// Ways of a GPU cache set: one warp probes a set in one step.
constexpr int64_t kCacheWays = 32;

/// How many rows each tier of a table holds.
struct tier_sizes {
  int64_t cache_sets = 0;   ///< GPU cache sets (0 when resident)
  int64_t gpu_rows = 0;     ///< cache capacity, or all rows when resident
  int64_t host_rows = 0;    ///< rows in pinned host memory
  int64_t file_rows = 0;    ///< rows only in the backing file
  bool resident = false;    ///< whole table on the GPU, no probe
};

/// Tier sizes of a table of `rows` rows: the GPU cache holds
/// ceil(cache_percentage * rows) rows rounded up to whole sets of
/// kCacheWays (never more sets than the rows need); the host tier
/// ceil(cpu_cache_percentage * rows) rows.
tier_sizes compute_tier_sizes(int64_t rows, const tier_config& tiers);

/// Row ids ordered hottest first: by descending count in `profile_ids`
/// (ids outside [0, rows) ignored), ties and unseen rows by ascending id.
/// The first `limit` entries are returned.
std::vector<int64_t> hot_rows(int64_t rows, const int64_t* profile_ids, int64_t num_profile,
                              int64_t limit);

/// Counters of one table since it was added (ids counted after dedup).
struct table_stats {
  int64_t lookups = 0;      ///< ids looked up, duplicates included
  int64_t unique_ids = 0;   ///< distinct ids per batch, summed over batches
  int64_t hits = 0;         ///< unique ids found in the GPU cache
  int64_t host_hits = 0;    ///< unique ids served from pinned host memory
  int64_t host_fetches = 0; ///< unique ids fetched by the host (backing file; host tier in copy mode)
  int64_t inserted = 0;     ///< rows inserted into the GPU cache
  int64_t rows_gpu = 0;     ///< GPU cache capacity in rows (all rows when resident)
  int64_t rows_host = 0;    ///< rows held in pinned host memory
  int64_t rows_file = 0;    ///< rows only in the backing file
  int64_t batches = 0;
  int64_t sync_inserts = 0;  ///< batches whose misses were inserted before returning
  int64_t backing_reads = 0; ///< unique ids read from the backing file (not in GPU cache or host memory)
};

}  // namespace tiemb
