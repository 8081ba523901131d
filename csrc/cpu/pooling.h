// The per-row reduction shared by every CPU lookup: gather the rows of one
// sample's ids, weight them, combine them as TensorFlow does.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "../core/half.h"
#include "../core/types.h"

namespace tiemb {

/// Marker type for IEEE half storage on the host.
struct half_t {
  uint16_t bits;
};

namespace detail {

template <class T>
inline float load(const T* p, int64_t k) {
  if constexpr (std::is_same_v<T, half_t>) {
    return half_to_float(p[k].bits);
  } else {
    return p[k];
  }
}

template <class T>
inline void store(T* p, int64_t k, float v) {
  if constexpr (std::is_same_v<T, half_t>) {
    p[k].bits = float_to_half(v);
  } else {
    p[k] = v;
  }
}

#if defined(__x86_64__)
// float16 -> float32 with the F16C instructions, 8 at a time, where the CPU
// has them (checked once at run time; the build targets baseline x86-64):
// the scalar conversion costs more than the copy on level-1 (float16) tables.
__attribute__((target("avx,f16c"))) inline void half_row_to_float_f16c(const half_t* src, float* dst, int64_t n) {
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + k));
    _mm256_storeu_ps(dst + k, _mm256_cvtph_ps(h));
  }
  for (; k < n; ++k) dst[k] = half_to_float(src[k].bits);
}

inline bool cpu_has_f16c() {
  static const bool has = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
  return has;
}
#endif

/// dst[k] = float(src[k]) for k < n.
inline void half_row_to_float(const half_t* src, float* dst, int64_t n) {
#if defined(__x86_64__)
  if (n >= 8 && cpu_has_f16c()) {
    half_row_to_float_f16c(src, dst, n);
    return;
  }
#endif
  for (int64_t k = 0; k < n; ++k) dst[k] = half_to_float(src[k].bits);
}

/// out[0, dim) = row[0, dim). The common embedding widths as copies of a
/// size known at compile time (a few vector moves inline): a memcpy of a
/// run-time size is a library call per row, which W&D's 26 x 512 rows of
/// one float (its wide part) and of 16 floats paid on every lookup.
template <class T>
inline void copy_row(T* out, const T* row, int64_t dim) {
  switch (dim) {
    case 1: out[0] = row[0]; return;
    case 4: std::memcpy(out, row, 4 * sizeof(T)); return;
    case 8: std::memcpy(out, row, 8 * sizeof(T)); return;
    case 16: std::memcpy(out, row, 16 * sizeof(T)); return;
    case 32: std::memcpy(out, row, 32 * sizeof(T)); return;
    case 64: std::memcpy(out, row, 64 * sizeof(T)); return;
    default: std::memcpy(out, row, static_cast<size_t>(dim) * sizeof(T));
  }
}

// Rows further ahead than this are fetched while the current one is summed:
// random rows of a large table miss every cache level.
constexpr int64_t kPrefetchDistance = 8;

}  // namespace detail

/// Everything one task needs to reduce rows [row_begin, row_end) of a slot.
template <class IdT, class TabT, class OutT>
struct pooling_args {
  const IdT* ids;
  int64_t id_stride;      // elements between consecutive ids
  bool wrap_negative;     // gather mode: id < 0 reads row table_rows + id
  const float* weights;   // nullptr = unweighted
  const int64_t* offsets; // rows + 1 entries; nullptr = row r is id r (gather mode)
  const TabT* table;
  int64_t table_rows;
  int64_t dim;
  combiner comb;
  bool safe;
  int64_t default_id;  // safe mode only; -1 = zeros for empty rows
  OutT* out;
  float* acc;  // dim floats of scratch
  // Dense id matrix form (offsets unused): row r owns ids[r * row_stride + j * id_stride], j < ids_per_row.
  int64_t ids_per_row = 0;
  int64_t row_stride = 0;
  int64_t out_stride = 0;  // elements between output rows (>= dim)
};

