// pybind11 bindings: exposes the core as tiemb._C. Only argument conversion
// and checks that need Python objects live here; everything else is in csrc/.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "../csrc/core/cache_sim.h"
#include "../csrc/core/config.h"
#include "../csrc/core/error.h"
#include "../csrc/core/table_file.h"
#include "../csrc/core/checksum.h"
#include "../csrc/core/table_store.h"
#include "../csrc/core/tier_config.h"
#include "../csrc/cpu/cpu_engine.h"
#include "../csrc/cpu/store_engine.h"
#include "../csrc/cuda/device_info.h"
#include "../csrc/distributed/remote_table.h"
#include "common.h"

namespace py = pybind11;
using namespace tiemb;
using namespace tiemb::bind;

#ifndef TIEMB_VERSION
#define TIEMB_VERSION "0.0.0+unknown"
#endif
#ifndef TIEMB_TF_GPU_KERNEL
#define TIEMB_TF_GPU_KERNEL 0
#endif
#ifndef TIEMB_TF_OPS_BUILT
#define TIEMB_TF_OPS_BUILT 0
#endif

namespace {

using id_array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

py::dict sim_counts(const cache_sim_counts& c) {
  py::dict d;
  d["batches"] = c.batches;
  d["lookups"] = c.lookups;
  d["unique_ids"] = c.unique_ids;
  d["hits"] = c.hits;
  d["host_hits"] = c.host_hits;
  d["backing_reads"] = c.backing_reads;
  d["inserted"] = c.inserted;
  d["rejected"] = c.rejected;
  return d;
}

std::unique_ptr<cache_simulator> new_simulator(int64_t rows, double cache_percentage, double cpu_cache_percentage,
                                               const py::object& profile, const std::string& policy) {
  tier_config c;
  c.cache_percentage = cache_percentage;
  c.cpu_cache_percentage = cpu_cache_percentage;
  const cache_policy p = parse_cache_policy(policy);
  if (profile.is_none()) return std::make_unique<cache_simulator>(rows, c, nullptr, 0, p);
  const auto ids = profile.cast<id_array>();
  return std::make_unique<cache_simulator>(rows, c, ids.data(), ids.size(), p);
}

// The CPU simulator of the GPU cache (csrc/core/cache_sim.h), for tiemb.advise.
void bind_cache_sim(py::module_& m) {
  py::class_<cache_simulator>(m, "CacheSimulator")
      .def(py::init(&new_simulator), py::arg("rows"), py::arg("cache_percentage"),
           py::arg("cpu_cache_percentage") = 1.0, py::arg("profile_ids") = py::none(), py::arg("policy") = "lru")
      .def("batch", [](cache_simulator& s, const id_array& ids) { s.batch(ids.data(), ids.size()); }, py::arg("ids"))
      .def_property_readonly("counts", [](const cache_simulator& s) { return sim_counts(s.counts()); })
      .def_property_readonly("keys", [](const cache_simulator& s) { return s.keys(); })
      .def_property_readonly("stamps", [](const cache_simulator& s) { return s.stamps(); })
      .def_property_readonly("cache_sets", [](const cache_simulator& s) { return s.sizes().cache_sets; });
  m.def("simulate_cache", [](int64_t rows, double cache_percentage, double cpu_cache_percentage,
                             const py::object& profile, const id_array& ids, const id_array& offsets,
                             const std::string& policy, int64_t warmup) {
    auto sim = new_simulator(rows, cache_percentage, cpu_cache_percentage, profile, policy);
    const int64_t* o = offsets.data();
    const int64_t nb = offsets.size() - 1;
    for (int64_t b = 0; b < nb; ++b) {
      TIEMB_EXPECT(o[b] >= 0 && o[b] <= o[b + 1] && o[b + 1] <= ids.size(), "batch offsets must rise within the ",
                   ids.size(), " ids, got offsets[", b, ":", b + 2, "] = ", o[b], ", ", o[b + 1]);
    }
    TIEMB_EXPECT(warmup >= 0 && warmup < std::max<int64_t>(nb, 1), "warmup must be in [0, ", nb,
                 ") batches, got ", warmup);
    cache_sim_counts warm;
    {
      py::gil_scoped_release release;
      for (int64_t b = 0; b < nb; ++b) {
        if (b == warmup) warm = sim->counts();
        sim->batch(ids.data() + o[b], o[b + 1] - o[b]);
      }
    }
    // Counted after the warm-up batches only.
    cache_sim_counts c = sim->counts();
    c.batches -= warm.batches;
    c.lookups -= warm.lookups;
    c.unique_ids -= warm.unique_ids;
    c.hits -= warm.hits;
    c.host_hits -= warm.host_hits;
    c.backing_reads -= warm.backing_reads;
    c.inserted -= warm.inserted;
    c.rejected -= warm.rejected;
    return sim_counts(c);
  }, py::arg("rows"), py::arg("cache_percentage"), py::arg("cpu_cache_percentage"), py::arg("profile_ids"),
     py::arg("ids"), py::arg("offsets"), py::arg("policy") = "lru", py::arg("warmup") = 0,
     "Counters of the GPU cache simulated over batches ids[offsets[b]:offsets[b+1]], counted after the first "
     "`warmup` batches.");
}

// A store description as Python sees it (tiemb.store.read_store).
py::dict store_dict(const store_manifest& mf) {
  py::dict d;
  d["max_batch_size"] = mf.config.max_batch_size;
  d["slot_num"] = mf.config.slot_num;
  d["max_nnz"] = mf.config.max_nnz;
  d["tables"] = mf.tables;
  d["files"] = mf.files;
  d["rows"] = mf.rows;
  d["dims"] = mf.dims;
  std::vector<std::string> dtypes;
  for (dtype t : mf.dtypes) dtypes.push_back(to_string(t));
  d["dtypes"] = dtypes;
  d["content_id"] = mf.content_id;
  d["checksums"] = mf.checksums;
  d["file_bytes"] = mf.file_bytes;
  py::dict tiers;
  tiers["cache_percentage"] = mf.tiers.cache_percentage;
  tiers["cpu_cache_percentage"] = mf.tiers.cpu_cache_percentage;
  tiers["hit_rate_threshold"] = mf.tiers.hit_rate_threshold;
  d["tiers"] = tiers;
  if (mf.has_distributed) {  // store.json's "distributed" object, as written (tiemb/distributed/store.py)
    const store_distributed& s = mf.distributed;
    py::dict dist, settings;
    dist["namespace"] = s.ns;
    dist["model"] = s.model;
    dist["cpu_cache_percentage"] = s.cpu_cache_percentage;
    settings["address"] = s.address;
    settings["timeout_ms"] = s.timeout_ms;
    settings["retries"] = s.retries;
    settings["refresh_seconds"] = s.refresh_seconds;
    dist["settings"] = settings;
    py::list tables;
    for (const auto& t : s.tables) {
      py::dict e;
      e["name"] = t.name;
      e["version"] = t.version;
      e["block_rows"] = t.block_rows;
      e["host_rows"] = t.host_rows;
      e["host_ids"] = t.host_ids;
      char crc[16];
      std::snprintf(crc, sizeof crc, "%08x", t.host_ids_checksum);
      e["host_ids_checksum"] = std::string(crc);
      tables.append(e);
    }
    dist["tables"] = tables;
    d["distributed"] = dist;
  }
  return d;
}

class py_cpu_engine {
 public:
  py_cpu_engine(int64_t max_batch_size, int64_t slot_num, int64_t max_nnz, int32_t num_threads)
      : engine_(std::make_shared<cpu_engine>(engine_config{max_batch_size, slot_num, max_nnz, num_threads})) {}

