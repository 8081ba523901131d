#include "validate.h"

#include <cstdint>

#include "error.h"

namespace tiemb {

void check_slot_configs(const engine_config& cfg, const std::vector<slot_config>& slots, int64_t num_tables,
                        const std::function<int64_t(int32_t)>& table_rows) {
  const auto n = static_cast<int64_t>(slots.size());
  TIEMB_EXPECT(n > 0, "a lookup group needs at least one slot");
  const int64_t features = count_features(slots);
  TIEMB_EXPECT(features <= cfg.slot_num, "a lookup group reads ", features,
               " features (distinct id inputs), more than slot_num = ", cfg.slot_num);
  for (int64_t s = 0; s < n; ++s) {
    const slot_config& sc = slots[static_cast<size_t>(s)];
    TIEMB_EXPECT(sc.table >= 0 && sc.table < num_tables, "slot ", s, ": table id ", sc.table,
                 " does not exist (engine has ", num_tables, " tables)");
    TIEMB_EXPECT(sc.comb == combiner::sum || sc.comb == combiner::mean || sc.comb == combiner::sqrtn, "slot ", s,
                 ": unknown combiner ", static_cast<int>(sc.comb));
    TIEMB_EXPECT(sc.mode == row_mode::plain || sc.mode == row_mode::safe || sc.mode == row_mode::gather, "slot ", s,
                 ": unknown row mode ", static_cast<int>(sc.mode));
    TIEMB_EXPECT(sc.output_dtype == dtype::float32 || sc.output_dtype == dtype::float16, "slot ", s,
                 ": output dtype must be float32 or float16, got ", to_string(sc.output_dtype));
    if (sc.mode != row_mode::safe) {
      TIEMB_EXPECT(sc.default_id == -1, "slot ", s, ": default_id is only meaningful in safe mode, got ",
                   sc.default_id);
    } else {
      const int64_t rows = table_rows(sc.table);
      TIEMB_EXPECT(sc.default_id >= -1 && sc.default_id < rows, "slot ", s, ": default_id ", sc.default_id,
                   " is out of range [0, ", rows, ") of table ", sc.table);
    }
  }
}
namespace {

int64_t index_at(const void* p, dtype type, int64_t i) {
  return type == dtype::int32 ? static_cast<int64_t>(static_cast<const int32_t*>(p)[i])
                              : static_cast<const int64_t*>(p)[i];
}

// Validates ids against the table range; plain mode rejects negatives too,
// safe mode prunes them, wrapping gathers read rows + id down to -rows.
template <class IdT>
void check_ids(const IdT* ids, int64_t n, int64_t stride, int64_t table_rows, bool allow_negative, bool wrap,
               int64_t slot, int32_t table_id) {
  // The common case first: the smallest and largest id, a loop without
  // branches the compiler vectorises, in range. Only a batch that fails it
  // is scanned again, for the first bad id and its index (the message).
  int64_t lo = 0;
  int64_t hi = -1;
  if (n > 0) {
    lo = hi = static_cast<int64_t>(ids[0]);
    for (int64_t i = 1; i < n; ++i) {
      const int64_t id = static_cast<int64_t>(ids[i * stride]);
      lo = id < lo ? id : lo;
      hi = id > hi ? id : hi;
    }
  }
  // Safe mode prunes every negative id; wrapping gathers accept down to -rows.
  const int64_t lowest = allow_negative ? INT64_MIN : (wrap ? -table_rows : 0);
  if (lo >= lowest && hi < table_rows) return;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = static_cast<int64_t>(ids[i * stride]);
    if (wrap && id < 0 && id >= -table_rows) continue;
    if (id >= table_rows || (id < 0 && !allow_negative)) {
      throw error(detail::concat("slot ", slot, ": ids[", i, "] = ", id, " is out of range [",
                                 wrap ? -table_rows : 0, ", ", table_rows, ") of table ", table_id));
    }
  }
}

// The dense id matrix form: a safe slot whose rows are the rows of a padded
// [num_rows, ids_per_row] id matrix (ids < 0 are padding), no segment ids.
void check_dense_matrix_shape(const engine_config& cfg, const slot_config& sc, const slot_request& req, int64_t s) {
  const int64_t k = req.ids_per_row;
  TIEMB_EXPECT(sc.mode == row_mode::safe, "slot ", s, ": the dense id matrix form (ids_per_row = ", k,
               ") is a safe-mode form, but the slot's mode is not safe");
  TIEMB_EXPECT(k > 0, "slot ", s, ": ids_per_row must be >= 0, got ", k);
  TIEMB_EXPECT(k <= cfg.max_nnz, "slot ", s, ": ids_per_row = ", k, " exceeds max_nnz = ", cfg.max_nnz);
  TIEMB_EXPECT(req.id_stride >= 1, "slot ", s, ": id_stride must be >= 1, got ", req.id_stride);
  TIEMB_EXPECT(req.row_stride == 0 || req.row_stride >= (k - 1) * req.id_stride + 1, "slot ", s, ": row_stride = ",
               req.row_stride, " is smaller than a row of ", k, " ids at id_stride ", req.id_stride);
  TIEMB_EXPECT(req.segments == nullptr && req.num_segments == 0, "slot ", s,
               ": the dense id matrix form takes no segment_ids or row_offsets (row r owns matrix row r)");
  TIEMB_EXPECT(req.num_rows >= 0, "slot ", s, ": the dense id matrix form needs num_rows (the matrix's rows), got ",
               req.num_rows);
  TIEMB_EXPECT(req.num_rows <= cfg.max_batch_size, "slot ", s, ": ", req.num_rows,
               " output rows exceed max_batch_size = ", cfg.max_batch_size);
  TIEMB_EXPECT(req.num_ids == req.num_rows * k, "slot ", s, ": num_ids = ", req.num_ids, " but a [", req.num_rows,
               ", ", k, "] id matrix holds ", req.num_rows * k);
  if (req.weights != nullptr) {
    TIEMB_EXPECT(req.num_weights == req.num_ids, "slot ", s, ": weights has ", req.num_weights,
                 " entries but the id matrix has ", req.num_ids);
  }
}

// Ids of the dense matrix form: in range, or negative (padding).
template <class IdT>
void check_matrix_ids(const IdT* ids, const slot_request& req, int64_t table_rows, int64_t slot, int32_t table_id) {
  const int64_t k = req.ids_per_row;
  const int64_t row_stride = req.row_stride > 0 ? req.row_stride : k * req.id_stride;
  for (int64_t r = 0; r < req.num_rows; ++r) {
    for (int64_t j = 0; j < k; ++j) {
      const int64_t id = static_cast<int64_t>(ids[r * row_stride + j * req.id_stride]);
      if (id >= table_rows) {
        throw error(detail::concat("slot ", slot, ": ids[", r, ", ", j, "] = ", id, " is out of range [0, ",
                                   table_rows, ") of table ", table_id, " (ids < 0 are padding)"));
      }
    }
  }
}

}  // namespace

