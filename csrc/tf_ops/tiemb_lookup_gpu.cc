// The TiembLookup GPU kernel (built where TensorFlow has CUDA and nvcc
// exists: TIEMB_TF_GPU).
#if TIEMB_TF_GPU
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "tensorflow/core/framework/op_kernel.h"
#include "xla/stream_executor/stream.h"

#include "../cuda/device_info.h"
#include "../cuda/gpu_engine.h"
#include "../cuda/store_gpu_engine.h"
#include "tiemb_lookup_kernel.h"

namespace tiemb {
namespace tf_kernel {
namespace {

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
      const std::string store(read_inputs(ctx, req, ids));
      const int device = cuda_current_device();
      TIEMB_EXPECT(device >= 0, "TiembLookup: no current CUDA device");
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
      std::vector<void*> outputs;
      allocate_outputs(ctx, ids, rows.data(), outputs);
      group.launch(req.data(), n_, rows.data(), outputs.data(), cuda_stream);
    } catch (const std::exception& e) {
      ctx->CtxFailure(status_from_exception(e));
    }
  }

 private:
  std::map<std::pair<std::string, int>, store_group<gpu_engine, gpu_lookup_group>, std::less<>> groups_;
};

REGISTER_KERNEL_BUILDER(Name("TiembLookup").Device(::tensorflow::DEVICE_GPU).HostMemory("store").HostMemory("num_rows"),
                        TiembLookupGpuOp);

}  // namespace
}  // namespace tf_kernel
}  // namespace tiemb
#endif  // TIEMB_TF_GPU
