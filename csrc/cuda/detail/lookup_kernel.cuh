// The fused lookup kernel: every slot of a batch in one launch.
//
// Work unit: one "bag" = one output row of one slot. A bag is reduced by a
// group of G lanes of a warp (G = 1..32, a power of two chosen per slot from
// its dimension), each lane owning `vec` consecutive elements per step so a
// row is read with 16-byte loads where its size and alignment allow. A warp
// holds 32 / G bags of the same slot; warps map to slots through a prefix
// array over the slots' warp counts, so slots of any mix of dimensions,
// dtypes, combiners and row modes share the launch.
#pragma once

#include <cuda_fp16.h>
#include <cstdint>

#include "device_util.cuh"
#include "gpu_types.h"

namespace tiemb {
namespace gpu {

/// Latches the first error. `err` (device memory) decides who is first; the
/// winner also writes it through to `err->mirror`, host memory mapped into
/// the device, so the host reads it without a copy on every call.
__device__ inline void report_error(lookup_error* err, int32_t code, int32_t slot, int64_t index,
                                    int64_t value) {
  if (atomicCAS(&err->code, 0, code) == 0) {
    err->slot = slot;
    err->index = index;
    err->value = value;
    volatile lookup_error* m = err->mirror;
    m->slot = slot;
    m->index = index;
    m->value = value;
    __threadfence_system();
    m->code = code;
    __threadfence_system();
  }
}

// First position in sorted seg[0, n) (elements `stride` apart) whose value is >= key.
__device__ inline int64_t lower_bound(const void* seg, bool is64, int64_t n, int64_t stride, int64_t key) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = (lo + hi) >> 1;
    if (load_index(seg, is64, mid * stride) < key) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// `vec` consecutive elements of a row as floats.
template <int Vec, bool Half>
__device__ inline void load_vec(const void* row, int32_t k, float (&v)[Vec]) {
  if constexpr (Half) {
    const __half* h = static_cast<const __half*>(row) + k;
    if constexpr (Vec == 8) {
      const uint4 raw = *reinterpret_cast<const uint4*>(h);
      const __half2* h2 = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 f = __half22float2(h2[i]);
        v[2 * i] = f.x;
        v[2 * i + 1] = f.y;
      }
    } else {
#pragma unroll
      for (int i = 0; i < Vec; ++i) v[i] = __half2float(h[i]);
    }
  } else {
    const float* f = static_cast<const float*>(row) + k;
    if constexpr (Vec == 4) {
      const float4 raw = *reinterpret_cast<const float4*>(f);
      v[0] = raw.x; v[1] = raw.y; v[2] = raw.z; v[3] = raw.w;
    } else {
#pragma unroll
      for (int i = 0; i < Vec; ++i) v[i] = f[i];
    }
  }
}

template <int Vec, bool Half>
__device__ inline void store_vec(void* out, int64_t k, const float (&v)[Vec]) {
  if constexpr (Half) {
    __half* h = static_cast<__half*>(out) + k;
    if constexpr (Vec % 2 == 0) {
#pragma unroll
      for (int i = 0; i < Vec; i += 2) {
        *reinterpret_cast<__half2*>(h + i) = __floats2half2_rn(v[i], v[i + 1]);
      }
    } else {
#pragma unroll
      for (int i = 0; i < Vec; ++i) h[i] = __float2half_rn(v[i]);
    }
  } else {
    float* f = static_cast<float*>(out) + k;
    if constexpr (Vec == 4) {
      *reinterpret_cast<float4*>(f) = make_float4(v[0], v[1], v[2], v[3]);
    } else {
#pragma unroll
      for (int i = 0; i < Vec; ++i) f[i] = v[i];
    }
  }
}

// Address of the row an id refers to: the resident table, or for tiered
// tables the row gathered into this call's staging buffer.
__device__ inline const char* row_address(const slot_desc& d, int64_t j, int64_t id) {
  if (d.unique_index != nullptr) {
    return static_cast<const char*>(d.staging) + static_cast<int64_t>(d.unique_index[j]) * d.row_bytes;
  }
  return static_cast<const char*>(d.table) + id * d.row_bytes;
}

// Step 1 of a bag: the ids [*begin_out, *end_out) of output row r, from
// whichever form the slot's rows take (gather, dense matrix, offsets, segment
// ids); reports bad row structure, and clamps so no id outside the slot's
// is ever read.
__device__ __forceinline__ void bag_range(const slot_desc& d, int32_t slot, int64_t r, int lane, int group,
                                          lookup_error* err, int64_t* begin_out, int64_t* end_out) {
  int64_t begin, end;
  if (d.gather) {  // one id, one output row
    begin = r;
    end = r + 1;
  } else if (d.ids_per_row > 0) {  // a dense id matrix: row r owns its ids_per_row ids
    begin = r * d.ids_per_row;
    end = begin + d.ids_per_row;
  } else if (d.segments_are_offsets) {
    begin = load_index(d.segments, d.seg_is_64, r);
    end = load_index(d.segments, d.seg_is_64, r + 1);
    if (!d.offsets_checked && lane == 0) {
      if (end < begin) report_error(err, kErrOffsetsDecreasing, slot, r + 1, end);
      if (r == 0 && begin != 0) report_error(err, kErrOffsetsStart, slot, 0, begin);
      if (r == d.rows - 1 && end != d.num_ids) report_error(err, kErrOffsetsEnd, slot, r + 1, end);
    }
  } else {
    // Small batches: a short search per row beats a separate pass. The
    // checks prove seg sorted with values in [0, rows): lower_bound is
    // monotone in the key even on unsorted input, so the rows' ranges
    // partition [begin(0), end(rows-1)), and each row checks its own range.
    const int64_t ss = d.seg_stride;
    begin = lower_bound(d.segments, d.seg_is_64, d.num_ids, ss, r);
    end = lower_bound(d.segments, d.seg_is_64, d.num_ids, ss, r + 1);
    if (lane == 0 && r == 0 && begin != 0) {
      report_error(err, kErrSegmentOrder, slot, 0, load_index(d.segments, d.seg_is_64, 0));
    }
    if (lane == 0 && r == d.rows - 1 && end != d.num_ids) {
      // Plain mode takes its row count from the last id: a larger one before
      // it can only mean the ids are out of order.
      report_error(err, d.safe ? kErrSegmentRange : kErrSegmentOrder, slot, end,
                   load_index(d.segments, d.seg_is_64, end * ss));
    }
    for (int64_t j = begin + lane; j < end; j += group) {
      const int64_t sj = load_index(d.segments, d.seg_is_64, j * ss);
      if (sj != r) report_error(err, kErrSegmentOrder, slot, j, sj);
    }
  }
  // Bad input was reported above or by the pre-pass; never read outside the ids.
  begin = min(max(begin, int64_t{0}), d.num_ids);
  end = min(max(end, begin), d.num_ids);
  if (lane == 0 && end - begin > d.max_nnz) report_error(err, kErrNnz, slot, r, end - begin);
  *begin_out = begin;
  *end_out = end;
}

// Step 3 of a bag: the combiner over the accumulated sum (mean, sqrtn), or
// the default row (safe mode) when no id survived.
template <int Vec, bool TabHalf>
__device__ __forceinline__ void finish_bag(const slot_desc& d, bool weighted, int32_t count, float wsum, float w2sum,
                                           int32_t k0, float (&acc)[Vec]) {
  if (count == 0) {
    if (d.safe && d.default_id >= 0) {
      load_vec<Vec, TabHalf>(static_cast<const char*>(d.default_row), k0, acc);
    }
  } else if (d.comb != combiner::sum) {
    // As TensorFlow: weighted paths use div_no_nan, unweighted divide by the count.
    const float denom = d.comb == combiner::mean ? (weighted ? wsum : static_cast<float>(count))
                                                 : (weighted ? sqrtf(w2sum) : sqrtf(static_cast<float>(count)));
#pragma unroll
    for (int i = 0; i < Vec; ++i) acc[i] = denom == 0.f ? 0.f : acc[i] / denom;
  }
}

// Reduces one bag with lanes [0, G) of a group; `lane` is the lane's index
// in the group. Template on the element layout of table and output. Steps:
// the bag's ids (bag_range), their rows accumulated (below), the combiner
// (finish_bag).
template <int Vec, bool TabHalf, bool OutHalf>
__device__ void reduce_bag(const slot_desc& d, int32_t slot, int64_t r, int lane, int group,
                           lookup_error* err) {
  const bool is64 = d.id_is_64;
  const bool weighted = d.weights != nullptr;
  const bool safe = d.safe;
  const bool prune_weights = safe && weighted && d.comb != combiner::sum;
  int64_t begin, end;
  bag_range(d, slot, r, lane, group, err, &begin, &end);

  const int32_t dim = d.dim;
  const int32_t step = group * Vec;
  for (int32_t k0 = lane * Vec; k0 < dim; k0 += step) {
    float acc[Vec];
#pragma unroll
    for (int i = 0; i < Vec; ++i) acc[i] = 0.f;
    float wsum = 0.f, w2sum = 0.f;
    int32_t count = 0;
    int64_t j = begin;
    // Four rows in flight per step: their loads are independent, and large
    // batches are bound by the latency of random row reads.
    constexpr int kInFlight = 4;
    for (; j + kInFlight - 1 < end; j += kInFlight) {
      int64_t id[kInFlight];
      float w[kInFlight];
      bool ok[kInFlight];
      float v[kInFlight][Vec];
#pragma unroll
      for (int q = 0; q < kInFlight; ++q) {
        const int64_t raw = load_index(d.ids, is64, id_offset(j + q, d.id_stride, d.ids_per_row, d.id_row_stride));
        id[q] = (d.wrap_negative && raw < 0) ? raw + d.table_rows : raw;
        w[q] = weighted ? d.weights[j + q] : 1.f;
        ok[q] = id[q] >= 0 && id[q] < d.table_rows && !(prune_weights && !(w[q] > 0.f));
        if (k0 == lane * Vec && lane == 0 && (id[q] >= d.table_rows || (id[q] < 0 && !safe))) {
          report_error(err, kErrIdRange, slot, j + q, raw);
        }
      }
#pragma unroll
      for (int q = 0; q < kInFlight; ++q) {
        if (ok[q]) load_vec<Vec, TabHalf>(row_address(d, j + q, id[q]), k0, v[q]);
      }
#pragma unroll
      for (int q = 0; q < kInFlight; ++q) {
        if (ok[q]) {
#pragma unroll
          for (int i = 0; i < Vec; ++i) acc[i] += w[q] * v[q][i];
          wsum += w[q];
          w2sum += w[q] * w[q];
          ++count;
        }
      }
    }
    for (; j < end; ++j) {
      const int64_t raw = load_index(d.ids, is64, id_offset(j, d.id_stride, d.ids_per_row, d.id_row_stride));
      const int64_t id = (d.wrap_negative && raw < 0) ? raw + d.table_rows : raw;
      const float w = weighted ? d.weights[j] : 1.f;
      if (k0 == lane * Vec && lane == 0 && (id >= d.table_rows || (id < 0 && !safe))) {
        report_error(err, kErrIdRange, slot, j, raw);
      }
      if (id < 0 || id >= d.table_rows || (prune_weights && !(w > 0.f))) continue;
      float v[Vec];
      load_vec<Vec, TabHalf>(row_address(d, j, id), k0, v);
#pragma unroll
      for (int i = 0; i < Vec; ++i) acc[i] += w * v[i];
      wsum += w; w2sum += w * w; ++count;
    }
    finish_bag<Vec, TabHalf>(d, weighted, count, wsum, w2sum, k0, acc);
    store_vec<Vec, OutHalf>(d.out, r * d.out_stride + k0, acc);
  }
}

template <int Vec, bool TabHalf>
__device__ inline void reduce_bag_out(const slot_desc& d, int32_t slot, int64_t r, int lane, int group,
                                      lookup_error* err) {
  if (d.out_half) reduce_bag<Vec, TabHalf, true>(d, slot, r, lane, group, err);
  else reduce_bag<Vec, TabHalf, false>(d, slot, r, lane, group, err);
}

/// One launch for all slots of `p`; the slots' `warp_begin` fields are the
/// prefix sums of their warp counts.
__global__ void __launch_bounds__(kThreadsPerBlock)
fused_lookup_kernel(const __grid_constant__ launch_params p) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (warp >= p.total_warps) return;
  const slot_desc* descs = p.slots;
  const int32_t num_slots = p.num_slots;
  lookup_error* err = p.err;
  const int lane32 = threadIdx.x & 31;
  // Find the slot of this warp (slot counts are small: a linear scan of a
  // few cached descriptors beats a search).
  int32_t s = 0;
  while (s + 1 < num_slots && descs[s + 1].warp_begin <= warp) ++s;
  const slot_desc& d = descs[s];
  const int group = d.group;
  const int64_t r = (warp - d.warp_begin) * (32 / group) + lane32 / group;
  if (r >= d.rows) return;
  const int lane = lane32 % group;
  const int32_t slot = d.slot_index;
  switch (d.layout) {
    case kLayoutF32Vec4: reduce_bag_out<4, false>(d, slot, r, lane, group, err); break;
    case kLayoutF32Vec1: reduce_bag_out<1, false>(d, slot, r, lane, group, err); break;
    case kLayoutF16Vec8: reduce_bag_out<8, true>(d, slot, r, lane, group, err); break;
    case kLayoutF16Vec2: reduce_bag_out<2, true>(d, slot, r, lane, group, err); break;
    default: reduce_bag_out<1, true>(d, slot, r, lane, group, err); break;
  }
}

