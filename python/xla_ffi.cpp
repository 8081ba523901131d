// XLA FFI handlers: a bundle's lookups as a custom call inside the compiled
// program (tiemb/serving/program.py composes it), so that lookups and the
// dense part run as one XLA executable: no Python per slot, no copies
// between them. The handlers are exported as PyCapsules from tiemb._C and
// registered with jax.ffi.register_ffi_target; they share tiemb._C's engine
// registry (shared_cpu_engine / shared_gpu_engine), so a process holds one
// engine per store whatever serves it.
//
// A call names its plan by the attribute `handle`: the plan holds the lookup
// group, each slot's wiring (which operand holds its ids, segment ids and
// weights, read in place) and each slot's place in the results (fused
// outputs: several slots side by side in one result). Scratch is sized when
// the plan is built; a call allocates nothing, and on the GPU it launches on
// XLA's stream and returns without waiting.
//
// The GPU has two handlers over the same plans. `tiemb_lookup` reads the
// data-error latch of the previous call first (host work). The command-buffer
// one (`tiemb_lookup_cmdbuf`, declared kCmdBufferCompatible) is traced by XLA
// into the program's CUDA graph and replayed without running again until the
// buffer addresses change, so it does kernel launches only: every launch
// parameter derives from the buffers' addresses and shapes and the plan; the
// latch is read by the runtime outside the graph (before each call, and when
// the caller waits), where its report still names the slot and the value.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "../csrc/core/error.h"
#include "../csrc/core/request.h"
#include "../csrc/core/table_store.h"
#include "../csrc/cpu/cpu_engine.h"
#include "../csrc/cpu/store_engine.h"
#if defined(TIEMB_WITH_CUDA)
#include "../csrc/cuda/gpu_engine.h"
#include "../csrc/cuda/store_gpu_engine.h"
#endif
#include "xla/ffi/api/ffi.h"

namespace py = pybind11;
namespace ffi = xla::ffi;

namespace tiemb {
namespace xla_ffi {
namespace {

/// Where one slot's inputs are among the custom call's operands, and where
/// its rows go among the results. Operand indices are -1 where absent.
struct slot_wiring {
  int32_t ids_arg = -1;
  int64_t ids_column = -1;  ///< >= 0: column c of a [rows, k] id matrix (in place)
  int64_t id_width = -1;    ///< >= 0: a dense id matrix slot (see TiembLookup's id_widths)
  int32_t seg_arg = -1;
  int64_t seg_column = -1;  ///< >= 0: column c of a [n, k] index matrix (sp_ids.indices)
  int32_t weights_arg = -1;
  int32_t output = 0;
  int64_t offset = 0;       ///< first column in that output
};

/// One lookup op of a bundle: its group on the engine, its wiring, its
/// per-call scratch. Calls are serialised (the group's scratch is one).
class lookup_plan {
 public:
  lookup_plan(std::vector<slot_config> slots, std::vector<slot_wiring> wiring, std::vector<int64_t> dims,
              std::vector<int64_t> output_widths)
      : slots_(std::move(slots)), wiring_(std::move(wiring)), dims_(std::move(dims)),
        widths_(std::move(output_widths)) {
    const size_t n = slots_.size();
    TIEMB_EXPECT(wiring_.size() == n && dims_.size() == n, "a lookup plan needs one wiring and dim per slot");
    for (size_t s = 0; s < n; ++s) {
      TIEMB_EXPECT(wiring_[s].output >= 0 && static_cast<size_t>(wiring_[s].output) < widths_.size(), "slot ", s,
                   ": writes output ", wiring_[s].output, " but the plan has ", widths_.size());
      TIEMB_EXPECT(wiring_[s].offset + dims_[s] <= widths_[static_cast<size_t>(wiring_[s].output)], "slot ", s,
                   ": columns ", wiring_[s].offset, "..", wiring_[s].offset + dims_[s], " exceed output ",
                   wiring_[s].output, "'s width ", widths_[static_cast<size_t>(wiring_[s].output)]);
    }
    req_.resize(n);
    out_.resize(n);
    out_rows_.resize(n);
    rows_.resize(n);
  }
  virtual ~lookup_plan() = default;