  /// The engine the TensorFlow op's CPU kernel serves a table store with
  /// (one per store per process, from the core's registry).
  static py_cpu_engine from_store(const std::string& dir) {
    const store_manifest* manifest = nullptr;
    std::shared_ptr<cpu_engine> shared;
    {
      py::gil_scoped_release release;  // reads every table
      shared = shared_cpu_engine(dir, &manifest);
    }
    py_cpu_engine e(std::move(shared));
    e.tables_ = manifest->tables;
    return e;
  }
  const std::vector<std::string>& store_tables() const { return tables_; }
  uintptr_t address() const { return reinterpret_cast<uintptr_t>(engine_.get()); }

  int32_t add_table(const py::array& weights) {
    const int t = engine_dtype(weights);
    TIEMB_EXPECT(t == static_cast<int>(dtype::float32) || t == static_cast<int>(dtype::float16),
                 "table must be float32 or float16, got ", dtype_name(weights));
    TIEMB_EXPECT(weights.ndim() == 2, "table must be 2-D (rows x dim), got ", weights.ndim(), "-D");
    TIEMB_EXPECT(is_c_contiguous(weights), "table must be C-contiguous (use numpy.ascontiguousarray)");
    return engine_->add_table(static_cast<dtype>(t), weights.shape(0), weights.shape(1),
                              weights.data());
  }

