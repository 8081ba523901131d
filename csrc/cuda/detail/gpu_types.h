// Plain structs shared by the host side of the GPU engine and its kernels
// (included by CUDA sources only). No CUDA headers: trivially copyable views.
#pragma once

#include <cstdint>

#include "../../core/types.h"

namespace tiemb {
namespace gpu {

constexpr int kThreadsPerBlock = 256;

/// How a slot's rows are read: element type and vector width.
enum layout : int32_t {
  kLayoutF32Vec4 = 0,  // float32, dim % 4 == 0: 16-byte loads
  kLayoutF32Vec1 = 1,
  kLayoutF16Vec8 = 2,  // float16, dim % 8 == 0: 16-byte loads
  kLayoutF16Vec2 = 3,  // float16, dim % 2 == 0: 4-byte loads
  kLayoutF16Vec1 = 4,
};

/// Error codes latched by the kernels (first one wins).
enum error_code : int32_t {
  kErrNone = 0,
  kErrIdRange = 1,
  kErrSegmentOrder = 2,   // unsorted or negative segment ids
  kErrSegmentRange = 3,   // segment id >= rows
  kErrOffsetsDecreasing = 4,
  kErrOffsetsStart = 5,
  kErrOffsetsEnd = 6,
  kErrNnz = 7,            // a sample has more than max_nnz ids
};

struct lookup_error {
  int32_t code;
  int32_t slot;
  int64_t index;
  int64_t value;
  lookup_error* mirror;  // device address of the host-mapped copy
};

/// One slot of one call, as the kernel sees it.
struct slot_desc {
  const void* ids;
  const void* segments;      // segment ids or row offsets
  const float* weights;      // nullptr = unweighted
  void* out;
  const void* table;         // resident rows; unused for tiered tables
  const void* default_row;   // safe mode default row (device), or nullptr
  const int32_t* unique_index;  // tiered: per id, its row in `staging`
  const void* staging;       // tiered: this call's gathered rows
  int64_t num_ids;
  int64_t num_offsets;       // entries of `segments` when they are offsets
  int64_t rows;
  int64_t table_rows;
  int64_t default_id;
  int64_t row_bytes;
  int64_t warp_begin;        // prefix over slots of warps
  int64_t id_begin;          // prefix over slots of max(num_ids, 1), for per-id kernels
  int64_t* offsets_out;      // segment ids -> offsets pre-pass: where to write them
  int32_t slot_index;        // the slot's index in its group, for errors
  int32_t dim;
  int32_t group;             // lanes per bag
  int32_t layout;
  combiner comb;
  bool safe;
  bool id_is_64;
  bool seg_is_64;
  bool segments_are_offsets;
  bool out_half;
  bool offsets_checked;      // offsets come from the pre-pass, already validated
  int64_t max_nnz;           // most ids one sample may have (the engine's max_nnz)
  int64_t id_stride;         // elements between ids (k: one column of a [n, k] id matrix, read in place)
  int64_t seg_stride;        // elements between segment ids (k: column 0 of sp_ids.indices, read in place)
  int64_t ids_per_row;       // > 0: a dense [rows, ids_per_row] id matrix (safe mode), no segment ids
  int64_t id_row_stride;     // elements between the rows of that matrix
  bool gather;               // tf.gather / Keras Embedding: every id is its own output row
  bool wrap_negative;        // gather: an id i < 0 reads row table_rows + i (Keras)
  int64_t out_stride;        // elements between output rows (dim, or wider for a fused concatenation)
};

/// Element offset of logical id k of a slot (k counts the ids in row-major
/// order: a dense id matrix's row r, column j is k = r * ids_per_row + j).
__host__ __device__ inline int64_t id_offset(int64_t k, int64_t id_stride, int64_t ids_per_row,
                                             int64_t row_stride) {
  if (ids_per_row > 0) {
    const int64_t r = k / ids_per_row;
    return r * row_stride + (k - r * ids_per_row) * id_stride;
  }
  return k * id_stride;
}

/// Slots with at most this many rows find their ids by a binary search in
/// the lookup kernel; larger ones get a segment-ids -> offsets pre-pass.
constexpr int64_t kSearchMaxRows = 2048;

/// Slots one launch carries as a kernel parameter (about 10 KB; kernels
/// take up to 32 KB of parameters on Volta and newer with CUDA >= 12.1).
constexpr int kMaxSlotsPerLaunch = 64;

/// Everything one fused launch needs, passed by value as __grid_constant__:
/// no descriptor upload, no synchronisation, capturable in a CUDA graph.
struct launch_params {
  slot_desc slots[kMaxSlotsPerLaunch];
  int32_t num_slots;
  int32_t slot_base;   // index of slots[0] in the group, for error messages
  int64_t total_warps;      // fused kernel: warps; pre-pass: threads
  lookup_error* err;
};

}  // namespace gpu
}  // namespace tiemb
