// One slot's inputs for one call, as non-owning views; shared by the CPU and
// GPU engines.
#pragma once

#include <cstdint>

#include "types.h"

namespace tiemb {

/// Non-owning view of one slot's inputs for one call.
struct slot_request {
  const void* ids = nullptr;  ///< int32 or int64, num_ids entries
  dtype id_type = dtype::int64;
  int64_t num_ids = 0;
  /// Elements between consecutive ids: 1 for a 1-D array; k to read one
  /// column of a row-major [num_ids, k] id matrix in place.
  int64_t id_stride = 1;
  /// Sorted segment ids (one per id, the sample each id belongs to) or, when
  /// segments_are_offsets, row offsets (rows + 1 entries, CSR style).
  const void* segments = nullptr;
  dtype segment_type = dtype::int64;
  int64_t num_segments = 0;
  bool segments_are_offsets = false;
  /// Elements between consecutive segment ids: 1 for a 1-D array; k to read
  /// column 0 of a row-major [num_ids, k] index matrix in place (sp_ids.indices).
  /// Segment ids only.
  int64_t segment_stride = 1;
  const float* weights = nullptr;  ///< optional, one per id
  int64_t num_weights = 0;
  /// Safe mode with segment ids: the number of output rows (dense_shape[0]).
  /// -1 where it follows from the input.
  int64_t num_rows = -1;
  /// Gather mode: the samples the ids belong to (the ids' leading dimension:
  /// [samples, k] ids are k per sample). -1: one sample per id (1-D ids).
  int64_t samples = -1;
  /// Dense id matrix form (safe mode): when > 0, the ids are a [num_rows, ids_per_row] matrix, row r owning
  /// ids[r * row_stride + j * id_stride] for j < ids_per_row; no segment ids; ids < 0 are padding (pruned).
  /// Weights, where given, are a contiguous [num_rows, ids_per_row] matrix.
  int64_t ids_per_row = 0;
  int64_t row_stride = 0;   ///< elements between rows of that matrix; 0 = ids_per_row * id_stride
  /// Elements between consecutive output rows: 0 = dense (the slot's dim).
  /// Larger when the slot writes its columns of a wider output that several
  /// slots share (the model's concatenation, fused).
  int64_t out_row_stride = 0;
};

}  // namespace tiemb
