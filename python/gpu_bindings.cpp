// Bindings of the GPU engine (compiled only with the CUDA part). Device
// arrays arrive from tiemb/gpu.py already checked, as (pointer, dtype, length)
// tuples taken from __cuda_array_interface__.
#include <pybind11/stl.h>

#include <mutex>

#include "../csrc/cuda/gpu_engine.h"
#include "../csrc/distributed/remote_table.h"
#include "../csrc/cuda/store_gpu_engine.h"
#include "common.h"

namespace py = pybind11;
using namespace tiemb;
using namespace tiemb::bind;

namespace {

// One slot's ids as a device view: the (address, dtype, count, id stride,
// ids per row, row stride) tuples gpu.py makes (lookups and prefetch).
void read_ids_view(const py::handle& view, slot_request& r) {
  auto i = view.cast<std::tuple<uintptr_t, int, int64_t, int64_t, int64_t, int64_t>>();
  r.ids = reinterpret_cast<const void*>(std::get<0>(i));
  r.id_type = static_cast<dtype>(std::get<1>(i));
  r.num_ids = std::get<2>(i);
  r.id_stride = std::get<3>(i);
  r.ids_per_row = std::get<4>(i);
  r.row_stride = std::get<5>(i);
}

// Per-slot device views, checked by tiemb/gpu.py: ids as (ptr, dtype code,
// count, element stride, ids per row, row stride), segments as (ptr, dtype
// code, count, element stride) or None (gather slots, dense id matrices),
// weights None or (ptr, count); samples per slot (gather) or empty.
std::vector<slot_request> device_requests(const py::list& ids, const py::list& segments, bool offsets,
                                          const py::list& weights, const std::vector<int64_t>& num_rows,
                                          const std::vector<int64_t>& samples) {
  const size_t n = ids.size();
  TIEMB_EXPECT(segments.size() == n && weights.size() == n && num_rows.size() == n &&
                   (samples.empty() || samples.size() == n),
               "ids, segments, weights and num_rows need one entry per slot");
  std::vector<slot_request> req(n);
  for (size_t s = 0; s < n; ++s) {
    slot_request& r = req[s];
    read_ids_view(ids[s], r);
    r.samples = samples.empty() ? -1 : samples[s];
    if (!segments[s].is_none()) {
      auto g = segments[s].cast<std::tuple<uintptr_t, int, int64_t, int64_t>>();
      r.segments = reinterpret_cast<const void*>(std::get<0>(g));
      r.segment_type = static_cast<dtype>(std::get<1>(g));
      r.num_segments = std::get<2>(g);
      r.segment_stride = std::get<3>(g);
    }
    r.segments_are_offsets = offsets;
    if (!weights[s].is_none()) {
      auto w = weights[s].cast<std::tuple<uintptr_t, int64_t>>();
      r.weights = reinterpret_cast<const float*>(std::get<0>(w));
      r.num_weights = std::get<1>(w);
    }
    r.num_rows = num_rows[s];
  }
  return req;
}

class py_gpu_engine {
 public:
  py_gpu_engine(int64_t max_batch_size, int64_t slot_num, int64_t max_nnz, int device)
      : engine_(std::make_shared<gpu_engine>(engine_config{max_batch_size, slot_num, max_nnz, 0}, device)) {}

  /// The engine the TensorFlow op's GPU kernel uses for a table store
  /// (shared per store and device; tiers from its tiemb_config.json).
  static py_gpu_engine from_store(const std::string& dir, int device) {
    const store_manifest* manifest = nullptr;
    py_gpu_engine e(shared_gpu_engine(dir, device, &manifest));
    e.tables_ = manifest->tables;
    return e;
  }
  const std::vector<std::string>& store_tables() const { return tables_; }

  int32_t add_table(const py::array& weights, double cache_percentage, double cpu_cache_percentage,
                    double hit_rate_threshold, const std::string& backing_file, bool host_zero_copy,
                    const py::object& profile_ids, bool admission_filter) {
    const int t = engine_dtype(weights);
    TIEMB_EXPECT(t == static_cast<int>(dtype::float32) || t == static_cast<int>(dtype::float16),
                 "table must be float32 or float16, got ", dtype_name(weights));
    TIEMB_EXPECT(weights.ndim() == 2, "table must be 2-D (rows x dim), got ", weights.ndim(), "-D");
    TIEMB_EXPECT(is_c_contiguous(weights), "table must be C-contiguous (use numpy.ascontiguousarray)");
    tier_config tiers{cache_percentage, cpu_cache_percentage, hit_rate_threshold, backing_file, host_zero_copy};
    tiers.admission_filter = admission_filter;
    const int64_t* prof = nullptr;
    int64_t nprof = 0;
    py::array_t<int64_t, py::array::c_style | py::array::forcecast> p;
    if (!profile_ids.is_none()) {
      p = py::array_t<int64_t, py::array::c_style | py::array::forcecast>(profile_ids);
      prof = p.data();
      nprof = p.size();
    }
    return engine_->add_table(static_cast<dtype>(t), weights.shape(0), weights.shape(1), weights.data(), tiers,
                             prof, nprof);
  }