void check_slot_shape(const engine_config& cfg, const slot_config& sc, const slot_request& req,
                      int64_t s) {
  const bool safe = sc.mode == row_mode::safe;
  const int64_t n = req.num_ids;

  TIEMB_EXPECT(req.id_type == dtype::int32 || req.id_type == dtype::int64, "slot ", s,
               ": ids must be int32 or int64, got ", to_string(req.id_type));
  TIEMB_EXPECT(req.segment_type == dtype::int32 || req.segment_type == dtype::int64, "slot ", s,
               ": ", req.segments_are_offsets ? "row_offsets" : "segment_ids",
               " must be int32 or int64, got ", to_string(req.segment_type));
  if (req.weights != nullptr) {
    TIEMB_EXPECT(req.num_weights == n, "slot ", s, ": weights has ", req.num_weights,
                 " entries but ids has ", n);
  }
  if (req.ids_per_row != 0) {
    check_dense_matrix_shape(cfg, sc, req, s);
    return;
  }
  if (sc.mode == row_mode::gather) {
    TIEMB_EXPECT(req.segments == nullptr && req.num_segments == 0, "slot ", s,
                 ": gather mode takes no segment_ids or row_offsets (every id is its own row)");
    TIEMB_EXPECT(req.weights == nullptr, "slot ", s, ": gather mode takes no weights");
    // [samples, k] ids: samples against max_batch_size, k against max_nnz.
    const int64_t samples = req.samples >= 0 ? req.samples : n;
    TIEMB_EXPECT(samples <= cfg.max_batch_size, "slot ", s, ": ", samples,
                 " samples exceed max_batch_size = ", cfg.max_batch_size);
    TIEMB_EXPECT(samples > 0 ? n % samples == 0 : n == 0, "slot ", s, ": ", n, " ids do not split evenly over ",
                 samples, " samples");
    const int64_t per_sample = samples > 0 ? n / samples : 0;
    TIEMB_EXPECT(per_sample <= cfg.max_nnz, "slot ", s, ": every sample has ", per_sample,
                 " ids, more than max_nnz = ", cfg.max_nnz);
    return;
  }
  TIEMB_EXPECT(n <= cfg.max_ids_per_slot(), "slot ", s, ": ", n,
               " ids exceed max_batch_size * max_nnz = ", cfg.max_batch_size, " * ", cfg.max_nnz,
               " = ", cfg.max_ids_per_slot());
  TIEMB_EXPECT(req.id_stride >= 1, "slot ", s, ": id_stride must be >= 1, got ", req.id_stride);
  TIEMB_EXPECT(!sc.wrap_negative || sc.mode == row_mode::gather, "slot ", s,
               ": wrap_negative is a gather-mode option");
  TIEMB_EXPECT(req.segment_stride >= 1 && (req.segment_stride == 1 || !req.segments_are_offsets), "slot ", s,
               ": segment_stride must be >= 1, and 1 for row_offsets; got ", req.segment_stride);
  // An empty device array may have a null address: only ids need segments.
  TIEMB_EXPECT(req.segments != nullptr || (n == 0 && !req.segments_are_offsets), "slot ", s,
               ": needs segment_ids or row_offsets");

  if (req.segments_are_offsets) {
    const int64_t m = req.num_segments;
    TIEMB_EXPECT(m >= 1, "slot ", s, ": row_offsets needs at least one entry (rows + 1), got 0");
    TIEMB_EXPECT(m - 1 <= cfg.max_batch_size, "slot ", s, ": row_offsets describes ", m - 1,
                 " rows, more than max_batch_size = ", cfg.max_batch_size);
    TIEMB_EXPECT(req.num_rows < 0 || req.num_rows == m - 1, "slot ", s, ": num_rows = ",
                 req.num_rows, " disagrees with row_offsets, which describes ", m - 1, " rows");
  } else {
    TIEMB_EXPECT(req.num_segments == n, "slot ", s, ": segment_ids has ", req.num_segments,
                 " entries but ids has ", n);
    if (safe) {
      TIEMB_EXPECT(req.num_rows >= 0, "slot ", s,
                   ": safe mode with segment_ids needs num_rows (the batch size)");
      TIEMB_EXPECT(req.num_rows <= cfg.max_batch_size, "slot ", s, ": ", req.num_rows,
                   " output rows exceed max_batch_size = ", cfg.max_batch_size);
    } else {
      TIEMB_EXPECT(req.num_rows < 0, "slot ", s,
                   ": num_rows is only accepted in safe mode; plain mode outputs max(segment_ids) + 1 rows");
    }
  }
}

