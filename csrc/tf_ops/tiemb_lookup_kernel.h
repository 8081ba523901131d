// What the TiembLookup kernels share (tensorflow/custom-op's "functor"
// part): the attributes decoded once, inputs turned into the core's slot
// requests, outputs allocated, and one group per store built from the
// store's engine. The CPU kernel (tiemb_lookup_cpu.cc) and the GPU kernel
// (tiemb_lookup_gpu.cc) add only how they run the group.
#pragma once

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op_kernel.h"

#include "../core/config.h"
#include "../core/error.h"
#include "../core/request.h"
#include "../core/table_store.h"
#include "../core/types.h"
#include "status.h"

namespace tiemb {
namespace tf_kernel {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::OpInputList;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;

// What both kernels share: the attributes, and turning inputs into requests
// and attributes into slot configs. Errors become InvalidArgument naming the
// slot; nothing throws out of Compute. Everything the attributes say is
// decoded here, once: a call compares no strings and allocates nothing but
// its outputs.
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
    OP_REQUIRES_OK(ctx, ctx->GetAttr("slot_outputs", &slot_outputs_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("slot_offsets", &slot_offsets_));
    const size_t n = static_cast<size_t>(n_);
    if (id_widths_.empty()) id_widths_.assign(n, -1);
    OP_REQUIRES(ctx, id_widths_.size() == n,
                absl::InvalidArgumentError(absl::StrCat("TiembLookup: id_widths needs N = ", n_, " entries, got ",
                                                        id_widths_.size())));
    if (id_columns_.empty()) id_columns_.assign(n, -1);
    if (wrap_negative_.empty()) wrap_negative_.assign(n, false);
    if (features_.empty()) features_.assign(n, -1);
    if (slot_outputs_.empty()) {  // a model saved before fused outputs: output s is slot s
      OP_REQUIRES(ctx, slot_offsets_.empty() && out_types_.size() == n,
                  absl::InvalidArgumentError(absl::StrCat("TiembLookup: without slot_outputs, out_types needs N = ",
                                                          n_, " entries and slot_offsets none")));
      for (size_t s = 0; s < n; ++s) slot_outputs_.push_back(static_cast<int64_t>(s));
      slot_offsets_.assign(n, 0);
    }
    OP_REQUIRES(ctx,
                tables_.size() == n && dims_.size() == n && combiners_.size() == n && modes_.size() == n &&
                    default_ids_.size() == n && weighted_.size() == n && id_columns_.size() == n &&
                    wrap_negative_.size() == n && features_.size() == n && slot_outputs_.size() == n &&
                    slot_offsets_.size() == n,
                absl::InvalidArgumentError(absl::StrCat("TiembLookup: every per-slot attribute needs N = ", n_, " entries")));
    // The attributes' strings become the core's enums here, once: a call
    // compares no strings.
    comb_codes_.resize(n);
    mode_codes_.resize(n);
    for (size_t s = 0; s < n; ++s) {
      OP_REQUIRES(ctx, parse_combiner(combiners_[s], &comb_codes_[s]),
                  absl::InvalidArgumentError(absl::StrCat("slot ", s, ": combiner must be sum, mean or sqrtn, got '", combiners_[s], "'")));
      OP_REQUIRES(ctx, parse_row_mode(modes_[s], &mode_codes_[s]),
                  absl::InvalidArgumentError(absl::StrCat("slot ", s, ": mode must be plain, safe or gather, got '", modes_[s], "'")));
      OP_REQUIRES(ctx, id_widths_[s] < 0 || mode_codes_[s] == row_mode::safe,
                  absl::InvalidArgumentError(absl::StrCat("slot ", s, ": id_widths[", s, "] = ", id_widths_[s],
                                                          " (a dense id matrix) needs mode safe, got '", modes_[s],
                                                          "'")));
    }
    OP_REQUIRES_OK(ctx, decode_outputs());
  }


 protected:
  /// One output of the op: the slots that write it, side by side.
  struct output_layout {
    std::vector<int> slots;  // in column order
    int64_t width = 0;       // elements per row
    bool alone = true;       // one slot, the old one-output-per-slot form
  };

  /// Checks slot_outputs / slot_offsets: every output is written by at least
  /// one slot, one dtype, its columns covered once each (no gap is left
  /// uninitialised, no two slots write the same element).
  absl::Status decode_outputs() {
    const auto m = out_types_.size();
    outputs_.assign(m, output_layout{});
    for (int s = 0; s < n_; ++s) {
      const int64_t o = slot_outputs_[static_cast<size_t>(s)];
      if (o < 0 || o >= static_cast<int64_t>(m)) {
        return absl::InvalidArgumentError(absl::StrCat("slot ", s, ": slot_outputs names output ", o,
                                                       " but out_types has ", m, " outputs"));
      }
      outputs_[static_cast<size_t>(o)].slots.push_back(s);
    }
    for (size_t o = 0; o < m; ++o) {
      output_layout& out = outputs_[o];
      if (out.slots.empty()) return absl::InvalidArgumentError(absl::StrCat("TiembLookup: no slot writes output ", o));
      std::sort(out.slots.begin(), out.slots.end(), [&](int a, int b) {
        return slot_offsets_[static_cast<size_t>(a)] < slot_offsets_[static_cast<size_t>(b)];
      });
      for (int s : out.slots) {
        if (slot_offsets_[static_cast<size_t>(s)] != out.width) {
          return absl::InvalidArgumentError(absl::StrCat("slot ", s, ": slot_offsets says column ",
                                                         slot_offsets_[static_cast<size_t>(s)], " of output ", o,
                                                         " but the slots before it end at column ", out.width));
        }
        out.width += dims_[static_cast<size_t>(s)];
      }
      out.alone = out.slots.size() == 1;
    }
    return absl::OkStatus();
  }