  /// Runs the lookups of one call; `stream` is XLA's (nullptr on the CPU).
  /// Errors read "tiemb_lookup handle H: slot S: ...": the runtime names
  /// the op by its handle and the slot by its index.
  /// `capture_safe`: called by the command-buffer handler (no host sync,
  /// no event query: the call may be traced into a CUDA graph).
  ffi::Error call(int64_t handle, ffi::RemainingArgs args, ffi::RemainingRets rets, void* stream,
                  bool capture_safe) {
    std::lock_guard<std::mutex> lk(mutex_);
    try {
      read(args, rets);
      run(stream, capture_safe);
    } catch (const std::exception& e) {
      return ffi::Error::InvalidArgument("tiemb_lookup handle " + std::to_string(handle) + ": " + e.what());
    }
    return ffi::Error::Success();
  }

  /// Raises the first data error the device found (GPU); nothing on the CPU.
  virtual void check(bool) {}

  /// Why this plan cannot run in a command buffer ("" when it can).
  virtual std::string capture_blocker() const { return "XLA's CPU backend has no command buffers"; }

 protected:
  virtual void run(void* stream, bool capture_safe) = 0;

  int64_t num_slots() const { return static_cast<int64_t>(slots_.size()); }

  std::vector<slot_config> slots_;
  std::vector<slot_wiring> wiring_;
  std::vector<int64_t> dims_, widths_;
  std::vector<slot_request> req_;
  std::vector<void*> out_;
  std::vector<int64_t> out_rows_;  // rows of each slot's result buffer
  std::vector<int64_t> rows_;      // rows each slot writes
  std::mutex mutex_;

 private:
  static ffi::AnyBuffer arg(ffi::RemainingArgs& args, int32_t k, int64_t s, const char* what) {
    auto b = args.get<ffi::AnyBuffer>(static_cast<size_t>(k));
    TIEMB_EXPECT(b.has_value(), "slot ", s, ": the call has no operand ", k, " for its ", what);
    return *b;
  }

  static dtype index_type(const ffi::AnyBuffer& b, int64_t s, const char* what) {
    const auto t = b.element_type();
    TIEMB_EXPECT(t == ffi::DataType::S32 || t == ffi::DataType::S64, "slot ", s, ": ", what,
                 " must be int32 or int64");
    return t == ffi::DataType::S32 ? dtype::int32 : dtype::int64;
  }

  void read(ffi::RemainingArgs& args, ffi::RemainingRets& rets) {
    for (int64_t s = 0; s < num_slots(); ++s) {
      const auto su = static_cast<size_t>(s);
      const slot_wiring& w = wiring_[su];
      slot_request& r = req_[su];
      r = slot_request{};
      auto out = rets.get<ffi::AnyBuffer>(static_cast<size_t>(w.output));
      TIEMB_EXPECT(out.has_value(), "slot ", s, ": the call has no result ", w.output);
      const int64_t elem = out.value()->element_type() == ffi::DataType::F16 ? 2 : 4;
      const auto odims = out.value()->dimensions();
      const bool alone = widths_[static_cast<size_t>(w.output)] == dims_[su];
      out_[su] = static_cast<char*>(out.value()->untyped_data()) + w.offset * elem;
      out_rows_[su] = odims.size() == 0 ? 1 : static_cast<int64_t>(out.value()->element_count()) /
                                                   widths_[static_cast<size_t>(w.output)];
      r.out_row_stride = alone ? 0 : widths_[static_cast<size_t>(w.output)];
      read_ids(args, s, r);
      if (w.weights_arg >= 0) {
        const ffi::AnyBuffer b = arg(args, w.weights_arg, s, "weights");
        TIEMB_EXPECT(b.element_type() == ffi::DataType::F32, "slot ", s, ": weights must be float32");
        r.weights = static_cast<const float*>(b.untyped_data());
        r.num_weights = static_cast<int64_t>(b.element_count());
      }
      rows_[su] = slots_[su].mode == row_mode::gather ? r.num_ids : r.num_rows;
    }
  }

