// The TiembLookup TensorFlow op: many slots' sparse embedding lookups in one
// op, served by the engine of a table store (tables outside the graph).
//
// Inputs: the store directory (a string scalar; in a SavedModel an asset, so
// the model can be moved), then per slot ids, segment ids (sp_ids.indices[:,0],
// or sp_ids.indices itself, read in place), weights (an empty tensor for
// unweighted slots) and num_rows (dense_shape[0], or dense_shape itself; used
// by safe slots). Attributes fix everything else per slot. Errors in the
// inputs become InvalidArgument naming the slot; nothing throws out of Compute.
#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

#include "../core/error.h"
#include "../cpu/store_engine.h"

#if TIEMB_TF_GPU
#include <cuda_runtime_api.h>

#include "../cuda/gpu_engine.h"
#include "../cuda/store_gpu_engine.h"
#include "xla/stream_executor/stream.h"
#endif

namespace tiemb {
namespace {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::OpInputList;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
namespace shape_inference = ::tensorflow::shape_inference;

// Rows of a dense id matrix slot: the product of all but the last dimension.
shape_inference::DimensionHandle dense_matrix_rows(shape_inference::InferenceContext* c,
                                                   shape_inference::ShapeHandle ids) {
  if (!c->RankKnown(ids) || c->Rank(ids) < 2) return c->UnknownDim();
  shape_inference::DimensionHandle rows = c->Dim(ids, 0);
  for (int d = 1; d + 1 < c->Rank(ids); ++d) {
    if (!c->Multiply(rows, c->Dim(ids, d), &rows).ok()) return c->UnknownDim();
  }
  return rows;
}

REGISTER_OP("TiembLookup")
    .Input("store: string")
    .Input("ids: Tids")
    .Input("segment_ids: Tsegs")
    .Input("weights: N * float")
    .Input("num_rows: N * int64")
    .Output("embeddings: out_types")
    .Attr("N: int >= 1")
    .Attr("Tids: list({int32, int64})")
    .Attr("Tsegs: list({int32, int64})")
    .Attr("tables: list(string)")
    .Attr("dims: list(int)")
    .Attr("combiners: list(string)")
    .Attr("modes: list(string)")
    .Attr("default_ids: list(int)")
    .Attr("weighted: list(bool)")
    .Attr("out_types: list({float, half})")
    // Per slot (empty = none): read column c of a 2-D ids matrix in place
    // (-1: ids as given), and Keras-style negative ids (gather mode).
    .Attr("id_columns: list(int) = []")
    .Attr("wrap_negative: list(bool) = []")
    // Per slot (empty = every slot its own feature): the feature (distinct id
    // input) it reads; slots sharing ids share a feature and count once
    // against the store's slot_num.
    .Attr("features: list(int) = []")
    // Per slot (empty = none; -1 = not used): a safe slot whose ids are a
    // padded dense id matrix, one output row per matrix row pooling its ids
    // >= 0. 0: the whole last dimension of ids (leading dimensions flattened
    // into rows), or with id_columns[s] = c >= 0 the columns from c on of a
    // [rows, k] matrix; w > 0: the w columns of a [rows, k] matrix from
    // column max(id_columns[s], 0), read in place.
    .Attr("id_widths: list(int) = []")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      int n = 0;
      TF_RETURN_IF_ERROR(c->GetAttr("N", &n));
      std::vector<int64_t> dims, columns;
      std::vector<std::string> modes;
      TF_RETURN_IF_ERROR(c->GetAttr("dims", &dims));
      TF_RETURN_IF_ERROR(c->GetAttr("modes", &modes));
      TF_RETURN_IF_ERROR(c->GetAttr("id_columns", &columns));
      if (static_cast<int>(dims.size()) != n || static_cast<int>(modes.size()) != n) {
        return absl::InvalidArgumentError(absl::StrCat("TiembLookup: dims and modes need N = ", n, " entries"));
      }
      std::vector<int64_t> widths;
      TF_RETURN_IF_ERROR(c->GetAttr("id_widths", &widths));
      for (int s = 0; s < n; ++s) {
        if (static_cast<int>(widths.size()) > s && widths[s] >= 0) {
          c->set_output(s, c->Matrix(dense_matrix_rows(c, c->input(1 + s)), dims[s]));
          continue;
        }
        // Safe slots have num_rows rows (known when it is a constant); plain
        // slots max(segment id) + 1, known only at run time.
        const bool column = static_cast<int>(columns.size()) > s && columns[s] >= 0;
        if (modes[s] == "gather" && column) {  // one row per row of the id matrix
          c->set_output(s, c->Matrix(c->Dim(c->input(1 + s), 0), dims[s]));
          continue;
        }
        if (modes[s] == "gather") {  // the ids' shape + [dim]
          shape_inference::ShapeHandle out;
          TF_RETURN_IF_ERROR(c->Concatenate(c->input(1 + s), c->Vector(dims[s]), &out));
          c->set_output(s, out);
          continue;
        }
        shape_inference::DimensionHandle rows = c->UnknownDim();
        const shape_inference::ShapeHandle rows_in = c->input(1 + 3 * n + s);
        if (modes[s] == "safe" && c->RankKnown(rows_in) && c->Rank(rows_in) == 0) {
          TF_RETURN_IF_ERROR(c->MakeDimForScalarInput(1 + 3 * n + s, &rows));
        }
        c->set_output(s, c->Matrix(rows, dims[s]));
      }
      return absl::OkStatus();
    })
    .Doc(R"doc(
Sparse embedding lookups of many slots at once, with the semantics of
tf.nn.embedding_lookup_sparse (mode "plain") and
tf.nn.safe_embedding_lookup_sparse (mode "safe"), served from a tiemb table store.
)doc");

