// Engine and slot configuration, validated once at the edge.
#pragma once

#include <cstdint>
#include <vector>

#include "types.h"

namespace tiemb {

/// Sizes every buffer of a lookup workspace; nothing on the lookup path grows
/// beyond them.
struct engine_config {
  int64_t max_batch_size = 0;  ///< most samples per call (output rows of a pooled slot)
  /// Most features (distinct id inputs) one lookup group serves; several
  /// slots reading the same ids (tables looked up with the same ids) are one
  /// feature. Per-slot buffers are sized from each group's own slot count.
  int64_t slot_num = 0;
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
  /// The feature (distinct id input) the slot reads: slots with the same
  /// value >= 0 share their ids and count once against slot_num; -1 = a
  /// feature of its own.
  int32_t feature = -1;
};

/// Features (distinct id inputs) of a group's slots: slots with equal
/// feature >= 0 count once, every slot with feature -1 counts alone.
int64_t count_features(const std::vector<slot_config>& slots);

}  // namespace tiemb