  void read_ids(ffi::RemainingArgs& args, int64_t s, slot_request& r) {
    const auto su = static_cast<size_t>(s);
    const slot_wiring& w = wiring_[su];
    const ffi::AnyBuffer ids = arg(args, w.ids_arg, s, "ids");
    r.id_type = index_type(ids, s, "ids");
    const auto d = ids.dimensions();
    const int64_t esize = size_of(r.id_type);
    if (w.id_width >= 0) {  // a padded dense id matrix: one output row per matrix row
      TIEMB_EXPECT(d.size() >= 2, "slot ", s, ": ids must be a dense id matrix of rank >= 2");
      const int64_t k = d[d.size() - 1];
      int64_t lead = 1;
      for (size_t i = 0; i + 1 < d.size(); ++i) lead *= d[i];
      const int64_t first = std::max<int64_t>(w.ids_column, 0);
      const int64_t per_row = w.id_width > 0 ? w.id_width : k - first;
      TIEMB_EXPECT(first + per_row <= k, "slot ", s, ": ids must have at least ", first + per_row, " columns, got ",
                   k);
      r.num_rows = lead;
      if (per_row > 0) {
        r.ids = static_cast<const char*>(ids.untyped_data()) + first * esize;
        r.num_ids = lead * per_row;
        r.ids_per_row = per_row;
        r.row_stride = k;
      }
      return;
    }
    if (w.ids_column >= 0) {  // column c of a [rows, k] id matrix, read in place
      TIEMB_EXPECT(d.size() == 2 && w.ids_column < d[1], "slot ", s, ": ids must be a matrix with more than ",
                   w.ids_column, " columns");
      r.ids = static_cast<const char*>(ids.untyped_data()) + w.ids_column * esize;
      r.num_ids = d[0];
      r.id_stride = d[1];
      r.samples = d[0];
    } else {
      r.ids = ids.untyped_data();
      r.num_ids = static_cast<int64_t>(ids.element_count());
      if (slots_[su].mode == row_mode::gather) r.samples = d.size() == 0 ? 1 : d[0];
    }
    if (slots_[su].mode == row_mode::gather) return;
    // Safe slots have the result's rows (the bucket; the rows past the
    // request's batch are padding, cut off by the runtime).
    r.num_rows = slots_[su].mode == row_mode::safe ? out_rows_[su] : -1;
    const ffi::AnyBuffer seg = arg(args, w.seg_arg, s, "segment ids");
    r.segment_type = index_type(seg, s, "segment ids");
    const auto sd = seg.dimensions();
    const int64_t column = std::max<int64_t>(w.seg_column, 0);
    TIEMB_EXPECT(sd.size() == 1 || (sd.size() == 2 && column < sd[1]), "slot ", s,
                 ": segment ids must be 1-D or the column of a 2-D index matrix");
    r.segments = static_cast<const char*>(seg.untyped_data()) + (sd.size() == 2 ? column * size_of(r.segment_type) : 0);
    r.num_segments = sd[0];
    r.segment_stride = sd.size() == 2 ? sd[1] : 1;
  }
};

class cpu_plan final : public lookup_plan {
 public:
  cpu_plan(const std::string& store, std::vector<slot_config> slots, std::vector<slot_wiring> wiring,
           std::vector<int64_t> dims, std::vector<int64_t> widths, const std::vector<std::string>& tables)
      : lookup_plan(std::move(slots), std::move(wiring), std::move(dims), std::move(widths)) {
    const store_manifest* manifest = nullptr;
    engine_ = shared_cpu_engine(store, &manifest);
    for (size_t s = 0; s < slots_.size(); ++s) {
      slots_[s].table = manifest->table_id(tables.at(s), store);
      const int64_t dim = engine_->tables().at(slots_[s].table).dim();
      TIEMB_EXPECT(dim == dims_[s], "slot ", s, ": table ", tables[s], " has dimension ", dim, " but the bundle says ",
                   dims_[s]);
    }
    group_ = std::make_unique<cpu_lookup_group>(*engine_, slots_);
  }