  int32_t add_remote_table(std::shared_ptr<remote_table> remote, double cache_percentage, double hit_rate_threshold,
                           const py::object& profile_ids, bool admission_filter) {
    tier_config tiers{cache_percentage, 0.0, hit_rate_threshold, "", true};
    tiers.admission_filter = admission_filter;
    py::array_t<int64_t, py::array::c_style | py::array::forcecast> p;
    if (!profile_ids.is_none()) p = py::array_t<int64_t, py::array::c_style | py::array::forcecast>(profile_ids);
    py::gil_scoped_release release;  // reads the warm rows from the cluster
    return engine_->add_remote_table(std::move(remote), tiers, profile_ids.is_none() ? nullptr : p.data(),
                                     profile_ids.is_none() ? 0 : p.size());
  }

  py::dict stats(int32_t id) {
    table_stats s;
    {
      py::gil_scoped_release release;
      s = engine_->stats(id);
    }
    py::dict d;
    d["lookups"] = s.lookups;
    d["unique_ids"] = s.unique_ids;
    d["hits"] = s.hits;
    d["host_hits"] = s.host_hits;
    d["host_fetches"] = s.host_fetches;
    d["inserted"] = s.inserted;
    d["batches"] = s.batches;
    d["sync_inserts"] = s.sync_inserts;
    d["rows_gpu"] = s.rows_gpu;
    d["rows_host"] = s.rows_host;
    d["rows_file"] = s.rows_file;
    d["hit_rate"] = s.unique_ids > 0 ? static_cast<double>(s.hits) / static_cast<double>(s.unique_ids) : 0.0;
    d["backing_reads"] = s.backing_reads;
    return d;
  }

  py::tuple table_info(int32_t id) {
    const table_file_header h = engine_->shape(id);
    return py::make_tuple(h.rows, h.dim, to_string(h.type));
  }

  int32_t num_tables() const { return engine_->num_tables(); }
  gpu_engine& engine() { return *engine_; }
  uintptr_t address() const { return reinterpret_cast<uintptr_t>(engine_.get()); }

 private:
  explicit py_gpu_engine(std::shared_ptr<gpu_engine> e) : engine_(std::move(e)) {}
  std::shared_ptr<gpu_engine> engine_;
  std::vector<std::string> tables_;
};

class py_gpu_group;

/// A lookup whose inputs and outputs stay where they are between calls: run()
/// is one launch with no per-slot work in Python.
class prepared_lookup {
 public:
  prepared_lookup(py_gpu_group& group, std::vector<slot_request> req, std::vector<int64_t> rows,
                  std::vector<void*> outputs, uintptr_t stream)
      : group_(group), req_(std::move(req)), rows_(std::move(rows)), outputs_(std::move(outputs)), stream_(stream) {}
  void run();

 private:
  py_gpu_group& group_;
  std::vector<slot_request> req_;
  std::vector<int64_t> rows_;
  std::vector<void*> outputs_;
  uintptr_t stream_;
};

class py_gpu_group {
 public:
  py_gpu_group(py_gpu_engine& engine, const std::vector<int32_t>& tables, const std::vector<int32_t>& combiners,
               const std::vector<int32_t>& modes, const std::vector<int64_t>& default_ids,
               const std::vector<int32_t>& output_dtypes, const std::vector<int32_t>& features,
               const std::vector<bool>& wrap_negative)
      : group_(engine.engine(), make_slots(tables, combiners, modes, default_ids, output_dtypes, features,
                                           wrap_negative)) {}

  py::list lookup_host(const py::list& ids, const py::list& segments, bool offsets, const py::list& weights,
                       const std::vector<int64_t>& num_rows, const std::vector<int64_t>& samples) {
    const auto n = static_cast<int64_t>(ids.size());
    TIEMB_EXPECT(n == group_.num_slots(), "lookup got ids for ", n, " slots but the group has ", group_.num_slots());
    std::vector<slot_request> req = numpy_requests(ids, segments, offsets, weights, num_rows, samples);
    py::list out(static_cast<size_t>(n));
    std::vector<void*> ptrs(static_cast<size_t>(n));
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lk(mutex_);
    const int64_t* rows = group_.prepare_host(req.data(), n);
    {
      py::gil_scoped_acquire acquire;
      for (int64_t s = 0; s < n; ++s) {
        py::array a = new_output(group_.slot(s).output_dtype == dtype::float16, rows[s], group_.dim(s));
        ptrs[static_cast<size_t>(s)] = a.mutable_data();
        out[static_cast<size_t>(s)] = std::move(a);
      }
    }
    group_.run_host(req.data(), n, ptrs.data());
    return out;
  }

  std::vector<int64_t> device_rows(const py::list& ids, const py::list& segments, bool offsets,
                                   const py::list& weights, const std::vector<int64_t>& num_rows,
                                   const std::vector<int64_t>& samples, uintptr_t stream) {
    std::vector<slot_request> req = device_requests(ids, segments, offsets, weights, num_rows, samples);
    std::vector<int64_t> rows(req.size());
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lk(mutex_);
    group_.device_rows(req.data(), static_cast<int64_t>(req.size()), rows.data(), reinterpret_cast<void*>(stream));
    return rows;
  }

