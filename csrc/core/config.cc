#include "config.h"

#include <set>
#include <thread>

#include "error.h"

namespace tiemb {

void engine_config::validate() const {
  TIEMB_EXPECT(max_batch_size > 0, "max_batch_size must be > 0, got ", max_batch_size);
  TIEMB_EXPECT(slot_num > 0, "slot_num must be > 0, got ", slot_num);
  TIEMB_EXPECT(max_nnz > 0, "max_nnz must be > 0, got ", max_nnz);
  TIEMB_EXPECT(num_threads >= 0, "num_threads must be >= 0 (0 = all cores), got ", num_threads);
  // Offsets and id counts are int64 but per-slot id counts are also handed
  // to 32-bit GPU indexing later: keep the product well inside int32.
  TIEMB_EXPECT(max_batch_size <= (int64_t{1} << 31) / max_nnz,
               "max_batch_size * max_nnz must be < 2^31, got ", max_batch_size, " * ", max_nnz);
}

int64_t count_features(const std::vector<slot_config>& slots) {
  std::set<int32_t> shared;
  int64_t alone = 0;
  for (const slot_config& s : slots) {
    if (s.feature >= 0) {
      shared.insert(s.feature);
    } else {
      ++alone;
    }
  }
  return alone + static_cast<int64_t>(shared.size());
}

}  // namespace tiemb