 private:
  void run(void*, bool) override {
    group_->lookup(req_.data(), num_slots(), [&](const int64_t* rows) {
      for (int64_t s = 0; s < num_slots(); ++s) {
        const auto su = static_cast<size_t>(s);
        // Plain slots have max(segment id) + 1 rows: at most the bucket's.
        TIEMB_EXPECT(rows[s] <= out_rows_[su], "slot ", s, ": segment ids reach row ", rows[s] - 1,
                     ", beyond the batch of ", out_rows_[su], " rows");
        rows_[su] = rows[s];
      }
      return static_cast<void* const*>(out_.data());
    });
    // The rows of the bucket after a plain slot's last segment: samples without ids.
    for (int64_t s = 0; s < num_slots(); ++s) {
      const auto su = static_cast<size_t>(s);
      if (rows_[su] >= out_rows_[su]) continue;
      const int64_t elem = slots_[su].output_dtype == dtype::float16 ? 2 : 4;
      const int64_t stride = (req_[su].out_row_stride > 0 ? req_[su].out_row_stride : dims_[su]) * elem;
      for (int64_t row = rows_[su]; row < out_rows_[su]; ++row) {
        std::memset(static_cast<char*>(out_[su]) + row * stride, 0, static_cast<size_t>(dims_[su] * elem));
      }
    }
  }

  std::shared_ptr<cpu_engine> engine_;
  std::unique_ptr<cpu_lookup_group> group_;
};

#if defined(TIEMB_WITH_CUDA)
class gpu_plan final : public lookup_plan {
 public:
  gpu_plan(const std::string& store, int device, std::vector<slot_config> slots, std::vector<slot_wiring> wiring,
           std::vector<int64_t> dims, std::vector<int64_t> widths, const std::vector<std::string>& tables)
      : lookup_plan(std::move(slots), std::move(wiring), std::move(dims), std::move(widths)) {
    const store_manifest* manifest = nullptr;
    engine_ = shared_gpu_engine(store, device, &manifest);
    for (size_t s = 0; s < slots_.size(); ++s) {
      slots_[s].table = manifest->table_id(tables.at(s), store);
      const int64_t dim = engine_->shape(slots_[s].table).dim;
      TIEMB_EXPECT(dim == dims_[s], "slot ", s, ": table ", tables[s], " has dimension ", dim, " but the bundle says ",
                   dims_[s]);
    }
    group_ = std::make_unique<gpu_lookup_group>(*engine_, slots_);
  }

  void check(bool wait) override {
    std::lock_guard<std::mutex> lk(mutex_);
    group_->check(wait);
  }

  std::string capture_blocker() const override { return group_->capture_blocker(); }

 private:
  void run(void* stream, bool capture_safe) override {
    // An earlier call's data error (found on the device after it returned)
    // fails this one. Not in a command buffer: the query is host work a
    // replay would skip anyway; the runtime checks before each call instead.
    if (!capture_safe) group_->check(false);
    // Plain slots are given the bucket's rows: the rows after the last
    // segment come out as zeros, as the padding needs, with no row count
    // read back from the device.
    for (int64_t s = 0; s < num_slots(); ++s) {
      const auto su = static_cast<size_t>(s);
      if (slots_[su].mode == row_mode::plain) rows_[su] = out_rows_[su];
    }
    group_->launch(req_.data(), num_slots(), rows_.data(), out_.data(), stream);
  }