  prepared_lookup prepare(const py::list& ids, const py::list& segments, bool offsets, const py::list& weights,
                          const std::vector<int64_t>& num_rows, const std::vector<int64_t>& samples,
                          const std::vector<int64_t>& rows, const std::vector<uintptr_t>& outputs, uintptr_t stream) {
    std::vector<slot_request> req = device_requests(ids, segments, offsets, weights, num_rows, samples);
    TIEMB_EXPECT(rows.size() == req.size() && outputs.size() == req.size(),
                 "rows and outputs need one entry per slot");
    std::vector<void*> out(outputs.size());
    for (size_t s = 0; s < outputs.size(); ++s) out[s] = reinterpret_cast<void*>(outputs[s]);
    return prepared_lookup(*this, std::move(req), rows, std::move(out), stream);
  }

  void launch(const std::vector<slot_request>& req, const std::vector<int64_t>& rows,
              const std::vector<void*>& outputs, uintptr_t stream) {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lk(mutex_);
    group_.check(false);  // an error of an earlier, finished launch surfaces here (no wait)
    group_.launch(req.data(), static_cast<int64_t>(req.size()), rows.data(), outputs.data(),
                  reinterpret_cast<void*>(stream));
  }

  void check(bool wait) {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lk(mutex_);
    group_.check(wait);
  }

  // Issue 15: ids only, as device views (the ids tuples of device_requests).
  void prefetch(const py::list& ids, uintptr_t stream) {
    std::vector<slot_request> req(ids.size());
    for (size_t s = 0; s < ids.size(); ++s) {
      read_ids_view(ids[s], req[s]);
    }
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lk(mutex_);
    group_.prefetch(req.data(), static_cast<int64_t>(req.size()), reinterpret_cast<void*>(stream));
  }

  void wait_prefetch() {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lk(mutex_);
    group_.wait_prefetch();
  }

 private:
  gpu_lookup_group group_;
  std::mutex mutex_;
};

void prepared_lookup::run() { group_.launch(req_, rows_, outputs_, stream_); }

}  // namespace

void bind_gpu(py::module_& m) {
  py::class_<py_gpu_engine>(m, "GpuEngine")
      .def(py::init<int64_t, int64_t, int64_t, int>(), py::arg("max_batch_size"), py::arg("slot_num"),
           py::arg("max_nnz"), py::arg("device") = 0)
      .def("add_table", &py_gpu_engine::add_table, py::arg("weights"), py::arg("cache_percentage"),
           py::arg("cpu_cache_percentage"), py::arg("hit_rate_threshold"), py::arg("backing_file"),
           py::arg("host_zero_copy"), py::arg("profile_ids"), py::arg("admission_filter") = false)
      .def("add_remote_table", &py_gpu_engine::add_remote_table, py::arg("remote"), py::arg("cache_percentage"),
           py::arg("hit_rate_threshold"), py::arg("profile_ids") = py::none(), py::arg("admission_filter") = false,
           "A table in a Redis Cluster (a RemoteTable) under a GPU cache of cache_percentage of its rows; "
           "returns its id.")
      .def("stats", &py_gpu_engine::stats, py::arg("table"))
      .def("table_info", &py_gpu_engine::table_info, py::arg("table"))
      .def_property_readonly("num_tables", &py_gpu_engine::num_tables)
      .def_static("from_store", &py_gpu_engine::from_store, py::arg("store"), py::arg("device") = 0)
      .def_property_readonly("store_tables", &py_gpu_engine::store_tables)
      .def_property_readonly("address", &py_gpu_engine::address,
                             "The engine's address: its identity in this process (see live_store_engines).");

  py::class_<prepared_lookup>(m, "GpuPreparedLookup").def("run", &prepared_lookup::run);

  py::class_<py_gpu_group>(m, "GpuLookupGroup")
      .def(py::init<py_gpu_engine&, const std::vector<int32_t>&, const std::vector<int32_t>&,
                    const std::vector<int32_t>&, const std::vector<int64_t>&, const std::vector<int32_t>&,
                    const std::vector<int32_t>&, const std::vector<bool>&>(),
           py::arg("engine"), py::arg("tables"), py::arg("combiners"), py::arg("modes"), py::arg("default_ids"),
           py::arg("output_dtypes"), py::arg("features") = std::vector<int32_t>{},
           py::arg("wrap_negative") = std::vector<bool>{}, py::keep_alive<1, 2>())
      .def("lookup_host", &py_gpu_group::lookup_host)
      .def("device_rows", &py_gpu_group::device_rows)
      .def("prepare", &py_gpu_group::prepare, py::keep_alive<0, 1>())
      .def("check", &py_gpu_group::check, py::arg("wait"))
      .def("prefetch", &py_gpu_group::prefetch, py::arg("ids"), py::arg("stream"))
      .def("wait_prefetch", &py_gpu_group::wait_prefetch);
}