int combiner_code(const std::string& c) { return c == "sum" ? 0 : c == "mean" ? 1 : c == "sqrtn" ? 2 : -1; }

// What both kernels share: the attributes, and turning inputs into requests
// and attributes into slot configs. Errors become InvalidArgument naming the
// slot; nothing throws out of Compute.
class TiembLookupBase : public OpKernel {
 public:
  explicit TiembLookupBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("N", &n_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("tables", &tables_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("dims", &dims_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("combiners", &combiners_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("modes", &modes_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("default_ids", &default_ids_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("weighted", &weighted_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("out_types", &out_types_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("id_columns", &id_columns_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("wrap_negative", &wrap_negative_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("features", &features_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("id_widths", &id_widths_));
    const size_t n = static_cast<size_t>(n_);
    if (id_widths_.empty()) id_widths_.assign(n, -1);
    OP_REQUIRES(ctx, id_widths_.size() == n,
                absl::InvalidArgumentError(absl::StrCat("TiembLookup: id_widths needs N = ", n_, " entries, got ",
                                                        id_widths_.size())));
    for (size_t s = 0; s < n; ++s) {
      OP_REQUIRES(ctx, id_widths_[s] < 0 || modes_[s] == "safe",
                  absl::InvalidArgumentError(absl::StrCat("slot ", s, ": id_widths[", s, "] = ", id_widths_[s],
                                                          " (a dense id matrix) needs mode safe, got '", modes_[s],
                                                          "'")));
    }
    if (id_columns_.empty()) id_columns_.assign(n, -1);
    if (wrap_negative_.empty()) wrap_negative_.assign(n, false);
    if (features_.empty()) features_.assign(n, -1);
    OP_REQUIRES(ctx,
                tables_.size() == n && dims_.size() == n && combiners_.size() == n && modes_.size() == n &&
                    default_ids_.size() == n && weighted_.size() == n && out_types_.size() == n &&
                    id_columns_.size() == n && wrap_negative_.size() == n && features_.size() == n,
                absl::InvalidArgumentError(absl::StrCat("TiembLookup: every per-slot attribute needs N = ", n_, " entries")));
    for (size_t s = 0; s < n; ++s) {
      OP_REQUIRES(ctx, combiner_code(combiners_[s]) >= 0,
                  absl::InvalidArgumentError(absl::StrCat("slot ", s, ": combiner must be sum, mean or sqrtn, got '", combiners_[s], "'")));
      OP_REQUIRES(ctx, modes_[s] == "plain" || modes_[s] == "safe" || modes_[s] == "gather",
                  absl::InvalidArgumentError(absl::StrCat("slot ", s, ": mode must be plain, safe or gather, got '", modes_[s], "'")));
    }
  }


 protected:
  /// The store path and one request per slot (pointers into the input tensors).
  std::string read_inputs(OpKernelContext* ctx, std::vector<slot_request>& req, OpInputList& ids) {
    const Tensor& store = ctx->input(0);
    TIEMB_EXPECT(store.dims() == 0, "store must be a string scalar");
    OpInputList segs, weights, num_rows;
    auto ok = [](const absl::Status& st) { TIEMB_EXPECT(st.ok(), std::string(st.message())); };
    ok(ctx->input_list("ids", &ids));
    ok(ctx->input_list("segment_ids", &segs));
    ok(ctx->input_list("weights", &weights));
    ok(ctx->input_list("num_rows", &num_rows));
    TIEMB_EXPECT(ids.size() == n_ && segs.size() == n_, "TiembLookup: ids and segment_ids need N = ", n_,
                 " tensors, got ", ids.size(), " and ", segs.size());
    req.assign(static_cast<size_t>(n_), slot_request{});
    for (int s = 0; s < n_; ++s) {
      slot_request& r = req[static_cast<size_t>(s)];
      const Tensor& id = ids[s];
      const Tensor& sg = segs[s];
      const bool gather = modes_[static_cast<size_t>(s)] == "gather";
      const int64_t column = id_columns_[static_cast<size_t>(s)];
      r.id_type = id.dtype() == ::tensorflow::DT_INT32 ? dtype::int32 : dtype::int64;
      if (id_widths_[static_cast<size_t>(s)] >= 0) {
        read_dense_matrix(s, id, weights[s], r);
        continue;
      }
      if (column >= 0) {  // column `column` of a [rows, k] id matrix, read in place
        TIEMB_EXPECT(id.dims() == 2 && column < id.dim_size(1), "slot ", s, ": ids must be a matrix with more than ",
                     column, " columns, got shape ", id.shape().DebugString());
        r.ids = static_cast<const char*>(id.data()) + column * (r.id_type == dtype::int32 ? 4 : 8);
        r.num_ids = id.dim_size(0);
        r.id_stride = id.dim_size(1);
        r.samples = id.dim_size(0);  // one id per sample
      } else {
        TIEMB_EXPECT(gather || id.dims() == 1, "slot ", s, ": ids must be 1-D, got shape ", id.shape().DebugString());
        r.ids = id.data();
        r.num_ids = id.NumElements();
        if (gather) r.samples = id.dims() >= 1 ? id.dim_size(0) : 1;  // [samples, ...] ids
      }
      if (!gather) {  // gather slots ignore their segment_ids input
        // 1-D segment ids, or sp_ids.indices ([n, rank]) read in place: column 0.
        TIEMB_EXPECT(sg.dims() == 1 || (sg.dims() == 2 && sg.dim_size(1) >= 1), "slot ", s,
                     ": segment_ids must be 1-D segment ids or 2-D sparse indices, got shape ",
                     sg.shape().DebugString());
        r.segments = sg.data();
        r.segment_type = sg.dtype() == ::tensorflow::DT_INT32 ? dtype::int32 : dtype::int64;
        r.num_segments = sg.dim_size(0);
        r.segment_stride = sg.dims() == 2 ? sg.dim_size(1) : 1;
      }
      if (weighted_[static_cast<size_t>(s)]) {
        TIEMB_EXPECT(weights[s].dims() == 1, "slot ", s, ": weights must be 1-D, got shape ",
                     weights[s].shape().DebugString());
        r.weights = weights[s].flat<float>().data();
        r.num_weights = weights[s].NumElements();
      }
      // The row count, or a sparse tensor's dense_shape (its first entry).
      const Tensor& nr = num_rows[s];
      TIEMB_EXPECT(nr.dims() == 0 || (nr.dims() == 1 && nr.NumElements() >= 1), "slot ", s,
                   ": num_rows must be a scalar or a dense_shape vector, got shape ", nr.shape().DebugString());
      // A safe slot's dense_shape is a rank-2 sparse input's: the original
      // graph's SparseReshape refuses any other rank, and the rewriter folds
      // that SparseReshape away, so the check lives here.
      TIEMB_EXPECT(modes_[static_cast<size_t>(s)] != "safe" || nr.dims() == 0 || nr.NumElements() == 2, "slot ", s,
                   ": the sparse input's dense_shape has ", nr.NumElements(),
                   " entries, but this lookup takes a rank-2 sparse input (dense_shape of 2 entries)");
      r.num_rows = modes_[static_cast<size_t>(s)] == "safe" ? nr.flat<int64_t>()(0) : -1;
    }
    return std::string(store.scalar<::tensorflow::tstring>()());
  }

  /// Slot s's request for a dense id matrix slot (id_widths[s] >= 0): the ids
  /// matrix (or its columns) and weights of the same shape, read in place.
  void read_dense_matrix(int s, const Tensor& id, const Tensor& w, slot_request& r) const {
    const auto su = static_cast<size_t>(s);
    const int64_t width = id_widths_[su];
    const int64_t first = std::max<int64_t>(id_columns_[su], 0);
    TIEMB_EXPECT(id.dims() >= 2, "slot ", s, ": ids must be a dense id matrix of rank >= 2, got shape ",
                 id.shape().DebugString());
    const int64_t k = id.dim_size(id.dims() - 1);
    int64_t lead = 1;
    for (int d = 0; d + 1 < id.dims(); ++d) lead *= id.dim_size(d);
    if (width > 0 || first > 0) {
      TIEMB_EXPECT(id.dims() == 2 && first + width <= k, "slot ", s, ": ids must be a [rows, k] matrix with k >= ",
                   first + width, " (columns from ", first, ", ", width > 0 ? "width " : "to the end", width > 0 ?
                   std::to_string(width) : std::string(), "), got shape ", id.shape().DebugString());
    }
    const int64_t per_row = width > 0 ? width : k - first;
    r.num_rows = lead;
    if (per_row == 0) {  // no ids at all: every row is empty (safe mode, no segment ids)
      r.num_ids = 0;
      return;
    }
    r.ids = static_cast<const char*>(id.data()) + first * (r.id_type == dtype::int32 ? 4 : 8);
    r.num_ids = lead * per_row;
    r.id_stride = 1;
    r.ids_per_row = per_row;
    r.row_stride = k;
    if (weighted_[su]) {
      TIEMB_EXPECT(w.NumElements() == r.num_ids, "slot ", s, ": weights must hold one weight per id of the [", lead,
                   ", ", per_row, "] id matrix, got shape ", w.shape().DebugString());
      r.weights = w.flat<float>().data();
      r.num_weights = w.NumElements();
    }
  }

  /// The output shape of slot s for rows[s] output rows.
  TensorShape output_shape(const OpInputList& ids, int s, int64_t rows) const {
    const auto su = static_cast<size_t>(s);
    if (modes_[su] == "gather" && id_columns_[su] < 0) {  // the ids' shape + [dim]
      TensorShape shape = ids[s].shape();
      shape.AddDim(dims_[su]);
      return shape;
    }
    return TensorShape({rows, dims_[su]});
  }

  /// Allocates every slot's output (rows[s] rows); returns their buffers.
  std::vector<void*> allocate_outputs(OpKernelContext* ctx, const OpInputList& ids, const int64_t* rows) const {
    std::vector<void*> outputs(static_cast<size_t>(n_));
    for (int s = 0; s < n_; ++s) {
      Tensor* out = nullptr;
      const absl::Status st = ctx->allocate_output(s, output_shape(ids, s, rows[s]), &out);
      TIEMB_EXPECT(st.ok(), "allocating outputs failed: ", std::string(st.message()));
      outputs[static_cast<size_t>(s)] = const_cast<char*>(out->tensor_data().data());
    }
    return outputs;
  }

  template <class Engine, class Group>
  struct store_group {
    std::shared_ptr<Engine> engine;
    std::unique_ptr<Group> group;
  };

  // One group per store (and device), built on first use: the store path is
  // an input (assets are resolved where the model was loaded from), and eager
  // TensorFlow shares one kernel among all ops with the same attributes.
  // `open(&manifest)` returns the store's shared engine; `table_dim(engine, id)`
  // a table's dimension. Call with mutex_ held.
  template <class Engine, class Group, class Key, class Open, class TableDim>
  Group& group_for(std::map<Key, store_group<Engine, Group>>& groups, const Key& key, const std::string& store,
                   Open&& open, TableDim&& table_dim) {
    auto it = groups.find(key);
    if (it != groups.end()) return *it->second.group;
    const store_manifest* manifest = nullptr;
    std::shared_ptr<Engine> engine = open(&manifest);
    std::vector<slot_config> slots = slot_configs(*manifest, store, [&](int32_t t) { return table_dim(*engine, t); });
    // Built completely before it is cached: a build that throws (slots the
    // store cannot serve) must leave no entry, or the next call would use an
    // empty group.
    store_group<Engine, Group> g;
    g.group = std::make_unique<Group>(*engine, std::move(slots));
    g.engine = std::move(engine);
    return *groups.emplace(key, std::move(g)).first->second.group;
  }

  /// Slot configs against a store's manifest; `table_dim(id)` gives a table's dimension.
  template <class TableDim>
  std::vector<slot_config> slot_configs(const store_manifest& manifest, const std::string& store,
                                        TableDim&& table_dim) const {
    std::vector<slot_config> slots(static_cast<size_t>(n_));
    for (size_t s = 0; s < slots.size(); ++s) {
      slot_config& sc = slots[s];
      sc.table = manifest.table_id(tables_[s], store);
      const int64_t dim = table_dim(sc.table);
      TIEMB_EXPECT(dim == dims_[s], "slot ", s, ": table ", tables_[s], " has dimension ", dim,
                   " but the op expects ", dims_[s]);
      sc.comb = static_cast<combiner>(combiner_code(combiners_[s]));
      sc.mode = modes_[s] == "safe" ? row_mode::safe : modes_[s] == "gather" ? row_mode::gather : row_mode::plain;
      sc.default_id = default_ids_[s];
      sc.output_dtype = out_types_[s] == ::tensorflow::DT_HALF ? dtype::float16 : dtype::float32;
      sc.wrap_negative = wrap_negative_[s];
      sc.feature = static_cast<int32_t>(features_[s]);
    }
    return slots;
  }

  int n_ = 0;
  std::vector<std::string> tables_, combiners_, modes_;
  std::vector<int64_t> dims_, default_ids_, id_columns_, features_, id_widths_;
  std::vector<bool> weighted_, wrap_negative_;
  std::vector<::tensorflow::DataType> out_types_;
  std::mutex mutex_;
};

// CPU kernel: the CPU engine of the store, shared process-wide.
class TiembLookupOp : public TiembLookupBase {
 public:
  using TiembLookupBase::TiembLookupBase;

  void Compute(OpKernelContext* ctx) override {
    try {
      std::vector<slot_request> req;
      OpInputList ids;
      const std::string store = read_inputs(ctx, req, ids);
      cpu_lookup_group* group = nullptr;
      {
        std::lock_guard<std::mutex> lk(mutex_);
        group = &group_for(groups_, store, store, [&](const store_manifest** m) { return shared_cpu_engine(store, m); },
                           [](cpu_engine& e, int32_t t) { return e.tables().at(t).dim(); });
      }
      std::vector<void*> outputs;
      group->lookup(req.data(), n_, [&](const int64_t* rows) {
        outputs = allocate_outputs(ctx, ids, rows);
        return static_cast<void* const*>(outputs.data());
      });
    } catch (const std::exception& e) {
      ctx->CtxFailure(absl::InvalidArgumentError(absl::StrCat(e.what())));
    }
  }

 private:
  std::map<std::string, store_group<cpu_engine, cpu_lookup_group>> groups_;
};

REGISTER_KERNEL_BUILDER(Name("TiembLookup").Device(DEVICE_CPU), TiembLookupOp);

#if TIEMB_TF_GPU
// GPU kernel: a thin call into the GPU engine (the code tests/gpu exercises),
// on TensorFlow's stream. Inputs and outputs stay in device memory; plain
// slots read their row count back (as TensorFlow's own GPU kernel does).
// Data errors found on the device surface at the next call of the same op.
// The GPU engine's limits apply and are reported by name (no gather mode,
// no in-place column / sparse-index reads yet).
class TiembLookupGpuOp : public TiembLookupBase {
 public:
  using TiembLookupBase::TiembLookupBase;

  void Compute(OpKernelContext* ctx) override {
    try {
      std::vector<slot_request> req;
      OpInputList ids;
      const std::string store = read_inputs(ctx, req, ids);
      int device = 0;
      TIEMB_EXPECT(cudaGetDevice(&device) == cudaSuccess, "TiembLookup: no current CUDA device");
      auto* stream = ctx->op_device_context()->stream();
      TIEMB_EXPECT(stream != nullptr, "TiembLookup: no GPU stream");
      void* cuda_stream = stream->platform_specific_handle().stream;
      std::lock_guard<std::mutex> lk(mutex_);  // calls on one group must not overlap
      gpu_lookup_group& group =
          group_for(groups_, std::make_pair(store, device), store,
                    [&](const store_manifest** m) { return shared_gpu_engine(store, device, m); },
                    [](gpu_engine& e, int32_t t) { return e.shape(t).dim; });
      group.check(false);
      std::vector<int64_t> rows(static_cast<size_t>(n_));
      group.device_rows(req.data(), n_, rows.data(), cuda_stream);
      const std::vector<void*> outputs = allocate_outputs(ctx, ids, rows.data());
      group.launch(req.data(), n_, rows.data(), outputs.data(), cuda_stream);
    } catch (const std::exception& e) {
      ctx->CtxFailure(absl::InvalidArgumentError(absl::StrCat(e.what())));
    }
  }

 private:
  std::map<std::pair<std::string, int>, store_group<gpu_engine, gpu_lookup_group>> groups_;
};

REGISTER_KERNEL_BUILDER(Name("TiembLookup").Device(::tensorflow::DEVICE_GPU).HostMemory("store").HostMemory("num_rows"),
                        TiembLookupGpuOp);
#endif  // TIEMB_TF_GPU

}  // namespace
}  // namespace tiemb