  std::shared_ptr<gpu_engine> engine_;
  std::unique_ptr<gpu_lookup_group> group_;
};
#endif

// The plans of this process by handle: the handle is what the compiled
// program carries, so a plan outlives no program that names it only if the
// runtime keeps its Python object as long as its executables.
std::mutex registry_mutex;
std::unordered_map<int64_t, std::shared_ptr<lookup_plan>> registry;
int64_t next_handle = 1;

std::shared_ptr<lookup_plan> find_plan(int64_t handle) {
  std::lock_guard<std::mutex> lk(registry_mutex);
  auto it = registry.find(handle);
  return it == registry.end() ? nullptr : it->second;
}

ffi::Error call_plan(int64_t handle, ffi::RemainingArgs args, ffi::RemainingRets rets, void* stream,
                     bool capture_safe = false) {
  std::shared_ptr<lookup_plan> plan = find_plan(handle);
  if (!plan) return ffi::Error::InvalidArgument("tiemb lookup: no plan with handle " + std::to_string(handle));
  return plan->call(handle, args, rets, stream, capture_safe);
}

ffi::Error cpu_lookup(int64_t handle, ffi::RemainingArgs args, ffi::RemainingRets rets) {
  return call_plan(handle, args, rets, nullptr);
}

XLA_FFI_DEFINE_HANDLER(cpu_lookup_handler, cpu_lookup,
                       ffi::Ffi::Bind().Attr<int64_t>("handle").RemainingArgs().RemainingRets());

#if defined(TIEMB_WITH_CUDA)
ffi::Error gpu_lookup(void* stream, int64_t handle, ffi::RemainingArgs args, ffi::RemainingRets rets) {
  return call_plan(handle, args, rets, stream);
}

// The stream as void* (a cudaStream_t): this file needs no CUDA headers.
XLA_FFI_DEFINE_HANDLER(gpu_lookup_handler, gpu_lookup,
                       ffi::Ffi::Bind()
                           .Ctx<ffi::PlatformStream<void*>>()
                           .Attr<int64_t>("handle")
                           .RemainingArgs()
                           .RemainingRets());

ffi::Error gpu_lookup_cmdbuf(void* stream, int64_t handle, ffi::RemainingArgs args, ffi::RemainingRets rets) {
  return call_plan(handle, args, rets, stream, /*capture_safe=*/true);
}

// The trait lets XLA keep the program in one CUDA graph around this call
// (it traces the handler under stream capture; see the file comment).
XLA_FFI_DEFINE_HANDLER(gpu_lookup_cmdbuf_handler, gpu_lookup_cmdbuf,
                       ffi::Ffi::Bind()
                           .Ctx<ffi::PlatformStream<void*>>()
                           .Attr<int64_t>("handle")
                           .RemainingArgs()
                           .RemainingRets(),
                       {ffi::Traits::kCmdBufferCompatible});
#endif

/// The Python side of a plan: registers it on construction, unregisters it
/// when collected.
class py_plan {
 public:
  py_plan(const std::string& platform, const std::string& store, int device, const std::vector<std::string>& tables,
          const std::vector<int32_t>& combiners, const std::vector<int32_t>& modes,
          const std::vector<int64_t>& default_ids, const std::vector<int32_t>& output_dtypes,
          const std::vector<bool>& wrap_negative, const std::vector<int64_t>& dims,
          const std::vector<std::vector<int64_t>>& wiring, const std::vector<int64_t>& output_widths) {
    const size_t n = tables.size();
    TIEMB_EXPECT(combiners.size() == n && modes.size() == n && default_ids.size() == n &&
                     output_dtypes.size() == n && wrap_negative.size() == n && dims.size() == n && wiring.size() == n,
                 "XlaLookupPlan: every per-slot list needs one entry per table (", n, ")");
    std::vector<slot_config> slots(n);
    std::vector<slot_wiring> wires(n);
    for (size_t s = 0; s < n; ++s) {
      TIEMB_EXPECT(wiring[s].size() == 8, "slot ", s, ": wiring needs 8 entries (ids_arg, ids_column, id_width, "
                   "seg_arg, seg_column, weights_arg, output, offset), got ", wiring[s].size());
      const auto& v = wiring[s];
      wires[s] = slot_wiring{static_cast<int32_t>(v[0]), v[1], v[2], static_cast<int32_t>(v[3]), v[4],
                             static_cast<int32_t>(v[5]), static_cast<int32_t>(v[6]), v[7]};
      slots[s].comb = static_cast<combiner>(combiners[s]);
      slots[s].mode = static_cast<row_mode>(modes[s]);
      slots[s].default_id = default_ids[s];
      slots[s].output_dtype = static_cast<dtype>(output_dtypes[s]);
      slots[s].wrap_negative = wrap_negative[s];
    }
    if (platform == "cpu") {
      plan_ = std::make_shared<cpu_plan>(store, std::move(slots), std::move(wires), dims, output_widths, tables);
    } else if (platform == "gpu") {
#if defined(TIEMB_WITH_CUDA)
      plan_ = std::make_shared<gpu_plan>(store, device, std::move(slots), std::move(wires), dims, output_widths,
                                         tables);
#else
      (void)device;
      throw error("XlaLookupPlan: this tiemb was built without CUDA (build it with TIEMB_CUDA=ON on the GPU host)");
#endif
    } else {
      throw error("XlaLookupPlan: platform must be 'cpu' or 'gpu', got '" + platform + "'");
    }
    std::lock_guard<std::mutex> lk(registry_mutex);
    handle_ = next_handle++;
    registry[handle_] = plan_;
  }

