// Engine and slot configuration, validated once at the edge.
#pragma once

#include <cstdint>
#include <vector>

#include "types.h"

namespace tiemb {

/// Sizes every buffer of a lookup workspace; nothing on the lookup path grows
/// beyond them.
struct engine_config {
  int64_t max_batch_size = 0;  ///< largest number of output rows per slot
  int64_t slot_num = 0;        ///< most slots one lookup call serves
  int64_t max_nnz = 0;         ///< most ids one sample has in one slot
  int32_t num_threads = 0;     ///< CPU threads for lookups; 0 = all cores

  /// Throws tiemb::error naming the first field that is out of range.
  void validate() const;
  /// Most ids one slot may carry in one call: max_batch_size * max_nnz.
  int64_t max_ids_per_slot() const { return max_batch_size * max_nnz; }
};

/// Static description of one slot (feature) of a lookup group.
struct slot_config {
  int32_t table = -1;                    ///< engine table id
  combiner comb = combiner::sum;
  row_mode mode = row_mode::plain;
  int64_t default_id = -1;               ///< safe mode: row for empty samples; -1 = zeros
  dtype output_dtype = dtype::float32;   ///< float32 or float16
  /// Gather mode: a negative id i reads row rows + i (Keras Embedding's
  /// Python-style indexing); ids below -rows are out of range.
  bool wrap_negative = false;
};

}  // namespace tiemb