/// Gather mode: output row r is table row ids[r], converted to the output type.
template <class IdT, class TabT, class OutT>
void gather_rows(const pooling_args<IdT, TabT, OutT>& a, int64_t row_begin, int64_t row_end) {
  const int64_t dim = a.dim;
  for (int64_t r = row_begin; r < row_end; ++r) {
    if (r + detail::kPrefetchDistance < row_end) {
      int64_t ahead = static_cast<int64_t>(a.ids[(r + detail::kPrefetchDistance) * a.id_stride]);
      if (ahead < 0) ahead += a.table_rows;
      __builtin_prefetch(a.table + ahead * dim);
    }
    int64_t id = static_cast<int64_t>(a.ids[r * a.id_stride]);
    if (id < 0) id += a.table_rows;  // only wrap_negative slots get here with id < 0 (checked by the plan)
    const TabT* row = a.table + id * dim;
    OutT* out = a.out + r * a.out_stride;
    if constexpr (std::is_same_v<TabT, OutT>) {
      detail::copy_row(out, row, dim);
    } else if constexpr (std::is_same_v<TabT, half_t> && std::is_same_v<OutT, float>) {
      detail::half_row_to_float(row, out, dim);
    } else {
      for (int64_t k = 0; k < dim; ++k) detail::store(out, k, detail::load(row, k));
    }
  }
}

/// The accumulator of output row r, zeroed: a float32 output row itself,
/// else the task's scratch row.
template <class IdT, class TabT, class OutT>
inline float* row_accumulator(const pooling_args<IdT, TabT, OutT>& a, int64_t r) {
  float* acc;
  if constexpr (std::is_same_v<OutT, float>) {
    acc = a.out + r * a.out_stride;
  } else {
    acc = a.acc;
  }
  std::memset(acc, 0, static_cast<size_t>(a.dim) * sizeof(float));
  return acc;
}

/// Finishes one output row from its accumulator: TensorFlow's safe-lookup
/// rules for empty rows (zeros, or the default_id row: TF fills an empty row
/// with default_id at weight 1, the row itself) and its combiners (div_no_nan
/// for weighted means, the id count otherwise).
template <class IdT, class TabT, class OutT>
inline void finish_row(const pooling_args<IdT, TabT, OutT>& a, OutT* out, const float* acc, int64_t count,
                       float weight_sum, float weight_sq_sum) {
  const int64_t dim = a.dim;
  if (count == 0) {
    if (a.safe && a.default_id >= 0) {
      const TabT* row = a.table + a.default_id * dim;
      for (int64_t k = 0; k < dim; ++k) detail::store(out, k, detail::load(row, k));
    } else {
      for (int64_t k = 0; k < dim; ++k) detail::store(out, k, 0.f);
    }
    return;
  }
  float denom = 1.f;
  if (a.comb == combiner::mean) {
    denom = a.weights != nullptr ? weight_sum : static_cast<float>(count);
  } else if (a.comb == combiner::sqrtn) {
    denom = a.weights != nullptr ? std::sqrt(weight_sq_sum) : std::sqrt(static_cast<float>(count));
  }
  if (a.comb == combiner::sum) {
    if constexpr (!std::is_same_v<OutT, float>) {
      for (int64_t k = 0; k < dim; ++k) detail::store(out, k, acc[k]);
    }
  } else if (denom == 0.f) {
    for (int64_t k = 0; k < dim; ++k) detail::store(out, k, 0.f);
  } else {
    for (int64_t k = 0; k < dim; ++k) detail::store(out, k, acc[k] / denom);
  }
}