  py::tuple table_info(int32_t id) const {
    const table& t = engine_->tables().at(id);
    return py::make_tuple(engine_->table_rows(id), t.dim(), to_string(t.type()));
  }

  int32_t add_remote_table(std::shared_ptr<remote_table> remote) { return engine_->add_remote_table(std::move(remote)); }

  int32_t num_tables() const { return engine_->tables().size(); }
  int num_threads() { return engine_->pool().num_threads(); }
  cpu_engine& engine() { return *engine_; }

 private:
  explicit py_cpu_engine(std::shared_ptr<cpu_engine> engine) : engine_(std::move(engine)) {}

  std::shared_ptr<cpu_engine> engine_;
  std::vector<std::string> tables_;  // a store's tables in table-id order (from_store only)
};

class py_cpu_lookup_group {
 public:
  py_cpu_lookup_group(py_cpu_engine& engine, const std::vector<int32_t>& tables,
                      const std::vector<int32_t>& combiners, const std::vector<int32_t>& modes,
                      const std::vector<int64_t>& default_ids,
                      const std::vector<int32_t>& output_dtypes, const std::vector<int32_t>& features,
                      const std::vector<bool>& wrap_negative)
      : group_(engine.engine(), make_slots(tables, combiners, modes, default_ids, output_dtypes, features,
                                           wrap_negative)) {}

  py::list lookup(const py::list& ids, const py::list& segments, bool segments_are_offsets,
                  const py::list& weights, const std::vector<int64_t>& num_rows, const std::vector<int64_t>& samples) {
    const auto n = static_cast<int64_t>(ids.size());
    TIEMB_EXPECT(n == group_.num_slots(), "lookup got ids for ", n, " slots but the group has ",
                 group_.num_slots());
    std::vector<slot_request> req = numpy_requests(ids, segments, segments_are_offsets, weights, num_rows, samples);

    py::list out(static_cast<size_t>(n));
    std::vector<void*> out_ptrs(static_cast<size_t>(n));
    {
      py::gil_scoped_release release;
      group_.lookup(req.data(), n, [&](const int64_t* rows) {
        py::gil_scoped_acquire acquire;
        for (int64_t s = 0; s < n; ++s) {
          py::array a = new_output(group_.slot(s).output_dtype == dtype::float16, rows[s], group_.dim(s));
          out_ptrs[static_cast<size_t>(s)] = a.mutable_data();
          out[static_cast<size_t>(s)] = std::move(a);
        }
        return static_cast<void* const*>(out_ptrs.data());
      });
    }
    return out;
  }