/// Segment ids -> row offsets for every slot that has segment ids, one
/// thread per id, validating as it goes (negative, unsorted, beyond the row
/// count). Row r owns ids [offsets[r], offsets[r+1]). p.total_warps holds the
/// number of threads (sum over slots of max(num_ids, 1)).
__global__ void segments_to_offsets_kernel(const __grid_constant__ launch_params p) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < p.total_warps; g += stride) {
    int32_t s = 0;
    while (s + 1 < p.num_slots && p.slots[s + 1].id_begin <= g) ++s;
    const slot_desc& d = p.slots[s];
    const int32_t slot = d.slot_index;
    const int64_t i = g - d.id_begin;
    int64_t* off = d.offsets_out;
    if (d.num_ids == 0) {
      for (int64_t r = 0; r <= d.rows; ++r) off[r] = 0;
      continue;
    }
    const int64_t seg = load_index(d.segments, d.seg_is_64, i * d.seg_stride);
    const int64_t prev = i > 0 ? load_index(d.segments, d.seg_is_64, (i - 1) * d.seg_stride) : -1;
    if (seg < 0) {
      report_error(p.err, kErrSegmentOrder, slot, i, seg);
      continue;
    }
    if (seg < prev) {
      report_error(p.err, kErrSegmentOrder, slot, i, seg);
      continue;
    }
    if (seg >= d.rows) {
      report_error(p.err, d.safe ? kErrSegmentRange : kErrSegmentOrder, slot, i, seg);
      continue;
    }
    // Rows (prev, seg] start here; after the last id, rows (seg, rows] end.
    for (int64_t r = max(prev, int64_t{-1}) + 1; r <= seg; ++r) off[r] = i;
    if (i == d.num_ids - 1) {
      for (int64_t r = seg + 1; r <= d.rows; ++r) off[r] = d.num_ids;
    }
  }
}

/// Plain mode on device inputs: the row count of each slot (max(segment)+1,
/// or the last non-empty row + 1 for offsets), so the host can size outputs.
__global__ void plain_rows_kernel(const __grid_constant__ launch_params p, int64_t* rows_out) {
  const int32_t s = blockIdx.x * blockDim.x + threadIdx.x;
  if (s >= p.num_slots) return;
  const slot_desc& d = p.slots[s];
  if (d.safe || d.gather || d.ids_per_row > 0) return;  // their row counts need no device data
  if (d.num_ids == 0) {
    rows_out[d.slot_index] = 0;
  } else if (d.segments_are_offsets) {
    // First r with offsets[r] == num_ids (offsets are non-decreasing).
    int64_t lo = 0, hi = d.num_offsets - 1;
    while (lo < hi) {
      const int64_t mid = (lo + hi) >> 1;
      if (load_index(d.segments, d.seg_is_64, mid) < d.num_ids) lo = mid + 1; else hi = mid;
    }
    rows_out[d.slot_index] = lo;
  } else {
    rows_out[d.slot_index] = load_index(d.segments, d.seg_is_64, (d.num_ids - 1) * d.seg_stride) + 1;
  }
}

}  // namespace gpu
}  // namespace tiemb
