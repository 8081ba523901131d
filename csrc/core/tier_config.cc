#include "tier_config.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>

#include "error.h"

namespace tiemb {

void tier_config::validate(int64_t rows) const {
  TIEMB_EXPECT(cache_percentage > 0.0 && cache_percentage <= 1.0,
               "cache_percentage must be in (0, 1], got ", cache_percentage);
  TIEMB_EXPECT(cpu_cache_percentage >= 0.0 && cpu_cache_percentage <= 1.0,
               "cpu_cache_percentage must be in [0, 1], got ", cpu_cache_percentage);
  TIEMB_EXPECT(hit_rate_threshold >= 0.0 && hit_rate_threshold <= 1.0,
               "hit_rate_threshold must be in [0, 1], got ", hit_rate_threshold);
  const tier_sizes t = compute_tier_sizes(rows, *this);
  TIEMB_EXPECT(t.file_rows == 0 || !backing_file.empty(), "cpu_cache_percentage = ",
               cpu_cache_percentage, " leaves ", t.file_rows,
               " rows outside host memory, which needs a backing_file");
}

tier_sizes compute_tier_sizes(int64_t rows, const tier_config& tiers) {
  tier_sizes t;
  if (tiers.cache_percentage >= 1.0) {
    t.resident = true;
    t.gpu_rows = rows;
    t.host_rows = 0;  // a resident table needs no host copy
    t.file_rows = 0;
    return t;
  }
  const auto want = static_cast<int64_t>(std::ceil(tiers.cache_percentage * static_cast<double>(rows)));
  const int64_t max_sets = (rows + kCacheWays - 1) / kCacheWays;
  t.cache_sets = std::clamp<int64_t>((want + kCacheWays - 1) / kCacheWays, 1, max_sets);
  t.gpu_rows = t.cache_sets * kCacheWays;
  t.host_rows = std::min<int64_t>(
      rows, static_cast<int64_t>(std::ceil(tiers.cpu_cache_percentage * static_cast<double>(rows))));
  t.file_rows = rows - t.host_rows;
  return t;
}

std::vector<int64_t> hot_rows(int64_t rows, const int64_t* profile_ids, int64_t num_profile,
                              int64_t limit) {
  limit = std::clamp<int64_t>(limit, 0, rows);
  std::unordered_map<int64_t, int64_t> counts;
  for (int64_t i = 0; i < num_profile; ++i) {
    const int64_t id = profile_ids[i];
    if (id >= 0 && id < rows) ++counts[id];
  }
  std::vector<std::pair<int64_t, int64_t>> seen(counts.begin(), counts.end());
  std::sort(seen.begin(), seen.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(limit));
  for (const auto& [id, count] : seen) {
    if (static_cast<int64_t>(out.size()) == limit) return out;
    out.push_back(id);
  }
  // Unseen rows fill the rest in ascending order.
  for (int64_t id = 0; id < rows && static_cast<int64_t>(out.size()) < limit; ++id) {
    if (counts.find(id) == counts.end()) out.push_back(id);
  }
  return out;
}

}  // namespace tiemb