  ~py_plan() {
    std::lock_guard<std::mutex> lk(registry_mutex);
    registry.erase(handle_);
  }

  int64_t handle() const { return handle_; }

  void check(bool wait) {
    py::gil_scoped_release release;
    plan_->check(wait);
  }

  std::string capture_blocker() const { return plan_->capture_blocker(); }

 private:
  std::shared_ptr<lookup_plan> plan_;
  int64_t handle_ = 0;
};

template <class Fn>
py::capsule handler_capsule(Fn* fn) {
  return py::capsule(reinterpret_cast<void*>(fn));
}

}  // namespace
}  // namespace xla_ffi
}  // namespace tiemb

/// Adds XlaLookupPlan and xla_ffi_targets() to tiemb._C (bindings.cpp calls it).
void bind_xla_ffi(py::module_& m) {
  using tiemb::xla_ffi::py_plan;
  py::class_<py_plan>(m, "XlaLookupPlan")
      .def(py::init<const std::string&, const std::string&, int, const std::vector<std::string>&,
                    const std::vector<int32_t>&, const std::vector<int32_t>&, const std::vector<int64_t>&,
                    const std::vector<int32_t>&, const std::vector<bool>&, const std::vector<int64_t>&,
                    const std::vector<std::vector<int64_t>>&, const std::vector<int64_t>&>(),
           py::arg("platform"), py::arg("store"), py::arg("device"), py::arg("tables"), py::arg("combiners"),
           py::arg("modes"), py::arg("default_ids"), py::arg("output_dtypes"), py::arg("wrap_negative"),
           py::arg("dims"), py::arg("wiring"), py::arg("output_widths"),
           "One lookup op of a bundle, served by the custom call whose attribute `handle` names it.")
      .def_property_readonly("handle", &py_plan::handle)
      .def("check", &py_plan::check, py::arg("wait") = true,
           "GPU: raises the first data error (id out of range, ...) a call found; wait: for the last call first.")
      .def_property_readonly("capture_blocker", &py_plan::capture_blocker,
                             "Why this plan cannot serve the command-buffer handler (naming the slot and table); "
                             "'' when it can.");
  m.def("xla_ffi_targets", [] {
    py::dict d;
    d["cpu"] = tiemb::xla_ffi::handler_capsule(tiemb::xla_ffi::cpu_lookup_handler);
#if defined(TIEMB_WITH_CUDA)
    d["gpu"] = tiemb::xla_ffi::handler_capsule(tiemb::xla_ffi::gpu_lookup_handler);
    d["gpu_command_buffer"] = tiemb::xla_ffi::handler_capsule(tiemb::xla_ffi::gpu_lookup_cmdbuf_handler);
#endif
    return d;
  }, "{platform: PyCapsule} of the XLA FFI lookup handlers built here (jax.ffi.register_ffi_target).");
}