/// Dense id matrix form: row r pools the valid (>= 0) ids of matrix row r,
/// the masked pooling of a padded multi-hot feature and the safe lookup of a
/// -1-padded dense id tensor alike. Ids were range-checked by the plan.
template <class IdT, class TabT, class OutT>
void pool_matrix_rows(const pooling_args<IdT, TabT, OutT>& a, int64_t row_begin, int64_t row_end) {
  const int64_t dim = a.dim;
  const int64_t k_ids = a.ids_per_row;
  const int64_t row_stride = a.row_stride > 0 ? a.row_stride : k_ids * a.id_stride;
  const bool prune_weights = a.weights != nullptr && a.comb != combiner::sum;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const IdT* ids = a.ids + r * row_stride;
    // The next row's ids miss the cache as often as this row's table rows.
    if (r + 1 < row_end) {
      for (int64_t j = 0; j < k_ids; ++j) {
        const int64_t ahead = static_cast<int64_t>(ids[row_stride + j * a.id_stride]);
        if (ahead >= 0) __builtin_prefetch(a.table + ahead * dim);
      }
    }
    float* acc = row_accumulator(a, r);
    float weight_sum = 0.f;
    float weight_sq_sum = 0.f;
    int64_t count = 0;
    for (int64_t j = 0; j < k_ids; ++j) {
      const int64_t id = static_cast<int64_t>(ids[j * a.id_stride]);
      if (id < 0) continue;  // padding
      const TabT* row = a.table + id * dim;
      if (a.weights != nullptr) {
        const float w = a.weights[r * k_ids + j];
        if (prune_weights && !(w > 0.f)) continue;
        weight_sum += w;
        weight_sq_sum += w * w;
        for (int64_t k = 0; k < dim; ++k) acc[k] += w * detail::load(row, k);
      } else {
        for (int64_t k = 0; k < dim; ++k) acc[k] += detail::load(row, k);
      }
      ++count;
    }
    finish_row(a, a.out + r * a.out_stride, acc, count, weight_sum, weight_sq_sum);
  }
}

/// Reduces rows [row_begin, row_end). Ids were range-checked by the plan.
template <class IdT, class TabT, class OutT>
void pool_rows(const pooling_args<IdT, TabT, OutT>& a, int64_t row_begin, int64_t row_end) {
  if (a.ids_per_row > 0) {
    pool_matrix_rows(a, row_begin, row_end);
    return;
  }
  if (a.offsets == nullptr) {
    gather_rows(a, row_begin, row_end);
    return;
  }
  const int64_t dim = a.dim;
  const bool prune_weights = a.safe && a.weights != nullptr && a.comb != combiner::sum;
  const int64_t id_end = a.offsets != nullptr ? a.offsets[row_end] : row_end;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t first = a.offsets != nullptr ? a.offsets[r] : r;
    const int64_t last = a.offsets != nullptr ? a.offsets[r + 1] : r + 1;
    // Accumulate straight into a float32 output row; through scratch otherwise.
    float* acc = row_accumulator(a, r);
    float weight_sum = 0.f;
    float weight_sq_sum = 0.f;
    int64_t count = 0;
    for (int64_t j = first; j < last; ++j) {
      if (j + detail::kPrefetchDistance < id_end) {
        const int64_t ahead = static_cast<int64_t>(a.ids[(j + detail::kPrefetchDistance) * a.id_stride]);
        if (ahead >= 0) __builtin_prefetch(a.table + ahead * dim);
      }
      int64_t id = static_cast<int64_t>(a.ids[j * a.id_stride]);
      if (id < 0) {
        if (!a.wrap_negative) continue;  // safe mode: pruned
        id += a.table_rows;              // checked by the plan: >= 0 now
      }
      float w = 1.f;
      if (a.weights != nullptr) {
        w = a.weights[j];
        if (prune_weights && !(w > 0.f)) continue;
      }
      ++count;
      weight_sum += w;
      weight_sq_sum += w * w;
      const TabT* row = a.table + id * dim;
      if (a.weights != nullptr) {
        for (int64_t k = 0; k < dim; ++k) acc[k] += w * detail::load(row, k);
      } else {
        for (int64_t k = 0; k < dim; ++k) acc[k] += detail::load(row, k);
      }
    }
    finish_row(a, a.out + r * a.out_stride, acc, count, weight_sum, weight_sq_sum);
  }
}

}  // namespace tiemb
