// The TiembLookup TensorFlow op: many slots' sparse embedding lookups in one
// op, served by the engine of a table store (tables outside the graph).
// This file is its definition (inputs, attributes, shape function); the
// kernels are tiemb_lookup_cpu.cc and tiemb_lookup_gpu.cc around the shared
// part in tiemb_lookup_kernel.h (the layout of tensorflow/custom-op).
//
// Inputs: the store directory (a string scalar; in a SavedModel an asset, so
// the model can be moved), then per slot ids, segment ids (sp_ids.indices[:,0],
// or sp_ids.indices itself, read in place), weights (an empty tensor for
// unweighted slots) and num_rows (dense_shape[0], or dense_shape itself; used
// by safe slots). Attributes fix everything else per slot. Errors in the
// inputs become InvalidArgument naming the slot; nothing throws out of Compute.
#include <algorithm>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tiemb {
namespace {

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
    // Fused outputs (empty = output s is slot s, as in models saved before
    // these attributes): per slot, the output it writes and its first column
    // there. An output several slots write is [rows, width], the slots'
    // columns side by side (the model's concatenation, done by the op).
    .Attr("slot_outputs: list(int) = []")
    .Attr("slot_offsets: list(int) = []")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      int n = 0;
      TF_RETURN_IF_ERROR(c->GetAttr("N", &n));
      std::vector<int64_t> dims, columns, slot_outputs, slot_offsets;
      std::vector<std::string> modes;
      std::vector<::tensorflow::DataType> out_types;
      TF_RETURN_IF_ERROR(c->GetAttr("dims", &dims));
      TF_RETURN_IF_ERROR(c->GetAttr("modes", &modes));
      TF_RETURN_IF_ERROR(c->GetAttr("id_columns", &columns));
      TF_RETURN_IF_ERROR(c->GetAttr("out_types", &out_types));
      TF_RETURN_IF_ERROR(c->GetAttr("slot_outputs", &slot_outputs));
      TF_RETURN_IF_ERROR(c->GetAttr("slot_offsets", &slot_offsets));
      if (static_cast<int>(dims.size()) != n || static_cast<int>(modes.size()) != n) {
        return absl::InvalidArgumentError(absl::StrCat("TiembLookup: dims and modes need N = ", n, " entries"));
      }
      std::vector<int64_t> widths;
      TF_RETURN_IF_ERROR(c->GetAttr("id_widths", &widths));
      const int outputs = static_cast<int>(out_types.size());
      if (slot_outputs.empty()) {
        for (int s = 0; s < n; ++s) slot_outputs.push_back(s);
        slot_offsets.assign(static_cast<size_t>(n), 0);
      }
      if (static_cast<int>(slot_outputs.size()) != n || static_cast<int>(slot_offsets.size()) != n) {
        return absl::InvalidArgumentError(absl::StrCat("TiembLookup: slot_outputs and slot_offsets need N = ", n,
                                                       " entries"));
      }
      std::vector<int> slots_in(static_cast<size_t>(outputs), 0);
      std::vector<int64_t> width(static_cast<size_t>(outputs), 0);
      std::vector<shape_inference::DimensionHandle> rows_of(static_cast<size_t>(outputs), c->UnknownDim());
      for (int s = 0; s < n; ++s) {
        const int64_t o = slot_outputs[static_cast<size_t>(s)];
        if (o < 0 || o >= outputs) {
          return absl::InvalidArgumentError(absl::StrCat("TiembLookup: slot ", s, " writes output ", o,
                                                         " but there are ", outputs));
        }
        ++slots_in[static_cast<size_t>(o)];
        width[static_cast<size_t>(o)] = std::max(width[static_cast<size_t>(o)], slot_offsets[static_cast<size_t>(s)] + dims[s]);
      }
      for (int s = 0; s < n; ++s) {
        const auto o = static_cast<size_t>(slot_outputs[static_cast<size_t>(s)]);
        const bool alone = slots_in[o] == 1;
        // Safe slots have num_rows rows (known when it is a constant); plain
        // slots max(segment id) + 1, known only at run time.
        const bool column = static_cast<int>(columns.size()) > s && columns[s] >= 0;
        shape_inference::DimensionHandle rows = c->UnknownDim();
        if (static_cast<int>(widths.size()) > s && widths[s] >= 0) {  // one row per row of a dense id matrix
          rows = dense_matrix_rows(c, c->input(1 + s));
        } else if (modes[s] == "gather" && column) {  // one row per row of the id matrix
          rows = c->Dim(c->input(1 + s), 0);
        } else if (modes[s] == "gather" && alone) {  // the ids' shape + [dim]
          shape_inference::ShapeHandle out;
          TF_RETURN_IF_ERROR(c->Concatenate(c->input(1 + s), c->Vector(dims[s]), &out));
          c->set_output(static_cast<int>(o), out);
          continue;
        } else if (modes[s] == "gather") {  // one row per id
          rows = c->NumElements(c->input(1 + s));
        } else {
          const shape_inference::ShapeHandle rows_in = c->input(1 + 3 * n + s);
          if (modes[s] == "safe" && c->RankKnown(rows_in) && c->Rank(rows_in) == 0) {
            TF_RETURN_IF_ERROR(c->MakeDimForScalarInput(1 + 3 * n + s, &rows));
          }
        }
        if (!c->ValueKnown(rows_of[o])) rows_of[o] = rows;
      }
      for (int s = 0; s < n; ++s) {
        const auto o = static_cast<size_t>(slot_outputs[static_cast<size_t>(s)]);
        const bool column = static_cast<int>(columns.size()) > s && columns[s] >= 0;
        if (slots_in[o] == 1 && modes[s] == "gather" && !column) continue;  // set above
        c->set_output(static_cast<int>(o), c->Matrix(rows_of[o], width[o]));
      }
      return absl::OkStatus();
    })
    .Doc(R"doc(
Sparse embedding lookups of many slots at once, with the semantics of
tf.nn.embedding_lookup_sparse (mode "plain") and
tf.nn.safe_embedding_lookup_sparse (mode "safe"), served from a tiemb table store.
)doc");

}  // namespace
}  // namespace tiemb