  /// The store path (input 0), a view into the input tensor.
  static std::string_view store_path(OpKernelContext* ctx) {
    const Tensor& store = ctx->input(0);
    TIEMB_EXPECT(store.dims() == 0 && store.dtype() == ::tensorflow::DT_STRING, "store must be a string scalar");
    const ::tensorflow::tstring& path = store.scalar<::tensorflow::tstring>()();
    return std::string_view(path.data(), path.size());
  }

  /// The store path and one request per slot (pointers into the input
  /// tensors). `req` keeps its capacity from call to call.
  std::string_view read_inputs(OpKernelContext* ctx, std::vector<slot_request>& req, OpInputList& ids) {
    const std::string_view store = store_path(ctx);
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
      const bool gather = mode_codes_[static_cast<size_t>(s)] == row_mode::gather;
      const int64_t column = id_columns_[static_cast<size_t>(s)];
      r.id_type = id.dtype() == ::tensorflow::DT_INT32 ? dtype::int32 : dtype::int64;
      if (id_widths_[static_cast<size_t>(s)] >= 0) {
        read_dense_matrix(s, id, weights[s], r);
        r.out_row_stride = out_row_stride(s);
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
      TIEMB_EXPECT(mode_codes_[static_cast<size_t>(s)] != row_mode::safe || nr.dims() == 0 || nr.NumElements() == 2,
                   "slot ", s, ": the sparse input's dense_shape has ", nr.NumElements(),
                   " entries, but this lookup takes a rank-2 sparse input (dense_shape of 2 entries)");
      r.num_rows = mode_codes_[static_cast<size_t>(s)] == row_mode::safe ? nr.flat<int64_t>()(0) : -1;
      r.out_row_stride = out_row_stride(s);
    }
    return store;
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

  /// Elements between slot s's output rows: 0 when it writes an output of
  /// its own, else the width of the output it shares.
  int64_t out_row_stride(int s) const {
    const output_layout& out = outputs_[static_cast<size_t>(slot_outputs_[static_cast<size_t>(s)])];
    return out.alone ? 0 : out.width;
  }

  /// The shape of output o for `rows` rows (slot s's row count).
  TensorShape output_shape(const OpInputList& ids, size_t o, int64_t rows) const {
    const output_layout& out = outputs_[o];
    const auto su = static_cast<size_t>(out.slots[0]);
    if (out.alone && mode_codes_[su] == row_mode::gather && id_columns_[su] < 0) {  // the ids' shape + [dim]
      TensorShape shape = ids[out.slots[0]].shape();
      shape.AddDim(dims_[su]);
      return shape;
    }
    return TensorShape({rows, out.width});
  }

  /// Allocates every output (slot s has rows[s] rows; the slots of one
  /// output must agree, as the concatenation they replace requires); fills
  /// `slot_out` with each slot's first element.
  void allocate_outputs(OpKernelContext* ctx, const OpInputList& ids, const int64_t* rows,
                        std::vector<void*>& slot_out) const {
    slot_out.resize(static_cast<size_t>(n_));
    for (size_t o = 0; o < outputs_.size(); ++o) {
      const output_layout& out = outputs_[o];
      const int64_t r = rows[out.slots[0]];
      for (int s : out.slots) {
        TIEMB_EXPECT(rows[s] == r, "TiembLookup: slots ", out.slots[0], " and ", s, " share output ", o,
                     " (a fused concatenation) but have ", r, " and ", rows[s],
                     " rows; the concatenation would fail the same way");
      }
      Tensor* t = nullptr;
      const absl::Status st = ctx->allocate_output(static_cast<int>(o), output_shape(ids, o, r), &t);
      // Not the input's fault: the allocator under the op is out of memory (or failed).
      if (!st.ok()) throw device_error("allocating outputs failed: " + std::string(st.message()),
                                       absl::IsResourceExhausted(st));
      char* base = const_cast<char*>(t->tensor_data().data());
      const int64_t elem = out_types_[o] == ::tensorflow::DT_HALF ? 2 : 4;
      for (int s : out.slots) slot_out[static_cast<size_t>(s)] = base + slot_offsets_[static_cast<size_t>(s)] * elem;
    }
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
  Group& group_for(std::map<Key, store_group<Engine, Group>, std::less<>>& groups, const Key& key,
                   const std::string& store, Open&& open, TableDim&& table_dim) {
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
      sc.comb = comb_codes_[s];
      sc.mode = mode_codes_[s];
      sc.default_id = default_ids_[s];
      sc.output_dtype =
          out_types_[static_cast<size_t>(slot_outputs_[s])] == ::tensorflow::DT_HALF ? dtype::float16 : dtype::float32;
      sc.wrap_negative = wrap_negative_[s];
      sc.feature = static_cast<int32_t>(features_[s]);
    }
    return slots;
  }

  int n_ = 0;
  std::vector<std::string> tables_, combiners_, modes_;
  std::vector<int64_t> dims_, default_ids_, id_columns_, features_, id_widths_, slot_outputs_, slot_offsets_;
  std::vector<bool> weighted_, wrap_negative_;
  std::vector<::tensorflow::DataType> out_types_;  // per output
  std::vector<combiner> comb_codes_;
  std::vector<row_mode> mode_codes_;
  std::vector<output_layout> outputs_;
  std::mutex mutex_;
};

}  // namespace tf_kernel
}  // namespace tiemb
