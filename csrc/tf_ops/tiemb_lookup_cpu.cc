// The TiembLookup CPU kernel: the store's CPU engine (shared process-wide)
// run on TensorFlow's CPU worker threads.
#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "tensorflow/core/framework/node_def_util.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/platform/threadpool.h"

#include "../cpu/store_engine.h"
#include "tiemb_lookup_kernel.h"

namespace tiemb {
namespace tf_kernel {
namespace {

// TensorFlow's CPU worker threads (the intra-op pool) as the engine's
// parallel loop: the op's work runs where TensorFlow's own kernels run, with
// no handoff to a second pool competing for the same cores.
class tf_worker_runner final : public parallel_runner {
 public:
  explicit tf_worker_runner(::tsl::thread::ThreadPool* pool) : pool_(pool) {}

  int num_threads() const override { return pool_->NumThreads() + 1; }  // + the calling thread

  void run(int64_t num_tasks, task_fn fn, void* ctx) override {
    // One block per thread, each taking tasks from a shared counter: the
    // caller starts at once and a worker that wakes late (the 2 cores are
    // shared with other ops and processes) finds the work done rather than
    // holding a fixed share of it.
    struct job {
      task_fn fn;
      void* ctx;
      int64_t num_tasks;
      std::atomic<int64_t> next{0};
    } j;
    j.fn = fn;
    j.ctx = ctx;
    j.num_tasks = num_tasks;
    job* jp = &j;  // one pointer: the std::function keeps it inline
    const int64_t blocks = std::min<int64_t>(num_tasks, num_threads());
    pool_->ParallelForWithWorkerId(blocks, ::tsl::thread::ThreadPool::SchedulingParams::Fixed(1),
                                   [jp](int64_t, int64_t, int thread) {
                                     for (int64_t t; (t = jp->next.fetch_add(1, std::memory_order_relaxed)) <
                                                     jp->num_tasks;) {
                                       jp->fn(jp->ctx, t, thread);
                                     }
                                   });
  }

 private:
  ::tsl::thread::ThreadPool* pool_;
};

// The CPU kernel's groups of one store: a group holds one call's scratch, so
// concurrent calls (eager ops and sessions share kernels) each take their own
// from a free list. No call waits for another while holding a lock, so a
// ParallelFor on the shared pool can never wait on a blocked caller.
class cpu_group_pool {
 public:
  struct workspace {
    workspace(cpu_engine& engine, const std::vector<slot_config>& slots, int max_threads)
        : group(engine, slots, max_threads) {}
    cpu_lookup_group group;
    std::vector<slot_request> req;
    std::vector<void*> slot_out;
  };

  cpu_group_pool(cpu_engine& engine, std::vector<slot_config> slots) : engine_(engine), slots_(std::move(slots)) {}

  /// A free workspace, or a new one the first time calls overlap.
  std::unique_ptr<workspace> acquire(int max_threads) {
    {
      std::lock_guard<std::mutex> lk(mutex_);
      if (!free_.empty()) {
        std::unique_ptr<workspace> w = std::move(free_.back());
        free_.pop_back();
        return w;
      }
    }
    return std::make_unique<workspace>(engine_, slots_, max_threads);
  }

  void release(std::unique_ptr<workspace> w) {
    std::lock_guard<std::mutex> lk(mutex_);
    free_.push_back(std::move(w));
  }

 private:
  cpu_engine& engine_;
  std::vector<slot_config> slots_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<workspace>> free_;
};

// CPU kernel: the CPU engine of the store, shared process-wide; the work on
// TensorFlow's CPU worker threads.
class TiembLookupOp : public TiembLookupBase {
 public:
  explicit TiembLookupOp(OpKernelConstruction* ctx) : TiembLookupBase(ctx) {
    std::string label;
    if (::tensorflow::GetNodeAttr(ctx->def(), "_kernel", &label).ok()) {
      if (label == kFloorEmpty) floor_ = floor_stage::empty;
      if (label == kFloorAlloc) floor_ = floor_stage::alloc;
    }
  }

