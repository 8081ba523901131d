// TiembStoreEngines: the core's registry of store engines as the op library
// sees it. With one core per process (libtiemb_core.so) it is the list
// tiemb._C.live_store_engines() returns; tests compare the two to prove the
// op and the Python API share engines.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

#include "../core/table_store.h"

namespace tiemb {
namespace {

REGISTER_OP("TiembStoreEngines")
    .Output("engines: string")
    .SetIsStateful()  // the registry changes between calls: never constant-folded or cached
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->Vector(c->UnknownDim()));
      return absl::OkStatus();
    })
    .Doc(R"doc(
The live engines of the process's store-engine registry, one string per engine:
"<store>\t<device>\t<content id>\t<address>\t<users>" (device -1 = CPU).
)doc");

class TiembStoreEnginesOp : public ::tensorflow::OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(::tensorflow::OpKernelContext* ctx) override {
    const std::vector<store_engine_entry> engines = live_store_engines();
    ::tensorflow::Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ::tensorflow::TensorShape({static_cast<int64_t>(engines.size())}),
                                             &out));
    auto flat = out->flat<::tensorflow::tstring>();
    for (size_t i = 0; i < engines.size(); ++i) {
      const store_engine_entry& e = engines[i];
      flat(static_cast<int64_t>(i)) = absl::StrCat(e.store, "\t", e.device, "\t", e.content_id, "\t",
                                                   reinterpret_cast<uintptr_t>(e.engine), "\t", e.users);
    }
  }
};

REGISTER_KERNEL_BUILDER(Name("TiembStoreEngines").Device(::tensorflow::DEVICE_CPU), TiembStoreEnginesOp);

}  // namespace
}  // namespace tiemb