int64_t check_slot(const engine_config& cfg, const slot_config& sc, int64_t table_rows,
                   const slot_request& req, int64_t s, int64_t* offsets) {
  check_slot_shape(cfg, sc, req, s);
  if (req.ids_per_row != 0) {
    if (req.id_type == dtype::int32) {
      check_matrix_ids(static_cast<const int32_t*>(req.ids), req, table_rows, s, sc.table);
    } else {
      check_matrix_ids(static_cast<const int64_t*>(req.ids), req, table_rows, s, sc.table);
    }
    return req.num_rows;
  }
  const bool safe = sc.mode == row_mode::safe;
  const int64_t n = req.num_ids;
  int64_t rows = 0;
  if (sc.mode == row_mode::gather) {
    rows = n;  // one row per id; offsets are implicit
  } else if (req.segments_are_offsets) {
    const int64_t m = req.num_segments;
    TIEMB_EXPECT(index_at(req.segments, req.segment_type, 0) == 0, "slot ", s,
                 ": row_offsets[0] must be 0, got ", index_at(req.segments, req.segment_type, 0));
    int64_t last_nonempty = -1;
    int64_t prev = 0;
    if (offsets != nullptr) offsets[0] = 0;
    for (int64_t r = 1; r < m; ++r) {
      const int64_t o = index_at(req.segments, req.segment_type, r);
      TIEMB_EXPECT(o >= prev, "slot ", s, ": row_offsets must be non-decreasing, but row_offsets[",
                   r, "] = ", o, " < row_offsets[", r - 1, "] = ", prev);
      TIEMB_EXPECT(o - prev <= cfg.max_nnz, "slot ", s, ": sample ", r - 1, " has ", o - prev,
                   " ids, more than max_nnz = ", cfg.max_nnz);
      if (o > prev) last_nonempty = r - 1;
      if (offsets != nullptr) offsets[r] = o;
      prev = o;
    }
    TIEMB_EXPECT(prev == n, "slot ", s, ": row_offsets ends at ", prev, " but ids has ", n,
                 " entries");
    // Plain mode follows tf.nn.embedding_lookup_sparse: trailing empty rows
    // are not part of the output.
    rows = safe ? m - 1 : last_nonempty + 1;
  } else {
    rows = safe ? req.num_rows
                : (n == 0 ? 0 : index_at(req.segments, req.segment_type, (n - 1) * req.segment_stride) + 1);
    TIEMB_EXPECT(rows <= cfg.max_batch_size, "slot ", s, ": ", rows,
                 " output rows exceed max_batch_size = ", cfg.max_batch_size);
    int64_t prev = 0;
    int64_t r = 0;  // next row whose start offset is unset
    int64_t run = 0;  // ids of sample `prev` so far
    if (offsets != nullptr) offsets[0] = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t seg = index_at(req.segments, req.segment_type, i * req.segment_stride);
      run = (i > 0 && seg == prev) ? run + 1 : 1;
      if (run > cfg.max_nnz) {  // error path only: count the sample's ids for the message
        int64_t count = run;
        while (i + count - run + 1 < n &&
               index_at(req.segments, req.segment_type, (i + count - run + 1) * req.segment_stride) == seg) {
          ++count;
        }
        throw error(detail::concat("slot ", s, ": sample ", seg, " has ", count, " ids, more than max_nnz = ",
                                   cfg.max_nnz));
      }
      TIEMB_EXPECT(seg >= 0, "slot ", s, ": segment_ids[", i, "] = ", seg, " is negative");
      TIEMB_EXPECT(seg >= prev, "slot ", s, ": segment_ids must be sorted, but segment_ids[", i,
                   "] = ", seg, " < segment_ids[", i - 1, "] = ", prev);
      // Plain mode takes its row count from the last id: a larger one before
      // it means the ids are out of order.
      TIEMB_EXPECT(seg < rows || safe, "slot ", s, ": segment_ids must be sorted, but segment_ids[", i, "] = ", seg,
                   " > segment_ids[", n - 1, "] = ", rows - 1);
      TIEMB_EXPECT(seg < rows, "slot ", s, ": segment_ids[", i, "] = ", seg,
                   " is out of range for num_rows = ", rows);
      if (offsets != nullptr) {
        while (r < seg) offsets[++r] = i;
      }
      prev = seg;
    }
    if (offsets != nullptr) {
      while (r < rows) offsets[++r] = n;
    }
  }

  if (req.id_type == dtype::int32) {
    check_ids(static_cast<const int32_t*>(req.ids), n, req.id_stride, table_rows, safe, sc.wrap_negative, s, sc.table);
  } else {
    check_ids(static_cast<const int64_t*>(req.ids), n, req.id_stride, table_rows, safe, sc.wrap_negative, s, sc.table);
  }
  return rows;
}

}  // namespace tiemb
