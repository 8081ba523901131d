// pybind11 bindings: exposes the core as tiemb._C. Only argument conversion
// and checks that need Python objects live here; everything else is in csrc/.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "../csrc/core/config.h"
#include "../csrc/core/error.h"
#include "../csrc/cpu/cpu_engine.h"
#include "../csrc/cuda/device_info.h"

namespace py = pybind11;
using namespace tiemb;

#ifndef TIEMB_VERSION
#define TIEMB_VERSION "0.0.0+unknown"
#endif
#ifndef TIEMB_TF_OPS_BUILT
#define TIEMB_TF_OPS_BUILT 0
#endif

namespace {

std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// Maps a numpy dtype onto the engine's; -1 for anything else.
int engine_dtype(const py::array& a) {
  const char kind = a.dtype().kind();
  const auto size = a.dtype().itemsize();
  if (kind == 'f' && size == 4) return static_cast<int>(dtype::float32);
  if (kind == 'f' && size == 2) return static_cast<int>(dtype::float16);
  if (kind == 'i' && size == 4) return static_cast<int>(dtype::int32);
  if (kind == 'i' && size == 8) return static_cast<int>(dtype::int64);
  return -1;
}

bool is_c_contiguous(const py::array& a) {
  return (a.flags() & py::array::c_style) != 0;
}

// Checks that `obj` is a 1-D, C-contiguous numpy array of an index type.
py::array index_array(const py::handle& obj, int64_t slot, const char* what) {
  TIEMB_EXPECT(py::isinstance<py::array>(obj), "slot ", slot, ": ", what,
               " must be a numpy array, got ", py::str(py::type::of(obj)).cast<std::string>());
  auto a = py::reinterpret_borrow<py::array>(obj);
  const int t = engine_dtype(a);
  TIEMB_EXPECT(t == static_cast<int>(dtype::int32) || t == static_cast<int>(dtype::int64), "slot ",
               slot, ": ", what, " must be int32 or int64, got ", dtype_name(a));
  TIEMB_EXPECT(a.ndim() == 1, "slot ", slot, ": ", what, " must be 1-D, got ", a.ndim(), "-D");
  TIEMB_EXPECT(is_c_contiguous(a), "slot ", slot, ": ", what,
               " must be C-contiguous (use numpy.ascontiguousarray)");
  return a;
}

class py_cpu_engine {
 public:
  py_cpu_engine(int64_t max_batch_size, int64_t slot_num, int64_t max_nnz, int32_t num_threads)
      : engine_(engine_config{max_batch_size, slot_num, max_nnz, num_threads}) {}

  int32_t add_table(const py::array& weights) {
    const int t = engine_dtype(weights);
    TIEMB_EXPECT(t == static_cast<int>(dtype::float32) || t == static_cast<int>(dtype::float16),
                 "table must be float32 or float16, got ", dtype_name(weights));
    TIEMB_EXPECT(weights.ndim() == 2, "table must be 2-D (rows x dim), got ", weights.ndim(), "-D");
    TIEMB_EXPECT(is_c_contiguous(weights), "table must be C-contiguous (use numpy.ascontiguousarray)");
    return engine_.add_table(static_cast<dtype>(t), weights.shape(0), weights.shape(1),
                             weights.data());
  }

  py::tuple table_info(int32_t id) const {
    const table& t = engine_.tables().at(id);
    return py::make_tuple(t.rows(), t.dim(), to_string(t.type()));
  }

  int32_t num_tables() const { return engine_.tables().size(); }
  int num_threads() { return engine_.pool().num_threads(); }
  cpu_engine& engine() { return engine_; }

 private:
  cpu_engine engine_;
};

class py_cpu_lookup_group {
 public:
  py_cpu_lookup_group(py_cpu_engine& engine, const std::vector<int32_t>& tables,
                      const std::vector<int32_t>& combiners, const std::vector<int32_t>& modes,
                      const std::vector<int64_t>& default_ids,
                      const std::vector<int32_t>& output_dtypes)
      : group_(engine.engine(), make_slots(tables, combiners, modes, default_ids, output_dtypes)) {}

