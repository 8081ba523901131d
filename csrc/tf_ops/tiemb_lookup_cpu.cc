// The TiembLookup CPU kernel: the store's CPU engine (shared process-wide)
// run on TensorFlow's CPU worker threads.
#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "tensorflow/core/framework/node_def_util.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/platform/threadpool.h"

#include "../cpu/store_engine.h"
#include "tiemb_lookup_kernel.h"

namespace tiemb {
namespace tf_kernel {
namespace {

// The state one call's parallel loop shares with the helpers it schedules
// on TensorFlow's worker pool; one per workspace, reused by its calls.
//
// Measured on the 2-core machine (benchmarks/op_overhead.py, RESULTS.md):
// with the caller waiting for every helper to wake (Eigen's ParallelFor),
// W&D's 52 slots took 177 us on the pool against 121 us inline: a woken
// worker on a busy machine starts tens of microseconds late. Here the caller
// waits only for tasks a helper has already claimed, never for a helper
// that has not started: a late helper finds the tasks taken and leaves, so
// the loop is never slower than running inline by more than the wake-up
// request itself.
//
// `ticket` holds (generation << 32 | next task). A helper claims a task by a
// compare-and-swap that also checks the generation, so a helper of an
// earlier call (woken after that call returned) can never run a task of a
// later one: the caller closes the ticket before it rewrites fn/ctx/tasks.
class helper_job {
 public:
  using task_fn = parallel_runner::task_fn;

  ~helper_job() {
    // Helpers scheduled but not run yet hold a pointer to this job.
    while (pending_.load() != 0) std::this_thread::yield();
  }

  /// Runs fn(ctx, task, thread) for every task, on the caller (thread 0) and
  /// up to `helpers` workers of `pool` (thread = their pool index + 1).
  void run(::tsl::thread::ThreadPool* pool, int helpers, int64_t num_tasks, task_fn fn, void* ctx) {
    const uint64_t gen = next_gen_++ & 0xffffffffu;
    ticket_.store(gen << 32 | kClosed);  // stale helpers can no longer claim
    fn_.store(fn);
    ctx_.store(ctx);
    num_tasks_.store(num_tasks);
    done_.store(0);
    ticket_.store(gen << 32);
    const int64_t wanted = std::min<int64_t>(helpers, num_tasks - 1);
    for (int64_t h = 0; h < wanted; ++h) {
      pending_.fetch_add(1);
      helper_job* self = this;
      pool->Schedule([self, gen] {  // two words: std::function keeps them inline
        self->work(gen, self->pool_thread_index());
        self->pending_.fetch_sub(1);
      });
    }
    work(gen, 0);
    // Only tasks already claimed (their helper is running them) are left.
    for (int spins = 0; done_.load() != num_tasks; ++spins) {
      if (spins < 4096) {
        cpu_relax();
      } else {
        std::this_thread::yield();
      }
    }
  }

  void set_pool(::tsl::thread::ThreadPool* pool) { pool_.store(pool, std::memory_order_relaxed); }

 private:
  static constexpr uint64_t kClosed = 0xffffffffu;

  int pool_thread_index() const { return pool_.load(std::memory_order_relaxed)->CurrentThreadId() + 1; }

  static void cpu_relax() {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  }

  void work(uint64_t gen, int thread) {
    for (;;) {
      uint64_t t = ticket_.load();
      if (t >> 32 != gen) return;
      const int64_t task = static_cast<int64_t>(t & 0xffffffffu);
      const int64_t n = num_tasks_.load();
      const task_fn fn = fn_.load();
      void* const ctx = ctx_.load();
      if (task >= n) return;  // also kClosed
      if (!ticket_.compare_exchange_weak(t, t + 1)) continue;
      // The swap succeeded on this generation's open ticket: fn, ctx and n
      // were read after it opened and before any later call closed it.
      fn(ctx, task, thread);
      done_.fetch_add(1);
    }
  }

  std::atomic<::tsl::thread::ThreadPool*> pool_{nullptr};
  uint64_t next_gen_ = 0;
  std::atomic<uint64_t> ticket_{kClosed};
  std::atomic<task_fn> fn_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  std::atomic<int64_t> num_tasks_{0};
  std::atomic<int64_t> done_{0};
  std::atomic<int> pending_{0};
};

// TensorFlow's CPU worker threads (the intra-op pool) as the engine's
// parallel loop: the op's work runs where TensorFlow's own kernels run, with
// no handoff to a second pool competing for the same cores. As many threads
// as the pool has, the caller included (the pool is sized to the cores).
class tf_worker_runner final : public parallel_runner {
 public:
  tf_worker_runner(::tsl::thread::ThreadPool* pool, helper_job& job) : pool_(pool), job_(job) {
    job_.set_pool(pool);
  }

  int num_threads() const override { return pool_->NumThreads() + 1; }  // the bound on thread indices

  void run(int64_t num_tasks, task_fn fn, void* ctx) override {
    job_.run(pool_, pool_->NumThreads() - 1, num_tasks, fn, ctx);
  }

 private:
  ::tsl::thread::ThreadPool* pool_;
  helper_job& job_;
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
    helper_job job;  // declared after the group: destroyed first, once its helpers are gone
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
      struct give_back {  // the workspace returns to the free list, also on error
        cpu_group_pool* pool;
        std::unique_ptr<cpu_group_pool::workspace> w;
        ~give_back() { pool->release(std::move(w)); }
      } held{groups, groups->acquire(workers->NumThreads() + 1)};
      cpu_group_pool::workspace& w = *held.w;
      tf_worker_runner runner(workers, w.job);
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