  void Compute(OpKernelContext* ctx) override {
    if (floor_ == floor_stage::none) {
      compute(ctx);
      return;
    }
    bool ready;
    {
      std::lock_guard<std::mutex> lk(mutex_);
      ready = !floor_shapes_.empty();  // set once, never changed after
    }
    if (ready) {
      compute_floor(ctx);
      return;
    }
    compute(ctx);
    std::lock_guard<std::mutex> lk(mutex_);
    if (ctx->status().ok() && floor_shapes_.empty()) remember_outputs(ctx);
  }

  /// Labels of the benchmark-only kernels (benchmarks/op_overhead.py): a
  /// node with attribute `_kernel` set to one of them runs the real op once,
  /// then only TensorFlow's part of the op: `kFloorEmpty` hands back the
  /// first call's outputs (the cost of any op of this signature in a
  /// session), `kFloorAlloc` allocates outputs of the first call's shapes and
  /// writes nothing (that cost plus the output allocation). They bound from
  /// below what the real op can take; no model uses them.
  static constexpr const char* kFloorEmpty = "tiemb_floor_empty";
  static constexpr const char* kFloorAlloc = "tiemb_floor_alloc";

 private:
  enum class floor_stage { none, empty, alloc };

  void compute_floor(OpKernelContext* ctx) {
    for (size_t o = 0; o < floor_shapes_.size(); ++o) {
      if (floor_ == floor_stage::empty) {
        ctx->set_output(static_cast<int>(o), floor_outputs_[o]);
      } else {
        Tensor* t = nullptr;
        OP_REQUIRES_OK(ctx, ctx->allocate_output(static_cast<int>(o), floor_shapes_[o], &t));
      }
    }
  }

  void remember_outputs(OpKernelContext* ctx) {
    for (int o = 0; o < ctx->num_outputs(); ++o) {
      floor_outputs_.push_back(*ctx->mutable_output(o));
      floor_shapes_.push_back(floor_outputs_.back().shape());
    }
  }

  void compute(OpKernelContext* ctx) {
    try {
      const std::string_view store = store_path(ctx);
      cpu_group_pool* groups = nullptr;
      {
        std::lock_guard<std::mutex> lk(mutex_);
        auto it = groups_.find(store);
        groups = it != groups_.end() ? it->second.group.get()
                                     : &group_for(groups_, std::string(store), std::string(store),
                                                  [&](const store_manifest** m) { return shared_cpu_engine(std::string(store), m); },
                                                  [](cpu_engine& e, int32_t t) { return e.tables().at(t).dim(); });
      }
      ::tsl::thread::ThreadPool* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
      tf_worker_runner runner(workers);
      struct give_back {  // the workspace returns to the free list, also on error
        cpu_group_pool* pool;
        std::unique_ptr<cpu_group_pool::workspace> w;
        ~give_back() { pool->release(std::move(w)); }
      } held{groups, groups->acquire(runner.num_threads())};
      cpu_group_pool::workspace& w = *held.w;
      OpInputList ids;
      read_inputs(ctx, w.req, ids);
      w.group.lookup(w.req.data(), n_, [&](const int64_t* rows) {
        allocate_outputs(ctx, ids, rows, w.slot_out);
        return static_cast<void* const*>(w.slot_out.data());
      }, runner);
    } catch (const std::exception& e) {
      ctx->CtxFailure(status_from_exception(e));
    }
  }

  std::map<std::string, store_group<cpu_engine, cpu_group_pool>, std::less<>> groups_;
  floor_stage floor_ = floor_stage::none;
  std::vector<Tensor> floor_outputs_;  // benchmark floors only, set by the first call
  std::vector<TensorShape> floor_shapes_;
};

REGISTER_KERNEL_BUILDER(Name("TiembLookup").Device(::tensorflow::DEVICE_CPU), TiembLookupOp);
REGISTER_KERNEL_BUILDER(Name("TiembLookup").Device(::tensorflow::DEVICE_CPU).Label(TiembLookupOp::kFloorEmpty),
                        TiembLookupOp);
REGISTER_KERNEL_BUILDER(Name("TiembLookup").Device(::tensorflow::DEVICE_CPU).Label(TiembLookupOp::kFloorAlloc),
                        TiembLookupOp);

}  // namespace
}  // namespace tf_kernel
}  // namespace tiemb