  py::list lookup(const py::list& ids, const py::list& segments, bool segments_are_offsets,
                  const py::list& weights, const std::vector<int64_t>& num_rows) {
    const auto n = static_cast<int64_t>(ids.size());
    TIEMB_EXPECT(n == group_.num_slots(), "lookup got ids for ", n, " slots but the group has ",
                 group_.num_slots());
    const char* seg_name = segments_are_offsets ? "row_offsets" : "segment_ids";
    TIEMB_EXPECT(static_cast<int64_t>(segments.size()) == n, seg_name, " has ", segments.size(),
                 " entries but ids has ", n);
    TIEMB_EXPECT(static_cast<int64_t>(weights.size()) == n, "weights has ", weights.size(),
                 " entries but ids has ", n);
    TIEMB_EXPECT(static_cast<int64_t>(num_rows.size()) == n, "num_rows has ", num_rows.size(),
                 " entries but ids has ", n);

    std::vector<slot_request> req(static_cast<size_t>(n));
    for (int64_t s = 0; s < n; ++s) {
      slot_request& r = req[static_cast<size_t>(s)];
      py::array a = index_array(ids[static_cast<size_t>(s)], s, "ids");
      r.ids = a.data();
      r.id_type = static_cast<dtype>(engine_dtype(a));
      r.num_ids = a.shape(0);
      py::array g = index_array(segments[static_cast<size_t>(s)], s, seg_name);
      r.segments = g.data();
      r.segment_type = static_cast<dtype>(engine_dtype(g));
      r.num_segments = g.shape(0);
      r.segments_are_offsets = segments_are_offsets;
      py::handle w = weights[static_cast<size_t>(s)];
      if (!w.is_none()) {
        TIEMB_EXPECT(py::isinstance<py::array>(w), "slot ", s, ": weights must be a numpy array or None");
        auto wa = py::reinterpret_borrow<py::array>(w);
        TIEMB_EXPECT(engine_dtype(wa) == static_cast<int>(dtype::float32), "slot ", s,
                     ": weights must be float32, got ", dtype_name(wa));
        TIEMB_EXPECT(wa.ndim() == 1, "slot ", s, ": weights must be 1-D, got ", wa.ndim(), "-D");
        TIEMB_EXPECT(is_c_contiguous(wa), "slot ", s,
                     ": weights must be C-contiguous (use numpy.ascontiguousarray)");
        r.weights = static_cast<const float*>(wa.data());
        r.num_weights = wa.shape(0);
      }
      r.num_rows = num_rows[static_cast<size_t>(s)];
    }

    py::list out(static_cast<size_t>(n));
    std::vector<void*> out_ptrs(static_cast<size_t>(n));
    {
      py::gil_scoped_release release;
      group_.lookup(req.data(), n, [&](const int64_t* rows) {
        py::gil_scoped_acquire acquire;
        for (int64_t s = 0; s < n; ++s) {
          const bool half = group_.slot(s).output_dtype == dtype::float16;
          py::array a = half ? py::array(py::dtype("float16"),
                                         std::vector<py::ssize_t>{rows[s], group_.dim(s)})
                             : py::array(py::dtype::of<float>(),
                                         std::vector<py::ssize_t>{rows[s], group_.dim(s)});
          out_ptrs[static_cast<size_t>(s)] = a.mutable_data();
          out[static_cast<size_t>(s)] = std::move(a);
        }
        return static_cast<void* const*>(out_ptrs.data());
      });
    }
    return out;
  }

 private:
  static std::vector<slot_config> make_slots(const std::vector<int32_t>& tables,
                                             const std::vector<int32_t>& combiners,
                                             const std::vector<int32_t>& modes,
                                             const std::vector<int64_t>& default_ids,
                                             const std::vector<int32_t>& output_dtypes) {
    const size_t n = tables.size();
    TIEMB_EXPECT(combiners.size() == n && modes.size() == n && default_ids.size() == n &&
                     output_dtypes.size() == n,
                 "slot settings must all have one entry per slot");
    std::vector<slot_config> slots(n);
    for (size_t s = 0; s < n; ++s) {
      slots[s] = slot_config{tables[s], static_cast<combiner>(combiners[s]),
                             static_cast<row_mode>(modes[s]), default_ids[s],
                             static_cast<dtype>(output_dtypes[s])};
    }
    return slots;
  }

  cpu_lookup_group group_;
};

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "tiemb core: fused embedding lookups (CPU and CUDA) and the tiered cache";
  m.attr("__version__") = TIEMB_VERSION;
  py::register_exception<tiemb::error>(m, "TiembError", PyExc_ValueError);

  m.def("cuda_compiled", &cuda_compiled, "True when this build compiled the CUDA sources.");
  m.def("cuda_device_count", &cuda_device_count, "Usable CUDA devices (0 without driver or GPU).");
  m.def("cuda_device_name", &cuda_device_name, py::arg("ordinal") = 0);
  m.def("build_info", [] {
    py::dict d;
    d["version"] = TIEMB_VERSION;
    d["cuda_compiled"] = cuda_compiled();
    d["cuda_runtime_version"] = cuda_runtime_version();
    d["cuda_architectures"] = cuda_architectures();
    d["tf_ops_built"] = static_cast<bool>(TIEMB_TF_OPS_BUILT);
    return d;
  });

  py::class_<py_cpu_engine>(m, "CpuEngine")
      .def(py::init<int64_t, int64_t, int64_t, int32_t>(), py::arg("max_batch_size"),
           py::arg("slot_num"), py::arg("max_nnz"), py::arg("num_threads") = 0)
      .def("add_table", &py_cpu_engine::add_table, py::arg("weights"))
      .def("table_info", &py_cpu_engine::table_info, py::arg("table"))
      .def_property_readonly("num_tables", &py_cpu_engine::num_tables)
      .def_property_readonly("num_threads", &py_cpu_engine::num_threads);

  py::class_<py_cpu_lookup_group>(m, "CpuLookupGroup")
      .def(py::init<py_cpu_engine&, const std::vector<int32_t>&, const std::vector<int32_t>&,
                    const std::vector<int32_t>&, const std::vector<int64_t>&,
                    const std::vector<int32_t>&>(),
           py::arg("engine"), py::arg("tables"), py::arg("combiners"), py::arg("modes"),
           py::arg("default_ids"), py::arg("output_dtypes"), py::keep_alive<1, 2>())
      .def("lookup", &py_cpu_lookup_group::lookup, py::arg("ids"), py::arg("segments"),
           py::arg("segments_are_offsets"), py::arg("weights"), py::arg("num_rows"));
}