  /// Seconds per call of `repeats` back-to-back lookups on the same inputs,
  /// outputs allocated once: the engine's own time, without Python's per-call
  /// argument handling (benchmarks compare it with the TensorFlow op's span).
  std::vector<double> time_lookup(const py::list& ids, const py::list& segments, bool segments_are_offsets,
                                  const py::list& weights, const std::vector<int64_t>& num_rows,
                                  const std::vector<int64_t>& samples, int repeats) {
    const auto n = static_cast<int64_t>(ids.size());
    TIEMB_EXPECT(n == group_.num_slots(), "lookup got ids for ", n, " slots but the group has ", group_.num_slots());
    TIEMB_EXPECT(repeats >= 1, "repeats must be >= 1, got ", repeats);
    std::vector<slot_request> req = numpy_requests(ids, segments, segments_are_offsets, weights, num_rows, samples);
    std::vector<std::vector<char>> buffers(static_cast<size_t>(n));
    std::vector<void*> ptrs(static_cast<size_t>(n));
    std::vector<double> seconds;
    py::gil_scoped_release release;
    for (int k = 0; k < repeats; ++k) {
      const auto t0 = std::chrono::steady_clock::now();
      group_.lookup(req.data(), n, [&](const int64_t* rows) {
        for (int64_t s = 0; s < n; ++s) {
          auto& b = buffers[static_cast<size_t>(s)];
          const size_t bytes = static_cast<size_t>(rows[s] * group_.dim(s)) * 4;
          if (b.size() < bytes) b.resize(bytes);   // first call only: same inputs every time
          ptrs[static_cast<size_t>(s)] = b.data();
        }
        return static_cast<void* const*>(ptrs.data());
      });
      seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return seconds;
  }

 private:

  cpu_lookup_group group_;
};

}  // namespace

#ifdef TIEMB_WITH_CUDA
void bind_gpu(py::module_& m);  // gpu_bindings.cpp
#endif
#ifdef TIEMB_WITH_XLA_FFI
void bind_xla_ffi(py::module_& m);  // xla_ffi.cpp
#endif
void bind_distributed(py::module_& m);  // distributed_bindings.cpp

PYBIND11_MODULE(_C, m) {
  m.doc() = "tiemb core: fused embedding lookups (CPU and CUDA) and the tiered cache";
  m.attr("__version__") = TIEMB_VERSION;
  py::register_exception<tiemb::error>(m, "TiembError", PyExc_ValueError);
  // Not the caller's input: RuntimeError, so that `except ValueError` around
  // bad input never swallows an out-of-memory or a failed launch.
  py::register_exception<tiemb::device_error>(m, "TiembDeviceError", PyExc_RuntimeError);
  m.def("_raise_device_error", [](const std::string& what, bool out_of_memory) {
    throw device_error(what, out_of_memory);
  }, py::arg("what"), py::arg("out_of_memory") = false,
     "Throws the core's device-error type (for tests of how it reaches Python).");

  m.def("cuda_compiled", &cuda_compiled, "True when this build compiled the CUDA sources.");
  m.def("cuda_device_count", &cuda_device_count, "Usable CUDA devices (0 without driver or GPU).");
  m.def("cuda_device_name", &cuda_device_name, py::arg("ordinal") = 0);
  m.def("cuda_current_device", &cuda_current_device, "The current CUDA device of this thread, -1 without one.");
  m.def("build_info", [] {
    py::dict d;
    d["version"] = TIEMB_VERSION;
    d["cuda_compiled"] = cuda_compiled();
    d["cuda_runtime_version"] = cuda_runtime_version();
    d["cuda_architectures"] = cuda_architectures();
    d["tf_ops_built"] = static_cast<bool>(TIEMB_TF_OPS_BUILT);
    d["tf_gpu_kernel"] = static_cast<bool>(TIEMB_TF_GPU_KERNEL);
    return d;
  });

  bind_distributed(m);

  py::class_<py_cpu_engine>(m, "CpuEngine")
      .def(py::init<int64_t, int64_t, int64_t, int32_t>(), py::arg("max_batch_size"),
           py::arg("slot_num"), py::arg("max_nnz"), py::arg("num_threads") = 0)
      .def("add_table", &py_cpu_engine::add_table, py::arg("weights"))
      .def("add_remote_table", &py_cpu_engine::add_remote_table, py::arg("remote"))
      .def("table_info", &py_cpu_engine::table_info, py::arg("table"))
      .def_property_readonly("num_tables", &py_cpu_engine::num_tables)
      .def_property_readonly("num_threads", &py_cpu_engine::num_threads)
      .def_static("from_store", &py_cpu_engine::from_store, py::arg("store"))
      .def_property_readonly("store_tables", &py_cpu_engine::store_tables)
      .def_property_readonly("address", &py_cpu_engine::address,
                             "The engine's address: its identity in this process (see live_store_engines).");
  m.def("live_store_engines", [] {
    py::list out;
    for (const store_engine_entry& e : live_store_engines()) {
      py::dict d;
      d["store"] = e.store;
      d["device"] = e.device;
      d["content_id"] = e.content_id;
      d["address"] = reinterpret_cast<uintptr_t>(e.engine);
      d["users"] = e.users;
      out.append(d);
    }
    return out;
  }, "The core's registry of store engines (one per store, device and content id per process): "
     "a list of dicts with store, device (-1 = CPU), content_id, address and users.");

  py::class_<py_cpu_lookup_group>(m, "CpuLookupGroup")
      .def(py::init<py_cpu_engine&, const std::vector<int32_t>&, const std::vector<int32_t>&,
                    const std::vector<int32_t>&, const std::vector<int64_t>&,
                    const std::vector<int32_t>&, const std::vector<int32_t>&, const std::vector<bool>&>(),
           py::arg("engine"), py::arg("tables"), py::arg("combiners"), py::arg("modes"),
           py::arg("default_ids"), py::arg("output_dtypes"), py::arg("features") = std::vector<int32_t>{},
           py::arg("wrap_negative") = std::vector<bool>{},
           py::keep_alive<1, 2>())
      .def("lookup", &py_cpu_lookup_group::lookup, py::arg("ids"), py::arg("segments"),
           py::arg("segments_are_offsets"), py::arg("weights"), py::arg("num_rows"),
           py::arg("samples") = std::vector<int64_t>{})
      .def("time_lookup", &py_cpu_lookup_group::time_lookup, py::arg("ids"), py::arg("segments"),
           py::arg("segments_are_offsets"), py::arg("weights"), py::arg("num_rows"), py::arg("samples"),
           py::arg("repeats"));

  m.def("write_table_file", [](const std::string& path, const py::array& table) {
    const int t = engine_dtype(table);
    TIEMB_EXPECT(t == static_cast<int>(dtype::float32) || t == static_cast<int>(dtype::float16),
                 "table must be float32 or float16, got ", dtype_name(table));
    TIEMB_EXPECT(table.ndim() == 2 && is_c_contiguous(table), "table must be a 2-D C-contiguous array");
    return write_table_file(path, static_cast<dtype>(t), table.shape(0), table.shape(1), table.data());
  }, py::arg("path"), py::arg("table"),
     "Writes a table file (see csrc/core/table_file.h); returns its data's block CRC32C.");
  m.def("read_table_rows", [](const std::string& path, const std::vector<int64_t>& ids) {
    table_file_reader r(path);
    const auto& h = r.header();
    py::array out = new_output(h.type == dtype::float16, static_cast<int64_t>(ids.size()), h.dim);
    for (size_t i = 0; i < ids.size(); ++i) {
      r.read_row(ids[i], static_cast<char*>(out.mutable_data()) + static_cast<int64_t>(i) * h.row_bytes());
    }
    return py::make_tuple(h.rows, h.dim, to_string(h.type), out);
  }, py::arg("path"), py::arg("ids"), "(rows, dim, dtype, the given rows) of a table file.");
  m.def("tier_defaults", [] {
    py::dict d;
    d["tiemb/cache_percentage"] = kDefaultCachePercentage;
    d["tiemb/cpu_cache_percentage"] = kDefaultCpuCachePercentage;
    d["tiemb/hit_rate_threshold"] = kDefaultHitRateThreshold;
    return d;
  }, "The C++ side's defaults of the tier parameters (they must equal tiemb.config's).");
  m.def("tier_sizes", [](int64_t rows, double cache_percentage, double cpu_cache_percentage) {
    tier_config c;
    c.cache_percentage = cache_percentage;
    c.cpu_cache_percentage = cpu_cache_percentage;
    const tier_sizes t = compute_tier_sizes(rows, c);
    py::dict d;
    d["resident"] = t.resident;
    d["cache_sets"] = t.cache_sets;
    d["gpu_rows"] = t.gpu_rows;
    d["host_rows"] = t.host_rows;
    d["file_rows"] = t.file_rows;
    return d;
  }, py::arg("rows"), py::arg("cache_percentage"), py::arg("cpu_cache_percentage"));
  m.def("validate_tiers", [](int64_t rows, double cache_percentage, double cpu_cache_percentage,
                             double hit_rate_threshold, const std::string& backing_file) {
    tier_config c{cache_percentage, cpu_cache_percentage, hit_rate_threshold, backing_file, true};
    c.validate(rows);
  }, py::arg("rows"), py::arg("cache_percentage"), py::arg("cpu_cache_percentage"),
     py::arg("hit_rate_threshold"), py::arg("backing_file"));
  m.def("hot_rows", [](int64_t rows, const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& ids,
                       int64_t limit) {
    return hot_rows(rows, ids.data(), ids.size(), limit);
  }, py::arg("rows"), py::arg("profile_ids"), py::arg("limit"));

  bind_cache_sim(m);

  m.def("check_store", [](const std::string& dir) {
    py::gil_scoped_release release;
    return check_store(dir);
  }, py::arg("dir"), "Every problem of a table store, one message per problem naming the file; [] when sound.");
  m.def("crc32c", [](const py::bytes& data, uint32_t crc, bool portable) {
    const std::string_view v = data;
    return crc32c(v.data(), v.size(), crc, portable);
  }, py::arg("data"), py::arg("crc") = 0, py::arg("portable") = false, "CRC32C of bytes (continuing from crc).");
  m.def("block_crc32c", [](const py::buffer& data, int threads, bool portable) {
    const py::buffer_info info = data.request();
    const size_t bytes = static_cast<size_t>(info.size * info.itemsize);
    py::gil_scoped_release release;
    return block_crc32c(info.ptr, bytes, threads, portable);
  }, py::arg("data"), py::arg("threads") = 0, py::arg("portable") = false,
     "The table-file checksum of a contiguous buffer (csrc/core/checksum.h).");
  m.def("read_store_manifest", [](const std::string& dir) { return store_dict(store_manifest::read(dir)); },
        py::arg("dir"), "The checked description (store.json) of the table store at dir, as a dict.");
  m.def("parse_store_description", [](const std::string& text, const std::string& where) {
    return store_dict(store_manifest::parse(text, where));
  }, py::arg("text"), py::arg("where"),
     "Checks the text of a store description as the engines will read it (the writer's check before it "
     "replaces store.json); returns it as read_store_manifest does.");
  m.attr("STORE_FORMAT_VERSION") = kStoreFormatVersion;

#ifdef TIEMB_WITH_CUDA
  bind_gpu(m);
#endif
#ifdef TIEMB_WITH_XLA_FFI
  bind_xla_ffi(m);
#endif
}
