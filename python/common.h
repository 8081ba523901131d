// Helpers shared by the binding files.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "../csrc/core/config.h"
#include "../csrc/core/request.h"

#include "../csrc/core/error.h"
#include "../csrc/core/types.h"

namespace tiemb {
namespace bind {

namespace py = pybind11;

/// {"name": count, ...}: the stats dicts of engines, tables and clients.
inline py::dict counters(std::initializer_list<std::pair<const char*, int64_t>> items) {
  py::dict d;
  for (const auto& [name, value] : items) d[name] = value;
  return d;
}

inline std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

/// Maps a numpy dtype onto the engine's; -1 for anything else. Asks numpy
/// (PyArray_EquivTypes through array_t, and dtype equality) rather than
/// reading descriptor fields, whose layout changed in numpy 2.
inline int engine_dtype(const py::array& a) {
  if (py::isinstance<py::array_t<float>>(a)) return static_cast<int>(dtype::float32);
  if (py::isinstance<py::array_t<int64_t>>(a)) return static_cast<int>(dtype::int64);
  if (py::isinstance<py::array_t<int32_t>>(a)) return static_cast<int>(dtype::int32);
  static const py::object half = py::module_::import("numpy").attr("dtype")("float16");
  if (a.dtype().equal(half)) return static_cast<int>(dtype::float16);
  return -1;
}

inline bool is_c_contiguous(const py::array& a) { return (a.flags() & py::array::c_style) != 0; }

/// Checks that `obj` is a 1-D, C-contiguous numpy array of an index type.
inline py::array index_array(const py::handle& obj, int64_t slot, const char* what) {
  TIEMB_EXPECT(py::isinstance<py::array>(obj), "slot ", slot, ": ", what, " must be a numpy array, got ",
               py::str(py::type::of(obj)).cast<std::string>());
  auto a = py::reinterpret_borrow<py::array>(obj);
  const int t = engine_dtype(a);
  TIEMB_EXPECT(t == static_cast<int>(dtype::int32) || t == static_cast<int>(dtype::int64), "slot ", slot, ": ",
               what, " must be int32 or int64, got ", dtype_name(a));
  TIEMB_EXPECT(a.ndim() == 1, "slot ", slot, ": ", what, " must be 1-D, got ", a.ndim(), "-D");
  TIEMB_EXPECT(is_c_contiguous(a), "slot ", slot, ": ", what, " must be C-contiguous (use numpy.ascontiguousarray)");
  return a;
}

/// Checks a weights entry (None or a 1-D C-contiguous float32 array).
inline const float* weights_array(const py::handle& w, int64_t slot, int64_t* count) {
  if (w.is_none()) {
    *count = 0;
    return nullptr;
  }
  TIEMB_EXPECT(py::isinstance<py::array>(w), "slot ", slot, ": weights must be a numpy array or None");
  auto a = py::reinterpret_borrow<py::array>(w);
  TIEMB_EXPECT(engine_dtype(a) == static_cast<int>(dtype::float32), "slot ", slot,
               ": weights must be float32, got ", dtype_name(a));
  TIEMB_EXPECT(a.ndim() == 1, "slot ", slot, ": weights must be 1-D, got ", a.ndim(), "-D");
  TIEMB_EXPECT(is_c_contiguous(a), "slot ", slot, ": weights must be C-contiguous (use numpy.ascontiguousarray)");
  *count = a.shape(0);
  return static_cast<const float*>(a.data());
}

/// A new rows x dim float32 or float16 numpy array.
inline py::array new_output(bool half, int64_t rows, int64_t dim) {
  return half ? py::array(py::dtype("float16"), std::vector<py::ssize_t>{rows, dim})
              : py::array(py::dtype::of<float>(), std::vector<py::ssize_t>{rows, dim});
}

/// Slot settings as they cross from Python (parallel lists of ints, the
/// values of csrc/core/types.h), checked for equal lengths.
inline std::vector<slot_config> make_slots(const std::vector<int32_t>& tables, const std::vector<int32_t>& combiners,
                                           const std::vector<int32_t>& modes, const std::vector<int64_t>& default_ids,
                                           const std::vector<int32_t>& output_dtypes,
                                           const std::vector<int32_t>& features,
                                           const std::vector<bool>& wrap_negative) {
  const size_t n = tables.size();
  TIEMB_EXPECT(combiners.size() == n && modes.size() == n && default_ids.size() == n && output_dtypes.size() == n &&
                   (features.empty() || features.size() == n) && (wrap_negative.empty() || wrap_negative.size() == n),
               "slot settings must all have one entry per slot");
  std::vector<slot_config> slots(n);
  for (size_t s = 0; s < n; ++s) {
    slots[s] = slot_config{tables[s], static_cast<combiner>(combiners[s]), static_cast<row_mode>(modes[s]),
                           default_ids[s], static_cast<dtype>(output_dtypes[s])};
    slots[s].feature = features.empty() ? -1 : features[s];
    slots[s].wrap_negative = !wrap_negative.empty() && wrap_negative[s];
  }
  return slots;
}

/// Checks per-slot numpy inputs (lists with one entry per slot) and returns
/// views of them; the arrays stay owned by the caller's lists.
inline std::vector<slot_request> numpy_requests(const py::list& ids, const py::list& segments,
                                                bool segments_are_offsets, const py::list& weights,
                                                const std::vector<int64_t>& num_rows,
                                                const std::vector<int64_t>& samples = {}) {
  const auto n = static_cast<int64_t>(ids.size());
  const char* seg_name = segments_are_offsets ? "row_offsets" : "segment_ids";
  TIEMB_EXPECT(static_cast<int64_t>(segments.size()) == n, seg_name, " has ", segments.size(),
               " entries but ids has ", n);
  TIEMB_EXPECT(static_cast<int64_t>(weights.size()) == n, "weights has ", weights.size(), " entries but ids has ", n);
  TIEMB_EXPECT(static_cast<int64_t>(num_rows.size()) == n, "num_rows has ", num_rows.size(),
               " entries but ids has ", n);
  std::vector<slot_request> req(static_cast<size_t>(n));
  for (int64_t s = 0; s < n; ++s) {
    const auto i = static_cast<size_t>(s);
    slot_request& r = req[i];
    // A 2-D ids array without segments: the dense id matrix form (safe mode,
    // ids < 0 are padding), one output row per matrix row.
    py::object id_obj = py::reinterpret_borrow<py::object>(ids[i]);
    int64_t matrix_rows = -1;
    if (segments[i].is_none() && py::isinstance<py::array>(id_obj) &&
        py::reinterpret_borrow<py::array>(id_obj).ndim() == 2) {
      auto m = py::reinterpret_borrow<py::array>(id_obj);
      TIEMB_EXPECT(is_c_contiguous(m), "slot ", s, ": ids must be C-contiguous (use numpy.ascontiguousarray)");
      matrix_rows = m.shape(0);
      r.ids_per_row = m.shape(1);
      id_obj = m.attr("reshape")(-1);  // a view: the data stays the caller's
    }
    py::array a = index_array(id_obj, s, "ids");
    r.ids = a.data();
    r.id_type = static_cast<dtype>(engine_dtype(a));
    r.num_ids = a.shape(0);
    if (!segments[i].is_none()) {  // None: a gather-mode slot
      py::array g = index_array(segments[i], s, seg_name);
      r.segments = g.data();
      r.segment_type = static_cast<dtype>(engine_dtype(g));
      r.num_segments = g.shape(0);
    }
    r.segments_are_offsets = segments_are_offsets;
    r.weights = weights_array(weights[i], s, &r.num_weights);
    r.num_rows = num_rows[i] < 0 && matrix_rows >= 0 ? matrix_rows : num_rows[i];
    r.samples = i < samples.size() ? samples[i] : -1;
  }
  return req;
}

}  // namespace bind
}  // namespace tiemb
